"""A map-style dataset that keeps only file paths and loads one file per item.

Load the array of paths first and read a file only when its sample is needed,
as a ``torch.utils.data.Dataset``. Paths live in one
NumPy bytes array and labels in an ``int64`` array, never in Python lists: a
forked worker that reads a list of a million ``str`` objects touches their
reference counts and so copies the pages they live on (the "copy-on-read"
problem); a NumPy array has no per-item objects to touch, and it pickles as one
buffer when workers are spawned.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from torchloader._core.indices import as_index_array, check_index, is_batch
from torchloader._core.layout import stored_view
from torchloader._core.randomness import apply_transform, reading_batch
from torchloader._core.samples import ShapeMismatch, describe
from torchloader._core.shared_arrays import share, unshare
from torchloader.datasets._batch import read_batch
from torchloader.datasets._dataloader import WholeBatchWithErrors, batch_dataloader, getitems
from torchloader.datasets._from_files import FromFiles
from torchloader.datasets._labels import encode_labels
from torchloader.datasets._paths import batch_files, encode_paths, has_urls
from torchloader.error_log import ErrorLog, SkippedSample, SkippedSlots, check_on_error, skip_limit
from torchloader.errors import SampleLoadError
from torchloader.protocols import offers
from torchloader.readers._cropped import check_decode, crop_seed, decode_cropped, output_shape
from torchloader.readers._read_ahead import reading
from torchloader.readers._tensor import to_tensor
from torchloader.readers.image import ImageReader
from torchloader.readers.suffix import Reader, SuffixReader
from torchloader.remote.files import options

__all__ = ["PathDataset"]

PathLike = str | os.PathLike[str]


class PathDataset(FromFiles, Dataset):
    """Samples read from files, one file per ``__getitem__``.

    Args:
        paths: one path per sample (any sequence of ``str``/``Path``).
        labels: one label per sample: integers, or class names (then ``classes``
            is their sorted set), or ``None`` for unlabelled data.
        reader: ``reader(path) -> Tensor | ndarray``; by default chosen by suffix
            (images to ``uint8`` ``C x H x W``, ``.npy``, ``.npz``, ``.pt``).
        transform: applied to the loaded tensor.
        decode: a crop applied while each image is decoded (``RandomResizedCrop(128)``,
            ``CenterCrop(128, resize=146)``): images of any size come out as samples of
            one size, in every fast path; ``reader`` is then an ``ImageReader`` (default
            ``ImageReader()``, RGB). Random crops are a function of ``(seed, epoch,
            index)`` under ``ds.dataloader()`` and ``ChunkedLoader``; elsewhere they
            draw from torch's global generator, as torchvision's transforms do.
        target_transform: applied to the label (an ``int64`` tensor).
        classes: class names, index = label, when ``labels`` are integers.
        on_error: ``"raise"`` (default): a file that cannot be read raises
            :class:`SampleLoadError` naming the index, the path and the cause.
            ``"skip"``: batches (``ds[indices]``, ``ds.dataloader()``,
            ``ChunkedLoader``) leave it out, one sample shorter, and list it in
            ``ds.errors``; the first is warned about. Transform errors still raise.
        max_skipped: with ``"skip"``, raise once more samples than this were left
            out: a fraction of the data set (default 0.1), a count, or None.
        storage_options: fsspec's options for paths that are URLs (``s3://...``; a
            batch's files are requested all at once: ``remote/files.py``).

    ``ds[i]`` returns ``(x, y)`` with ``y`` a 0-dim ``int64`` tensor, or ``x``
    alone without labels; a sample asked for alone always raises if it cannot be read.

    Example:
        >>> import numpy as np, tempfile, os
        >>> tmp = tempfile.TemporaryDirectory(); folder = tmp.name
        >>> for i in range(3):
        ...     np.save(os.path.join(folder, f"{i}.npy"), np.full((2, 2), i, np.uint8))
        >>> ds = PathDataset([os.path.join(folder, f"{i}.npy") for i in range(3)], [0, 1, 1])
        >>> x, y = ds[2]; tmp.cleanup()
        >>> x.tolist(), int(y)
        ([[2, 2], [2, 2]], 1)
    """

    def __init__(
        self,
        paths: Sequence[PathLike] | np.ndarray,
        labels: Sequence[Any] | np.ndarray | torch.Tensor | None = None,
        *,
        reader: Reader | None = None,
        transform: Callable[[torch.Tensor], Any] | None = None,
        target_transform: Callable[[torch.Tensor], Any] | None = None,
        decode: Any = None,
        classes: Sequence[str] | None = None,
        on_error: str = "raise",
        max_skipped: float | int | None = 0.1,
        storage_options: dict[str, Any] | None = None,
    ) -> None:
        self.on_error = check_on_error(on_error)
        self.paths = encode_paths(paths)
        self.storage_options = storage_options
        self._urls = has_urls(self.paths)
        # the samples on_error="skip" left out, in this process
        self.errors = ErrorLog(limit=skip_limit(max_skipped, len(self.paths)))
        self.labels: np.ndarray | None = None
        self.classes: list[str] | None = list(classes) if classes is not None else None
        if labels is not None:
            self.labels, found = encode_labels(labels, expected_len=len(self.paths))
            if found is not None:
                if classes is not None:
                    raise ValueError("labels are class names, so classes=... must not be given")
                self.classes = found
        self.reader = reader if reader is not None else SuffixReader()
        if not callable(self.reader):
            raise TypeError(f"reader must be callable (got {type(reader).__name__})")
        self.transform = transform
        self.target_transform = target_transform
        self.decode = check_decode(decode, reader) if decode is not None else None
        if decode is not None and reader is None:
            self.reader = ImageReader()

    @property
    def class_to_idx(self) -> dict[str, int] | None:
        """``{class name: label}``, as torchvision's ``ImageFolder`` has it."""
        if self.classes is None:
            return None
        return {name: i for i, name in enumerate(self.classes)}

    def __len__(self) -> int:
        return len(self.paths)

    def path(self, index: int) -> str:
        """The file of sample ``index``."""
        return os.fsdecode(self.paths[index])

    def __getitems__(self, indices: Any) -> list[Any]:
        """What a DataLoader with a batch sampler fetches (see ``_dataloader.getitems``); its
        files are read together, also where ``getitems`` reads them one by one."""
        with self._fetched(indices):
            return getitems(self, indices)

    def __getitem__(self, index: Any) -> Any:
        """Sample ``index`` as ``(x, y)`` (or ``x``); a list, array, tensor or slice
        of indices gives the whole batch, read straight into one buffer."""
        if isinstance(index, WholeBatchWithErrors):  # from ds.dataloader(): for its workers
            with reading_batch(index):
                return self.load_batch(index)
        if is_batch(index):
            with reading_batch(index):
                batch, skipped = self.load_batch(index)
            self.errors.record(skipped)
            return batch
        index = check_index(index, len(self))
        x = self._load(index, self.path(index))
        return x if self.labels is None else (x, self._label(index))

    def load_batch(self, indices: Any) -> tuple[Any, list[SkippedSample]]:
        """The batch ``ds[indices]`` and the samples left out of it, not yet recorded
        in ``ds.errors`` (what a DataLoader worker sends back to the main process)."""
        indices = as_index_array(indices, len(self))
        with self._fetched(indices):
            return read_batch(self, indices, skip=self.on_error == "skip")

    def _fetched(self, indices: Sequence[int] | np.ndarray) -> Any:
        return batch_files(self.paths, indices, self._urls, self.storage_options)

    def read_samples_into(
        self,
        indices: Sequence[int],
        out: torch.Tensor,
        slots: Sequence[int] | None = None,
        *,
        skipped: SkippedSlots | None = None,
    ) -> torch.Tensor | None:
        """Load the samples at ``indices`` into ``out[slots[k]]``; return their labels.

        ``out`` is a batch or RAM-chunk buffer (one slot per sample, each of the
        sample's shape and dtype); ``slots`` defaults to ``0, 1, ...``. JPEGs that
        fit are decoded by libjpeg-turbo straight into their slot when ``out`` is
        channels-last (``N x C x H x W`` over ``N x H x W x C`` memory); anything else
        is read as ``ds[i]`` would be and copied. Labels come back as one tensor
        (None without labels). Given a ``skipped`` list, a sample that cannot be
        read is appended to it as ``(slot, SkippedSample)`` instead, its slot left as is.

        Raises:
            SampleLoadError: a file could not be read (index, path and cause named).
            ShapeMismatch: a sample has another shape or dtype than ``out``'s slots.
        """
        with self._fetched(indices):
            return self._read_samples_into(indices, out, slots, skipped)

    def _read_samples_into(
        self, indices: Sequence[int], out: torch.Tensor, slots: Sequence[int] | None, skipped: SkippedSlots | None
    ) -> torch.Tensor | None:
        slots = range(len(indices)) if slots is None else slots
        stored = stored_view(out, torch.uint8, channels_last=True)
        into = self.decode is not None or offers(self.reader, "read_into")
        direct = stored is not None and self.transform is None and into
        for slot, index in zip(slots, indices):
            path = os.fsdecode(self.paths[index])
            reading(path)
            try:
                if direct and _decode_into(self._read_into, index, path, stored[slot]):  # type: ignore
                    continue
                x = self._load(index, path)
            except SampleLoadError as exc:
                if skipped is None or not exc.skippable:
                    raise
                skipped.append((slot, SkippedSample.of(exc, index)))
                continue
            if not isinstance(x, torch.Tensor) or x.shape != out.shape[1:] or x.dtype != out.dtype:
                raise ShapeMismatch(
                    index, describe(x, None) if isinstance(x, torch.Tensor) else f"a {type(x).__name__}"
                )
            out[slot].copy_(x)
        return self._labels_of(indices)

    def _labels_of(self, indices: Sequence[int]) -> torch.Tensor | None:
        if self.labels is None:
            return None
        if self.target_transform is None or not len(indices):
            return torch.from_numpy(self.labels[np.asarray(indices, dtype=np.int64)])
        return torch.stack([self._label(i) for i in indices])

    def dataloader(
        self,
        batch_size: int,
        *,
        shuffle: bool = True,
        seed: int = 0,
        drop_last: bool = False,
        **kwargs: Any,
    ) -> DataLoader:
        """A ``DataLoader`` that reads each batch straight into one buffer.

        A DataLoader with a batch sampler of whole batches (``_dataloader.batch_dataloader``):
        each worker builds whole batches as ``ds[indices]`` does (no per-sample
        collate; JPEGs decoded in place, batches channels-last), and sends back
        the samples ``on_error="skip"`` left out, for ``ds.errors``. Other keyword
        arguments (``num_workers``, ``pin_memory``, ``persistent_workers``, ...)
        pass through; the order is a function of ``(seed, epoch)``.

        Example:
            >>> import numpy as np, tempfile, os; tmp = tempfile.TemporaryDirectory(); folder = tmp.name
            >>> for i in range(5):
            ...     np.save(os.path.join(folder, f"{i}.npy"), np.full(3, i, np.uint8))
            >>> ds = PathDataset([os.path.join(folder, f"{i}.npy") for i in range(5)], [0] * 5)
            >>> [tuple(xb.shape) for xb, yb in ds.dataloader(2, shuffle=False)]
            [(2, 3), (2, 3), (1, 3)]
            >>> tmp.cleanup()
        """
        return batch_dataloader(
            self, batch_size, shuffle=shuffle, seed=seed, drop_last=drop_last, reports_skipped=True, **kwargs
        )

    def _read_into(self, index: int, path: str, slot: np.ndarray) -> bool:
        """Decode sample ``index`` straight into ``slot`` (``H x W x C``) where that is exact."""
        if self.decode is None:
            return self.reader.read_into(path, slot)  # type: ignore[attr-defined]
        if slot.shape != output_shape(self.decode, self.reader) or slot.dtype != np.uint8:
            return False  # read as ds[i] is, and the mismatch reported
        decode_cropped(self.reader, path, self.decode, crop_seed(index), slot)
        return True

    def _load(self, index: int, path: str) -> Any:
        try:
            with options(self.storage_options) if self._urls else contextlib.nullcontext():
                if self.decode is None:
                    x = to_tensor(self.reader(path))
                else:
                    out = np.empty(output_shape(self.decode, self.reader), np.uint8)
                    decode_cropped(self.reader, path, self.decode, crop_seed(index), out)
                    x = torch.from_numpy(out).permute(2, 0, 1)
        except Exception as exc:
            hint = _ALONE_HINT if self.on_error == "skip" else ""
            raise SampleLoadError.from_exception(index, path, exc, hint=hint) from exc
        if self.transform is None:
            return x
        return apply_transform(self.transform, x, index, path)  # see NOTE [ per-sample randomness ]

    def _label(self, index: int) -> Any:
        y = torch.scalar_tensor(int(self.labels[index]), dtype=torch.int64)  # type: ignore[index]
        if self.target_transform is None:
            return y
        return apply_transform(self.target_transform, y, index, self.path(index), target=True)

    def __getstate__(self) -> dict[str, Any]:
        # the paths and labels go to spawned workers through shared memory (_core/shared_arrays.py)
        state = {k: v for k, v in self.__dict__.items() if k != "_shared"}
        return share(state, self.__dict__.setdefault("_shared", {}))

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(unshare(state))

    def __repr__(self) -> str:
        labels = "None" if self.labels is None else f"{len(np.unique(self.labels))} values"
        classes = "" if self.classes is None else f", classes={len(self.classes)}"
        on_error = "" if self.on_error == "raise" else f", on_error={self.on_error!r}"
        decode = "" if self.decode is None else f", decode={self.decode!r}"
        return f"PathDataset(n={len(self)}, labels={labels}{classes}, reader={self.reader!r}{decode}{on_error})"


_ALONE_HINT = (
    "; on_error='skip' leaves such a sample out of its batch (in ds[indices], ds.dataloader() "
    "or a ChunkedLoader), but a sample asked for alone, as a DataLoader with batch_size=... "
    "does, cannot be left out: use ds.dataloader(batch_size, ...)"
)


def _decode_into(decode: Callable[[int, str, np.ndarray], bool], index: int, path: str, slot: np.ndarray) -> bool:
    try:
        return decode(index, path, slot)
    except Exception as exc:
        raise SampleLoadError.from_exception(index, path, exc) from exc
