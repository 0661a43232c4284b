"""What per-sample randomness costs: a transform seeded from ``(seed, epoch, index)`` vs not.

Per sample, side by side in interleaved rounds (see NOTE [ per-sample randomness ]):

- the transform alone, drawing from the generators as they are (what torch does);
- ``seeded(...)`` in a worker process: the three global generators seeded first;
- ``seeded(...)`` in the main process: seeded, then torch's state restored and
  NumPy's and Python's re-seeded from a draw of the user's stream;

with two transforms: a random crop and flip of a 3 x 128 x 128 uint8 tensor in
torch ops (what torchvision's ``RandomResizedCrop``-less pipelines do), and an
identity (the bare overhead). For scale: decoding a 128 x 128 JPEG (simplejpeg
when installed, else Pillow), the work that sample costs anyway.

Run: ``python benchmarks/bench_randomness.py [--samples 20000] [--rounds 5]``
"""

from __future__ import annotations

import argparse
import io
import statistics
import time

import numpy as np
import torch
from common import machine, table
from PIL import Image

from torchloader._core import randomness
from torchloader._core.randomness import reading_epoch, seeded


def crop_flip(x: torch.Tensor) -> torch.Tensor:
    top, left = (int(v) for v in torch.randint(0, 17, (2,)))
    crop = x[:, top : top + 112, left : left + 112]
    return crop.flip(-1) if torch.rand(()) < 0.5 else crop


def identity(x: torch.Tensor) -> torch.Tensor:
    return x


def per_sample(call, samples: int) -> float:
    """Microseconds per call, over ``samples`` calls."""
    start = time.perf_counter()
    for i in range(samples):
        call(i)
    return (time.perf_counter() - start) / samples * 1e6


def decode_us(samples: int) -> tuple[str, float]:
    image = np.random.default_rng(0).integers(0, 255, (128, 128, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=90)
    data = buffer.getvalue()
    try:
        import simplejpeg

        return "simplejpeg", per_sample(lambda i: simplejpeg.decode_jpeg(data), samples)
    except ImportError:
        return "Pillow", per_sample(lambda i: np.asarray(Image.open(io.BytesIO(data)).convert("RGB")), samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--samples", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    x = torch.zeros(3, 128, 128, dtype=torch.uint8)

    def unseeded(transform):
        return lambda i: transform(x)

    def seeded_in(worker: bool, transform):
        def call(i):
            randomness._worker = worker
            return seeded(transform, x, i)

        return call

    cases = {}
    for name, transform in (("crop + flip", crop_flip), ("identity", identity)):
        cases[name, "unseeded (torch's way)"] = unseeded(transform)
        cases[name, "seeded, worker process"] = seeded_in(True, transform)
        cases[name, "seeded, main process"] = seeded_in(False, transform)
    measured: dict[tuple[str, str], list[float]] = {}
    with reading_epoch(0, 1):
        for _ in range(args.rounds):
            for key, call in cases.items():
                measured.setdefault(key, []).append(per_sample(call, args.samples))
    randomness._worker = False
    decoder, decode = decode_us(args.samples)
    us = {key: statistics.median(values) for key, values in measured.items()}
    rows = []
    for (name, how), value in us.items():
        extra = value - us[name, "unseeded (torch's way)"]
        rows.append((name, how, f"{value:.1f}", f"{extra:+.1f}", f"{extra / decode:.2f}x"))
    print(f"{args.samples} calls a measurement, median of {args.rounds} interleaved rounds")
    print(machine())
    print(table(rows, ("transform", "randomness", "us/sample", "added us", "added / one decode")))
    print(f"one 128x128 JPEG decode ({decoder}): {decode:.1f} us")


if __name__ == "__main__":
    torch.set_num_threads(1)
    main()
