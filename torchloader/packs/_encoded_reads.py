"""How a ``PackedDataset`` over an encoded pack reads: each sample's bytes decoded as its file would be.

A sample's bytes are a slice of its memory-mapped shard (``index.npy`` says where).
They are decoded by the dataset's ``ImageReader`` exactly as ``PathDataset`` decodes
the source file (libjpeg-turbo where it matches Pillow, Pillow otherwise: the same
pixels), or with its decode spec's crop straight into the sample's slot
(``readers/_cropped.py``), its random crop drawn from ``(seed, epoch, index)`` by the
same ``crop_seed`` as ``PathDataset``'s, so a pack and the folder it was made from give the
same crops. A batch is built as ``PathDataset`` builds one (``datasets/_batch.py``):
the first sample fixes the layout, the others are decoded into their slots.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from torchloader._core.layout import stored_view
from torchloader._core.samples import ShapeMismatch, describe
from torchloader.errors import SampleLoadError
from torchloader.packs.format import read_sources
from torchloader.readers._cropped import check_decode, crop_seed, decode_cropped_bytes, output_shape
from torchloader.readers.image import ImageReader

__all__ = ["EncodedSamples"]


class EncodedSamples:
    """Decoding the samples of an encoded pack; ``dataset`` gives its maps (``_open``),
    index, reader and decode spec."""

    def __init__(self, dataset: Any) -> None:
        self.dataset = dataset
        self._sources: list[str] | None = None  # read on the first error only

    def bytes_of(self, index: int) -> np.ndarray:
        """The file bytes of sample ``index``: a view of its shard's map."""
        ds = self.dataset
        shards = ds._open()
        peeked = ds._peeked.pop(index, None)  # (peek: read alone)
        if peeked is not None:
            return peeked
        k = int(np.searchsorted(ds._stops, index, side="right"))
        offset, length = ds._files.index[index, :2]
        return shards[k][offset : offset + length]

    def bytes_of_batch(self, indices: Sequence[int]) -> list[np.ndarray]:
        """``bytes_of`` of each of ``indices``: their shards and offsets looked up at once, each
        shard asked for once (a remote pack's: downloaded if need be, marked as read), and
        views of plain arrays (a ``np.memmap`` slice costs a subclass round trip each)."""
        ds, at = self.dataset, np.asarray(indices, dtype=np.int64)
        where = np.searchsorted(ds._stops, at, side="right").tolist()
        plain: dict[int, np.ndarray] = {}
        blamed = int(at[0]) if len(at) else 0  # the sample being read
        try:
            shards = ds._open()
            if ds._peeked:  # a sample read alone (peek): rare, and one at a time
                return [self.bytes_of(int(i)) for i in at]
            for k, i in zip(where, at.tolist()):
                if k not in plain:  # (a remote shard: downloaded now if it is not cached)
                    blamed = i
                    plain[k] = shards[k].view(np.ndarray)
        except SampleLoadError:
            raise
        except Exception as exc:  # named by the sample being read: its shard could not be had
            raise SampleLoadError.from_exception(blamed, self.source(blamed), exc) from exc
        return [plain[k][o : o + n] for k, (o, n) in zip(where, ds._files.index[at, :2].tolist())]

    def source(self, index: int) -> str:
        """The file sample ``index`` was packed from (for errors)."""
        if self._sources is None:
            try:
                self._sources = read_sources(self.dataset.root)
            except (OSError, ValueError):
                self._sources = []
        if index < len(self._sources):
            return f"{self._sources[index]} (in the pack {self.dataset.root})"
        return f"{self.dataset.root}, sample {index}"

    def load(self, index: int) -> torch.Tensor:
        """Sample ``index``'s image, ``C x H x W`` (cropped by the decode spec, if any)."""
        ds = self.dataset
        try:
            data = self.bytes_of(index)
            if ds.decode is None:
                return ds.reader.decode(data, f"{ds.root}[{index}]")
            out = np.empty(output_shape(ds.decode, ds.reader), np.uint8)
            decode_cropped_bytes(ds.reader, data, f"{ds.root}[{index}]", ds.decode, crop_seed(index), out)
            return torch.from_numpy(out).permute(2, 0, 1)
        except Exception as exc:
            raise SampleLoadError.from_exception(index, self.source(index), exc) from exc

    def read_into(
        self, indices: Sequence[int], out: torch.Tensor, slots: Sequence[int] | None = None
    ) -> torch.Tensor | None:
        """``PathDataset.read_samples_into`` for the pack: each sample decoded into its
        slot of ``out`` where that is exact, else loaded and copied; returns the labels."""
        ds = self.dataset
        slots = range(len(indices)) if slots is None else slots
        stored = stored_view(out, torch.uint8, channels_last=True)
        direct = stored is not None and ds.transform is None
        datas = self.bytes_of_batch(indices) if direct else [None] * len(indices)
        for slot, index, data in zip(slots, indices, datas):
            if direct and self._decode_into(index, stored[slot], data):
                continue
            x = ds[index] if ds.labels is None else ds[index][0]
            if not isinstance(x, torch.Tensor) or x.shape != out.shape[1:] or x.dtype != out.dtype:
                what = describe(x, None) if isinstance(x, torch.Tensor) else f"a {type(x).__name__}"
                raise ShapeMismatch(index, what)
            out[slot].copy_(x)
        if ds.labels is None:
            return None
        if ds.target_transform is None or not len(indices):
            return torch.from_numpy(np.asarray(ds.labels[np.asarray(indices, dtype=np.int64)]))
        return torch.stack([torch.as_tensor(ds[int(index)][1]) for index in indices])  # as ds[i] labels them

    def _decode_into(self, index: int, slot: np.ndarray, data: np.ndarray) -> bool:
        ds = self.dataset
        try:
            name = f"{ds.root}[{index}]"
            if ds.decode is None:
                return ds.reader.decode_into(data, name, slot)
            if slot.shape != output_shape(ds.decode, ds.reader):
                return False  # loaded as ds[i] is, and the mismatch reported
            decode_cropped_bytes(ds.reader, data, name, ds.decode, crop_seed(index), slot)
            return True
        except Exception as exc:
            raise SampleLoadError.from_exception(index, self.source(index), exc) from exc


def check_reading(encoded: bool, reader: Any, decode: Any) -> tuple[ImageReader | None, Any]:
    """The reader and decode spec of a ``PackedDataset``: for encoded packs only."""
    if not encoded:
        if reader is not None or decode is not None:
            raise ValueError(
                "reader= and decode= decode an encoded pack (torchloader pack --encoded); this pack holds "
                "decoded samples already: a transform= works on them"
            )
        return None, None
    if reader is not None and not isinstance(reader, ImageReader):
        raise TypeError(f"an encoded pack is decoded by an ImageReader (got {reader!r})")
    if decode is not None:
        decode = check_decode(decode, reader)
    return reader or ImageReader(), decode
