"""Subprocess jobs that tests start at the beginning of the session and read at the end.

The suite's heaviest tests run whole scripts (``torchrun`` jobs, Lightning and
Accelerate runs) that mostly wait on imports and process start-up. A test module
that defines ``start_early()`` has it called once the tests are collected
(``tests/conftest.py``); it starts its jobs here, and its tests wait for their
results, so the jobs run beside the in-process tests instead of after them.
Each job has a session of its own: it is killed whole at the end of the
session, and the per-test check for leftover processes leaves it alone. Jobs
run at a lower priority (nice 10), so they take the cores the other tests
leave idle instead of slowing them down.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Finished", "result", "root", "sessions", "start", "stop_all"]

TIMEOUT = 300  # seconds a job may take from its start, on a busy 2-core machine


@dataclass
class Finished:
    returncode: int | None  # None: still running at its deadline (a hang); it was killed
    stdout: str
    stderr: str
    leftover: list[int]  # processes of its session alive 5 s after it ended (then killed)


_jobs: dict[str, tuple[subprocess.Popen, Path, float]] = {}
_results: dict[str, Finished] = {}
_root: Path | None = None


def root() -> Path:
    """A folder for the session's jobs, removed at its end."""
    global _root
    if _root is None:
        _root = Path(tempfile.mkdtemp(prefix="torchloader-background-"))
    return _root


def start(name: str, command: list[str], *, cwd: Path | None = None, env: dict | None = None) -> None:
    """Start ``command`` as job ``name`` unless it was started already."""
    if name in _jobs:
        return
    logs = root() / "logs" / name
    logs.mkdir(parents=True)
    with open(logs / "stdout", "w") as out, open(logs / "stderr", "w") as err:
        proc = subprocess.Popen(command, cwd=cwd, env=env, stdout=out, stderr=err, start_new_session=True,
                                preexec_fn=_lower_priority)  # fmt: skip
    _jobs[name] = (proc, logs, time.monotonic())


def _lower_priority() -> None:
    os.nice(10)  # the in-process tests go first; a job takes the cores they leave idle


def result(name: str) -> Finished:
    """Wait for job ``name`` (killed past its deadline) and return what it did."""
    if name not in _results:
        proc, logs, started = _jobs[name]
        try:
            code: int | None = proc.wait(timeout=max(1.0, started + TIMEOUT - time.monotonic()))
        except subprocess.TimeoutExpired:
            code = None
        leftover = _still_in_session(proc.pid) if code is not None else []
        _kill_session(proc)
        _results[name] = Finished(code, (logs / "stdout").read_text(), (logs / "stderr").read_text(), leftover)
    return _results[name]


def sessions() -> set[int]:
    """The session ids of the jobs (a job's processes, and what they started, carry one)."""
    return {proc.pid for proc, _, _ in _jobs.values()}


def _still_in_session(session: int, grace: float = 5.0) -> list[int]:
    """Processes still in ``session`` after ``grace`` seconds (a dead parent's workers)."""
    import psutil

    end = time.monotonic() + grace
    while True:
        alive = []
        for proc in psutil.process_iter(["status"]):
            try:
                if os.getsid(proc.pid) == session and proc.info["status"] != psutil.STATUS_ZOMBIE:
                    alive.append(proc.pid)
            except (ProcessLookupError, PermissionError):
                continue
        if not alive or time.monotonic() > end:
            return alive
        time.sleep(0.1)


def _kill_session(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    proc.wait(timeout=10)


def stop_all() -> None:
    """End every job and whatever it left in its session; remove the folder."""
    for proc, _, _ in _jobs.values():
        _kill_session(proc)
    _jobs.clear()
    if _root is not None:
        shutil.rmtree(_root, ignore_errors=True)
