"""The one runner: every mode, the baselines, the machine's limits and the peers, in one run.

On the same data (``make_data.py``: 20,000 JPEGs of 128x128 in class folders and
20,000 grey 28x28 PNGs), batch 256, shuffled, 0 and 2 workers where that applies,
samples/s of one epoch after a warm-up (``--epochs`` for the median of more) and
the peak memory (PSS) of the whole process tree above its value before the loader:

- limits measured here: a bare ``torch.index_select`` loop over the decoded data
  in RAM; JPEG decode rate (file read included) on one core x the cores, through
  libjpeg-turbo (simplejpeg) and Pillow; memcpy bandwidth; sequential read rate of
  a large file (warm, and cold only where the page cache can be dropped);
- baselines: the seed tutorial's Keras ``Sequence`` translated literally (each
  batch a list comprehension of file loads in ``__getitem__``, no DataLoader); a
  plain DataLoader over a minimal per-file Dataset; a plain DataLoader over the
  in-RAM tensor with the default collate;
- every torchloader mode (``torchloader.bench``), over the JPEG folder and the pack;
- the peers (``peers/*.py``, each run with its own interpreter, ``--peer-python``).

Run: ``python benchmarks/run.py [--data DIR] [--n 20000] [--out results.json] [--plot chart.png]``
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch
from bench_decode import plain_pillow as pillow
from bench_decode import plain_simplejpeg as turbo
from bench_decode import rate as decode_rate
from bench_packed import evict
from bench_packed import read_rate as files_read_rate
from common import machine
from make_data import make_data
from PIL import Image
from torch.utils.data import DataLoader, Dataset, TensorDataset

from torchloader import (
    ChunkedLoader,
    ImageReader,
    PackedDataset,
    PathDataset,
    PreloadedDataset,
    SuffixReader,
    pack,
)
from torchloader._core.units import format_bytes
from torchloader.tools.bench import Epochs, Measurement, format_table, plot, time_epochs
from torchloader.tools.bench import gather_bound as bench_gather_bound

BATCH = 256
HERE = os.path.dirname(os.path.abspath(__file__))
PEERS = ("ffcv", "litdata", "webdataset", "streaming")


# --- the machine's limits -----------------------------------------------------------


def gather_bound(x: torch.Tensor) -> float:
    """Samples/s of a bare index_select loop over ``x`` in RAM (best of 4 epochs)."""
    return bench_gather_bound(x, BATCH, seconds=0.0, min_epochs=4)


def memcpy_rate(nbytes: int = 512 * 2**20) -> float:
    """Bytes/s of one large copy between two buffers already in RAM."""
    src = torch.ones(nbytes, dtype=torch.uint8)
    dst = torch.zeros(nbytes, dtype=torch.uint8)
    best = 0.0
    for _ in range(5):
        start = time.perf_counter()
        dst.copy_(src)
        best = max(best, nbytes / (time.perf_counter() - start))
    return best


def drop_cache(path: str) -> bool:
    """Evict ``path`` from the page cache: drop_caches where allowed (root outside a
    sandbox), else ``posix_fadvise(DONTNEED)``, which some kernels ignore. The caller
    checks with a read whether it worked."""
    try:
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("1\n")
    except OSError:
        evict([path])


# --- the baselines ------------------------------------------------------------------


class SeedSequence:
    """The seed tutorial's Keras ``Sequence``, translated literally (no DataLoader)."""

    def __init__(self, x_set, y_set, batch_size, shuffle=False):
        self.x, self.y = x_set, y_set
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.on_epoch_end()

    def __len__(self):
        return math.ceil(len(self.x) / self.batch_size)

    def on_epoch_end(self):
        self.indices = np.arange(len(self.x))
        if self.shuffle:
            np.random.shuffle(self.indices)

    def loader(self, filepath):
        return np.asarray(Image.open(filepath).convert("RGB"))

    def __getitem__(self, index):
        indices = self.indices[index * self.batch_size : (index + 1) * self.batch_size]
        batch_x, batch_y = self.x[indices], self.y[indices]
        return np.array([self.loader(x) for x in batch_x]), batch_y

    def __iter__(self):  # what Keras' fit() does with it: every batch, then on_epoch_end
        for i in range(len(self)):
            yield self[i]
        self.on_epoch_end()


