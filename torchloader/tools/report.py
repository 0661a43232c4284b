"""``torchloader inspect``: how big a data set is, and which way to load it.

For an image folder, a CSV of paths, a folder of ``.npy`` files or a packed
directory: samples, classes and their balance, sample shapes and dtype, image
sizes (min/median/max height and width) and unreadable files, all from up to
``probe`` samples spread over the data set; bytes on disk and decoded, the RAM
available now, and a recommendation with code that runs on the data as it is
(see :mod:`torchloader.tools._advice`).

Scraped folders hold files that cannot be read: with ``on_error="skip"`` (the
default) each probed file that cannot be read is counted and listed (the first
few, with their error) and inspection goes on; ``"raise"`` stops at the first.
"""

from __future__ import annotations

import os
import statistics
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from torchloader._core.sizes import nbytes
from torchloader._core.units import format_bytes
from torchloader.datasets import _load_all
from torchloader.error_log import check_on_error
from torchloader.errors import SampleLoadError
from torchloader.packs._source import open_source
from torchloader.packs.dataset import PackedDataset
from torchloader.packs.format import MANIFEST
from torchloader.protocols import MapDataset
from torchloader.remote.urls import is_url
from torchloader.tools._advice import Probe, advise

__all__ = ["DataReport", "available_ram", "inspect_data"]

LISTED = 3  # unreadable files named in the report; all are counted


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
    # images: [min, median, max] over the probed samples, of "height" and "width"
    sizes: dict[str, list[int]] = field(default_factory=dict)
    probed: int = 0
    unreadable: int = 0  # probed files that could not be read
    errors: list[str] = field(default_factory=list)  # the first LISTED: "path: cause"
    python: str = ""  # the recommendation as one runnable line of Python
    shell: str = ""  # a command to run first ("" for none)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def __str__(self) -> str:
        counts = sorted(self.class_counts.values())
        balance = f", {counts[0]}-{counts[-1]} per class" if counts else ""
        lines = [
            f"{self.path}: {self.kind}",
            f"  samples        {self.samples}",
            f"  classes        {self.classes}{balance}",
            f"  sample shape   {' | '.join(str(tuple(s)) for s in self.shapes) or '?'} {self.dtype}",
        ]
        if self.sizes:
            h, w = self.sizes["height"], self.sizes["width"]
            lines.append(
                f"  image sizes    height {h[0]}/{h[1]}/{h[2]}, width {w[0]}/{w[1]}/{w[2]} "
                f"(min/median/max of {self.probed - self.unreadable} probed)"
            )
        lines += [
            f"  on disk        {format_bytes(self.bytes_on_disk)}",
            f"  decoded        {format_bytes(self.bytes_decoded)}",
            f"  RAM available  {format_bytes(self.available_ram)}",
        ]
        if self.unreadable:
            lines.append(f"  unreadable     {self.unreadable} of {self.probed} probed files (skipped):")
            lines += [f"    {error}" for error in self.errors]
            lines += ["    ..."] if self.unreadable > len(self.errors) else []
        lines.append(f"  recommendation {self.recommendation}")
        lines += [f"    shell:  {self.shell}"] if self.shell else []
        lines += [f"    python: {self.python}"] if self.python else []
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


def inspect_data(path: str | os.PathLike[str], *, probe: int = 32, on_error: str = "skip") -> DataReport:
    """Describe the data set at ``path`` and recommend a loading mode (see the module).

    ``on_error``: ``"skip"`` counts and lists the probed files that cannot be read
    and describes the others; ``"raise"`` raises :class:`SampleLoadError` for the first.
    """
    path, on_error = os.fspath(path), check_on_error(on_error)
    if is_url(path) or os.path.exists(os.path.join(path, MANIFEST)):  # (a URL: a pack there)
        return _packed(path)
    source, _ = open_source(path, size=None, crop=False, mode="keep")
    ds = source.dataset
    picks = np.unique(np.linspace(0, len(ds) - 1, min(probe, len(ds))).astype(int))
    xs, errors = _read(ds, picks, on_error)
    shapes = sorted({tuple(x.shape) for x in xs})
    per_sample = float(np.mean([nbytes(x) for x in xs])) if xs else 0.0
    disk = sum(os.path.getsize(ds.path(i)) for i in range(len(ds)))
    report = DataReport(
        path,
        "images" if source.images else "arrays",
        len(ds),
        0,
        _class_counts(ds.labels, ds.classes),
        [list(s) for s in shapes],
        str(xs[0].dtype).replace("torch.", "") if xs else "?",
        disk,
        int(per_sample * len(ds)),
        available_ram(),
        "",
        probed=len(picks),
        unreadable=len(errors),
        errors=errors[:LISTED],
    )
    if source.images and xs:
        report.sizes = {name: _spread([x.shape[-2 + k] for x in xs]) for k, name in enumerate(("height", "width"))}
    is_csv = os.path.isfile(path)
    return _advise(report, "csv" if is_csv else "folder" if ds.classes is not None else "npy", len(xs))


