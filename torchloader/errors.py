"""The error a sample that cannot be loaded raises.

It subclasses ``RuntimeError`` and takes one message argument, so that
``torch.utils.data.DataLoader`` can re-raise it in the main process with its own
type when it happened in a worker (the worker's traceback is appended to the
message by torch).
"""

from __future__ import annotations

import errno
import os

__all__ = ["SampleLoadError"]

# errors about the machine, not the file: skipping would drop sample after sample
_MACHINE_ERRNOS = {errno.EMFILE, errno.ENFILE, errno.ENOMEM}


class SampleLoadError(RuntimeError):
    """A sample could not be read; the message names the index, the path and the cause.

    Attributes:
        index: the dataset index of the sample, when known.
        path: the file the sample comes from, when there is one.
        cause: ``"OSError: truncated"``: the underlying error, type and text.
        skippable: whether ``on_error="skip"`` may leave the sample out: True for a
            sample that could not be read; False for an error in a transform or
            a sample of the wrong type (which would recur for every sample), and
            for the machine running out of memory or file handles.

    Example:
        >>> err = SampleLoadError.from_exception(7, "img/7.png", OSError("truncated"))
        >>> str(err)
        "could not load sample 7 from 'img/7.png': OSError: truncated"
    """

    def __init__(
        self,
        message: str,
        *,
        index: int | None = None,
        path: str | None = None,
        cause: str | None = None,
        skippable: bool = True,
    ) -> None:
        super().__init__(message)
        self.index = index
        self.path = path
        self.cause = message if cause is None else cause
        self.skippable = skippable

    @classmethod
    def from_exception(
        cls,
        index: int,
        path: str | os.PathLike[str] | None,
        exc: BaseException,
        *,
        skippable: bool = True,
        hint: str = "",
    ) -> SampleLoadError:
        # repr: a non-UTF-8 name (surrogate escapes) stays printable and loggable
        where = f" from {os.fspath(path)!r}" if path is not None else ""
        cause = f"{type(exc).__name__}: {exc}"
        skippable = skippable and not _about_the_machine(exc)
        message = f"could not load sample {index}{where}: {cause}{hint if skippable else ''}"
        path = None if path is None else os.fspath(path)
        return cls(message, index=index, path=path, cause=cause, skippable=skippable)

    def __reduce__(self):  # keep the attributes across process boundaries
        return _rebuild, (self.args[0], self.index, self.path, self.cause, self.skippable)


def _about_the_machine(exc: BaseException) -> bool:
    return isinstance(exc, MemoryError) or (isinstance(exc, OSError) and exc.errno in _MACHINE_ERRNOS)


def _rebuild(
    message: str, index: int | None, path: str | None, cause: str | None = None, skippable: bool = True
) -> SampleLoadError:
    return SampleLoadError(message, index=index, path=path, cause=cause, skippable=skippable)
