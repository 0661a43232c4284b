"""``pack(folder, encoded=True)`` from a cold page cache, against what the disk allows.

An encoded pack is a copy: its bound is the disk. The folder's pages are dropped from the
page cache before each timed run (``posix_fadvise(DONTNEED)`` on every file: no root
needed; the pages of clean files go), so every byte comes from the disk, as when a data
set is packed for the first time. Rows, each the median of ``--repeats`` runs:

- the disk's sequential read: one file of the folder's bytes, read whole, cold;
- the folder read file by file, one read at a time, cold (what ``cat`` does);
- the folder read with the disk asked for 64 files at a time (``readers._files.read_many``),
  cold: the bound for a pack of many small files;
- a copy, warm: every file read and written into one file, then ``fsync`` (C-speed bound
  of the writing side);
- ``pack(..., encoded=True, num_workers=2)``, cold and warm.

``--before PATH`` also times the pack of the torchloader checkout at ``PATH`` (a ``git
worktree`` of an older commit) in the same run, interleaved, in subprocesses.

Run: ``python benchmarks/bench_pack_cold.py --data /tmp/cropbench [--before /tmp/old]``
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

from bench_packed import evict  # the files' pages dropped from the page cache
from common import machine, table
from make_data import make_mixed_set

from torchloader.readers._read_ahead import read_many

RUN = 64  # files asked for at once in the read_many row (the pack reads runs of 64)
PACK = """
import sys, time
sys.path.insert(0, sys.argv[1])
from torchloader import pack
code, warmup, root, dst = sys.argv[1:]
pack(warmup, dst + "-warmup", encoded=True, num_workers=2, progress=False)  # lazy imports, first calls
start = time.perf_counter()
pack(root, dst, encoded=True, num_workers=2, progress=False)
print(time.perf_counter() - start)
"""


def files_of(root: str) -> list[str]:
    return sorted(os.path.join(d, f) for d, _, names in os.walk(root) for f in names)


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def packed_in(code: str, root: str, work: str) -> float:
    """Seconds of one ``pack`` of ``root`` by the torchloader at ``code``, in a subprocess
    (after a pack of ``work/warmup``)."""
    dst = tempfile.mkdtemp(dir=work)
    try:
        command = [sys.executable, "-c", PACK, code, os.path.join(work, "warmup"), root, os.path.join(dst, "p")]
        out = subprocess.run(command, check=True, text=True, capture_output=True)
        return float(out.stdout.strip().splitlines()[-1])
    finally:
        shutil.rmtree(dst)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="a folder of image files (made with make_mixed_set if missing)")
    parser.add_argument("--n", type=int, default=4000, help="files, if the folder is made")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--before", help="a torchloader checkout to time beside this one")
    args = parser.parse_args()
    root = make_mixed_set(args.data, args.n) if not os.path.isdir(args.data) else args.data
    paths = [p for p in files_of(root) if not os.path.basename(p).startswith(".") and p.endswith((".jpg", ".png"))]
    total = sum(os.path.getsize(p) for p in paths)
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    work = tempfile.mkdtemp(dir=os.path.dirname(os.path.abspath(root)))  # on the folder's disk
    big = os.path.join(work, "sequential.bin")
    os.makedirs(os.path.join(work, "warmup", "c0"))
    for path in paths[:16]:
        shutil.copy(path, os.path.join(work, "warmup", "c0"))
    with open(big, "wb") as f:
        for path in paths:
            with open(path, "rb") as g:
                f.write(g.read())

    def sequential():
        with open(big, "rb", buffering=0) as f:
            while f.read(8 << 20):
                pass

    def one_by_one():
        for path in paths:
            with open(path, "rb", buffering=0) as f:
                f.read()

    def advised():
        for start in range(0, len(paths), RUN):
            read_many(paths[start : start + RUN])

    def copy():
        with open(os.path.join(work, "copy.bin"), "wb", buffering=0) as f:
            for path in paths:
                with open(path, "rb", buffering=0) as g:
                    f.write(g.read())
            os.fsync(f.fileno())

    def copy_advised():
        with open(os.path.join(work, "copy.bin"), "wb", buffering=0) as f:
            for start in range(0, len(paths), RUN):
                os.writev(f.fileno(), read_many(paths[start : start + RUN]))
            os.fsync(f.fileno())

    times: dict[str, list[float]] = {}
    try:
        for _ in range(args.repeats):
            for name, fn, files in (
                ("the disk's sequential read (one file of the same bytes), cold", sequential, [big]),
                ("the folder read file by file, cold", one_by_one, paths),
                (f"the folder read {RUN} files asked for at once (read_many), cold", advised, paths),
                ("a copy: read_many runs written to one file, then fsync, cold (a copy's bound)", copy_advised, paths),
            ):
                os.sync()  # (the last pack's pages written first: no writeback during the run)
                evict(files)
                times.setdefault(name, []).append(timed(fn))
            times.setdefault("a copy into one file + fsync, warm (the writing side's bound)", []).append(timed(copy))
            checkouts = [("this checkout", here)] + (
                [("--before", os.path.abspath(args.before))] if args.before else []
            )
            for label, code in checkouts:
                os.sync()
                evict(paths)
                times.setdefault(f"pack(encoded=True, num_workers=2), cold, {label}", []).append(
                    packed_in(code, root, work)
                )
                times.setdefault(f"pack(encoded=True, num_workers=2), warm, {label}", []).append(
                    packed_in(code, root, work)
                )
    finally:
        shutil.rmtree(work)
    print(machine())
    print(f"{len(paths)} files, {total / 1e6:.1f} MB, in {root}; median of {args.repeats} runs\n")
    seq = total / statistics.median(times["the disk's sequential read (one file of the same bytes), cold"])
    rows = []
    for name, ts in times.items():
        rate = total / statistics.median(ts)
        spread = f"{total / max(ts) / 1e6:,.0f}-{total / min(ts) / 1e6:,.0f}"
        rows.append(
            (name, f"{rate / 1e6:,.0f}", spread, f"{len(paths) / statistics.median(ts):,.0f}", f"{rate / seq:.2f}x")
        )
    print(table(rows, ("", "MB/s", "MB/s, slowest-fastest run", "files/s", "vs sequential read")))


if __name__ == "__main__":
    main()
