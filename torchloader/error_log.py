"""``on_error="skip"``: samples left out of their batch, listed where the user can see them.

A sample whose file cannot be read is left out of its batch, never replaced by
another sample or by zeros: the batch is one shorter, and its neighbours keep
their places. Batch boundaries do not move, so every rank of a
``torch.distributed`` job still takes the same number of steps per epoch (a
batch whose every sample failed is an empty batch, not a missing one).

Each skipped sample becomes a :class:`SkippedSample` in an :class:`ErrorLog`
(``dataset.errors`` in the main process, whichever loader read it); the first
one is warned about, the others are only counted. Only reading errors are
skipped: a transform that raises, or a sample of another shape, is a mistake
that would recur for every sample, and still raises.
"""

from __future__ import annotations

import csv
import math
import os
import warnings
from collections.abc import Iterable, Iterator
from typing import Any, NamedTuple

__all__ = [
    "ErrorLog",
    "SkippedSample",
    "SkippedSampleWarning",
    "SkippedSlots",
    "check_on_error",
    "error_policy",
    "skip_limit",
]

ON_ERROR = ("raise", "skip")


def skip_limit(max_skipped: float | int | None, size: int) -> int | None:
    """``max_skipped`` (a fraction of ``size`` samples, a count, or None) as a count."""
    if max_skipped is None:
        return None
    if isinstance(max_skipped, bool) or not isinstance(max_skipped, (int, float)) or max_skipped < 0:
        raise ValueError(
            f"max_skipped must be a fraction of the data set (a float, e.g. 0.1), a count "
            f"(an int) or None for no limit (got {max_skipped!r})"
        )
    if isinstance(max_skipped, float):
        if max_skipped > 1:
            raise ValueError(f"max_skipped as a fraction must be at most 1.0 (got {max_skipped})")
        return math.ceil(max_skipped * size)
    return max_skipped


def check_on_error(on_error: str) -> str:
    if on_error not in ON_ERROR:
        raise ValueError(
            f"on_error must be 'raise' (stop at the first sample that cannot be read) or "
            f"'skip' (leave it out of its batch and list it) (got {on_error!r})"
        )
    return on_error


def error_policy(dataset: Any) -> tuple[bool, ErrorLog | None]:
    """Whether ``dataset`` skips (its ``on_error`` is ``"skip"``) and its ``errors``.

    A loader asks this of the dataset it reads: under plain ``Subset`` wrappers,
    as :func:`torchloader._core.subsets.looked_through` finds it (a plain subset's
    skipped samples are listed with the wrapped data set's indices), never of one
    it does not read, as a subset subclass's own ``__getitem__`` may raise for
    reasons of its own."""
    errors = getattr(dataset, "errors", None)
    return getattr(dataset, "on_error", None) == "skip", errors if isinstance(errors, ErrorLog) else None


class SkippedSample(NamedTuple):
    """A sample left out of its batch: its index, its file and why it failed."""

    index: int
    path: str | None
    cause: str

    @classmethod
    def of(cls, error: BaseException, index: int) -> SkippedSample:
        """The record of a :class:`SampleLoadError` raised for sample ``index`` (the
        error's own index, where it has one, is the wrapped data set's)."""
        own = getattr(error, "index", None)
        cause = getattr(error, "cause", None) or str(error)
        return cls(int(index if own is None else own), getattr(error, "path", None), cause)


SkippedSlots = list[tuple[int, SkippedSample]]  # (slot, record) of a chunk's samples left out


class SkippedSampleWarning(UserWarning):
    """Issued once per :class:`ErrorLog`, for its first skipped sample."""