def _read(ds: MapDataset, picks: np.ndarray, on_error: str) -> tuple[list[Any], list[str]]:
    """The probed samples that could be read, and ``"path: cause"`` for the others."""
    xs, errors = [], []
    for i in picks:
        try:
            sample = ds[int(i)]
        except SampleLoadError as exc:
            if on_error == "raise" or not exc.skippable:
                raise
            errors.append(f"{exc.path}: {exc.cause}")
            continue
        xs.append(sample[0] if isinstance(sample, tuple) else sample)
    return xs, errors


def _spread(values: list[int]) -> list[int]:
    return [min(values), int(round(statistics.median(values))), max(values)]


def _packed(path: str) -> DataReport:
    ds = PackedDataset(path)
    disk = sum(s.nbytes for s in ds.manifest.shards)
    if ds.manifest.encoded is not None:
        return _encoded(path, ds, disk)
    shape = list(ds.manifest.sample_shape)
    if ds.manifest.options.get("layout") == "HWC":
        shape = [shape[2], shape[0], shape[1]]  # as samples come back: C x H x W
    decoded = (ds.sample_nbytes - (8 if ds.labels is not None else 0)) * len(ds)
    report = DataReport(
        path,
        "packed",
        len(ds),
        0,
        _class_counts(ds.labels, ds.classes),
        [shape],
        str(np.dtype(ds.manifest.dtype)),
        disk,
        decoded,
        available_ram(),
        "",
    )
    return _advise(report, "packed", len(ds))


def _encoded(path: str, ds: PackedDataset, disk: int) -> DataReport:
    """An encoded pack: the sizes its index states (every image's), decoded as RGB."""
    labels = ds.labels  # (reading them maps the pack, and its index)
    heights, widths = (ds._files.index[:, k].tolist() for k in (2, 3))
    shapes = sorted({(3, h, w) for h, w in zip(heights, widths)})
    report = DataReport(
        path,
        "packed",
        len(ds),
        0,
        _class_counts(labels, ds.classes),
        [list(s) for s in shapes[:3]],  # (of many: the spread below says more)
        "uint8",
        disk,
        3 * sum(h * w for h, w in zip(heights, widths)),
        available_ram(),
        "",
    )
    if heights:
        report.sizes = {"height": _spread(heights), "width": _spread(widths)}
    report.probed = len(ds)
    return _advise(report, "packed", len(ds), many_sizes=len(shapes) > 1)


def _class_counts(labels: np.ndarray | None, classes: list[str] | None) -> dict[str, int]:
    if labels is None:
        return {}
    counts = Counter(np.asarray(labels).tolist())
    names = classes or [str(k) for k in sorted(counts)]
    return {names[k] if classes else str(k): counts[k] for k in sorted(counts)}


def _advise(report: DataReport, source: str, readable: int, *, many_sizes: bool = False) -> DataReport:
    """Fill in the recommendation, its code and the reasons (``many_sizes``: an encoded
    pack's images differ in size)."""
    r = report
    r.classes = len(r.class_counts)
    sizes = {tuple(s[-2:]) for s in r.shapes} if r.kind == "images" else {tuple(s) for s in r.shapes}
    resize = None
    if (r.kind == "images" and len(sizes) > 1) or many_sizes:
        resize = (r.sizes["height"][1], r.sizes["width"][1])
    probe = Probe(
        r.path, r.kind, source, readable, len(sizes) <= 1, resize, r.unreadable, r.bytes_decoded, r.available_ram
    )
    probe.workers = _load_all.default_num_workers()
    advice = advise(probe)
    r.recommendation, r.python, r.shell, r.reasons = advice.label, advice.python, advice.shell, advice.reasons
    if r.class_counts and max(r.class_counts.values()) > 10 * min(r.class_counts.values()):
        r.reasons.append("classes are unbalanced by more than 10x")
    return r
