"""``PackedDataset``: a packed directory read through memory maps, no decoding.

Samples come back like ``PathDataset``'s (images as ``C x H x W`` uint8 views
of the stored ``H x W x C`` pixels, labels as 0-dim int64 tensors). ``gather``
reads a whole list of indices at once, shard by shard in storage order, and a
run of consecutive indices is one slice of one file: this is how
``ChunkedLoader`` fills a RAM chunk with sequential reads. An encoded pack
(``torchloader pack --encoded``) is decoded as it is read (``_encoded_reads.py``).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, default_collate, get_worker_info

from torchloader._core.indices import as_index_array, check_index, is_batch
from torchloader._core.layout import SampleLayout, stored_view
from torchloader._core.randomness import apply_transform, reading_batch
from torchloader._core.samples import split_sample
from torchloader.datasets._batch import _empty_batch, read_batch
from torchloader.datasets._dataloader import batch_dataloader, getitems
from torchloader.datasets._rows import in_shared_memory
from torchloader.packs._encoded_reads import EncodedSamples, check_reading
from torchloader.packs._maps import PackFiles
from torchloader.packs._remote_reads import RemoteReads
from torchloader.packs.format import Manifest
from torchloader.protocols import transforms_samples
from torchloader.remote.open import open_remote

__all__ = ["PackedDataset"]


class PackedDataset(RemoteReads, Dataset):
    """The samples of a directory written by ``torchloader pack``.

    Args:
        root: the packed directory.
        transform, target_transform: as for ``PathDataset`` (applied per sample
            in ``ds[i]``; ``gather`` returns the stored pixels).
        verify: also check every shard's SHA-256 at open (reads the whole pack
            once). Always checked: the manifest, the size of every file, the
            labels' checksum; see ``_maps.py`` for what is checked when. A pack at a
            URL checks every file's SHA-256 as it downloads it, with or without this.
        reader, decode: for an encoded pack: the ``ImageReader`` (default RGB) and
            the decode spec (``RandomResizedCrop(224)``, ``CenterCrop(224, resize=256)``;
            default none: each image at its own size), as for ``PathDataset``.
        cache_dir, cache_limit, storage_options, retries: for a pack at a URL
            (``"s3://bucket/train.packed"``; ``pip install 'torchloader[remote]'``):
            the local cache folder (default ``~/.cache/torchloader``), the bytes it may
            hold (``"200GiB"``; default no limit), fsspec's options, and the tries of
            each read (see ``remote/``; README: "Data in object storage").

    Raises:
        FileNotFoundError, ValueError: a missing, interrupted or foreign directory,
            a file whose size (or, with ``verify``, bytes) does not match the
            manifest, or a pack rebuilt since it was opened (each names the file
            and the fix).

    Example:
        >>> ds = PackedDataset("data/train.packed")  # doctest: +SKIP
        >>> x, y = ds[0]; xb, yb = ds.gather([5, 6, 7])  # doctest: +SKIP
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        *,
        transform: Callable[[torch.Tensor], Any] | None = None,
        target_transform: Callable[[torch.Tensor], Any] | None = None,
        verify: bool = False,
        reader: Any = None,
        decode: Any = None,
        cache_dir: str | os.PathLike[str] | None = None,
        cache_limit: int | str | None = None,
        storage_options: dict[str, Any] | None = None,
        retries: int = 5,
    ) -> None:
        self.root = os.fspath(root)
        self.remote = open_remote(self.root, cache_dir, cache_limit, storage_options, retries)
        self.manifest = Manifest.read(self.root) if self.remote is None else self.remote.manifest()
        encoded = self.manifest.encoded is not None
        self.reader, self.decode = check_reading(encoded, reader, decode)
        self._files = PackFiles(self.root, self.manifest, self.remote)
        self._files.check(contents=verify)
        self.transform = transform
        self.target_transform = target_transform
        self._stops = np.array([s.stop for s in self.manifest.shards], dtype=np.int64)
        self._images = self.manifest.options.get("layout") == "HWC"
        self._encoded = EncodedSamples(self) if encoded else None
        self._shards: list[np.ndarray] | None = None  # memory maps, opened on first use
        self._labels: np.ndarray | None = None
        self._layout: SampleLayout | None = None  # of one sample, for batches built in workers
        self._peeked: dict[int, np.ndarray] = {}  # a sample's row or bytes, read alone (peek)

    @property
    def classes(self) -> list[str] | None:
        return self.manifest.classes

    @property
    def labels(self) -> np.ndarray | None:
        """int64 labels of every sample (None for unlabelled data)."""
        self._open()
        return self._labels

    @property
    def declines(self) -> tuple[str, ...]:
        """Fast paths it has but does not offer (``protocols.offers``): an encoded pack
        has no stored rows to gather, its samples are decoded into their slots; a raw
        pack's rows are gathered, never read one by one into slots."""
        return ("gather", "gather_into") if self._encoded is not None else ("read_samples_into",)

    @property
    def sample_nbytes(self) -> int | None:
        if self._encoded is not None:
            return None  # the decoded size: of ds[0]
        x = int(np.prod(self.manifest.sample_shape)) * np.dtype(self.manifest.dtype).itemsize
        return x + (8 if self.manifest.labels is not None else 0)

    def __len__(self) -> int:
        return self.manifest.count

    def _open(self) -> list[np.ndarray]:
        if self._shards is None:
            self._shards, self._labels = self._files.map()
        else:
            self._files.recheck()  # at most once a second: a file truncated in place?
        return self._shards

    def __getitems__(self, indices: Any) -> list[Any]:
        """What a DataLoader with a batch sampler fetches (see ``_dataloader.getitems``)."""
        return getitems(self, indices)

    def __getitem__(self, index: Any) -> Any:
        """Sample ``index``; a list, array, tensor or slice gives the batch (``gather``)."""
        if is_batch(index):
            with reading_batch(index):
                return self._batch(as_index_array(index, len(self)))
        index = check_index(index, len(self))
        if self._encoded is not None:
            x = self._encoded.load(index)
        else:
            shards = self._open()
            k = int(np.searchsorted(self._stops, index, side="right"))
            row = self._peeked.pop(index, None)  # (peek: read alone)
            row = shards[k][index - self.manifest.shards[k].start] if row is None else row
            x = self._tensor(np.array(row), batch=False)
        if self.transform is not None:
            x = apply_transform(self.transform, x, index, self.root)  # see NOTE [ per-sample randomness ]
        if self._labels is None:
            return x
        y = torch.scalar_tensor(int(self._labels[index]), dtype=torch.int64)
        return x, y if self.target_transform is None else apply_transform(
            self.target_transform, y, index, self.root, target=True
        )

    def _batch(self, indices: np.ndarray) -> Any:
        if transforms_samples(self):
            return default_collate([self[i] for i in indices.tolist()])  # as ds[i] each
        if self._encoded is not None:
            return read_batch(self, indices)[0]  # each decoded into its slot of one buffer
        if not len(indices) or get_worker_info() is None:
            return self._gather(indices)
        if self._layout is None:  # one sample's layout, read once per process
            self._layout = SampleLayout.of(*split_sample(self[0]))
        if not in_shared_memory(self._layout.contiguous):  # the collate copies it anyway
            return self._gather(indices)
        # In a DataLoader worker: read into shared memory, so that sending the batch
        # to the main process copies nothing more (as torch's collate does).
        buffer = self._layout.allocate(len(indices), pin=False, shared=True)
        self.gather_into(indices, (buffer.x, buffer.y))  # its own layout: always written
        return buffer.x if buffer.y is None else (buffer.x, buffer.y)

    def dataloader(
        self,
        batch_size: int,
        *,
        shuffle: bool = True,
        seed: int = 0,
        drop_last: bool = False,
        **kwargs: Any,
    ) -> DataLoader:
        """A ``DataLoader`` whose batches are one ``gather`` each (no per-sample collate).

        As ``PathDataset.dataloader``: a batch sampler of whole batches, each read
        through ``__getitems__``; other keyword arguments pass through.
        """
        return batch_dataloader(self, batch_size, shuffle=shuffle, seed=seed, drop_last=drop_last, **kwargs)

    def gather(self, indices: Sequence[int] | np.ndarray) -> Any:
        """The samples at ``indices`` as one batch: one fancy-indexed read per shard.

        Rows come straight from the memory map into the batch in the requested
        order (measured here: faster than sorting the reads and scattering them).
        """
        return self._gather(as_index_array(indices, len(self)))

    def gather_into(self, indices: Sequence[int] | np.ndarray, out: tuple[torch.Tensor, torch.Tensor | None]) -> bool:
        """Write the rows at ``indices`` straight into ``out=(x, y)`` (tensors shaped like
        the batch, ``x`` laid out as the samples are, e.g. a ``ChunkedLoader`` buffer);
        False, with nothing written, where ``x``'s memory order or dtype does not allow it."""
        indices = as_index_array(indices, len(self))
        if self._encoded is not None:
            return False  # nothing stored to copy: read_samples_into decodes into slots
        dtype = torch.from_numpy(np.empty(0, self.manifest.dtype)).dtype
        target = stored_view(out[0], dtype, channels_last=self._images and out[0].ndim == 4)
        if target is None:
            return False
        self._read_rows(indices, target)
        if out[1] is not None and self._labels is not None:
            out[1].copy_(torch.from_numpy(np.asarray(self._labels[indices])))
        return True

    def read_samples_into(
        self, indices: Sequence[int], out: torch.Tensor, slots: Sequence[int] | None = None, *, skipped: Any = None
    ) -> torch.Tensor | None:
        """Decode the samples of an encoded pack at ``indices`` into ``out[slots[k]]``
        (as ``PathDataset.read_samples_into``; ``ChunkedLoader``'s way to fill a chunk
        from one); return their labels. A raw pack declines it: ``gather_into``."""
        if self._encoded is None:
            raise TypeError("a raw pack is read by gather_into (its rows as stored), not decoded into slots")
        return self._encoded.read_into(indices, out, slots)

    def _gather(self, indices: np.ndarray) -> Any:
        """``gather`` of indices already checked (int64 in ``[0, len)``)."""
        if self._encoded is not None:
            return self._batch(indices) if len(indices) else _empty_batch(self)
        x = self._tensor(self._read_rows(indices, None), batch=True)
        if self._labels is None:
            return x
        return x, torch.from_numpy(np.asarray(self._labels[indices]))

    def _read_rows(self, indices: np.ndarray, out: np.ndarray | None) -> np.ndarray:
        shards = self._open()
        which = np.searchsorted(self._stops, indices, side="right")
        kinds = np.unique(which).tolist()
        if len(kinds) == 1:
            local = indices - self.manifest.shards[kinds[0]].start
            lo, hi = (int(local.min()), int(local.max()) + 1) if len(local) else (0, 0)
            if hi - lo == len(local) and len(np.unique(local)) == len(local):
                # a contiguous range in any order (a ChunkedLoader chunk): one
                # sequential read of the range, then the rows in the asked order
                source, local = np.asarray(shards[kinds[0]][lo:hi]), local - lo
            else:  # plain fancy indexing: numpy's fastest read of scattered rows here
                source = shards[kinds[0]]
            if out is None:
                return source[local]
            # Straight from the map into out: no temporary batch, one copy, by
            # torch's threaded row gather (3x faster here than rows = ...; out[...] = rows).
            torch.index_select(torch.from_numpy(source), 0, torch.from_numpy(local), out=torch.from_numpy(out))
            return out
        if out is None:
            out = np.empty((len(indices), *self.manifest.sample_shape), dtype=self.manifest.dtype)
        for k in kinds:
            rows = np.flatnonzero(which == k)
            out[rows] = shards[k][indices[rows] - self.manifest.shards[k].start]
        return out

    def _tensor(self, array: np.ndarray, *, batch: bool) -> torch.Tensor:
        tensor = torch.from_numpy(array)
        if not self._images:
            return tensor
        return tensor.permute(0, 3, 1, 2) if batch else tensor.permute(2, 0, 1)

    def close(self) -> None:
        """Unmap the shards in this process (they are mapped again on the next read);
        a remote pack also stops prefetching."""
        self._shards = self._labels = None
        if self.remote is not None:
            self.remote.close()

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_shards"] = state["_labels"] = None  # each process maps the files itself
        del state["_peeked"]
        state["_files"] = PackFiles(self.root, self.manifest, self.remote)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state, _peeked={})

    def __repr__(self) -> str:
        m = self.manifest
        return (
            f"PackedDataset({self.root!r}, n={m.count}, shape={tuple(m.sample_shape)}, "
            f"dtype={m.dtype}, shards={len(m.shards)}, classes={len(m.classes or [])})"
        )
