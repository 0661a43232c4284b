"""Test isolation: what one test starts or changes in this process must not reach the next.

Seen before this fixture: a DataLoader worker a test killed on purpose raised
"DataLoader worker (pid N) is killed by signal" from torch's SIGCHLD handler
inside a later test, and a test that died mid-way left processes and a process
group that broke the tests after it. After each test: iterators are collected
(torch then forgets their workers), the signal handlers it changed are put back
(torch's SIGCHLD handler too, and torch re-installs it for the next DataLoader
that needs it), the child processes it left are ended (and the test fails), and
a process group it left is destroyed.
"""

from __future__ import annotations

import contextlib
import gc
import multiprocessing.util
import os
import signal
import sys
import time

import background
import psutil
import pytest
import stacks
import tqdm

# The framework jobs are scripts that tests run, not tests: --doctest-modules would import
# them (and Lightning, 5 s) in every pytest process.
collect_ignore = ["jobs"]

# multiprocessing's temporary folder of this pytest process, made now: forked children
# (DataLoader workers a test kills on purpose) then use it instead of making their
# own, which a killed process cannot remove; this process removes it at exit.
multiprocessing.util.get_temp_dir()

_WATCHED = tuple(
    getattr(signal, name) for name in ("SIGCHLD", "SIGTERM", "SIGINT", "SIGALRM", "SIGUSR1", "SIGUSR2", "SIGHUP")
)
_GRACE = 10.0  # seconds for a test's processes to end after it (workers shut down on collection)


# No tqdm monitor thread in the test processes (a bar of Lightning's, say, would start one
# for the rest of the process): the tests fork workers, and a forked child keeps any lock
# another thread held at that moment (torchloader's own bars start none: _core/progress.py).
tqdm.tqdm.monitor_interval = 0

# Every process of the run, and every process forked from one, writes its threads' stacks
# on SIGUSR2 (tests/stacks.py): what a hung test and its children were doing.
stacks.register()
_watchdog: stacks.Watchdog | None = None
_QUIET = 480.0  # seconds without a test ending: past pytest-timeout's 420 (pyproject.toml)


@pytest.hookimpl(hookwrapper=True, optionalhook=True)
def pytest_timeout_set_timer(item, settings):
    """pytest-timeout's alarm first asks the test's child processes for their stacks: a
    test that hangs waiting for a worker says where the worker was."""
    yield
    timed_out = signal.getsignal(signal.SIGALRM)
    if not callable(timed_out):
        return

    def handler(signum, frame):
        found = stacks.collect(_started(psutil.Process(), set()))
        if found:
            sys.stderr.write(f"the stacks of the test's child processes:\n{found}\n")
        timed_out(signum, frame)

    signal.signal(signal.SIGALRM, handler)


def pytest_configure(config):
    """The first process of an xdist run watches for a hang that pytest-timeout cannot end."""
    global _watchdog
    if _first_process(config) and getattr(config.option, "numprocesses", None):
        _watchdog = stacks.Watchdog(_QUIET, lambda text: _say(config, text))
        _watchdog.start()


def _say(config, text: str) -> None:
    writer = config.get_terminal_writer()
    writer.line(text)
    writer.flush()


def pytest_runtest_logreport(report):
    if _watchdog is not None:
        _watchdog.reported()


def pytest_collection_modifyitems(config, items):
    """Tests marked ``cuda`` run only where a CUDA GPU is present."""
    import torch  # here, not at the top: the first pytest process only hands out tests (xdist)

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


def pytest_collection_finish(session):
    """Start the jobs of the collected modules that run some early (see tests/background.py)."""
    modules = {getattr(item, "module", None) for item in session.items} - {None}
    for module in sorted(modules, key=lambda m: m.__name__):
        start = getattr(module, "start_early", None)
        if callable(start):
            start()


def pytest_runtest_logfinish(nodeid, location):
    """Start the background jobs that wait for a free slot (see tests/background.py)."""
    background.launch_queued()


def _first_process(config) -> bool:
    """The pytest process that started the run (not one of its xdist workers)."""
    return not hasattr(config, "workerinput")


