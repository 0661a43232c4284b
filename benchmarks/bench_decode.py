"""JPEG decode rate per core, file read included: libjpeg-turbo (simplejpeg) vs Pillow.

The files are random 128x128 crops of the two photographs scikit-learn ships,
written as quality-90 JPEGs. Each reader decodes every file once after a warm-up
pass (page cache warm), on one core, through ``torchloader.ImageReader`` and
through the plain calls, so the reader's own overhead is visible.

Run: ``python benchmarks/bench_decode.py [--n 2000]``
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import numpy as np
import simplejpeg
from common import machine, table
from PIL import Image
from sklearn.datasets import load_sample_images

from torchloader import ImageReader


def make_jpegs(folder: str, n: int, size: int = 128, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    photos = load_sample_images().images
    paths = []
    for i in range(n):
        photo = photos[i % len(photos)]
        top = rng.integers(0, photo.shape[0] - size)
        left = rng.integers(0, photo.shape[1] - size)
        path = os.path.join(folder, f"{i:06d}.jpg")
        Image.fromarray(photo[top : top + size, left : left + size]).save(path, quality=90)
        paths.append(path)
    return paths


def rate(read, paths: list[str]) -> float:
    for p in paths[:200]:
        read(p)
    start = time.perf_counter()
    for p in paths:
        read(p)
    return len(paths) / (time.perf_counter() - start)


def plain_simplejpeg(path: str) -> np.ndarray:
    with open(path, "rb") as f:
        return simplejpeg.decode_jpeg(f.read(), colorspace="RGB")


def plain_pillow(path: str) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        paths = make_jpegs(folder, args.n)
        rates = {
            "simplejpeg.decode_jpeg (libjpeg-turbo)": rate(plain_simplejpeg, paths),
            "Pillow open + convert('RGB')": rate(plain_pillow, paths),
            "ImageReader() (torchloader, auto)": rate(ImageReader(), paths),
            "ImageReader(decoder='pillow')": rate(ImageReader(decoder="pillow"), paths),
        }
    pillow = rates["Pillow open + convert('RGB')"]
    print(machine())
    print(f"{args.n} JPEG files, 128x128 RGB, quality 90, one core, warm page cache\n")
    rows = [(mode, f"{r:,.0f}", f"{r / pillow:.2f}x") for mode, r in rates.items()]
    print(table(rows, ("decoder", "files/s per core", "vs Pillow")))


if __name__ == "__main__":
    main()
