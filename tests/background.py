"""Subprocess jobs that tests start at the beginning of the session and read at the end.

The suite's heaviest tests run whole scripts (``torchrun`` jobs, Lightning and
Accelerate runs) that mostly wait on imports and process start-up. A test module
that defines ``start_early()`` has it called once the tests are collected
(``tests/conftest.py``); it starts its jobs here, and its tests wait for their
results, so the jobs run beside the in-process tests instead of after them.

The suite runs in two pytest-xdist workers, and each collects every module, so
each calls every ``start_early()``. The session's jobs live in one folder that
all of them share (named by ``TORCHLOADER_TEST_SESSION``, which the first
pytest process sets for the workers it starts): ``prepare()`` runs a module's
set-up once, in the first process to take its file lock (the others go on and
wait with ``ready()`` where they need it), and a job is started by whichever process claims
its folder first, once the set-up is done; any process can wait for its result.
At most two jobs run at once, in all (the rest wait in a queue, looked at between
tests and while a test waits for a job: never by a thread of the test process, so a
process that a test forks inherits no lock of this module held).

A job is started through a shell that leaves it behind, so it is not a child of
a test process (tests that measure or count their process's children do not see
it), at nice 10 (the in-process tests go first; a job takes the cores they
leave idle). Every process of a job carries an environment variable with the
job's name, which is how its leftovers are found and ended, whatever sessions
they made (torchrun starts its ranks in sessions of their own). ``stop_all()``,
called by the first pytest process once the workers are done, ends what is
left and removes the folder.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import psutil

__all__ = ["Finished", "launch_queued", "prepare", "ready", "result", "root", "start", "stop_all", "summary"]

TIMEOUT = 300  # seconds a job may take from its start, on a busy 2-core machine
RUNNING = 2  # jobs at once: more only fight over the two cores and slow the other tests
MARK = "TORCHLOADER_TEST_JOB"
SESSION = "TORCHLOADER_TEST_SESSION"
_session = os.environ.setdefault(SESSION, uuid.uuid4().hex[:12])  # the workers inherit it
_LAUNCH = (
    'nice -n 10 "$@" </dev/null >"$JOB_DIR/stdout" 2>"$JOB_DIR/stderr"; echo $? >"$JOB_DIR/rc.tmp"; '
    'times >"$JOB_DIR/times"; mv "$JOB_DIR/rc.tmp" "$JOB_DIR/rc"'
)  # times: the CPU time of the job's processes (those it waited for), for summary()


@dataclass
class Finished:
    returncode: int | None  # None: still running at its deadline (a hang); it was killed
    stdout: str
    stderr: str
    leftover: list[int]  # its processes alive 5 s after it ended (then killed)
    seconds: float = 0.0  # from its start to its end (or its deadline)
    cpu_seconds: float | None = None  # user + system time of its processes, where known


_queued: list[tuple[str, list[str], Path | None, dict, str]] = []  # this process's, not yet claimed
_results: dict[str, Finished] = {}
_lock = threading.Lock()


def root() -> Path:
    """The session's folder, shared by every pytest process of the run."""
    folder = Path(tempfile.gettempdir()) / f"torchloader-background-{_session}"
    folder.mkdir(exist_ok=True)
    return folder


# Descriptors of the locks this process holds now, closed in a child forked meanwhile (a
# DataLoader worker a test starts while the feeding thread holds "launch"): a ``flock``
# belongs to the open file, so the child's copy would hold it for as long as the child
# lives, and every pytest process of the run would wait for it to launch a job. (What
# torchloader._core.forks.closed_in_child does: this first pytest process imports no torch,
# which importing the package would.)
_HELD: set[int] = set()


def _close_held_in_child() -> None:
    for fd in list(_HELD):
        with contextlib.suppress(OSError):
            os.close(fd)
    _HELD.clear()


os.register_at_fork(after_in_child=_close_held_in_child)


