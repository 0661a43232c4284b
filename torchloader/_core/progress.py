"""Progress bars: tqdm's, without its monitor thread.

tqdm starts a monitor thread with its first bar (a disabled one too) and keeps it for
the rest of the process; every 10 s it takes tqdm's locks. torchloader forks worker
processes while its bars are up, and a forked child keeps any lock that another thread
of its parent held at that moment. Its bars (``progress_bar``) start no such thread:
what the monitor does, lowering ``miniters`` after a long pause, matters for none of them.
"""

from __future__ import annotations

from tqdm.auto import tqdm

__all__ = ["progress_bar"]


class progress_bar(tqdm):
    """``tqdm.auto.tqdm`` that starts no monitor thread.

    Example:
        >>> import threading
        >>> with progress_bar(range(3), disable=True) as bar:
        ...     print(sum(bar), [t.name for t in threading.enumerate() if t.name == "tqdm_monitor"])
        3 []
    """

    monitor_interval = 0
