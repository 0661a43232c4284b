"""RandomResizedCrop(128) of a folder of JPEGs of every size: torchloader's crop-as-you-decode
against ImageFolder + torchvision's RandomResizedCrop, FFCV's RandomResizedCrop loader and the
decode bounds, all in one run.

The data is ``make_data.make_mixed_set``: ``--n`` JPEGs (quality 90) whose longest side is 100
to 500 px, in 10 class folders, in the page cache. Every loader gives ``3 x 128 x 128`` uint8
batches of 256, shuffled, flipped left-right at random; samples/s is the median of 3 epochs
after a warm-up epoch (FFCV's: the epoch after its warm-up, in a fresh process, as
``peers/ffcv_peer.py`` times it).

- (a) bounds, one core in this process, each file read (open/read) and decoded: libjpeg-turbo
  (``simplejpeg.decode_jpeg``) at full size and at the DCT scales 1/2, 1/4, 1/8 (``min_height``
  / ``min_width`` = ``ceil(h / s)``, ``ceil(w / s)``), at the scale torchloader picks for each
  file's RandomResizedCrop(128) box, and Pillow's ``convert("RGB")``;
- (b) the baseline: torchvision's ImageFolder + ``RandomResizedCrop(128)`` +
  ``RandomHorizontalFlip()`` + ``PILToTensor()``, written out by hand (torchvision is not
  installed here): Pillow decodes the file, ``get_params`` draws the box from torch's global
  RNG, ``crop`` + ``resize(BILINEAR)``, flip; the default collate;
- (c) ``DataLoader(PathDataset.from_folder(root, decode=RandomResizedCrop(128)))``, and with
  ``reader=ImageReader(fast_dct=True)``: libjpeg-turbo's fast DCT and upsampling, as FFCV's
  decoder uses (``TJFLAG_FASTDCT``), not Pillow's pixels;
- (d) the same from an encoded pack of the folder (``pack(..., encoded=True)``, timed), through
  the DataLoader and through ``ChunkedLoader``;
- (e) the read bounds of the pack: its shards read whole and the folder read file by file
  (both warm, in MB/s);
- FFCV (``--ffcv PYTHON``, run as ``peers/ffcv_peer.py --modes rrc``): a JPEG .beton of the
  folder read with ``RandomResizedCropRGBImageDecoder((128, 128))``.

The DataLoaders are ``torch.utils.data.DataLoader(ds, batch_size=256, shuffle=True,
num_workers=W, persistent_workers=True, multiprocessing_context="fork")``.

Run: ``python benchmarks/bench_crops.py [--n 4000] [--data DIR] [--workers 2] [--ffcv PYTHON]``
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import subprocess
import sys
import tempfile
import time

import numpy as np
import simplejpeg
import torch
from bench_decode import rate as per_core  # items/s of fn over items, after 200 to warm up
from bench_plain_dataloader import plain, rate  # the plain DataLoader, timed with its workers kept
from common import machine, table
from make_data import make_mixed_set
from PIL import Image
from torch.utils.data import Dataset

from torchloader import ChunkedLoader, ImageReader, PackedDataset, PathDataset, RandomResizedCrop, pack

BATCH = 256
SIZE = 128
HERE = os.path.dirname(os.path.abspath(__file__))
FFCV_PYTHON = "/work/venv-ffcv/bin/python"


def torchvision_get_params(height, width, scale, ratio):
    """torchvision.transforms.RandomResizedCrop.get_params, line for line (torch's global RNG)."""
    area = height * width
    log_ratio = torch.log(torch.tensor(ratio))
    for _ in range(10):
        target_area = area * torch.empty(1).uniform_(scale[0], scale[1]).item()
        aspect_ratio = torch.exp(torch.empty(1).uniform_(log_ratio[0], log_ratio[1])).item()
        w = int(round(math.sqrt(target_area * aspect_ratio)))
        h = int(round(math.sqrt(target_area / aspect_ratio)))
        if 0 < w <= width and 0 < h <= height:
            i = torch.randint(0, height - h + 1, size=(1,)).item()
            j = torch.randint(0, width - w + 1, size=(1,)).item()
            return i, j, h, w
    in_ratio = float(width) / float(height)
    if in_ratio < min(ratio):
        w = width
        h = int(round(w / min(ratio)))
    elif in_ratio > max(ratio):
        h = height
        w = int(round(h * max(ratio)))
    else:
        w = width
        h = height
    return (height - h) // 2, (width - w) // 2, h, w


class TorchvisionRRC(Dataset):
    """``ImageFolder(root, transform=Compose([RandomResizedCrop(size), RandomHorizontalFlip(),
    PILToTensor()]))`` as torchvision runs it on PIL images."""

    def __init__(self, paths: list[str], labels: list[int], size: int = SIZE) -> None:
        self.paths, self.labels, self.size = paths, labels, size
        self.scale, self.ratio = (0.08, 1.0), (3.0 / 4.0, 4.0 / 3.0)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int):
        with open(self.paths[index], "rb") as f:  # torchvision's pil_loader
            img = Image.open(f)
            img = img.convert("RGB")
        i, j, h, w = torchvision_get_params(img.height, img.width, self.scale, self.ratio)
        img = img.crop((j, i, j + w, i + h)).resize((self.size, self.size), Image.BILINEAR)
        if torch.rand(1) < 0.5:
            img = img.transpose(Image.FLIP_LEFT_RIGHT)
        x = torch.from_numpy(np.array(img, copy=True)).permute(2, 0, 1)  # pil_to_tensor (it copies too)
        return x, self.labels[index]


