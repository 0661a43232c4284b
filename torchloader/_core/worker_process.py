"""What a loading worker process does first, and how it notices its parent is gone.

# NOTE [ worker processes and signals ]
A forked worker inherits the training script's Python signal handlers.
Lightning, for one, installs a SIGTERM handler that only sets a flag for its
training loop; a worker that inherited it ignored the SIGTERM by which
``multiprocessing`` ends daemon processes at exit, so the script never exited
after ``Trainer.fit``. Workers therefore set every Python-level handler back
to the default at start, and ignore SIGINT (Ctrl-C is the main process's to
handle; it ends the workers).

A worker whose parent died (SIGKILL, a preempted job, torchrun ending a failed
rank) is reparented and would live on with its memory; like torch's DataLoader
workers, it checks its parent's pid while it waits for work and between the
runs of samples it reads, and exits within a second of the parent's death.
"""

from __future__ import annotations

import os
import signal

__all__ = ["ParentWatch", "reset_signal_handlers"]

PARENT_CHECK_SECONDS = 0.5  # a worker waiting for work looks at its parent this often


def reset_signal_handlers() -> None:
    """Python-level handlers back to the default, SIGINT ignored (see the NOTE above)."""
    for signum in signal.valid_signals():
        try:
            handler = signal.getsignal(signum)
        except (OSError, ValueError):
            continue
        if callable(handler) and signum != signal.SIGINT:
            signal.signal(signum, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


class ParentWatch:
    """Whether the process that started this one is still its parent."""

    def __init__(self) -> None:
        self.parent = os.getppid()

    def parent_alive(self) -> bool:
        return os.getppid() == self.parent
