"""A packed image set read from an S3 server with latency against the same pack on local disk
(issue 16): ``ChunkedLoader`` over ``PackedDataset(url)`` through its local shard cache.

The data is ``--n`` 128x128 JPEGs in class folders (``make_data.make_set``, or ``--data``),
packed raw (``pack(..., size=128, shard_bytes=--shard-bytes)``; with ``--encoded``, the files'
bytes as they are, ``pack(..., encoded=True)``, decoded by the loader) twice: into a local folder,
and to ``s3://bench/pdl.packed`` on a local S3 server (moto's application behind werkzeug on
127.0.0.1, in this process or, with ``--server process``, in a forked child), which adds
``--latency`` seconds to every request and counts the bytes of its GET responses. Every
loader is ``ChunkedLoader(ds, 256, ram_budget=--ram-budget, num_workers=2, seed=0)``; a
pass consumes the batches and keeps a few pixels and the label of each sample, to check that
every epoch holds each sample once and (without a cache limit) the local pack's batches.

- local pack: samples/s, median of 3 epochs after a warm-up epoch;
- the transport's bound: every shard fetched whole by ``fs.cat_file`` on 2 threads (as the
  cache prefetches: 2 at a time), neither hashed nor written;
- remote, cold cache (a fresh ``cache_dir``, no limit): seconds from ``PackedDataset(url)``
  to the first batch (manifest, labels, the first shard that ``ChunkedLoader`` reads for
  the samples' layout, worker start-up, the first chunk), samples/s after that first batch,
  samples/s of the whole epoch (from ``PackedDataset(url)``), bytes the server sent;
- remote, warm cache: the next 3 epochs of the same loader (every shard cached), median;
- remote, ``cache_limit`` = ``--limit-share`` of the shards' bytes (a fresh ``cache_dir``):
  ``--epochs`` epochs, samples/s and bytes sent in each, and the largest size of the cache
  folder seen by a thread that walks it every 50 ms, against the limit.

Bytes are attributed to the epoch during which the server sent them (the loader loads the
next epoch's first chunk while the last one is served). Temporary folders are under /tmp
and removed at the end; so is the server.

Run: ``python benchmarks/bench_remote.py [--n 20000] [--data DIR] [--latency 0.02]
[--shard-bytes 32MiB] [--epochs 3]``
"""

from __future__ import annotations

import argparse
import json
import logging
import multiprocessing
import os
import shutil
import statistics
import tempfile
import threading
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from common import machine, table
from make_data import make_set

from torchloader import ChunkedLoader, PackedDataset, PoorShuffleWarning, pack
from torchloader._core.units import format_bytes

BATCH = 256
SIZE = 128
WORKERS = 2
BUCKET = "bench"


class S3Server:
    """moto's S3 on 127.0.0.1 behind a WSGI layer that sleeps ``latency`` seconds per
    request and counts requests, GET requests and the bytes of GET responses.

    ``mode="thread"``: served from a daemon thread of this process; ``"process"``: from a
    forked child (so that the server does not share this process's GIL with the loader).
    The counters and the latency live in shared memory either way."""

    def __init__(self, latency: float = 0.0, mode: str = "thread") -> None:
        self._latency = multiprocessing.Value("d", latency)
        self._requests = multiprocessing.Value("q", 0)
        self._gets = multiprocessing.Value("q", 0)
        self._bytes = multiprocessing.Value("q", 0)
        self.mode = mode
        self._server: Any = None
        self._thread: threading.Thread | None = None
        self._child: Any = None
        if mode == "thread":
            self._server = self._make()
            self.port = self._server.server_address[1]
            self._thread = threading.Thread(target=self._server.serve_forever, name="s3-server", daemon=True)
            self._thread.start()
        elif mode == "process":
            ctx = multiprocessing.get_context("fork")  # before this process starts any thread
            ours, theirs = ctx.Pipe()
            self._child = ctx.Process(target=self._serve_in_child, args=(theirs,), name="s3-server", daemon=True)
            self._child.start()
            theirs.close()
            self.port = ours.recv()
            ours.close()
        else:
            raise ValueError(f"mode must be 'thread' or 'process' (got {mode!r})")

    def _make(self) -> Any:
        from moto.server import DomainDispatcherApplication, create_backend_app
        from werkzeug.serving import make_server

        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no line per request
        app = DomainDispatcherApplication(create_backend_app)

        def wsgi(environ: dict, start_response: Any) -> Any:
            latency = self._latency.value
            if latency:
                time.sleep(latency)
            body = app(environ, start_response)
            get = environ["REQUEST_METHOD"] == "GET"
            if get:
                body = list(body)
                sent = sum(len(part) for part in body)
            with self._requests.get_lock():
                self._requests.value += 1
            if get:
                with self._gets.get_lock():
                    self._gets.value += 1
                with self._bytes.get_lock():
                    self._bytes.value += sent
            return body

        return make_server("127.0.0.1", 0, wsgi, threaded=True)

    def _serve_in_child(self, conn: Any) -> None:
        server = self._make()
        conn.send(server.server_address[1])
        conn.close()
        server.serve_forever()

    @property
    def latency(self) -> float:
        return self._latency.value

    @latency.setter
    def latency(self, seconds: float) -> None:
        self._latency.value = seconds

    def counts(self) -> tuple[int, int, int]:
        """(requests, GET requests, bytes of GET responses) so far."""
        return self._requests.value, self._gets.value, self._bytes.value

    def storage_options(self) -> dict[str, Any]:
        return {
            "key": "bench",
            "secret": "x",
            "client_kwargs": {"endpoint_url": f"http://127.0.0.1:{self.port}"},
            "skip_instance_cache": True,
        }

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._thread.join()
            self._server = None
        if self._child is not None:
            self._child.terminate()
            self._child.join(10)
            self._child = None


