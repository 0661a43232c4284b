"""Subprocess jobs that tests start at the beginning of the session and read at the end.

The suite's heaviest tests run whole scripts (``torchrun`` jobs, Lightning and
Accelerate runs) that mostly wait on imports and process start-up. A test module
that defines ``start_early()`` has it called once the tests are collected
(``tests/conftest.py``); it starts its jobs here, and its tests wait for their
results, so the jobs run beside the in-process tests instead of after them.

At most two jobs run at once (the rest wait in a queue). A job is started
through a shell that leaves it behind, so it is not a child
of the test process (tests that measure or count this process's children do
not see it), at nice 10 (the in-process tests go first; a job takes the cores
they leave idle). Every process of a job carries an environment variable with
the job's name, which is how its leftovers are found and ended, whatever
sessions they made (torchrun starts its ranks in sessions of their own).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import psutil

__all__ = ["Finished", "result", "root", "start", "stop_all"]

TIMEOUT = 300  # seconds a job may take from its start, on a busy 2-core machine
RUNNING = 2  # jobs at once: more only fight over the two cores and slow the other tests
MARK = "TORCHLOADER_TEST_JOB"
_SESSION = uuid.uuid4().hex[:12]
_LAUNCH = 'nice -n 10 "$@" </dev/null >"$JOB_DIR/stdout" 2>"$JOB_DIR/stderr"; echo $? >"$JOB_DIR/rc.tmp"; mv "$JOB_DIR/rc.tmp" "$JOB_DIR/rc"'


@dataclass
class Finished:
    returncode: int | None  # None: still running at its deadline (a hang); it was killed
    stdout: str
    stderr: str
    leftover: list[int]  # its processes alive 5 s after it ended (then killed)


_jobs: dict[str, tuple[Path, float]] = {}  # started: folder, start time
_queued: list[tuple[str, list[str], Path | None, dict]] = []
_results: dict[str, Finished] = {}
_root: Path | None = None
_lock = threading.Lock()
_feeder: threading.Thread | None = None


def root() -> Path:
    """A folder for the session's jobs, removed at its end."""
    global _root
    if _root is None:
        _root = Path(tempfile.mkdtemp(prefix="torchloader-background-"))
    return _root


def start(name: str, command: list[str], *, cwd: Path | None = None, env: dict | None = None) -> None:
    """Queue ``command`` as job ``name`` (unless it is known already); it starts as
    soon as fewer than ``RUNNING`` jobs run."""
    global _feeder
    with _lock:
        if name in _jobs or any(q[0] == name for q in _queued):
            return
        _queued.append((name, command, cwd, dict(os.environ if env is None else env)))
        if _feeder is None:
            _feeder = threading.Thread(target=_feed, name="test-background-jobs", daemon=True)
            _feeder.start()
    _launch_some()


def _feed() -> None:
    while True:
        with _lock:
            if not _queued:
                return _done_feeding()
        _launch_some()
        time.sleep(0.2)


def _done_feeding() -> None:
    global _feeder
    _feeder = None


def _launch_some() -> None:
    with _lock:
        running = sum(1 for folder, _ in _jobs.values() if not (folder / "rc").exists())
        while _queued and running < RUNNING:
            _launch(*_queued.pop(0))
            running += 1


def _launch(name: str, command: list[str], cwd: Path | None, env: dict) -> None:
    folder = root() / "jobs" / name.replace("/", "-")
    folder.mkdir(parents=True)
    env = {**env, MARK: f"{_SESSION}:{name}", "JOB_DIR": str(folder)}
    shell = ["/bin/sh", "-c", f"({_LAUNCH}) &", "job", *command]
    subprocess.run(shell, cwd=cwd, env=env, check=True, start_new_session=True)  # returns at once
    _jobs[name] = (folder, time.monotonic())


def result(name: str) -> Finished:
    """Wait for job ``name`` (killed past its deadline) and return what it did."""
    if name not in _results:
        while name not in _jobs:  # queued: it starts when a slot frees
            _launch_some()
            time.sleep(0.1)
        folder, started = _jobs[name]
        rc = folder / "rc"
        while not rc.exists() and time.monotonic() < started + TIMEOUT:
            time.sleep(0.1)
        code = int(rc.read_text()) if rc.exists() else None
        leftover = _processes_of(name, grace=5.0 if code is not None else 0.0)
        _kill(leftover)
        _results[name] = Finished(code, (folder / "stdout").read_text(), (folder / "stderr").read_text(),
                                  [p.pid for p in leftover])  # fmt: skip
    return _results[name]


def _processes_of(name: str | None, grace: float = 0.0) -> list[psutil.Process]:
    """The live processes of job ``name`` (None: of every job) after up to ``grace`` seconds."""
    end = time.monotonic() + grace
    while True:
        found = []
        for proc in psutil.process_iter():
            try:
                mark = proc.environ().get(MARK, "")
                if mark.startswith(f"{_SESSION}:") and (name is None or mark == f"{_SESSION}:{name}"):
                    if proc.status() != psutil.STATUS_ZOMBIE:
                        found.append(proc)
            except psutil.Error:
                continue
        if not found or time.monotonic() >= end:
            return found
        time.sleep(0.1)


def _kill(processes: list[psutil.Process]) -> None:
    for proc in processes:
        try:
            proc.send_signal(signal.SIGKILL)
        except psutil.Error:
            pass


def stop_all() -> None:
    """End every job and whatever it left; remove the folder."""
    with _lock:
        _queued.clear()
    if _jobs:
        _kill(_processes_of(None))
    _jobs.clear()
    if _root is not None:
        shutil.rmtree(_root, ignore_errors=True)
