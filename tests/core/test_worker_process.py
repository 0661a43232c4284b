"""ChunkedLoader's worker processes belong to their loader (see NOTE [ worker processes and signals ]):
they end within seconds of their parent's death, and they do not inherit the
training script's signal handlers. Each case runs a real script in its own
session, so that nothing it starts can outlive the test."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import psutil
import pytest

from torchloader._core.worker_process import ParentWatch, reset_signal_handlers

SCRIPT = textwrap.dedent(
    """
    import signal, sys, time
    import numpy as np, torch
    from torchloader import ChunkedLoader, PathDataset

    ignored = []
    signal.signal(signal.SIGTERM, lambda *_: ignored.append(1))  # as Lightning's handler: only a flag
    folder, mode = sys.argv[1], sys.argv[2]
    for i in range(64):
        np.save(f"{folder}/{i}.npy", np.full(4, i, np.float32))
    ds = PathDataset([f"{folder}/{i}.npy" for i in range(64)], list(range(64)))
    loader = ChunkedLoader(ds, 4, chunk_size=16, num_workers=2,
                           multiprocessing_context=torch.multiprocessing.get_context("fork"))
    next(iter(loader))
    print(" ".join(str(w.pid) for w in loader.filler._workers), flush=True)
    if mode == "finish":
        for _ in range(2):
            for _ in loader:
                pass
        print("done", flush=True)
        sys.exit(0)  # the workers are daemons: multiprocessing ends them with SIGTERM at exit
    if mode == "default-sigterm":
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        print("default", flush=True)
    time.sleep(120)
    """
)


def _start(tmp_path, mode):
    script = tmp_path / "job.py"
    script.write_text(SCRIPT)
    # TMPDIR: what the killed processes cannot clean up (multiprocessing's temp folder) stays in tmp_path
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    proc = subprocess.Popen(
        [sys.executable, str(script), str(tmp_path), mode],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        env=env,
    )
    pids = [int(p) for p in proc.stdout.readline().split()]
    assert len(pids) == 2, proc.stderr.read()
    return proc, pids


def _alive(pid):
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _gone_within(pids, seconds):
    end = time.monotonic() + seconds
    while any(_alive(p) for p in pids):
        if time.monotonic() > end:
            return False
        time.sleep(0.05)
    return True


@pytest.fixture
def session():
    """Kills whatever a test's script left in its session."""
    started = []
    yield started
    for proc in started:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(timeout=10)
        proc.stdout.close()
        proc.stderr.close()


@pytest.mark.parametrize("how", ["SIGKILL", "SIGTERM"])
def test_workers_end_within_seconds_of_their_parents_death(tmp_path, session, how):
    proc, workers = _start(tmp_path, "default-sigterm" if how == "SIGTERM" else "wait")
    session.append(proc)
    if how == "SIGTERM":
        assert proc.stdout.readline().strip() == "default"
    assert all(_alive(p) for p in workers)
    os.kill(proc.pid, getattr(signal, how))
    proc.wait(timeout=10)
    assert _gone_within(workers, 5), f"workers {workers} outlived their parent by 5 s"


def test_a_worker_does_not_inherit_the_scripts_sigterm_handler(tmp_path, session):
    proc, workers = _start(tmp_path, "wait")
    session.append(proc)
    os.kill(workers[0], signal.SIGTERM)  # the script's handler would only set a flag
    assert _gone_within(workers[:1], 5)


def test_a_script_with_a_sigterm_handler_exits_by_itself(tmp_path, session):
    proc, workers = _start(tmp_path, "finish")
    session.append(proc)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert out.strip() == "done"
    assert _gone_within(workers, 5)


def test_reset_signal_handlers_restores_the_defaults_and_ignores_sigint():
    previous = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1)}
    try:
        signal.signal(signal.SIGTERM, lambda *_: None)
        signal.signal(signal.SIGUSR1, lambda *_: None)
        reset_signal_handlers()
        assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
        assert signal.getsignal(signal.SIGUSR1) == signal.SIG_DFL
        assert signal.getsignal(signal.SIGINT) == signal.SIG_IGN
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def test_parent_watch_sees_its_parent():
    assert ParentWatch().parent_alive()