class FolderWatch:
    """The largest byte size of the files under ``root`` seen, walked every ``every`` s
    (``peak``), and the largest of those plus the files under ``root`` already deleted
    but still mapped or open in this process or its children (``held_peak``: the disk
    space the cache takes, as ``df`` sees it)."""

    def __init__(self, root: str, every: float = 0.05) -> None:
        self.root, self.every = os.path.abspath(root), every
        self.peak = self.held_peak = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="cache-watch", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            used = 0
            for folder, _, names in os.walk(self.root):
                for name in names:
                    try:
                        used += os.stat(os.path.join(folder, name)).st_size
                    except FileNotFoundError:
                        pass
            self.peak = max(self.peak, used)
            self.held_peak = max(self.held_peak, used + sum(self._deleted().values()))
            self.samples += 1
            self._stop.wait(self.every)

    def _deleted(self) -> dict[int, int]:
        """{inode: bytes} of the files under root deleted but mapped or open in this
        process tree (Linux /proc; a map's length stands for its file's size)."""
        held: dict[int, int] = {}
        for pid in [os.getpid(), *_children(os.getpid())]:
            try:
                with open(f"/proc/{pid}/maps") as f:
                    for line in f:
                        parts = line.split(maxsplit=5)
                        if len(parts) == 6 and parts[5].startswith(self.root) and parts[5].endswith(" (deleted)\n"):
                            start, end = (int(a, 16) for a in parts[0].split("-"))
                            held[int(parts[4])] = max(held.get(int(parts[4]), 0), end - start)
                for fd in os.listdir(f"/proc/{pid}/fd"):
                    link = os.readlink(f"/proc/{pid}/fd/{fd}")
                    if link.startswith(self.root) and link.endswith(" (deleted)"):
                        info = os.stat(f"/proc/{pid}/fd/{fd}")
                        held[info.st_ino] = max(held.get(info.st_ino, 0), info.st_size)
            except OSError:  # the process or the fd went away meanwhile
                continue
        return held

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return self.peak


def _children(pid: int) -> list[int]:
    found = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as f:
                found += [int(c) for c in f.read().split()]
    except OSError:
        pass
    return found


@dataclass
class Epoch:
    samples: int
    seconds: float  # from the start of the pass (or of ``since``) to its last batch
    first: float  # to its first batch
    after_first: float  # samples/s after the first batch
    wait: float  # seconds the consumer waited for chunks (LoaderStats.wait_seconds)
    rows: np.ndarray = field(repr=False)  # (label, 6 pixels) of every sample, in order
    sent: tuple[int, int, int] = (0, 0, 0)  # the server's (requests, GETs, bytes) during it

    @property
    def rate(self) -> float:
        return self.samples / self.seconds


