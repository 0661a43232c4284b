"""``pack``: decode a data set once into ``.npy`` shards that later load without decoding.

Per-file loading is slow because every epoch opens and decodes every file again.
``pack`` reads each sample once (an image folder, a CSV of paths and labels, or a
folder of ``.npy`` files), resizes images to one size with :class:`Resize`, and
writes fixed-shape shards in parallel, one shard per worker task. Images are
stored ``H x W x C`` (so a shard slice is what a decoder produces) and read back
as ``C x H x W`` views. Every file is written under a temporary name and moved
into place; ``manifest.json`` comes last, so an interrupted pack never loads as
complete, and running the same pack again finishes it.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from .chunking import format_bytes, parse_bytes
from .errors import SampleLoadError
from .load_all import default_num_workers
from .pack_source import open_source
from .shards import MANIFEST, Manifest, ShardInfo, sha256_of

__all__ = ["PackSummary", "pack"]


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
    shard_size: int | str = "1GiB",
    workers: int | None = None,
    on_error: str = "raise",
    overwrite: bool = False,
    progress: bool = True,
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
        shard_size: bytes per shard file.
        workers: processes (default: the usable cores; 0 packs in this process).
        on_error: ``"raise"`` stops at the first unreadable file; ``"skip"`` leaves
            it out and lists it in the summary and the manifest.
        overwrite: replace a different pack already in ``dst``.

    Example:
        >>> pack("data/train", "data/train.packed", size=128)  # doctest: +SKIP
    """
    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error must be 'raise' or 'skip' (got {on_error!r})")
    src, dst = os.fspath(src), os.fspath(dst)
    dataset, options = open_source(src, size=size, crop=crop, mode=mode)
    options["shard_size"] = parse_bytes(shard_size)
    existing = _existing(dst, options, overwrite)
    if existing is not None:
        return existing
    start = time.perf_counter()
    shape, dtype, layout = _probe(dataset)
    options["layout"] = layout
    per_shard = max(1, options["shard_size"] // max(1, int(np.prod(shape)) * np.dtype(dtype).itemsize))
    jobs = [(k, a, min(a + per_shard, len(dataset))) for k, a in enumerate(range(0, len(dataset), per_shard))]
    os.makedirs(dst, exist_ok=True)
    results = _run(dataset, jobs, dst, shape, dtype, layout, on_error, workers, progress)
    manifest = _finish(dst, dataset, results, shape, dtype, options)
    seconds = time.perf_counter() - start
    total = sum(s.nbytes for s in manifest.shards)
    return PackSummary(manifest.count, total, seconds, manifest.skipped)


def _existing(dst: str, options: dict[str, Any], overwrite: bool) -> PackSummary | None:
    if not os.path.exists(os.path.join(dst, MANIFEST)):
        return None
    old = Manifest.read(dst)
    same = {k: old.options.get(k) for k in options} == options
    if same and not overwrite:
        return PackSummary(old.count, sum(s.nbytes for s in old.shards), 0.0, old.skipped, True)
    if not overwrite:
        differs = sorted(k for k in options if old.options.get(k) != options[k])
        raise FileExistsError(
            f"'{dst}' holds a different pack (differs in {', '.join(differs)}); pass "
            f"overwrite=True (--overwrite) to replace it, or choose another folder"
        )
    os.remove(os.path.join(dst, MANIFEST))  # from here on it no longer loads
    return None


def _probe(dataset: Any) -> tuple[tuple[int, ...], str, str]:
    """Shape and dtype as stored, and the layout, from the first readable sample."""
    for index in range(len(dataset)):
        try:
            x = _sample(dataset, index)[0]
        except SampleLoadError:
            continue
        return tuple(x.shape), x.dtype.str, "HWC" if dataset.images else "as-is"
    raise ValueError("no sample of the source could be read; nothing to pack")


def _sample(dataset: Any, index: int) -> tuple[np.ndarray, int | None]:
    item = dataset[index]
    x, y = item if isinstance(item, tuple) else (item, None)
    x = x.permute(1, 2, 0) if dataset.images else x  # images: C x H x W view -> H x W x C
    return x.numpy(), None if y is None else int(y)


_dataset: Any = None  # the source, in each worker process (set once by _init)


def _init(dataset: Any) -> None:
    global _dataset
    _dataset = dataset


def _run(dataset, jobs, dst, shape, dtype, layout, on_error, workers, progress) -> list[dict]:
    workers = default_num_workers() if workers is None else workers
    tasks = [(k, a, b, dst, shape, dtype, on_error) for k, a, b in jobs]
    results = []
    with tqdm(total=len(dataset), unit="sample", desc="packing", disable=not progress) as bar:
        if workers == 0 or len(jobs) == 1:
            _init(dataset)
            outputs = map(_write_shard, tasks)
            for result in outputs:
                results.append(_check(result))
                bar.update(result["stop"] - result["start"])
            return results
        with mp.get_context().Pool(min(workers, len(jobs)), _init, (dataset,)) as pool:
            for result in pool.imap_unordered(_write_shard, tasks):
                results.append(_check(result))
                bar.update(result["stop"] - result["start"])
    return sorted(results, key=lambda r: r["shard"])


def _check(result: dict) -> dict:
    if "error" in result:
        raise SampleLoadError(result["error"])
    return result


def _write_shard(task: tuple) -> dict:
    k, start, stop, dst, shape, dtype, on_error = task
    out = np.empty((stop - start, *shape), dtype=dtype)
    labels, sources, skipped, n = [], [], [], 0
    for index in range(start, stop):
        try:
            x, y = _sample(_dataset, index)
            if x.shape != shape or x.dtype.str != dtype:
                fix = "pass size=... to resize" if _dataset.images else "arrays must share one shape and dtype"
                raise ValueError(f"{x.dtype} {x.shape} instead of {np.dtype(dtype)} {shape}; {fix}")
        except (SampleLoadError, ValueError) as exc:
            message = str(exc) if isinstance(exc, SampleLoadError) else f"sample {index} from '{_dataset.path(index)}' has {exc}"
            if on_error == "raise":
                return {"error": message, "start": start, "stop": stop}
            skipped.append({"path": _dataset.path(index), "error": message})
            continue
        out[n] = x
        labels.append(-1 if y is None else y)
        sources.append(_dataset.path(index))
        n += 1
    name = f"shard-{k:05d}.npy"
    path = os.path.join(dst, name)
    with open(path + ".partial", "wb") as f:
        np.save(f, out[:n], allow_pickle=False)
        f.flush()
        os.fsync(f.fileno())
    os.replace(path + ".partial", path)
    return {"shard": k, "file": name, "count": n, "labels": labels, "sources": sources,
            "skipped": skipped, "sha256": sha256_of(path), "nbytes": os.path.getsize(path),
            "start": start, "stop": stop}


def _finish(dst, dataset, results, shape, dtype, options) -> Manifest:
    shards, labels, sources, skipped, position = [], [], [], [], 0
    for r in results:
        skipped += r["skipped"]
        if r["count"] == 0:
            os.remove(os.path.join(dst, r["file"]))
            continue
        shards.append(ShardInfo(r["file"], position, position + r["count"], r["sha256"], r["nbytes"]))
        position += r["count"]
        labels += r["labels"]
        sources += r["sources"]
    label_info = None
    if dataset.labels is not None:
        label_info = _write_array(dst, "labels.npy", np.asarray(labels, dtype=np.int64))
    with open(os.path.join(dst, "sources.txt.partial"), "w", encoding="utf-8", errors="surrogateescape") as f:
        f.writelines(p + "\n" for p in sources)
    os.replace(os.path.join(dst, "sources.txt.partial"), os.path.join(dst, "sources.txt"))
    manifest = Manifest(position, list(shape), dtype, shards, dataset.classes, label_info, options, skipped)
    manifest.write(dst)  # last, atomically: only now does the folder load as a data set
    return manifest


def _write_array(dst: str, name: str, array: np.ndarray) -> dict[str, str]:
    path = os.path.join(dst, name)
    with open(path + ".partial", "wb") as f:
        np.save(f, array, allow_pickle=False)
    os.replace(path + ".partial", path)
    return {"file": name, "sha256": sha256_of(path)}