def pytest_terminal_summary(terminalreporter, config):
    lines = background.summary() if _first_process(config) else []
    if lines:
        terminalreporter.section("background jobs")
        for line in lines:
            terminalreporter.write_line(line)


def pytest_unconfigure(config):
    if _watchdog is not None:
        _watchdog.done.set()
    if _first_process(config):  # after the workers (and the summary)
        background.stop_all()


@pytest.fixture
def turbo_calls(monkeypatch):
    """The colour spaces of the simplejpeg.decode_jpeg calls the readers make."""
    import types

    from torchloader.readers import image as readers

    if readers.simplejpeg is None:
        pytest.skip("needs simplejpeg")
    calls, simplejpeg = [], readers.simplejpeg

    def decode_jpeg(data, **kwargs):
        calls.append(kwargs.get("colorspace"))
        return simplejpeg.decode_jpeg(data, **kwargs)

    spy = types.SimpleNamespace(decode_jpeg_header=simplejpeg.decode_jpeg_header, decode_jpeg=decode_jpeg)
    monkeypatch.setattr(readers, "simplejpeg", spy)
    return calls


@pytest.fixture(autouse=True)
def isolated():
    handlers = {s: signal.getsignal(s) for s in _WATCHED}
    import torch.distributed as dist
    from torch.utils.data._utils import signal_handling

    sigchld_set = signal_handling._SIGCHLD_handler_set
    me = psutil.Process()
    before = {p.pid for p in _descendants(me)}
    yield
    if signal.getsignal(signal.SIGCHLD) is not handlers[signal.SIGCHLD] or _started(me, before):
        gc.collect()  # DataLoader iterators of the test: collected, torch forgets their workers
    for signum, handler in handlers.items():
        if signal.getsignal(signum) is not handler:
            signal.signal(signum, signal.SIG_DFL if handler is None else handler)
    signal_handling._SIGCHLD_handler_set = sigchld_set
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
        pytest.fail("the test left a torch.distributed process group initialised")
    left = _left_behind(me, before)
    if left:
        pytest.fail(f"the test left processes running: {left}")


def _left_behind(me: psutil.Process, before: set[int]) -> list[str]:
    """Processes started during the test still alive after the grace period (then killed)."""
    end = time.monotonic() + _GRACE
    while True:
        alive = _started(me, before)
        if not alive or time.monotonic() > end:
            break
        time.sleep(0.05)
    described = []
    for proc in alive:
        try:
            described.append(f"pid {proc.pid} {proc.name()!r}")
            proc.kill()
        except psutil.Error:
            pass
    return described


def _started(me: psutil.Process, before: set[int]) -> list[psutil.Process]:
    """This process's descendants that the test started and that still run (jobs aside)."""
    return [p for p in _descendants(me) if p.pid not in before and _running(p)]


def _descendants(me: psutil.Process) -> list[psutil.Process]:
    """``me.children(recursive=True)``, read from each thread's ``/proc/PID/task/TID/children``
    (as torchloader.memory walks the tree) where the kernel has it: 0.1 ms instead of psutil's
    2.5 ms scan of every process, which ran three times per test (about 13 s of CPU time)."""
    from torchloader.tools.memory import _children  # here: the first pytest process imports no torch

    if not os.path.exists(f"/proc/{me.pid}/task/{me.pid}/children"):  # not Linux, or an old kernel
        return me.children(recursive=True)
    pids, todo = [], [me.pid]
    while todo:
        kids = _children(todo.pop())  # [] for a process that ended meanwhile
        pids += kids
        todo += kids
    found = []
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            found.append(psutil.Process(pid))
    return found


_SERVICES = ("multiprocessing.resource_tracker", "multiprocessing.forkserver")  # one per interpreter, by design


def _running(proc: psutil.Process) -> bool:
    try:
        if proc.status() == psutil.STATUS_ZOMBIE:
            return False
        return not any(service in part for part in proc.cmdline() for service in _SERVICES)
    except psutil.Error:
        return False