def read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def scaled(s: int):
    """Read a file and decode it with libjpeg-turbo at 1/s of its size."""

    def decode(item):
        path, h, w = item[:3]
        return simplejpeg.decode_jpeg(read(path), min_height=-(-h // s), min_width=-(-w // s))

    return decode


def decode_bounds(paths: list[str]) -> tuple[list[tuple], float]:
    """(a): rows of (name, samples/s per core, note); and the full-size libjpeg-turbo rate."""
    items = []
    for path in paths:
        h, w, _, _ = simplejpeg.decode_jpeg_header(read(path))
        items.append((path, h, w))
    for s in (1, 2, 4, 8):  # the scale asked for is the scale decoded
        path, h, w = items[0]
        assert scaled(s)(items[0]).shape[:2] == (-(-h // s), -(-w // s)), s
    full = per_core(scaled(1), items)
    rows = [("(a) libjpeg-turbo full size, 1 core", full, "1.00x of full size")]
    for s in (2, 4, 8):
        r = per_core(scaled(s), items)
        rows.append((f"(a) libjpeg-turbo at scale 1/{s}, 1 core", r, f"{r / full:.2f}x of full size"))

    # the scale torchloader decodes each file at for a RandomResizedCrop(128) box
    from torchloader.readers._cropped import _scale

    spec, picked, counts = RandomResizedCrop(SIZE), [], {}
    for k, (path, h, w) in enumerate(items):
        s = _scale(spec.crop(h, w, random.Random(k)), (SIZE, SIZE))
        counts[s] = counts.get(s, 0) + 1
        picked.append((path, h, w, s))
    r = per_core(lambda item: scaled(item[3])(item), picked)
    mix = ", ".join(f"1/{s}: {100 * counts.get(s, 0) / len(items):.0f}%" for s in (1, 2, 4, 8))
    rows.append((f"(a) libjpeg-turbo at the scale RRC({SIZE}) picks, 1 core", r, f"{r / full:.2f}x ({mix})"))

    def pillow(item):
        with Image.open(item[0]) as im:
            return im.convert("RGB")

    r = per_core(pillow, items)
    rows.append(("(a) Pillow full size, convert('RGB'), 1 core", r, f"{r / full:.2f}x of libjpeg-turbo"))
    return rows, full


def ffcv_rows(
    python: str | None, root: str, work: str, workers: int, mode: str = "rrc"
) -> tuple[list[tuple], list[str]]:
    """FFCV's RandomResizedCrop loader (``mode="jpg"``: its plain JPEG loader), run by
    ``peers/ffcv_peer.py``: rows and config lines."""
    if not python:
        return [(f"FFCV ({mode})", None, "skipped: no --ffcv python")], []
    cmd = [python, os.path.join(HERE, "peers", "ffcv_peer.py"), "--data", root, "--work", work, "--no-check"]
    cmd += ["--modes", mode, "--workers", str(workers), "--crop-size", str(SIZE), "--batch-size", str(BATCH)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    except OSError as exc:
        return [("FFCV RandomResizedCrop", None, f"skipped: {exc}")], []
    found = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not found:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return [("FFCV RandomResizedCrop", None, f"skipped: exit {proc.returncode}: {last[:200]}")], []
    rows, configs = [], []
    for res in found:
        if "skipped" in res:
            rows.append((res["name"], None, f"skipped: {res['skipped'][:200]}"))
            continue
        note = f"peak PSS {res['peak_pss_bytes'] / 2**20:.0f} MiB, .beton {res['beton_bytes'] / 1e6:.0f} MB"
        rows.append((res["name"], res["samples_per_s"], note))
        configs.append(f"{res['name']}: ffcv {res['version']}, numba {res['numba']}; {res['config']}")
    return rows, configs


def pack_rows(root: str, paths: list[str], dst: str, n: int, workers: int) -> list[tuple]:
    """(d) and (e): the encoded pack, timed, read through two loaders; the read bounds."""
    folder_bytes = sum(os.path.getsize(p) for p in paths)
    start = time.perf_counter()
    summary = pack(root, dst, encoded=True, num_workers=2, progress=False)
    seconds = time.perf_counter() - start
    assert summary.samples == n and not summary.skipped, summary
    pack_bytes = sum(os.path.getsize(os.path.join(dst, f)) for f in os.listdir(dst))

    shards = [os.path.join(dst, s.file) for s in PackedDataset(dst).manifest.shards]
    buffer = bytearray(16 * 2**20)

    def read_shards():
        for shard in shards:
            with open(shard, "rb", buffering=0) as f:
                while f.readinto(buffer):
                    pass

    def read_files():
        for path in paths:
            read(path)

    shard_bytes = sum(os.path.getsize(s) for s in shards)
    shard_s = min(timed(read_shards) for _ in range(3))
    files_s = min(timed(read_files) for _ in range(3))
    files_mb = folder_bytes / 1e6 / files_s
    pack_mb = folder_bytes / 1e6 / seconds
    rows = [
        (
            "(d) pack(folder, encoded=True, num_workers=2)",
            n / seconds,
            f"{pack_mb:,.0f} MB/s of files ({pack_mb / files_mb:.2f}x the file-by-file read); "
            f"pack {pack_bytes / 1e6:.1f} MB = {pack_bytes / folder_bytes:.3f}x the folder's "
            f"{folder_bytes / 1e6:.1f} MB",
        ),
        ("(e) the pack's shards read whole, warm", n / shard_s, f"{shard_bytes / 1e6 / shard_s:,.0f} MB/s"),
        ("(e) the folder read file by file, warm", n / files_s, f"{files_mb:,.0f} MB/s"),
    ]
    ds = PackedDataset(dst, decode=RandomResizedCrop(SIZE))
    r = rate(plain(ds, workers), n)
    rows.append((f"(d) DataLoader(PackedDataset(encoded, decode=RRC({SIZE}))), {workers} workers", r, ""))
    fast = PackedDataset(dst, decode=RandomResizedCrop(SIZE), reader=ImageReader(fast_dct=True))
    name = f"(d) the same, reader=ImageReader(fast_dct=True) (FFCV's DCT), {workers} workers"
    rows.append((name, rate(plain(fast, workers), n), "not Pillow's pixels"))

    def chunked():
        return ChunkedLoader(ds, BATCH, ram_budget="256MiB", block_size=16, num_workers=workers)

    r = rate(chunked, n)
    rows.append((f"(d) ChunkedLoader(the same, block_size=16), {workers} workers", r, ""))
    return rows


def fixed_rows(root: str, dst: str, python: str | None, work: str, workers: int) -> list[tuple]:
    """(f) the fixed-size set (``make_data.make_set``, 128 x 128): an encoded pack read
    without a decode spec, exact and with ``fast_dct``, against FFCV's JPEG loader."""
    files = PathDataset.from_folder(root)
    n = len(files)
    pack(root, dst, encoded=True, num_workers=2, progress=False)
    rows, _ = ffcv_rows(python, root, work, workers, mode="jpg")
    rows = [(f"(f) {name}", r, note) for name, r, note in rows]
    for name, ds in (
        ("(f) DataLoader(PathDataset) of the folder", files),
        ("(f) DataLoader(PackedDataset(encoded))", PackedDataset(dst)),
        (
            "(f) DataLoader(PackedDataset(encoded, reader=ImageReader(fast_dct=True)))",
            PackedDataset(dst, reader=ImageReader(fast_dct=True)),
        ),
    ):
        rows.append((f"{name}, {workers} workers", rate(plain(ds, workers), n), f"{n} JPEGs of 128 x 128"))
    return rows


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=4000, help="JPEGs of every size")
    parser.add_argument("--data", help="make (or reuse) the JPEGs here (default: a temporary folder)")
    parser.add_argument("--workers", type=int, default=2, help="worker processes (FFCV: threads)")
    parser.add_argument(
        "--ffcv",
        default=FFCV_PYTHON if os.path.exists(FFCV_PYTHON) else None,
        help=f"the python of a venv with FFCV, to run peers/ffcv_peer.py (default: {FFCV_PYTHON} if it exists)",
    )
    parser.add_argument("--fixed", help="also (f): a folder of 128 x 128 JPEGs (make_data.make_set) as an encoded pack")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = make_mixed_set(args.data or os.path.join(tmp, "mixed"), args.n)
        ffcv_work = args.data.rstrip("/") + "-ffcv" if args.data else os.path.join(tmp, "ffcv")
        folder = PathDataset.from_folder(root, decode=RandomResizedCrop(SIZE))
        n = len(folder)
        paths = [folder.path(i) for i in range(n)]
        print(machine())
        print(
            f"{n} JPEGs of every size (longest side 100-500 px, quality 90; in the page cache) to "
            f"RandomResizedCrop({SIZE}) + flip, batch {BATCH}, shuffled; samples/s, median of 3 epochs\n"
        )
        rows, _ = decode_bounds(paths)

        baseline = TorchvisionRRC(paths, [int(y) for y in folder.labels])
        base = rate(plain(baseline, args.workers), n)
        rows.append((f"(b) ImageFolder + torchvision RRC({SIZE}), {args.workers} workers", base, "the baseline"))

        extra, configs = ffcv_rows(args.ffcv, root, ffcv_work, args.workers)
        rows += extra

        for workers in (args.workers, 0):
            r = rate(plain(folder, workers), n)
            name = f"(c) DataLoader(PathDataset.from_folder(decode=RRC({SIZE}))), {workers} workers"
            rows.append((name, r, ""))
        fast = PathDataset.from_folder(root, decode=RandomResizedCrop(SIZE), reader=ImageReader(fast_dct=True))
        name = f"(c) the same, reader=ImageReader(fast_dct=True) (FFCV's DCT), {args.workers} workers"
        rows.append((name, rate(plain(fast, args.workers), n), "not Pillow's pixels"))
        rows += pack_rows(root, paths, os.path.join(tmp, "encoded"), n, args.workers)
        if args.fixed:
            fixed_work = args.fixed.rstrip("/") + "-ffcv"
            rows += fixed_rows(args.fixed, os.path.join(tmp, "fixed"), args.ffcv, fixed_work, args.workers)

        print(
            table(
                [
                    (name, "-", "-", note) if r is None else (name, f"{r:,.0f}", f"{r / base:.2f}x", note)
                    for name, r, note in rows
                ],
                ("loader", "samples/s", "vs baseline (b)", "notes"),
            )
        )
        for line in configs:
            print(f"\n{line}")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
