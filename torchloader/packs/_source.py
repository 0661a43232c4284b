"""What ``torchloader pack`` can read: an image folder, a CSV, or a folder of ``.npy`` files."""

from __future__ import annotations

import os
from typing import Any

from torchloader.datasets._folder import IMG_EXTENSIONS, find_classes
from torchloader.datasets.path import PathDataset
from torchloader.readers.arrays import NpyReader
from torchloader.readers.image import ImageReader
from torchloader.readers.resize import Resize
from torchloader.readers.suffix import IMAGE_SUFFIXES, SuffixReader

__all__ = ["PackSource", "open_source"]


class PackSource:
    """A ``PathDataset`` plus whether its samples are images (stored H x W x C)."""

    def __init__(self, dataset: PathDataset, images: bool) -> None:
        self.dataset = dataset
        self.images = images
        self.labels = dataset.labels
        self.classes = dataset.classes

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> Any:
        return self.dataset[index]

    def path(self, index: int) -> str:
        return self.dataset.path(index)


def open_source(
    src: str, *, size: int | tuple[int, int] | None, crop: bool, mode: str
) -> tuple[PackSource, dict[str, Any]]:
    """The source to pack and the options that define the pack (for re-runs)."""
    if crop and size is None:
        raise ValueError("crop=True (--crop) cuts images to size=...; give a size too")
    resize = None if size is None else Resize(size, crop=crop)
    image = ImageReader(mode)
    reader = SuffixReader({suffix: image for suffix in IMAGE_SUFFIXES})
    if os.path.isfile(src) and src.lower().endswith(".csv"):
        ds = PathDataset.from_csv(src, reader=reader, transform=resize)
    elif os.path.isdir(src) and find_classes(src):
        # the files ImageFolder would take, or class folders of arrays
        ds = PathDataset.from_folder(src, reader=reader, transform=resize, extensions=(*IMG_EXTENSIONS, ".npy"))
    elif os.path.isdir(src):
        paths = sorted(os.path.join(src, f) for f in os.listdir(src) if f.lower().endswith(".npy"))
        if not paths:
            raise FileNotFoundError(
                f"nothing to pack in '{src}': expected class folders (root/<class>/<file>), "
                f"a .csv file of path,label rows, or .npy files"
            )
        ds = PathDataset(paths, reader=NpyReader())
    else:
        raise FileNotFoundError(f"'{src}' is neither a folder nor a .csv file")
    suffixes = {os.path.splitext(ds.path(i))[1].lower() for i in range(min(len(ds), 1000))}
    images = bool(suffixes & set(IMAGE_SUFFIXES))
    if images and suffixes - set(IMAGE_SUFFIXES):
        raise ValueError(f"'{src}' mixes images and other files ({sorted(suffixes)}); pack them separately")
    if resize is not None and not images:
        raise ValueError(
            f"size={size!r} resizes images, but '{src}' holds arrays ({sorted(suffixes)}); "
            f"leave size out: arrays are packed as they are"
        )
    options = {
        "source": os.path.abspath(src),
        "size": None if resize is None else list(resize.size),
        "crop": crop,
        "mode": mode if images else None,
    }
    return PackSource(ds, images), options