class FileDataset(Dataset):
    """The minimal per-file Dataset a tutorial writes: Pillow, one file per item."""

    def __init__(self, paths: list[str], labels: np.ndarray) -> None:
        self.paths, self.labels = paths, labels

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        with Image.open(self.paths[i]) as image:
            x = torch.from_numpy(np.asarray(image.convert("RGB")).copy()).permute(2, 0, 1)
        return x, int(self.labels[i])


# --- running ------------------------------------------------------------------------


def run_rows(rows: list[Measurement], n: int, plan: list[tuple[str, str, int | None, object]], epochs: int) -> None:
    for name, mode, workers, make in plan:
        print(f"  {name} ...", file=sys.stderr, flush=True)
        rate, memory = time_epochs(make, n, epochs=epochs)
        rows.append(Measurement(name, mode, workers, rate, memory))


def limit_row(name: str, rate: float) -> Measurement:
    return Measurement(name, "limit", None, rate)


def jpeg_section(data: str, work: str, epochs: int) -> list[Measurement]:
    ds = PathDataset.from_folder(data)
    n, paths = len(ds), [ds.path(i) for i in range(len(ds))]
    cores = len(os.sched_getaffinity(0))
    print("limits ...", file=sys.stderr, flush=True)
    rows = [Measurement("in-RAM gather bound (index_select)", "bound", None, 0.0)]
    picks = paths[:: max(1, n // 5000)]
    for p in picks:  # into the page cache: the limit is decoding, not the disk
        with open(p, "rb") as f:
            f.read()
    for label, fn in (("libjpeg-turbo (simplejpeg)", turbo), ("Pillow", pillow)):
        rate = decode_rate(fn, picks)
        rows.append(limit_row(f"JPEG decode, {label}, 1 core x {cores}", rate * cores))
    preloaded = PreloadedDataset.from_dataset(ds, num_workers=cores, progress=False)
    rows[0].samples_per_s = gather_bound(preloaded.x)
    sample_bytes = preloaded.sample_nbytes
    rows.append(limit_row(f"memcpy ({format_bytes(memcpy_rate())}/s) / sample bytes", memcpy_rate() / sample_bytes))
    packed_dir = os.path.join(work, "jpeg128.packed")
    shutil.rmtree(packed_dir, ignore_errors=True)  # time a whole pack, not a no-op re-run
    start = time.perf_counter()
    pack(data, packed_dir, num_workers=cores, progress=False)
    pack_seconds = time.perf_counter() - start
    packed = PackedDataset(packed_dir)
    shard = os.path.join(packed_dir, packed.manifest.shards[0].file)
    files_read_rate([shard])
    warm = files_read_rate([shard])
    rows.append(limit_row(f"sequential read, warm ({format_bytes(warm)}/s) / sample bytes", warm / sample_bytes))
    drop_cache(shard)
    cold = files_read_rate([shard])
    name = "sequential read, cold" if cold < warm / 2 else "sequential read, 'cold' (the cache could not be dropped)"
    rows.append(limit_row(f"{name} ({format_bytes(cold)}/s) / sample bytes", cold / sample_bytes))

    tensor_ds = TensorDataset(preloaded.x, preloaded.y)
    labels = ds.labels
    budget = "256MiB"
    plan: list = []
    for w in (0, 2):  # the one line users write, first
        p = w > 0
        plan += [
            (
                f"DataLoader(PathDataset), {w} workers",
                "plain",
                w,
                lambda w=w, p=p: DataLoader(ds, BATCH, shuffle=True, num_workers=w, persistent_workers=p),
            ),
            (
                f"DataLoader(PackedDataset), {w} workers",
                "plain",
                w,
                lambda w=w, p=p: DataLoader(packed, BATCH, shuffle=True, num_workers=w, persistent_workers=p),
            ),
        ]
    plan.append(
        (
            "DataLoader(PreloadedDataset), 0 workers",
            "plain",
            0,
            lambda: DataLoader(preloaded, BATCH, shuffle=True),
        )
    )
    plan.append(
        (
            "seed loader (Keras Sequence, literal), 0 workers",
            "seed",
            0,
            lambda: SeedSequence(ds.paths.astype(str), labels, BATCH, shuffle=True),
        )
    )
    for w in (0, 2):
        p = w > 0
        plan += [
            (
                f"DataLoader(per-file Pillow Dataset), {w} workers",
                "dataloader",
                w,
                lambda w=w, p=p: DataLoader(
                    FileDataset(paths, labels), BATCH, shuffle=True, num_workers=w, persistent_workers=p
                ),
            ),
            (
                f"DataLoader(in-RAM TensorDataset), default collate, {w} workers",
                "ram-collate",
                w,
                lambda w=w, p=p: DataLoader(tensor_ds, BATCH, shuffle=True, num_workers=w, persistent_workers=p),
            ),
            (
                f"PathDataset.dataloader(), {w} workers",
                "path",
                w,
                lambda w=w, p=p: ds.dataloader(BATCH, num_workers=w, persistent_workers=p),
            ),
            (
                f"ChunkedLoader(PathDataset, {budget}), {w} workers",
                "chunked",
                w,
                lambda w=w: ChunkedLoader(ds, BATCH, ram_budget=budget, num_workers=w),
            ),
            (
                f"PackedDataset.dataloader(), {w} workers",
                "packed",
                w,
                lambda w=w, p=p: packed.dataloader(BATCH, num_workers=w, persistent_workers=p),
            ),
        ]
    plan += [
        (
            f"ChunkedLoader(PathDataset, {budget}), 2 threads",
            "chunked",
            2,
            lambda: ChunkedLoader(ds, BATCH, ram_budget=budget, num_workers=2, worker_type="thread"),
        ),
        (
            f"ChunkedLoader(PathDataset, {budget}, block_size=16), 2 workers",
            "chunked",
            2,
            lambda: ChunkedLoader(ds, BATCH, ram_budget=budget, num_workers=2, block_size=16),
        ),
        ("PreloadedDataset.dataloader(), 0 workers", "preload", 0, lambda: preloaded.dataloader(BATCH)),
        (
            "PreloadedDataset.batches() (no DataLoader)",
            "preload",
            None,
            lambda: Epochs(lambda e: preloaded.batches(BATCH, epoch=e)),
        ),
        (
            f"ChunkedLoader(PreloadedDataset, {budget}), 0 workers",
            "chunked",
            0,
            lambda: ChunkedLoader(preloaded, BATCH, ram_budget=budget),
        ),
        (
            "PackedDataset.gather per batch (no DataLoader)",
            "packed",
            None,
            lambda: Epochs(lambda e: _gather_epoch(packed, n, e)),
        ),
        (
            f"ChunkedLoader(PackedDataset, {budget}, block_size=16), 0 workers",
            "chunked",
            0,
            lambda: ChunkedLoader(packed, BATCH, ram_budget=budget, block_size=16),
        ),
    ]
    run_rows(rows, n, plan, epochs)
    # The bound again, after the loaders: the allocator's state changes how fast a
    # fresh 12.5 MB batch is (page faults); the best of both runs is the bound.
    again = gather_bound(preloaded.x)
    rows[0].name += f" (best of {rows[0].samples_per_s:,.0f} before and {again:,.0f} after the loaders)"
    rows[0].samples_per_s = max(rows[0].samples_per_s, again)
    packed.close()  # a page that a process maps cannot be evicted
    rows += cold_rows(packed_dir, shard, n, budget, sample_bytes)
    rows.append(limit_row(f"(pack: {n / pack_seconds:,.0f} images/s with {cores} workers)", n / pack_seconds))
    return rows


def resident(path: str) -> float | None:
    """The fraction of ``path`` in the page cache (util-linux ``fincore``), or None."""
    try:
        out = subprocess.run(
            ["fincore", "--bytes", "--noheadings", "--output", "RES", path], capture_output=True, text=True, check=True
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    return int(out.split()[0]) / os.path.getsize(path)


def cold_rows(packed_dir: str, shard: str, n: int, budget: str, sample_bytes: int) -> list[Measurement]:
    """One epoch each from a cold page cache, in a fresh PackedDataset (pages that
    a process still maps cannot be evicted, so nothing else may map the shard)."""
    rows = []
    makes = {
        "PackedDataset.gather per batch": lambda ds: Epochs(lambda e: _gather_epoch(ds, n, e)),
        f"ChunkedLoader(PackedDataset, {budget}), 0 workers": lambda ds: ChunkedLoader(ds, BATCH, ram_budget=budget),
        f"ChunkedLoader(PackedDataset, {budget}, block_size=16), 0 workers": lambda ds: ChunkedLoader(
            ds, BATCH, ram_budget=budget, block_size=16
        ),
        "PackedDataset.dataloader(), 2 workers": lambda ds: ds.dataloader(BATCH, num_workers=2),
    }
    for label, make in makes.items():
        gc.collect()
        drop_cache(shard)
        left = resident(shard)
        if left is None or left > 0.05:
            rows.append(
                Measurement(
                    f"{label}, cold page cache", "packed", None, skipped=f"the page cache could not be dropped ({left})"
                )
            )
            continue
        start = time.perf_counter()
        files_read_rate([shard])
        read = n / (time.perf_counter() - start)
        gc.collect()
        drop_cache(shard)
        rate, _ = time_epochs(lambda: make(PackedDataset(packed_dir)), n, warmup=0)
        rows.append(
            Measurement(
                f"{label}, cold page cache ({rate / read:.2f}x the cold sequential read, "
                f"{format_bytes(read * sample_bytes)}/s, just before)",
                "packed",
                None,
                rate,
            )
        )
    return rows


def _gather_epoch(packed: PackedDataset, n: int, epoch: int):
    order = np.random.default_rng(epoch).permutation(n)
    return (packed.gather(order[i : i + BATCH]) for i in range(0, n, BATCH))


def small_section(data: str, epochs: int) -> list[Measurement]:
    """28x28 grey samples in RAM: where per-sample overhead is everything."""
    ds = PathDataset.from_folder(data, reader=SuffixReader({".png": ImageReader("L")}))
    preloaded = PreloadedDataset.from_dataset(ds, progress=False)
    n = len(preloaded)
    rows = [Measurement("in-RAM gather bound (index_select)", "bound", None, gather_bound(preloaded.x))]
    tensor_ds = TensorDataset(preloaded.x, preloaded.y)
    plan: list = []
    for w in (0, 2):
        p = w > 0
        plan += [
            (
                f"DataLoader(PreloadedDataset), {w} workers",
                "plain",
                w,
                lambda w=w, p=p: DataLoader(preloaded, BATCH, shuffle=True, num_workers=w, persistent_workers=p),
            ),
            (
                f"DataLoader(in-RAM TensorDataset), default collate, {w} workers",
                "ram-collate",
                w,
                lambda w=w, p=p: DataLoader(tensor_ds, BATCH, shuffle=True, num_workers=w, persistent_workers=p),
            ),
            (
                f"PreloadedDataset.dataloader(), {w} workers",
                "preload",
                w,
                lambda w=w, p=p: preloaded.dataloader(BATCH, num_workers=w, persistent_workers=p),
            ),
        ]
    plan.append(
        (
            "PreloadedDataset.batches() (no DataLoader)",
            "preload",
            None,
            lambda: Epochs(lambda e: preloaded.batches(BATCH, epoch=e)),
        )
    )
    run_rows(rows, n, plan, epochs)
    return rows


# Worker counts per peer: FFCV's workers are threads of one process and 0 means
# "all cores", so its low figure is 1 worker.
PEER_WORKERS = {"ffcv": (1, 2), "litdata": (0, 2), "webdataset": (0, 2), "streaming": (0, 2)}
PEER_PYTHONS = {"ffcv": "/work/venv-ffcv/bin/python", "*": "/work/venv-peers/bin/python"}  # install_*.sh defaults


def peer_rows(data: str, work: str, pythons: dict[str, str]) -> list[Measurement]:
    """Each peer in its own interpreter, one process per worker count (so that its
    memory is measured alone)."""
    rows = []
    for peer in PEERS:
        script = os.path.join(HERE, "peers", f"{peer}_peer.py")
        python = pythons.get(peer, pythons.get("*", sys.executable))
        if not os.path.exists(python):
            rows.append(Measurement(peer, "peer", None, skipped=f"no interpreter at {python} (see peers/install_*.sh)"))
            continue
        for w in PEER_WORKERS[peer]:
            print(f"  peer {peer}, {w} workers ({python}) ...", file=sys.stderr, flush=True)
            cmd = [
                python,
                script,
                "--data",
                data,
                "--work",
                os.path.join(work, peer),
                "--batch-size",
                str(BATCH),
                "--workers",
                str(w),
            ]
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
            lines = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
            if not lines:
                tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
                rows.append(
                    Measurement(f"{peer}, {w} workers", "peer", w, skipped=f"exit {done.returncode}: {tail[:200]}")
                )
            for line in lines:
                rows.append(
                    Measurement(
                        line["name"],
                        "peer",
                        w,
                        line.get("samples_per_s"),
                        line.get("peak_pss_bytes"),
                        line.get("skipped"),
                    )
                )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=os.path.join(tempfile.gettempdir(), "torchloader-bench"))
    parser.add_argument("--n", type=int, default=20_000)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument(
        "--peer-python",
        action="append",
        default=[],
        metavar="[PEER=]PYTHON",
        help="interpreter for the peers (one for all, or per peer, e.g. ffcv=/venv/bin/python)",
    )
    parser.add_argument("--no-peers", action="store_true")
    parser.add_argument("--out", help="write every row as JSON here")
    parser.add_argument("--plot", help="bar chart of the JPEG section (PNG)")
    parser.add_argument("--from-json", help="print (and --plot) the tables of an earlier --out file")
    args = parser.parse_args()
    if args.from_json:
        with open(args.from_json) as f:
            saved = json.load(f)
        jpeg, small = ([Measurement(**row) for row in saved[key]] for key in ("jpeg128", "grey28"))
        report(saved["machine"], args, jpeg, small)
        return
    sets = make_data(args.data, args.n, args.n)
    work = os.path.join(args.data, "work")
    os.makedirs(work, exist_ok=True)
    pythons = dict(PEER_PYTHONS)
    given = dict(p.split("=", 1) if "=" in p else ("*", p) for p in args.peer_python)
    if "*" in given:  # one interpreter for all
        pythons = {}
    pythons.update(given)
    jpeg = jpeg_section(sets["jpeg128"], work, args.epochs)
    if not args.no_peers:
        jpeg += peer_rows(sets["jpeg128"], work, pythons)
    small = small_section(sets["grey28"], args.epochs)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(
                {"machine": machine(), "jpeg128": [r.as_dict() for r in jpeg], "grey28": [r.as_dict() for r in small]},
                f,
                indent=1,
            )
    report(machine(), args, jpeg, small)


def report(machine_line: str, args: argparse.Namespace, jpeg: list[Measurement], small: list[Measurement]) -> None:
    print(machine_line)
    print(
        f"{args.n} JPEGs 128x128 (10 classes in folders); batch {BATCH}, shuffled; samples/s of "
        f"{'the median of ' + str(args.epochs) + ' epochs' if args.epochs > 1 else 'one epoch'} after a warm-up\n"
    )
    print(format_table(jpeg))
    print(f"\n{args.n} grey PNGs 28x28, decoded in RAM (1x28x28 uint8)\n")
    print(format_table(small, baseline="ram-collate", baseline_name="default collate"))
    if args.plot:
        plot(jpeg, args.plot, title=f"{args.n} JPEGs 128x128, batch {BATCH}, 2 cores: samples/s")


if __name__ == "__main__":
    main()