@contextlib.contextmanager
def _locked(name: str, *, wait: bool = True):
    """An exclusive lock between the run's pytest processes; yields whether this process
    holds it (always, unless ``wait=False`` found another process holding it)."""
    fd = os.open(root() / f".{name}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    _HELD.add(fd)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        _HELD.discard(fd)
        os.close(fd)  # (releases the lock)


def prepare(name: str, make: Callable[[], None]) -> None:
    """Run ``make()`` once in the session, in whichever process asks first; the others
    go on at once (their tests wait with ``ready()``, their jobs start once it is done)."""
    with _locked(name, wait=False) as mine:
        if mine and not _ready(name).exists():
            make()
            _ready(name).touch()


def ready(name: str) -> None:
    """Wait until ``prepare(name, ...)`` is done, in whichever process it ran."""
    give_up = time.time() + TIMEOUT
    while not _ready(name).exists():
        if time.time() > give_up:
            raise TimeoutError(f"the test data {name!r} was not ready after {TIMEOUT} s")
        time.sleep(0.1)


def _ready(name: str) -> Path:
    return root() / f".{name}.ready"


def _folder(name: str) -> Path:
    return root() / "jobs" / name.replace("/", "-")


def start(name: str, command: list[str], *, after: str, cwd: Path | None = None, env: dict | None = None) -> None:
    """Queue ``command`` as job ``name`` (unless some process of the run has it already);
    it starts once ``prepare(after, ...)`` is done and fewer than ``RUNNING`` jobs run:
    looked at after each test (``launch_queued``, from tests/conftest.py) and while a test
    waits for a job. No thread of the test process does it: a DataLoader worker that a test
    forks would inherit whatever lock such a thread held at that moment."""
    with _lock:
        if _folder(name).exists() or any(q[0] == name for q in _queued):
            return
        _queued.append((name, command, cwd, dict(os.environ if env is None else env), after))
    _launch_some()


def launch_queued() -> None:
    """Start the queued jobs that may start now (between tests)."""
    if _queued:
        _launch_some()


def _launch_some() -> None:
    with _lock, _locked("launch"):
        jobs = root() / "jobs"
        running = sum(1 for f in jobs.iterdir() if not _ended(f)) if jobs.exists() else 0
        for job in list(_queued):
            if _folder(job[0]).exists():  # claimed by another process of the run
                _queued.remove(job)
            elif running < RUNNING and _ready(job[4]).exists():
                _queued.remove(job)
                _launch(*job[:4])
                running += 1


def _ended(folder: Path) -> bool:
    return (folder / "rc").exists() or (folder / "killed").exists()


def _launch(name: str, command: list[str], cwd: Path | None, env: dict) -> None:
    folder = _folder(name)
    folder.mkdir(parents=True)
    (folder / "started").write_text(repr(time.time()))
    (folder / "tmp").mkdir()  # its temporary files (torchrun's) go with the run's folder
    env = {**env, MARK: f"{_session}:{name}", "JOB_DIR": str(folder), "TMPDIR": str(folder / "tmp")}
    shell = ["/bin/sh", "-c", f"({_LAUNCH}) &", "job", *command]
    subprocess.run(shell, cwd=cwd, env=env, check=True, start_new_session=True)  # returns at once


def result(name: str) -> Finished:
    """Wait for job ``name`` (killed past its deadline) and return what it did."""
    if name not in _results:
        folder = _folder(name)
        give_up = time.time() + 2 * TIMEOUT  # the jobs ahead of it in the queue end by then
        while not (folder / "started").exists():  # queued, here or in another process
            if time.time() > give_up:
                return Finished(None, "", f"job {name} never started", [])
            _launch_some()
            time.sleep(0.1)
        started = float((folder / "started").read_text())
        rc = folder / "rc"
        while not rc.exists() and time.time() < started + TIMEOUT:
            launch_queued()  # (a slot another job frees meanwhile)
            time.sleep(0.1)
        code = int(rc.read_text()) if rc.exists() else None
        leftover = _processes_of(name, grace=5.0 if code is not None else 0.0)
        _kill(leftover)
        if code is None:
            (folder / "killed").touch()  # its shell is gone too: no rc will come; the next may start
        _results[name] = Finished(
            code,
            (folder / "stdout").read_text(),
            (folder / "stderr").read_text(),
            [p.pid for p in leftover],
            *_times(folder),
        )
    return _results[name]


def _times(folder: Path) -> tuple[float, float | None]:
    """Seconds from the job's start to its end (or to now), and its CPU seconds: the
    children's user + system time from the shell's ``times`` (``0m1.5s 0m0.2s``)."""
    rc = folder / "rc"
    started = float((folder / "started").read_text())
    seconds = (rc.stat().st_mtime if rc.exists() else time.time()) - started
    try:
        children = (folder / "times").read_text().splitlines()[1].split()
    except (OSError, IndexError):
        return seconds, None
    cpu = 0.0
    for field in children:
        minutes, _, secs = field.rstrip("s").partition("m")
        cpu += float(minutes) * 60 + float(secs)
    return seconds, cpu


def summary() -> list[str]:
    """A line per job of the run: how long it took and its CPU time (what the suite spends)."""
    jobs = root() / "jobs"
    lines = []
    for folder in sorted(jobs.iterdir()) if jobs.exists() else []:
        if not (folder / "started").exists():
            continue
        seconds, cpu = _times(folder)
        rc = folder / "rc"
        code = rc.read_text().strip() if rc.exists() else "none (still running)"
        lines.append(f"{folder.name}: {seconds:.1f} s, {'?' if cpu is None else f'{cpu:.1f}'} CPU-s, exit {code}")
    return lines


def _processes_of(name: str | None, grace: float = 0.0) -> list[psutil.Process]:
    """The live processes of job ``name`` (None: of every job) after up to ``grace`` seconds."""
    end = time.monotonic() + grace
    while True:
        found = []
        for proc in psutil.process_iter():
            try:
                mark = proc.environ().get(MARK, "")
                if mark.startswith(f"{_session}:") and (name is None or mark == f"{_session}:{name}"):
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
    """End every job of the run and whatever it left; remove the folder (called once,
    by the pytest process that started the run, after its workers are done)."""
    with _lock:
        _queued.clear()
    _kill(_processes_of(None))
    shutil.rmtree(root(), ignore_errors=True)
