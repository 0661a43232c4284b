"""``torchloader inspect``: how big a data set is, and which way to load it.

For an image folder, a CSV of paths, a folder of ``.npy`` files or a packed
directory: samples, classes and their balance, sample shapes and dtype (from up
to ``probe`` samples spread over the data set), bytes on disk and decoded, the
RAM available now, and a recommendation:

- **preload** when the decoded data takes at most half of the available RAM;
- **pack first** when it does not and the files need decoding (images), since
  per-file decoding then bounds every epoch;
- **chunked** otherwise, with a ``ram_budget`` of a quarter of the available RAM.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from .chunking import format_bytes
from .pack_source import open_source
from .packed import PackedDataset
from .shards import MANIFEST
from .sizes import nbytes

__all__ = ["DataReport", "available_ram", "inspect_data"]


@dataclass
class DataReport:
    path: str
    kind: str  # "images", "arrays" or "packed"
    samples: int
    classes: int
    class_counts: dict[str, int]
    shapes: list[list[int]]  # distinct shapes seen among the probed samples
    dtype: str
    bytes_on_disk: int
    bytes_decoded: int
    available_ram: int
    recommendation: str
    reasons: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def __str__(self) -> str:
        counts = sorted(self.class_counts.values())
        balance = f", {counts[0]}-{counts[-1]} per class" if counts else ""
        lines = [
            f"{self.path}: {self.kind}",
            f"  samples        {self.samples}",
            f"  classes        {self.classes}{balance}",
            f"  sample shape   {' | '.join(str(tuple(s)) for s in self.shapes)} {self.dtype}",
            f"  on disk        {format_bytes(self.bytes_on_disk)}",
            f"  decoded        {format_bytes(self.bytes_decoded)}",
            f"  RAM available  {format_bytes(self.available_ram)}",
            f"  recommendation {self.recommendation}",
        ]
        return "\n".join(lines + [f"    {reason}" for reason in self.reasons])


def available_ram() -> int:
    """Bytes of RAM available now (``MemAvailable``), or the total where unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def inspect_data(path: str | os.PathLike[str], *, probe: int = 16) -> DataReport:
    """Describe the data set at ``path`` and recommend a loading mode (see the module)."""
    path = os.fspath(path)
    if os.path.exists(os.path.join(path, MANIFEST)):
        return _packed(path)
    source, _ = open_source(path, size=None, crop=False, mode="keep")
    ds = source.dataset
    picks = np.unique(np.linspace(0, len(ds) - 1, min(probe, len(ds))).astype(int))
    samples = [ds[int(i)] for i in picks]
    xs = [s[0] if isinstance(s, tuple) else s for s in samples]
    shapes = sorted({tuple(x.shape) for x in xs})
    per_sample = float(np.mean([nbytes(x) for x in xs]))
    disk = sum(os.path.getsize(ds.path(i)) for i in range(len(ds)))
    counts = _class_counts(ds.labels, ds.classes)
    return _report(path, "images" if source.images else "arrays", len(ds), counts,
                   [list(s) for s in shapes], str(xs[0].dtype).replace("torch.", ""),
                   disk, int(per_sample * len(ds)))


def _packed(path: str) -> DataReport:
    ds = PackedDataset(path)
    counts = _class_counts(ds.labels, ds.classes)
    disk = sum(s.nbytes for s in ds.manifest.shards)
    shape = list(ds.manifest.sample_shape)
    if ds.manifest.options.get("layout") == "HWC":
        shape = [shape[2], shape[0], shape[1]]  # as samples come back: C x H x W
    return _report(path, "packed", len(ds), counts, [shape], str(np.dtype(ds.manifest.dtype)),
                   disk, (ds.sample_nbytes - (8 if ds.labels is not None else 0)) * len(ds))


def _class_counts(labels: np.ndarray | None, classes: list[str] | None) -> dict[str, int]:
    if labels is None:
        return {}
    counts = Counter(np.asarray(labels).tolist())
    names = classes or [str(k) for k in sorted(counts)]
    return {names[k] if classes else str(k): counts[k] for k in sorted(counts)}


def _report(path, kind, n, counts, shapes, dtype, disk, decoded) -> DataReport:
    ram = available_ram()
    reasons = []
    if decoded <= ram // 2:
        advice = "preload: PreloadedDataset.from_dataset(...) (it fits in RAM)"
        reasons.append(f"decoded {format_bytes(decoded)} <= half of the available {format_bytes(ram)}")
    elif kind == "images":
        advice = "pack first: torchloader pack SRC DST --size H W, then PackedDataset + ChunkedLoader"
        reasons.append("too big for RAM, and every epoch would decode every file again")
    else:
        budget = ram // 4
        advice = f"chunked: ChunkedLoader(ds, batch_size, ram_budget={format_bytes(budget)!r})"
        reasons.append(f"too big for RAM; a quarter of the available RAM gives chunks of "
                       f"{budget // 2 // max(1, decoded // max(n, 1))} samples")
    if len(shapes) > 1:
        reasons.append("samples differ in shape: resize them (pack --size, or Resize) to batch them")
    if counts and max(counts.values()) > 10 * min(counts.values()):
        reasons.append("classes are unbalanced by more than 10x")
    return DataReport(path, kind, n, len(counts), counts, shapes, dtype, disk, decoded, ram, advice, reasons)