class ErrorLog:
    """The samples ``on_error="skip"`` left out, each once, in the order first met.

    ``len(log)`` counts them, iterating gives :class:`SkippedSample` records (the
    first failure of each index; a loader's ``stats.samples_skipped`` counts every
    time one was left out, epoch after epoch), and :meth:`write` saves them as
    CSV. Under ``torch.distributed`` each rank logs what it read;
    :meth:`all_ranks` merges them (a collective: every rank calls it).

    ``limit``: recording more distinct samples than this raises
    :class:`SampleLoadError`: so many unreadable files is rarely bad data (a
    mount that went away, a wrong reader), and training on would quietly train
    on nothing.

    Example:
        >>> log = ErrorLog()
        >>> log.record([SkippedSample(7, "img/7.jpg", "OSError: truncated")], warn=False)
        >>> len(log), log[0].path
        (1, 'img/7.jpg')
    """

    def __init__(self, records: Iterable[SkippedSample] = (), *, limit: int | None = None) -> None:
        self._records: list[SkippedSample] = []
        self._seen: set[int] = set()
        self._warned = False
        self.limit = limit
        self._add(records)

    def _add(self, records: Iterable[SkippedSample]) -> None:
        for r in records:
            if r.index not in self._seen:
                self._seen.add(r.index)
                self._records.append(r)

    def record(
        self, skipped: Iterable[SkippedSample], *, warn: bool = True, where: str = "ds.errors", stacklevel: int = 3
    ) -> None:
        """Add ``skipped``; the log's first record is warned about (unless ``warn=False``)."""
        skipped = list(skipped)
        if not skipped:
            return
        self._add(skipped)
        if self.limit is not None and len(self) > self.limit:
            self._refuse()
        if warn and not self._warned:
            self._warned = True
            first = skipped[0]
            warnings.warn(
                f"skipped sample {first.index} ({first.path!r}): {first.cause}. "
                f"on_error='skip' leaves it out of its batch (the batch is shorter, never "
                f"refilled); later skipped samples are not warned about, they are listed "
                f"in {where}",
                SkippedSampleWarning,
                stacklevel=stacklevel,
            )

    def _refuse(self) -> None:
        from torchloader.errors import SampleLoadError

        first = self._records[0]
        raise SampleLoadError(
            f"{len(self)} samples could not be read, more than the {self.limit} that "
            f"max_skipped allows; so many usually means a setup problem (a mount that went "
            f"away, a wrong reader or suffix), not bad files. The first: sample "
            f"{first.index} ({first.path!r}): {first.cause}. If this many bad files are "
            f"expected, raise max_skipped (a fraction of the data set, a count, or None)",
            skippable=False,
        )

    def __len__(self) -> int:
        return len(self._records)

    def __iter__(self) -> Iterator[SkippedSample]:
        return iter(list(self._records))

    def __getitem__(self, k: int) -> SkippedSample:
        return self._records[k]

    def __eq__(self, other: object) -> bool:
        if isinstance(other, ErrorLog):
            return self._records == other._records
        return NotImplemented

    def clear(self) -> None:
        """Forget every record (the next one is warned about again)."""
        self._records.clear()
        self._seen.clear()
        self._warned = False

    def indices(self) -> list[int]:
        """The indices of the samples left out, in the order first met."""
        return [r.index for r in self._records]

    def all_ranks(self) -> ErrorLog:
        """Every rank's records, sorted by index, on every rank (``all_gather_object``).

        Without an initialized process group this is a copy of the log. Every rank
        must call it, as any collective.
        """
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
            return ErrorLog(sorted(self._records, key=_by_index))
        gathered: list[list[SkippedSample] | None] = [None] * dist.get_world_size()
        dist.all_gather_object(gathered, [tuple(r) for r in self._records])
        merged = [SkippedSample(*r) for part in gathered for r in part or ()]
        return ErrorLog(sorted(merged, key=_by_index))

    def write(self, path: str | os.PathLike[str]) -> None:
        """Save the records as CSV with the header ``index,path,cause``.

        A file name that is not valid UTF-8 is written with backslash escapes.
        """
        with open(path, "w", newline="", encoding="utf-8", errors="backslashreplace") as f:
            writer = csv.writer(f)
            writer.writerow(["index", "path", "cause"])
            for r in self._records:
                writer.writerow([r.index, "" if r.path is None else r.path, r.cause])

    def __repr__(self) -> str:
        return f"ErrorLog({len(self)} skipped)"


def _by_index(record: SkippedSample) -> int:
    return record.index
