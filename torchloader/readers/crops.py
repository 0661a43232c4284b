"""Decode specs: the crop, resize and flip applied while an image is decoded.

``PathDataset(..., decode=RandomResizedCrop(128))`` reads images of any size
into ``3 x 128 x 128`` samples. A spec only says which box of the source image
becomes the sample and whether it is flipped (:meth:`crop`, a pure function of
the image's size and a random generator); ``readers/_cropped.py`` does the
decoding: a JPEG at the smallest libjpeg-turbo scale that still covers the
output, then one antialiased resize of the box into the sample's slot.

``RandomResizedCrop`` draws its box as torchvision's
``RandomResizedCrop.get_params`` does (10 tries of an area and a log-uniform
aspect ratio, then the centre fallback), from a generator seeded by
``(seed, epoch, sample index)`` where the loader knows the epoch
(NOTE [ per-sample randomness ] in ``_core/randomness.py``), so the same
sample of the same epoch gets the same crop with any number of workers.
"""

from __future__ import annotations

import math
import numbers
import random
from typing import NamedTuple

from torchloader.readers.resize import _check_size

__all__ = ["CenterCrop", "Crop", "RandomResizedCrop"]


class Crop(NamedTuple):
    """The box of the source image (in its pixels; may be fractional) that becomes
    the sample, and whether the sample is flipped left to right."""

    top: float
    left: float
    height: float
    width: float
    flip: bool = False


class RandomResizedCrop:
    """A random box of a random area and aspect ratio, resized to ``size``, flipped at random.

    Args:
        size: output ``(height, width)``, or one int for a square.
        scale: the box's area as a fraction of the image's, drawn uniformly.
        ratio: the box's width / height, drawn log-uniformly.
        flip: the probability of a left-right flip (0 for none).

    Example:
        >>> spec = RandomResizedCrop(128)
        >>> spec.crop(300, 400, random.Random(0)) == spec.crop(300, 400, random.Random(0))
        True
    """

    random = True  # draws from the generator it is given

    def __init__(
        self,
        size: int | tuple[int, int],
        scale: tuple[float, float] = (0.08, 1.0),
        ratio: tuple[float, float] = (3 / 4, 4 / 3),
        flip: float = 0.5,
    ) -> None:
        self.size = _check_size(size)
        self.scale = _check_range("scale", scale, upper=1.0)
        self.ratio = _check_range("ratio", ratio)
        if not isinstance(flip, numbers.Real) or not 0.0 <= flip <= 1.0:
            raise ValueError(f"flip must be a probability from 0 to 1 (got {flip!r})")
        self.flip = float(flip)

    def __repr__(self) -> str:
        return f"RandomResizedCrop({self.size}, scale={self.scale}, ratio={self.ratio}, flip={self.flip})"

    def crop(self, height: int, width: int, rng: random.Random) -> Crop:
        """The box for an image of ``height x width``, drawn from ``rng``."""
        area = height * width
        log_lo, log_hi = math.log(self.ratio[0]), math.log(self.ratio[1])
        for _ in range(10):
            target = area * rng.uniform(self.scale[0], self.scale[1])
            aspect = math.exp(rng.uniform(log_lo, log_hi))
            w = int(round(math.sqrt(target * aspect)))
            h = int(round(math.sqrt(target / aspect)))
            if 0 < w <= width and 0 < h <= height:
                top = rng.randint(0, height - h)
                left = rng.randint(0, width - w)
                return Crop(top, left, h, w, self._flips(rng))
        in_ratio = width / height  # the centre fallback, as torchvision's
        if in_ratio < min(self.ratio):
            w, h = width, int(round(width / min(self.ratio)))
        elif in_ratio > max(self.ratio):
            w, h = int(round(height * max(self.ratio))), height
        else:
            w, h = width, height
        return Crop((height - h) // 2, (width - w) // 2, h, w, self._flips(rng))

    def _flips(self, rng: random.Random) -> bool:
        return self.flip > 0 and rng.random() < self.flip


class CenterCrop:
    """The centre of the image, after resizing its shorter side to ``resize``.

    As torchvision's ``Resize(resize)`` then ``CenterCrop(size)``, done as one
    resize of the box that those two keep. ``resize`` defaults to the larger side
    of ``size``: the largest centred box of the output's aspect ratio. ImageNet's
    evaluation uses ``CenterCrop(224, resize=256)``.

    Example:
        >>> CenterCrop(100, resize=200).crop(400, 600)  # the centre 200 x 200 of the 400 x 600 image
        Crop(top=100.0, left=200.0, height=200.0, width=200.0, flip=False)
    """

    random = False

    def __init__(self, size: int | tuple[int, int], *, resize: int | None = None) -> None:
        self.size = _check_size(size)
        self.resize = max(self.size) if resize is None else resize
        if not isinstance(self.resize, numbers.Integral) or isinstance(self.resize, bool):
            raise TypeError(f"resize must be an int (the shorter side's length) or None (got {resize!r})")
        if self.resize < max(self.size):
            raise ValueError(f"resize={resize} is smaller than the crop {self.size}: nothing to cut it from")
        self.resize = int(self.resize)

    def __repr__(self) -> str:
        return f"CenterCrop({self.size}, resize={self.resize})"

    def crop(self, height: int, width: int, rng: random.Random | None = None) -> Crop:
        """The box for an image of ``height x width`` (``rng`` is not used)."""
        if height <= width:  # torchvision's Resize: the shorter side to `resize`, the other truncated
            new_h, new_w = self.resize, int(self.resize * width / height)
        else:
            new_h, new_w = int(self.resize * height / width), self.resize
        out_h, out_w = self.size
        top, left = int(round((new_h - out_h) / 2.0)), int(round((new_w - out_w) / 2.0))
        sy, sx = height / new_h, width / new_w
        return Crop(top * sy, left * sx, out_h * sy, out_w * sx)


def _check_range(name: str, pair: tuple[float, float], upper: float | None = None) -> tuple[float, float]:
    ok = isinstance(pair, (tuple, list)) and len(pair) == 2 and all(isinstance(v, numbers.Real) for v in pair)
    if not ok or not 0 < pair[0] <= pair[1] or (upper is not None and pair[1] > upper):
        bound = f" and at most {upper}" if upper is not None else ""
        raise ValueError(f"{name} must be (low, high) with 0 < low <= high{bound} (got {pair!r})")
    return float(pair[0]), float(pair[1])
