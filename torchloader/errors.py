"""The error a sample that cannot be loaded raises.

It subclasses ``RuntimeError`` and takes one message argument, so that
``torch.utils.data.DataLoader`` can re-raise it in the main process with its own
type when it happened in a worker (the worker's traceback is appended to the
message by torch).
"""

from __future__ import annotations

import errno
import os
from collections.abc import Iterable

__all__ = ["SampleLoadError", "TransformError", "show_names"]

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
        return _rebuild, (type(self), self.args[0], self.index, self.path, self.cause, self.skippable)


class TransformError(SampleLoadError):
    """A sample's ``transform`` (or ``target_transform``) raised: the file was read
    fine, so this is never skipped by ``on_error="skip"`` and never blamed on the file.

    Example:
        >>> import torch
        >>> def to_pil_only(img): raise TypeError("img should be PIL Image")
        >>> image = torch.zeros(3, 4, 5, dtype=torch.uint8)
        >>> err = TransformError.of(to_pil_only, 3, "a/3.jpg", image, TypeError("img should be PIL Image"))
        >>> print(err)  # doctest: +NORMALIZE_WHITESPACE
        the transform to_pil_only failed on sample 3 (read from 'a/3.jpg'),
        given a torch.uint8 tensor of shape (3, 4, 5): TypeError: img should be PIL Image
    """

    @classmethod
    def of(
        cls,
        transform: object,
        index: int,
        path: str | os.PathLike[str] | None,
        value: object,
        exc: BaseException,
        *,
        what: str = "transform",
    ) -> TransformError:
        where = f" (read from {os.fspath(path)!r})" if path is not None else ""
        cause = f"{type(exc).__name__}: {exc}"
        message = f"the {what} {_name(transform)} failed on sample {index}{where}, given {_kind(value)}: {cause}"
        path = None if path is None else os.fspath(path)
        return cls(message, index=index, path=path, cause=cause, skippable=False)


def _name(function: object) -> str:
    name = getattr(function, "__qualname__", None) or type(function).__qualname__
    return name if isinstance(name, str) and "<lambda>" not in name else repr(function)


def _kind(value: object) -> str:
    shape, dtype = getattr(value, "shape", None), getattr(value, "dtype", None)
    if shape is not None and dtype is not None:
        return f"a {dtype} {type(value).__name__.lower()} of shape {tuple(shape)}"
    return f"a {type(value).__module__}.{type(value).__qualname__}"


def _about_the_machine(exc: BaseException) -> bool:
    return isinstance(exc, MemoryError) or (isinstance(exc, OSError) and exc.errno in _MACHINE_ERRNOS)


def _rebuild(
    cls: type[SampleLoadError],
    message: str,
    index: int | None,
    path: str | None,
    cause: str | None,
    skippable: bool,
) -> SampleLoadError:
    return cls(message, index=index, path=path, cause=cause, skippable=skippable)


def show_names(names: Iterable[str], limit: int = 5) -> str:
    """The first ``limit`` names for a message, and how many there are if there are more.

    Example:
        >>> show_names("abcdefg")
        'a, b, c, d, e, ... (7 in all)'
    """
    names = list(names)
    shown = ", ".join(names[:limit])
    return shown + (f", ... ({len(names)} in all)" if len(names) > limit else "")
