"""``Resize``: a uint8 image tensor to a fixed size, the same way everywhere.

``torchloader pack`` resizes with this class, so ``PathDataset(...,
transform=Resize(...))`` gives exactly the pixels a packed data set holds.
Resizing goes through Pillow (bilinear, with Pillow's antialiasing when
shrinking), one image at a time.
"""

from __future__ import annotations

import numbers

import numpy as np
import torch
from PIL import Image

__all__ = ["Resize"]


class Resize:
    """Resize a ``C x H x W`` uint8 tensor to ``size`` (``(height, width)`` or one int).

    Args:
        size: the output height and width; one int gives a square.
        crop: keep the aspect ratio: resize the shorter side to fit, then cut the
            centre (default: stretch to ``size``).

    Example:
        >>> x = torch.zeros(3, 40, 60, dtype=torch.uint8)
        >>> Resize(32)(x).shape, Resize((20, 30), crop=True)(x).shape
        (torch.Size([3, 32, 32]), torch.Size([3, 20, 30]))
    """

    def __init__(self, size: int | tuple[int, int], *, crop: bool = False) -> None:
        self.size = _check_size(size)
        self.crop = bool(crop)

    def __repr__(self) -> str:
        return f"Resize({self.size}, crop={self.crop})"

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        uint8_chw = isinstance(x, torch.Tensor) and x.ndim == 3 and x.dtype == torch.uint8
        if not uint8_chw or not 1 <= x.shape[0] <= 4:
            got = f"{x.dtype} of shape {tuple(x.shape)}" if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"Resize takes a uint8 C x H x W tensor with 1 to 4 channels (got {got})")
        pixels = x.permute(1, 2, 0).numpy()
        image = Image.fromarray(pixels[:, :, 0] if pixels.shape[2] == 1 else pixels)
        height, width = self.size
        if self.crop:
            image = image.crop(_centre_box(image.width, image.height, width, height))
        if (image.height, image.width) != (height, width):
            image = image.resize((width, height), Image.BILINEAR)
        array = np.asarray(image)
        if array.ndim == 2:
            array = array[:, :, None]
        return torch.from_numpy(array.copy()).permute(2, 0, 1)


def _check_size(size: int | tuple[int, int]) -> tuple[int, int]:
    pair = (size, size) if isinstance(size, numbers.Integral) else size
    if (
        not isinstance(pair, (tuple, list))
        or len(pair) != 2
        or not all(isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in pair)
    ):
        raise TypeError(f"size must be an int or (height, width) of ints (got {size!r})")
    if min(pair) < 1:
        raise ValueError(f"size must be positive (got {size!r})")
    return int(pair[0]), int(pair[1])


def _centre_box(w: int, h: int, out_w: int, out_h: int) -> tuple[int, int, int, int]:
    """The largest centred box of the output's aspect ratio inside a ``w x h`` image."""
    if w * out_h > h * out_w:  # too wide: cut the sides
        box_w = max(1, round(h * out_w / out_h))
        left = (w - box_w) // 2
        return left, 0, left + box_w, h
    box_h = max(1, round(w * out_h / out_w))
    top = (h - box_h) // 2
    return 0, top, w, top + box_h
