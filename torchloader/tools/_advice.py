"""What ``torchloader inspect`` recommends, as code that runs on the data set.

Each recommendation is a label plus, where one applies, a Python line and a
shell command that work on the inspected data as it is:

- images of more than one size are cropped as they decode (``decode=RandomResizedCrop``,
  square, the shorter median side rounded down to a multiple of 8, at most 224) and
  read through a plain ``DataLoader`` with workers: one size out, with the random crops
  and flips training wants, and nothing held in RAM; resizing once to the median size
  (``pack --size ... --crop``) is named as the alternative;
- unreadable files found while probing make the data go through
  ``torchloader pack --on-error skip`` first, which leaves them out (loading
  from the files would stop at the first one);
- the decoded data is preloaded when it takes at most half of the available RAM,
  else read in chunks (``ChunkedLoader``) with a quarter of it as the budget;
  images too big for RAM are packed first, since decoding bounds every epoch.
"""

from __future__ import annotations

import os
import shlex
from dataclasses import dataclass, field

from torchloader._core.units import format_bytes

__all__ = ["Advice", "Probe", "advise", "packed_copy"]

BATCH = 256  # the batch size the snippets use


@dataclass
class Probe:
    """What inspecting found, as the advice needs it."""

    path: str
    kind: str  # "images", "arrays" or "packed"
    source: str  # "folder" (class folders), "csv", "npy" (a flat folder) or "packed"
    samples: int
    uniform: bool  # every probed sample has one shape (images: one height and width)
    resize_to: tuple[int, int] | None  # the median height and width, for images
    unreadable: int
    decoded: int
    ram: int
    workers: int = 2  # DataLoader workers for the snippets (the usable cores, at most 8)


@dataclass
class Advice:
    label: str
    python: str = ""  # one line of Python, runnable as it is
    shell: str = ""  # a command to run before it ("" for none)
    reasons: list[str] = field(default_factory=list)


def packed_copy(path: str) -> str:
    """Where the recommended pack goes: next to the source, ``<source>-packed``
    (``<name>-packed`` for ``<name>.csv``)."""
    base = os.path.normpath(path)
    return (base[:-4] if base.lower().endswith(".csv") else base) + "-packed"


def advise(p: Probe) -> Advice:
    """The recommendation for what :class:`Probe` describes (see the module)."""
    fits = p.decoded <= p.ram // 2
    budget = format_bytes(p.ram // 4)
    if fits:
        why = f"decoded {format_bytes(p.decoded)} <= half of the available {format_bytes(p.ram)}"
    else:
        per_chunk = p.ram // 4 // 2 // max(1, p.decoded // max(p.samples, 1))
        why = f"too big for RAM; a quarter of the available RAM gives chunks of {per_chunk} samples"
    if p.kind == "packed" and p.resize_to is not None:  # an encoded pack of many sizes
        return _crops(p, "")
    if p.kind == "packed":
        return _load(f"PackedDataset({p.path!r})", fits, budget, "", [why])
    if p.samples == 0 or (p.kind == "arrays" and not p.uniform):
        return _unbatchable(p)
    pack = _pack_command(p)
    if p.unreadable:
        reason = f"{p.unreadable} unreadable file(s): pack --on-error skip leaves them out"
        advice = _load(f"PackedDataset({packed_copy(p.path)!r})", fits, budget, pack, [reason, why])
        advice.label = "pack first, then " + advice.label
        return advice
    if p.resize_to is not None:  # any RAM: the crops are read from the files as batches are built
        return _crops(p, pack)
    if p.kind == "images" and not fits:
        reason = "too big for RAM, and every epoch would decode every file again"
        advice = _load(f"PackedDataset({packed_copy(p.path)!r})", False, budget, pack, [reason])
        advice.label = "pack first, then " + advice.label
        return advice
    return _load(_dataset(p), fits, budget, "", [why])


def _crops(p: Probe, pack: str) -> Advice:
    """Images of many sizes: cropped as they decode, through a plain DataLoader."""
    size = max(8, min(224, min(p.resize_to or (8, 8)) // 8 * 8))
    options = f", decode=RandomResizedCrop({size})"
    kinds = {"csv": "PathDataset.from_csv", "packed": "PackedDataset"}
    dataset = f"{kinds.get(p.source, 'PathDataset.from_folder')}({p.path!r}{options})"
    line = f"loader = DataLoader({dataset}, {BATCH}, shuffle=True, num_workers={p.workers})"
    reasons = [
        f"images differ in size: each is cropped to {size} x {size} as it decodes, at random and flipped at "
        f"random (augmentation; to evaluate: decode=CenterCrop({size}, resize={size * 8 // 7}))",
    ]
    if p.source == "packed":
        label = f"crop as they decode: a DataLoader over PackedDataset(decode=RandomResizedCrop({size}))"
        return Advice(label, "from torch.utils.data import DataLoader; " + _with_imports(line), "", reasons)
    reasons += [
        f"or resize them once to the median size: {pack}",
        f"or pack the files as they are (no decoding; about their size on disk): "
        f"{shlex.join(['torchloader', 'pack', p.path, packed_copy(p.path), '--encoded'])}, then "
        f"PackedDataset({packed_copy(p.path)!r}, decode=RandomResizedCrop({size}))",
    ]
    label = f"crop as they decode: a DataLoader over PathDataset(decode=RandomResizedCrop({size}))"
    return Advice(label, "from torch.utils.data import DataLoader; " + _with_imports(line), "", reasons)


def _load(dataset: str, fits: bool, budget: str, shell: str, reasons: list[str]) -> Advice:
    if fits:
        line = f"ds = PreloadedDataset.from_dataset({dataset})"
        return Advice("preload (it fits in RAM)", _with_imports(line), shell, reasons)
    line = f"loader = ChunkedLoader({dataset}, {BATCH}, ram_budget={budget!r})"
    return Advice(f"chunked: ChunkedLoader, ram_budget={budget!r}", _with_imports(line), shell, reasons)


def _unbatchable(p: Probe) -> Advice:
    if p.samples == 0:
        return Advice("none: no probed file could be read", reasons=["see the unreadable files above"])
    return Advice(
        "none as they are: the arrays differ in shape; make them one shape first",
        reasons=["no loader batches samples of different shapes"],
    )


def _dataset(p: Probe) -> str:
    """A ``PathDataset`` over the files (of one size: see :func:`_crops` for the others)."""
    options = ""
    if p.source == "csv":
        return f"PathDataset.from_csv({p.path!r}{options})"
    if p.source == "npy":
        return f"PathDataset(sorted(str(f) for f in pathlib.Path({p.path!r}).glob('*.npy')))"
    if p.kind == "arrays":
        options = ", extensions=('.npy',)" + options
    return f"PathDataset.from_folder({p.path!r}{options})"


def _with_imports(line: str) -> str:
    names = [
        n
        for n in ("ChunkedLoader", "PackedDataset", "PathDataset", "PreloadedDataset", "RandomResizedCrop")
        if f"{n}(" in line or f"{n}." in line
    ]
    head = "import pathlib; " if "pathlib." in line else ""
    return f"{head}from torchloader import {', '.join(names)}; {line}"


def _pack_command(p: Probe) -> str:
    words = ["torchloader", "pack", p.path, packed_copy(p.path)]
    if p.resize_to is not None:
        words += ["--size", *map(str, p.resize_to), "--crop"]
    if p.unreadable:
        words += ["--on-error", "skip"]
    return shlex.join(words)
