"""``pack``: decode a data set once into ``.npy`` shards that later load without decoding.

Per-file loading is slow because every epoch opens and decodes every file again.
``pack`` reads each sample once (an image folder, a CSV of paths and labels, or a
folder of ``.npy`` files), resizes images to one size with :class:`Resize`, and
writes fixed-shape shards in parallel (blocks of samples per worker task, see
``_writer.py``). Images are stored ``H x W x C`` (so a shard slice is what a
decoder produces) and read back as ``C x H x W`` views. Every file is written
under a temporary name and moved into place; ``manifest.json`` comes last, so an
interrupted pack never loads as complete, and running the same pack again
finishes it.

``encoded=True`` stores each image file's bytes as they are instead (``_encoded.py``):
a folder of photos of every size, at about its own size on disk, decoded when read
(with a decode spec's crop: ``PackedDataset(dst, decode=RandomResizedCrop(224))``).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from torchloader._core.checks import check_int
from torchloader._core.files import atomic_file
from torchloader._core.units import format_bytes, parse_bytes
from torchloader.datasets._load_all import default_num_workers
from torchloader.error_log import check_on_error
from torchloader.packs._destination import check_destination, disk_errors, pack_lock
from torchloader.packs._encoded import HEADER_BYTES, write_encoded
from torchloader.packs._source import open_source
from torchloader.packs._writer import ShardWritten, Stored, probe, write_shards
from torchloader.packs.format import ENCODED_VERSION, MANIFEST, VERSION, Manifest, ShardInfo, sha256_of, write_sources
from torchloader.protocols import MapDataset
from torchloader.remote.urls import is_url

__all__ = ["PackSummary", "pack"]

_SHARD_FILE = re.compile(r"(shard-\d+\.npy(\.partial)?(\.compact)?|index\.npy)$")  # (index: encoded packs')


@dataclass
class PackSummary:
    """What a pack did."""

    samples: int
    bytes: int
    seconds: float
    skipped: list[dict[str, str]] = field(default_factory=list)
    already_packed: bool = False

    @property
    def samples_per_s(self) -> float:
        return self.samples / self.seconds if self.seconds else 0.0

    def __str__(self) -> str:
        if self.already_packed:
            return f"already packed: {self.samples} samples, {format_bytes(self.bytes)}"
        text = (
            f"packed {self.samples} samples, {format_bytes(self.bytes)} in "
            f"{self.seconds:.1f} s ({self.samples_per_s:.0f} samples/s)"
        )
        for item in self.skipped:
            text += f"\nskipped {item['path']}: {item['error']}"
        return text


def pack(
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    *,
    size: int | tuple[int, int] | None = None,
    crop: bool = False,
    mode: str = "RGB",
    shard_bytes: int | str = "1GiB",
    num_workers: int | None = None,
    on_error: str = "raise",
    overwrite: bool = False,
    progress: bool = True,
    encoded: bool = False,
    max_side: int | None = None,
    storage_options: dict[str, Any] | None = None,
) -> PackSummary:
    """Pack ``src`` into shards in ``dst``; see the module docstring.

    Args:
        src: an image folder (``root/<class>/<file>``), a ``.csv`` of ``path,label``,
            or a folder of ``.npy`` files.
        dst: the output folder.
        size: resize images to ``(height, width)`` (or a square); needed when the
            images differ in size.
        crop: keep the aspect ratio and cut the centre instead of stretching.
        mode: image channels: ``"RGB"``, ``"L"`` or ``"RGBA"``.
        shard_bytes: bytes per shard file (``"1GiB"``, ``256 * 2**20``).
        num_workers: processes (default: the usable cores; 0 packs in this process).
        on_error: ``"raise"`` stops at the first unreadable file; ``"skip"`` leaves
            it out and lists it in the summary and the manifest.
        overwrite: replace a different pack already in ``dst``.
        encoded: store each image file's bytes as they are, any sizes, decoded when
            read (``PackedDataset(dst, decode=..., reader=...)``, not ``size``/``mode``).
        max_side: with ``encoded``: shrink only the images whose longer side is over
            this, encoded again (``_encoded.py``).
        storage_options: fsspec's options for a ``dst`` URL (``s3://bucket/prefix``): the pack
            is written to a local staging folder, then uploaded (``remote/upload.py``).

    Raises:
        SampleLoadError: a file cannot be read (with ``on_error="raise"``).
        FileExistsError: ``dst`` holds a different pack and ``overwrite`` is False.

    Example:
        >>> pack("data/train", "data/train.packed", size=128)  # doctest: +SKIP
    """
    check_on_error(on_error)
    if num_workers is not None:
        num_workers = check_int("num_workers", num_workers)
    src, dst = os.fspath(src), os.fspath(dst)
    dataset, options = _open(src, size, crop, mode, encoded, max_side)
    options["shard_bytes"] = parse_bytes(shard_bytes)
    if is_url(dst) or storage_options is not None:
        given = dict(size=size, crop=crop, mode=mode, shard_bytes=shard_bytes, num_workers=num_workers)
        given |= options_of(on_error, encoded, max_side, progress)
        return _pack_to_url(src, dst, options, overwrite, storage_options, given)
    return _pack_into(dataset, dst, options, overwrite, (on_error, num_workers, progress))


def _pack_into(dataset: Any, dst: str, options: dict, overwrite: bool, how: tuple[str, Any, bool]) -> PackSummary:
    """``pack`` into the local folder ``dst``; ``how``: ``(on_error, num_workers, progress)``."""
    on_error, num_workers, progress = how
    check_destination(dst)
    os.makedirs(dst, exist_ok=True)
    with pack_lock(dst):  # another pack into dst: wait, then reuse or refuse what it made
        existing = _existing(dst, options, overwrite)
        if existing is not None:
            return existing
        start, write = time.perf_counter(), _pack_encoded if options.get("encoded") else _pack_decoded
        workers = default_num_workers() if num_workers is None else num_workers
        manifest = write(dataset, dst, options, on_error, workers, progress)
    seconds = time.perf_counter() - start
    total = sum(s.nbytes for s in manifest.shards)
    return PackSummary(manifest.count, total, seconds, manifest.skipped)


def options_of(on_error: str, encoded: bool, max_side: Any, progress: bool) -> dict[str, Any]:
    return {"on_error": on_error, "encoded": encoded, "max_side": max_side, "progress": progress}


def _pack_to_url(
    src: str, url: str, options: dict, overwrite: bool, storage_options: Any, local: dict[str, Any]
) -> PackSummary:
    """``pack`` into a local staging folder, then upload it to ``url`` (``remote/upload.py``)."""
    if not is_url(url):
        raise ValueError(f"storage_options apply to a URL destination (s3://...); '{url}' is a local folder")
    from torchloader.remote.upload import remote_pack_at, staging_dir, upload_pack

    old = remote_pack_at(url, options, overwrite, storage_options)
    if old is not None:
        return PackSummary(old.count, sum(s.nbytes for s in old.shards), 0.0, old.skipped, True)
    start, staging = time.perf_counter(), staging_dir(url)
    summary = pack(src, staging, overwrite=True, **local)
    upload_pack(staging, url, storage_options, local["progress"])
    shutil.rmtree(staging)
    with contextlib.suppress(OSError):  # the staging folder's parent, once no other pack is staged there
        os.rmdir(os.path.dirname(staging))
    return PackSummary(summary.samples, summary.bytes, time.perf_counter() - start, summary.skipped)


def _open(src: str, size: Any, crop: bool, mode: str, encoded: bool, max_side: Any) -> tuple[Any, dict[str, Any]]:
    """The source and the options that define the pack (``encoded``: the files as they are)."""
    if max_side is not None and not encoded:
        raise ValueError("max_side shrinks the images of an encoded pack (encoded=True); a raw pack has size=")
    if encoded and (size is not None or crop or mode != "RGB"):
        raise ValueError(
            "an encoded pack keeps the files as they are: leave size, crop and mode out, and crop "
            "while reading instead (PackedDataset(dst, decode=RandomResizedCrop(224)), reader=ImageReader(mode))"
        )
    dataset, options = open_source(src, size=size, crop=crop, mode=mode)
    if not encoded:
        return dataset, options
    if not dataset.images:
        raise ValueError(f"encoded=True stores image files; '{src}' holds arrays: pack them without it")
    max_side = None if max_side is None else check_int("max_side", max_side, minimum=1)
    return dataset, {"source": options["source"], "encoded": True, "max_side": max_side}  # (None: compared too)


def _existing(dst: str, options: dict[str, Any], overwrite: bool) -> PackSummary | None:
    if not os.path.exists(os.path.join(dst, MANIFEST)):
        return None
    if overwrite:  # even a manifest this version cannot read: --overwrite is its fix
        os.remove(os.path.join(dst, MANIFEST))  # from here on it no longer loads
        return None
    old = Manifest.read(dst)
    before = dict(old.options)
    if "shard_size" in before:  # the name of shard_bytes in packs of torchloader 0.1
        before.setdefault("shard_bytes", before.pop("shard_size"))
    differs = sorted(k for k in options if before.get(k) != options[k])
    if not differs:
        return PackSummary(old.count, sum(s.nbytes for s in old.shards), 0.0, old.skipped, True)
    raise FileExistsError(
        f"'{dst}' holds a different pack (differs in {', '.join(differs)}); pass "
        f"overwrite=True (--overwrite) to replace it, or choose another folder"
    )


def _pack_decoded(dataset: Any, dst: str, options: dict, on_error: str, workers: int, progress: bool) -> Manifest:
    stored = probe(dataset)
    options["layout"] = stored.layout
    with disk_errors(dst, len(dataset) * stored.row_bytes):
        shards = write_shards(dataset, dst, stored, options["shard_bytes"], on_error, workers, progress)
        return _finish(dst, dataset, shards, stored, options)


def _pack_encoded(dataset: Any, dst: str, options: dict, on_error: str, workers: int, progress: bool) -> Manifest:
    estimate = sum(os.path.getsize(dataset.path(i)) for i in range(len(dataset)))  # for the disk check
    with disk_errors(dst, estimate):
        written = write_encoded(
            dataset, dst, options["shard_bytes"], on_error, workers, progress, options.get("max_side")
        )
        sizes = [s.nbytes - HEADER_BYTES for s in written.shards if s.file is not None]
        if not sizes:
            skipped = [item for s in written.shards for item in s.skipped]
            first = f": {skipped[0]['path']}: {skipped[0]['error']}" if skipped else ""
            raise ValueError(f"no sample of the source could be read; nothing to pack{first}")
        index = _write_array(dst, "index.npy", written.index)
        encoded = {"index": index, "shard_sizes": sizes}
        return _finish(dst, dataset, written.shards, Stored((), "uint8", "encoded"), options, encoded)


def _finish(
    dst: str,
    dataset: MapDataset,
    shards: list[ShardWritten],
    stored: Stored,
    options: dict,
    encoded: dict[str, Any] | None = None,
) -> Manifest:
    infos, kept, skipped, position = [], [], [], 0
    for shard in shards:
        skipped += shard.skipped
        if shard.file is None:
            continue
        infos.append(ShardInfo(shard.file, position, position + len(shard.kept), shard.sha256, shard.nbytes))
        position += len(shard.kept)
        kept.append(shard.kept)
    order = np.concatenate(kept)  # the source index of every packed sample
    label_info = None
    if dataset.labels is not None:
        label_info = _write_array(dst, "labels.npy", np.asarray(dataset.labels[order], dtype=np.int64))
    sources = write_sources(dst, [dataset.path(int(i)) for i in order])
    _remove_stale(dst, {info.file for info in infos} | ({"index.npy"} if encoded is not None else set()))
    manifest = Manifest(
        position,
        list(stored.shape),
        stored.dtype,
        infos,
        dataset.classes,
        label_info,
        options,
        skipped,
        sources,
        version=VERSION if encoded is None else ENCODED_VERSION,
        encoded=encoded,
    )
    manifest.write(dst)  # last, atomically: only now does the folder load as a data set
    return manifest


def _remove_stale(dst: str, keep: set[str]) -> None:
    """Shard files of an earlier (interrupted or replaced) pack that this one did not write."""
    for name in os.listdir(dst):
        if _SHARD_FILE.match(name) and name not in keep:
            os.remove(os.path.join(dst, name))


def _write_array(dst: str, name: str, array: np.ndarray) -> dict[str, str]:
    path = os.path.join(dst, name)
    with atomic_file(path, "wb") as f:
        np.save(f, array, allow_pickle=False)
    return {"file": name, "sha256": sha256_of(path)}
