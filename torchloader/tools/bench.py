"""``torchloader bench``: every way of loading one data set, timed side by side here.

Which mode and how many workers are fastest depends on the machine (cores,
decoder, disk, page cache) as much as on the data, so the answer is measured,
not guessed: each mode runs one warm-up epoch (workers started, files in the
page cache) and then ``epochs`` timed epochs of shuffled batches, on the same
data in the same run. The table gives samples/s (median epoch), the ratio to
the in-RAM gather bound and to a plain per-sample ``DataLoader`` with the same
workers, and the peak memory.

The gather bound is a bare ``torch.index_select`` loop over up to 256 MiB of
decoded samples (at least 2,048) in RAM, into one reused batch buffer: the
least work any loader does per batch, so no loader can beat it. It is taken
after ``BOUND_WARMUP`` untimed epochs (the first calls in a process pay for page
faults and lazy set-up: measured 100x slower) as the best of ``BOUND_RUNS`` timed
epochs, as its row says. A row above 1.00x of it is a measurement error (a busy
machine, an epoch too short to time) and is marked ``!`` with a footnote.

Peak memory is the highest PSS (see :mod:`torchloader.tools.memory`) of this process
and all its children (the workers) while the loader is built and warmed up, and
once after its timed epochs, minus their PSS just before the loader was built:
what the loader adds above the process's starting point, its workers, buffers and
(preload) the data set in RAM included. Page cache counts only where a loader
maps files (packed shards); memory that earlier rows left allocated is part of
the starting point.

Example:
    >>> results = bench("data/train", modes=["path"], num_workers=[0])  # doctest: +SKIP
    >>> print(format_table(results))  # doctest: +SKIP
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Subset

from torchloader._core.checks import check_int
from torchloader._core.layout import storage_order
from torchloader._core.samples import split_sample
from torchloader._core.sizes import nbytes
from torchloader._core.units import format_bytes, parse_bytes
from torchloader.chunked.loader import ChunkedLoader
from torchloader.datasets.preloaded import PreloadedDataset
from torchloader.packs.dataset import PackedDataset
from torchloader.protocols import MapDataset
from torchloader.tools._bench_data import download_rate, open_for_bench
from torchloader.tools._plot import plot
from torchloader.tools.memory import PeakMemory
from torchloader.tools.report import available_ram

__all__ = [
    "BOUND",
    "BOUND_RUNS",
    "BOUND_WARMUP",
    "Epochs",
    "MODES",
    "Measurement",
    "OVER_BOUND",
    "bench",
    "format_table",
    "gather_bound",
    "open_for_bench",
    "plot",
    "time_epochs",
]

MODES = {
    "dataloader": "DataLoader({ds}), per-sample collate",
    "path": "PathDataset.dataloader()",
    "packed": "PackedDataset.dataloader()",
    "chunked": "ChunkedLoader({ds}), processes",
    "chunked-threads": "ChunkedLoader({ds}), threads",
    "preload": "PreloadedDataset.dataloader()",
}
BOUND = "in-RAM gather bound (index_select)"
BOUND_SAMPLES = 2048
BOUND_BYTES = 256 * 2**20
BOUND_WARMUP = 2  # untimed epochs before the bound's timed ones
BOUND_RUNS = 5  # the bound is the best of this many timed epochs
OVER_BOUND = (
    "! faster than the in-RAM gather bound, which no loader can beat: a measurement error "
    "(a busy machine, or epochs too short to time: more --epochs or samples)"
)


@dataclass
class Measurement:
    """One row: a mode with a number of workers (None where workers do not apply)."""

    name: str
    mode: str
    workers: int | None
    samples_per_s: float | None = None
    memory_bytes: int | None = None
    skipped: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class Epochs:
    """An iterable whose every ``iter`` is one new epoch of ``batches(epoch)``."""

    def __init__(self, batches: Callable[[int], Iterable[Any]]) -> None:
        self.batches = batches
        self.epoch = 0

    def __iter__(self):
        self.epoch += 1
        return iter(self.batches(self.epoch))


def time_epochs(
    make: Callable[[], Iterable[Any]], samples: int, *, epochs: int = 1, warmup: int = 1
) -> tuple[float, int | None]:
    """Samples/s (median of ``epochs`` timed epochs after ``warmup``) and peak memory.

    ``make()`` builds the loader inside the measurement, so its workers and
    buffers count; each ``iter(loader)`` must be one epoch. Memory is the peak
    of the process tree above its value before ``make()`` (None where it cannot
    be read), sampled while the loader is built and warmed up, and once after the
    timed epochs (``warmup=0``: building only):
    reading PSS walks every mapped page (milliseconds for a large process), so
    sampling while timing would slow what is timed.
    """
    loader: Any = None
    try:
        with PeakMemory() as memory:
            loader = make()
            for _ in range(warmup):
                for _ in loader:
                    pass
        times = []
        for _ in range(epochs):
            start = time.perf_counter()
            for _ in loader:
                pass
            times.append(time.perf_counter() - start)
        memory.sample()
    finally:
        getattr(loader, "close", lambda: None)()
        del loader
    return samples / statistics.median(times), memory.above_baseline


def _loader(
    mode: str, ds: MapDataset, workers: int, batch_size: int, budget: int, preloaded: Any
) -> Callable[[], Iterable[Any]]:
    persistent = workers > 0
    if mode == "dataloader":
        return lambda: DataLoader(
            ds, batch_size=batch_size, shuffle=True, num_workers=workers, persistent_workers=persistent
        )
    if mode == "preload":  # loaded inside the measurement: the data in RAM is its memory
        return lambda: preloaded().dataloader(batch_size, num_workers=workers, persistent_workers=persistent)
    if mode in ("path", "packed"):
        return lambda: ds.dataloader(batch_size, num_workers=workers, persistent_workers=persistent)
    kind = "thread" if mode == "chunked-threads" else "process"
    return lambda: ChunkedLoader(ds, batch_size, ram_budget=budget, num_workers=workers, worker_type=kind)


def _applies(mode: str, ds: MapDataset, workers: int) -> str | None:
    """Why ``mode`` does not apply here, or None."""
    packed = isinstance(ds, PackedDataset)
    if mode == "path" and packed:
        return "the data is packed: see packed"
    if mode == "packed" and not packed:
        return "not a packed directory (torchloader pack SRC DST, then bench DST)"
    if mode == "chunked-threads" and workers == 0:
        return "threads need workers > 0"
    if mode == "preload" and workers > 0:
        return "in RAM: workers only add copies (use 0)"
    if mode == "preload" and getattr(getattr(ds, "decode", None), "random", False):
        return "random crops: new ones each epoch, nothing to load once"
    if mode == "preload":
        needed = len(ds) * nbytes(split_sample(ds[0])[0])
        if needed > available_ram() // 2:
            return f"needs {format_bytes(needed)}, more than half the available RAM"
    return None


def bench(
    path: str,
    *,
    modes: Sequence[str] | None = None,
    num_workers: Sequence[int] = (0, 2),
    batch_size: int = 256,
    epochs: int = 1,
    ram_budget: str | int = "256MiB",
    limit: int | None = None,
    progress: bool = True,
    crop: int | None = None,
) -> list[Measurement]:
    """Time each of ``modes`` (default: all of :data:`MODES`) with each of ``num_workers``;
    ``crop``: images decoded with ``RandomResizedCrop(crop)`` (see :func:`open_for_bench`)."""
    modes = list(MODES) if modes is None else list(modes)
    unknown = [m for m in modes if m not in MODES]
    if unknown:
        raise ValueError(f"unknown mode(s) {unknown}; choose from {list(MODES)}")
    with tempfile.TemporaryDirectory(prefix="torchloader-bench-cache-") as cache:  # a URL's: cold
        ds = open_for_bench(path, limit=limit, crop=crop, cache_dir=cache)
        network = [_network(ds)] if getattr(ds, "remote", None) is not None else []
        return network + _run(ds, modes, num_workers, batch_size, epochs, ram_budget, progress)


def _network(ds: Any) -> Measurement:
    samples, nbytes = download_rate(ds)
    name = f"network: the pack downloaded into a cold cache, {format_bytes(int(nbytes))}/s"
    return Measurement(name, "network", None, samples)


def _run(
    ds: Any, modes: list[str], num_workers: Sequence[int], batch_size: int, epochs: int, ram_budget: Any, progress: bool
) -> list[Measurement]:
    n, budget, name = len(ds), parse_bytes(ram_budget), type(ds).__name__
    cache: dict[str, PreloadedDataset] = {}

    def preloaded() -> PreloadedDataset:
        if "all" not in cache:
            cache["all"] = PreloadedDataset.from_dataset(ds, progress=False)
        return cache["all"]

    counts = [check_int("num_workers", w) for w in num_workers]
    plan = [(m, w) for m in modes for w in counts]
    from torchloader._core.progress import progress_bar

    results = [_bound(ds, batch_size, epochs)]
    with progress_bar(plan, desc="torchloader bench", unit="run", disable=not progress) as runs:
        for mode, w in runs:
            runs.set_postfix_str(f"{mode}, {w} workers")
            row = Measurement(f"{MODES[mode].format(ds=name)}, {w} workers", mode, w)
            row.skipped = _applies(mode, ds, w)
            if row.skipped is None:
                make = _loader(mode, ds, w, batch_size, budget, preloaded)
                row.samples_per_s, row.memory_bytes = time_epochs(make, n, epochs=epochs)
            results.append(row)
    return results


def _bound(ds: MapDataset, batch_size: int, epochs: int) -> Measurement:
    # Enough samples that the gather runs from RAM, not from the CPU caches.
    count = min(len(ds), max(BOUND_SAMPLES, BOUND_BYTES // max(1, nbytes(split_sample(ds[0])[0]))))
    picks = np.linspace(0, len(ds) - 1, count).astype(np.int64)
    sample = PreloadedDataset.from_dataset(Subset(ds, picks.tolist()), progress=False)
    rate = gather_bound(sample.x, batch_size, min_epochs=BOUND_RUNS, warmup=BOUND_WARMUP)
    name = f"{BOUND[:-1]}, best of {BOUND_RUNS} epochs after {BOUND_WARMUP} warm-up epochs)"
    return Measurement(name, "bound", None, rate)


def gather_bound(
    x: torch.Tensor,
    batch_size: int,
    *,
    seconds: float = 0.0,
    min_epochs: int = BOUND_RUNS,
    warmup: int = BOUND_WARMUP,
    clock: Callable[[], float] = time.perf_counter,
) -> float:
    """Samples/s of a bare ``index_select`` loop over ``x`` in RAM, shuffled.

    A limit, so the best epoch, not the median: of at least ``min_epochs`` (and
    as many as fill ``seconds``) timed by ``clock``, after ``warmup`` untimed ones.
    Rows are gathered as stored (plain memory copies) into one reused buffer, so
    no epoch pays for fresh pages.
    """
    x = x.permute(storage_order(x) or list(range(x.ndim)))
    out = torch.empty((min(batch_size, len(x)), *x.shape[1:]), dtype=x.dtype)

    def epoch() -> None:
        for index in torch.randperm(len(x)).split(batch_size):
            torch.index_select(x, 0, index, out=out[: len(index)])

    for _ in range(warmup):
        epoch()
    best, spent, done = 0.0, 0.0, 0
    while spent < seconds or done < min_epochs:
        start = clock()
        epoch()
        took = max(clock() - start, 1e-9)
        best, spent, done = max(best, len(x) / took), spent + took, done + 1
    return best


def format_table(
    results: Sequence[Measurement], *, baseline: str = "dataloader", baseline_name: str = "DataLoader"
) -> str:
    """A Markdown table with ratios to the bound and to the ``baseline`` mode's
    rows (the plain DataLoader) with the same number of workers."""
    bound = next((r.samples_per_s for r in results if r.mode == "bound"), None)
    plain = {r.workers: r.samples_per_s for r in results if r.mode == baseline and r.samples_per_s}
    lines = [
        f"| mode | samples/s | vs bound | vs {baseline_name}, same workers | peak memory |",
        "|---|---|---|---|---|",
    ]
    skipped: dict[str, str] = {}
    over = False
    for r in results:
        if r.skipped:
            skipped.setdefault(f"{r.mode}: {r.skipped}", r.name)
            continue
        vs_bound = f"{r.samples_per_s / bound:.2f}x" if bound else ""
        if bound and r.mode != "bound" and r.samples_per_s > bound:
            vs_bound, over = vs_bound + " !", True
        base = plain.get(r.workers if r.workers is not None else 0)
        vs_plain = f"{r.samples_per_s / base:.2f}x" if base and r.mode not in ("bound", "limit") else ""
        memory = "" if r.memory_bytes is None else format_bytes(max(0, r.memory_bytes))
        lines.append(f"| {r.name} | {r.samples_per_s:,.0f} | {vs_bound} | {vs_plain} | {memory} |")
    notes = [OVER_BOUND] if over else []
    notes += [f"not run: {why}" for why in skipped]
    return "\n".join(lines + ([""] + notes if notes else []))
