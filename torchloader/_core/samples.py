"""What a sample is to the loaders that stack samples: ``x`` or ``(x, y)``."""

from __future__ import annotations

from typing import Any

import torch

from torchloader.readers._tensor import to_tensor

__all__ = ["MixedShapes", "ShapeMismatch", "describe", "mismatch_message", "split_sample"]


def split_sample(sample: Any) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``(x, y)`` tensors of a sample that is ``x`` or ``(x, y)`` (y may be a number)."""
    if isinstance(sample, (tuple, list)):
        if len(sample) != 2:
            raise ValueError(
                f"samples must be x or (x, y) to be stacked (got a {type(sample).__name__} of {len(sample)} items)"
            )
        x, y = sample
        return to_tensor(x, what="x"), torch.as_tensor(y)
    return to_tensor(sample, what="the sample"), None


def describe(x: torch.Tensor, y: torch.Tensor | None) -> str:
    """``'x (3, 32, 32) torch.uint8, y () torch.int64'``: what must match across samples."""
    label = "" if y is None else f", y {tuple(y.shape)} {y.dtype}"
    return f"x {tuple(x.shape)} {x.dtype}{label}"


def mismatch_message(index: int, what: str, other: int, other_what: str) -> str:
    return (
        f"sample {index} has {what} but sample {other} has {other_what}; samples must "
        f"share one shape and dtype to be stacked into one tensor. Resize or crop "
        f"them to one size in the dataset's transform{_DECODE_HINT}"
    )


_DECODE_HINT = " (images: decode=RandomResizedCrop(size) or CenterCrop(size) crops them as they decode)"


class MixedShapes(ValueError):
    """The samples of one batch differ in shape or dtype, so they cannot share one buffer."""


class ShapeMismatch(ValueError):
    """A sample does not fit the buffer it is read into; ``what`` describes it."""

    def __init__(self, index: int, what: str) -> None:
        super().__init__(f"sample {index} has {what}, which does not fit the buffer")
        self.index = index
        self.what = what