def one_epoch(loader: ChunkedLoader, since: float | None = None) -> Epoch:
    """Consume one pass of ``loader``: only a few pixels and the label of each sample are read."""
    wait0 = loader.stats.wait_seconds
    start = time.perf_counter() if since is None else since
    first, first_samples, samples, rows = None, 0, 0, []
    for xb, yb in loader:
        if first is None:
            first, first_samples = time.perf_counter(), xb.shape[0]
        samples += xb.shape[0]
        rows.append(torch.cat([yb[:, None], xb[:, :, 0, 0].long(), xb[:, :, SIZE // 2, SIZE // 2].long()], 1))
    end = time.perf_counter()
    after = (samples - first_samples) / (end - first) if end > first else float("nan")
    return Epoch(samples, end - start, first - start, after, loader.stats.wait_seconds - wait0, torch.cat(rows).numpy())


def counted(server: S3Server, run: Any) -> Any:
    """``run()``'s Epoch with the server's counts during it."""
    before = server.counts()
    epoch = run()
    epoch.sent = tuple(a - b for a, b in zip(server.counts(), before))
    return epoch


def sorted_rows(rows: np.ndarray) -> np.ndarray:
    return rows[np.lexsort(rows.T[::-1])]


def source_folder(data: str | None, n: int, tmp: str) -> str:
    """A folder of ``n`` JPEGs in class folders. A ``--data`` set made by make_data.py with
    more images is not rewritten: ``n`` of them, spread evenly, are linked into ``tmp``."""
    if data is None:
        return make_set(os.path.join(tmp, "jpegs"), n, size=SIZE, grey=False, classes=10)
    done = os.path.join(data, "DONE")
    if not os.path.exists(done):
        return make_set(data, n, size=SIZE, grey=False, classes=10)
    with open(done) as f:
        params = json.load(f)
    if params.get("size") != SIZE or params.get("grey"):
        raise SystemExit(f"{data} holds {params}, not {SIZE}x{SIZE} colour JPEGs: pass another --data")
    if params["n"] == n:
        return data
    if params["n"] < n:
        raise SystemExit(f"{data} holds {params['n']} images, fewer than --n {n}: pass another --data")
    files = sorted(
        os.path.join(c, f)
        for c in os.listdir(data)
        if os.path.isdir(os.path.join(data, c))
        for f in os.listdir(os.path.join(data, c))
    )
    root = os.path.join(tmp, "subset")
    for k in np.linspace(0, len(files) - 1, n).round().astype(int):
        os.makedirs(os.path.join(root, os.path.dirname(files[k])), exist_ok=True)
        os.symlink(os.path.join(os.path.abspath(data), files[k]), os.path.join(root, files[k]))
    return root


def make_loader(ds: PackedDataset, ram_budget: str) -> ChunkedLoader:
    return ChunkedLoader(ds, BATCH, ram_budget=ram_budget, num_workers=WORKERS, seed=0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20_000, help="images")
    parser.add_argument("--data", help="the JPEG folder (default: made in a temporary folder)")
    parser.add_argument("--latency", type=float, default=0.02, help="seconds added to every request")
    parser.add_argument("--shard-bytes", default="32MiB")
    parser.add_argument("--ram-budget", default="64MiB", help="ChunkedLoader's ram_budget")
    parser.add_argument("--epochs", type=int, default=3, help="epochs under the cache limit")
    parser.add_argument("--limit-share", type=float, default=0.25, help="cache_limit, as a share of the shards' bytes")
    parser.add_argument("--server", choices=("thread", "process"), default="thread")
    parser.add_argument("--encoded", action="store_true", help="an encoded pack, decoded as it is read")
    args = parser.parse_args()
    # the folder is stored sorted by class, so chunks of it mix poorly: not what is measured here
    warnings.filterwarnings("ignore", category=PoorShuffleWarning)

    server = S3Server(0.0, args.server)  # first: a forked server must not inherit threads
    tmp = tempfile.mkdtemp(prefix="bench_remote_", dir="/tmp")
    loaders: list[ChunkedLoader] = []
    try:
        run(args, server, tmp, loaders)
    finally:
        for loader in loaders:
            loader.close()
        server.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def run(args: argparse.Namespace, server: S3Server, tmp: str, loaders: list[ChunkedLoader]) -> None:
    import s3fs

    options = server.storage_options()
    s3fs.S3FileSystem(**options).mkdir(BUCKET)
    root = source_folder(args.data, args.n, tmp)
    url = f"s3://{BUCKET}/pdl.packed"
    how: dict[str, Any] = dict(shard_bytes=args.shard_bytes, num_workers=WORKERS, progress=False)
    how.update({"encoded": True} if args.encoded else {"size": SIZE})
    local_dst = os.path.join(tmp, "local.packed")
    start = time.perf_counter()
    pack(root, local_dst, **how)
    packed_local = time.perf_counter() - start
    start = time.perf_counter()
    pack(root, url, storage_options=options, **how)  # staged, then uploaded (no latency)
    packed_remote = time.perf_counter() - start
    server.latency = args.latency

    local = PackedDataset(local_dst)
    shards = local.manifest.shards
    pack_bytes = sum(s.nbytes for s in shards)
    limit = int(args.limit_share * pack_bytes)
    if limit < max(s.nbytes for s in shards):
        raise SystemExit(
            f"cache_limit {format_bytes(limit)} ({args.limit_share:.0%} of the pack) is less than one shard "
            f"({format_bytes(max(s.nbytes for s in shards))}): pass a smaller --shard-bytes"
        )
    print(machine())
    print(
        f"{args.n} JPEGs {SIZE}x{SIZE} packed {'encoded' if args.encoded else 'raw'} into {len(shards)} shards "
        f"of up to {args.shard_bytes} "
        f"({format_bytes(pack_bytes)}; pack: {packed_local:.1f} s local, {packed_remote:.1f} s to S3 "
        f"with the upload); server: moto on 127.0.0.1 in a {args.server}, {args.latency * 1000:.0f} ms "
        f"added per request"
    )

    # 1. the local pack
    loader = make_loader(local, args.ram_budget)
    loaders.append(loader)
    chunk = loader.chunk_size
    local_epochs = [one_epoch(loader) for _ in range(4)]
    reference = {e: local_epochs[e].rows for e in range(4)}  # epochs 0 to 3 in order
    every_sample = sorted_rows(local_epochs[0].rows)
    local_rate = statistics.median(e.rate for e in local_epochs[1:])
    loader.close()
    print(
        f"ChunkedLoader(ds, {BATCH}, ram_budget={args.ram_budget!r}, num_workers={WORKERS}): chunks of "
        f"{chunk} samples ({chunk / (len(local) / len(shards)):.2f} shards)\n"
    )
    problems = []

    def check(name: str, got: Epoch, ordered: np.ndarray | None) -> None:
        if got.samples != len(local):
            problems.append(f"{name}: {got.samples} samples, not {len(local)}")
        elif ordered is not None and not np.array_equal(got.rows, ordered):
            problems.append(f"{name}: batches differ from the local pack's epoch with the same number")
        elif not np.array_equal(sorted_rows(got.rows), every_sample):
            problems.append(f"{name}: not every sample exactly once (or other pixels)")

    # the transport's bound: every shard fetched whole (fs.cat_file) by 2 threads, kept nowhere
    fs = s3fs.S3FileSystem(**options)
    before = server.counts()
    start = time.perf_counter()
    with ThreadPoolExecutor(2) as threads:
        got = sum(len(b) for b in threads.map(lambda s: fs.cat_file(f"{BUCKET}/pdl.packed/{s.file}"), shards))
    bound_seconds = time.perf_counter() - start
    assert got == pack_bytes, (got, pack_bytes)
    bound_sent = tuple(a - b for a, b in zip(server.counts(), before))

    # 2. and 3. remote, no cache limit: cold, then warm
    cold_dir = os.path.join(tmp, "cache-cold")
    watch = FolderWatch(cold_dir)
    before = server.counts()
    t0 = time.perf_counter()
    ds = PackedDataset(url, cache_dir=cold_dir, storage_options=options)
    loader = make_loader(ds, args.ram_budget)
    loaders.append(loader)
    built = time.perf_counter() - t0
    cold = one_epoch(loader, since=t0)
    cold.sent = tuple(a - b for a, b in zip(server.counts(), before))
    warm_epochs = [counted(server, lambda: one_epoch(loader)) for _ in range(3)]
    loader.close()
    cold_peak = watch.stop()
    check("cold", cold, reference[0])
    for e, got in enumerate(warm_epochs, 1):
        check(f"warm epoch {e}", got, reference[e])
    warm = sorted(warm_epochs, key=lambda e: e.seconds)[1]  # the median epoch
    warm.sent = tuple(map(sum, zip(*(e.sent for e in warm_epochs))))  # of all 3

    # 4. remote, cache_limit
    limited_dir = os.path.join(tmp, "cache-limited")
    os.makedirs(limited_dir)
    watch = FolderWatch(limited_dir)
    before = server.counts()
    t0 = time.perf_counter()
    ds = PackedDataset(url, cache_dir=limited_dir, cache_limit=limit, storage_options=options)
    loader = make_loader(ds, args.ram_budget)
    loaders.append(loader)
    limited, cached_at_start, read_first = [], [], []
    for e in range(args.epochs):
        cached_at_start.append(len(ds.remote.cached_shards()))
        if e == 0:
            got = one_epoch(loader, since=t0)
            got.sent = tuple(a - b for a, b in zip(server.counts(), before))
        else:
            got = counted(server, lambda: one_epoch(loader))
        check(f"limited epoch {e}", got, None)
        snapshot = getattr(loader.sampler, "_cached", {}).get(e)  # (shards read first, room) of epoch e's order
        read_first.append(None if snapshot is None else len(snapshot[0]))
        limited.append(got)
    loader.close()
    limited_peak = watch.stop()

    def row(name: str, e: Epoch, rate: float, extra: str = "", sent: bool = True) -> tuple:
        return (
            name,
            f"{rate:,.0f}",
            f"{rate / local_rate:.2f}x",
            f"{e.first:.2f}",
            f"{e.wait:.1f}",
            format_bytes(e.sent[2]) if sent else "",
            f"{e.sent[2] / pack_bytes:.2f}" if sent else "",
            f"{e.sent[1]:,} / {e.sent[0]:,}" if sent else "",
            f"{e.sent[2] / 2**20 / e.seconds:,.0f}" if sent else "",
            extra,
        )

    median_local = local_epochs[1]
    rows = [
        (
            "local pack, epoch after warm-up (median of 3)",
            f"{local_rate:,.0f}",
            "1.00x",
            f"{median_local.first:.2f}",
            f"{median_local.wait:.1f}",
            "-",
            "-",
            "-",
            "-",
            "",
        ),
        (
            "bound: s3fs cat_file of every shard, 2 threads, no cache",
            f"{len(local) / bound_seconds:,.0f}",
            f"{len(local) / bound_seconds / local_rate:.2f}x",
            "-",
            "-",
            format_bytes(bound_sent[2]),
            f"{bound_sent[2] / pack_bytes:.2f}",
            f"{bound_sent[1]:,} / {bound_sent[0]:,}",
            f"{bound_sent[2] / 2**20 / bound_seconds:,.0f}",
            "",
        ),
        row("remote, cold cache: whole epoch", cold, cold.rate, f"from PackedDataset(url); {built:.2f} s to build"),
        row("remote, cold cache: after the first batch", cold, cold.after_first, sent=False),
        row("remote, warm cache, next 3 epochs (median; bytes: all 3)", warm, warm.rate),
    ]
    for e, got in enumerate(limited):
        extra = f"{cached_at_start[e]} of {len(shards)} shards cached as it began"
        if read_first[e] is not None:
            extra += f", {read_first[e]} of them read first"
        if e == 0:
            extra += "; from PackedDataset(url)"
        rows.append(row(f"remote, cache_limit {args.limit_share:.0%}: epoch {e}", got, got.rate, extra))
        if e == 0:
            rows.append(
                row(
                    f"remote, cache_limit {args.limit_share:.0%}: epoch 0 after the first batch",
                    got,
                    got.after_first,
                    sent=False,
                )
            )
    print(
        table(
            rows,
            (
                "read",
                "samples/s",
                "vs local",
                "first batch (s)",
                "waited for chunks (s)",
                "bytes sent",
                "x pack",
                "GETs / requests",
                "MiB/s sent",
                "",
            ),
        )
    )
    print(
        "\nfirst batch: seconds from the start of the pass (cold and limited epoch 0: from PackedDataset(url)); "
        "samples/s after the first batch: of the samples after it, from it to the end of the pass"
    )
    print(
        f"cache folder, largest size seen (every 50 ms): no limit {format_bytes(cold_peak)}; "
        f"cache_limit {format_bytes(limit)} ({limit:,} bytes): {format_bytes(limited_peak)} ({limited_peak:,} bytes, "
        f"{limited_peak / limit:.2f}x the limit, {watch.samples} looks); with the files evicted but still mapped "
        f"or open in the loader's processes: {format_bytes(watch.held_peak)} ({watch.held_peak / limit:.2f}x the limit)"
    )
    print(
        "checks: "
        + (
            "every epoch held each sample once; cold and warm epochs = the local pack's batches"
            if not problems
            else "; ".join(problems)
        )
    )


if __name__ == "__main__":
    main()
