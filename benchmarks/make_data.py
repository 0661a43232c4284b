"""Realistic benchmark data on disk: JPEG photos in class folders, and small grey digits.

- ``jpeg128/<class>/<i>.jpg``: ``--n`` (default 20,000) random 128x128 crops of the
  two photographs scikit-learn ships, quality 90, in ``--classes`` class folders
  (like an ImageNet-style tree: files stored sorted by class).
- ``grey28/<class>/<i>.png``: ``--n-small`` (default 20,000) 28x28 greyscale crops,
  the per-sample-overhead case (tiny files where Python work per sample dominates).
- ``mixed/<class>/<i>.jpg`` (:func:`make_mixed_set`, ``--mixed``): photos of every
  size, as a real folder holds: 4,000 crops whose longest side is drawn from 100 to
  500 px and whose shorter side is 0.5 to 1 times it, either orientation, quality 90.

A finished set is marked by ``DONE`` holding its parameters; a re-run with the same
parameters does nothing, so the runner and the peers can call it cheaply.

Run: ``python benchmarks/make_data.py OUT [--n 20000] [--n-small 20000]``
"""

from __future__ import annotations

import argparse
import json
import os
import shutil

import numpy as np
from PIL import Image
from sklearn.datasets import load_sample_images


def _crops(n: int, size: int, seed: int):
    rng = np.random.default_rng(seed)
    photos = load_sample_images().images
    for i in range(n):
        photo = photos[i % len(photos)]
        top = rng.integers(0, photo.shape[0] - size)
        left = rng.integers(0, photo.shape[1] - size)
        yield i, photo[top : top + size, left : left + size]


def _write_set(root: str, params: dict, classes: int, images) -> str:
    """Write ``images`` (``(i, PIL image, suffix, save options)``) under ``root/<class>/``,
    class ``i * classes // n``; a set already there with ``params`` is reused. Only a
    finished set appears under its name (``DONE`` holds its parameters)."""
    done = os.path.join(root, "DONE")
    if os.path.exists(done):
        with open(done) as f:
            if json.load(f) == params:
                return root
        shutil.rmtree(root)
    tmp = root + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    for c in range(classes):
        os.makedirs(os.path.join(tmp, f"class{c:02d}"))
    for i, image, suffix, options in images:
        folder = os.path.join(tmp, f"class{i * classes // params['n']:02d}")
        image.save(os.path.join(folder, f"{i:06d}{suffix}"), **options)
    with open(os.path.join(tmp, "DONE"), "w") as f:
        json.dump(params, f)
    os.replace(tmp, root)
    return root


def make_set(root: str, n: int, *, size: int, grey: bool, classes: int, seed: int = 0) -> str:
    """Write ``n`` crops under ``root/<class>/``; return ``root``. Idempotent."""
    params = {"n": n, "size": size, "grey": grey, "classes": classes, "seed": seed}
    images = (
        (i, Image.fromarray(crop).convert("L"), ".png", {})
        if grey
        else (i, Image.fromarray(crop), ".jpg", {"quality": 90})
        for i, crop in _crops(n, size, seed)
    )
    return _write_set(root, params, classes, images)


def _mixed_crops(n: int, seed: int):
    rng = np.random.default_rng(seed)
    photos = load_sample_images().images  # 427 x 640 each
    for i in range(n):
        photo = photos[i % len(photos)]
        long = int(rng.integers(100, 501))
        short = max(1, round(long * rng.uniform(0.5, 1.0)))
        h, w = (long, short) if rng.random() < 0.5 else (short, long)
        if h > photo.shape[0]:  # a portrait taller than the photo: lay it down
            h, w = min(w, photo.shape[0]), h
        top = rng.integers(0, photo.shape[0] - h + 1)
        left = rng.integers(0, photo.shape[1] - w + 1)
        yield i, photo[top : top + h, left : left + w]


def make_mixed_set(root: str, n: int = 4000, *, classes: int = 10, seed: int = 0) -> str:
    """``n`` JPEGs of every size from 100 to 500 px under ``root/<class>/``; idempotent."""
    params = {"n": n, "mixed": [100, 500], "classes": classes, "seed": seed}
    images = ((i, Image.fromarray(crop), ".jpg", {"quality": 90}) for i, crop in _mixed_crops(n, seed))
    return _write_set(root, params, classes, images)


def make_data(out: str, n: int = 20_000, n_small: int = 20_000, classes: int = 10) -> dict[str, str]:
    """Both sets under ``out``; returns ``{"jpeg128": path, "grey28": path}``."""
    os.makedirs(out, exist_ok=True)
    return {
        "jpeg128": make_set(os.path.join(out, "jpeg128"), n, size=128, grey=False, classes=classes),
        "grey28": make_set(os.path.join(out, "grey28"), n_small, size=28, grey=True, classes=classes),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out")
    parser.add_argument("--n", type=int, default=20_000)
    parser.add_argument("--n-small", type=int, default=20_000)
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--mixed", type=int, default=0, help="also this many JPEGs of every size (mixed/)")
    args = parser.parse_args()
    for name, path in make_data(args.out, args.n, args.n_small, args.classes).items():
        print(f"{name}: {path}")
    if args.mixed:
        print(f"mixed: {make_mixed_set(os.path.join(args.out, 'mixed'), args.mixed, classes=args.classes)}")


if __name__ == "__main__":
    main()
