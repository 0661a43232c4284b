"""What ``torchloader pack`` can read: an image folder, a CSV, or a folder of ``.npy`` files."""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from torchloader.datasets._folder import IMG_EXTENSIONS, find_classes
from torchloader.datasets.path import PathDataset
from torchloader.protocols import offers
from torchloader.readers.arrays import NpyReader
from torchloader.readers.image import ImageReader
from torchloader.readers.resize import Resize
from torchloader.readers.suffix import IMAGE_SUFFIXES, SuffixReader

__all__ = ["PackSource", "open_source"]


class PackSource:
    """A ``PathDataset`` plus whether its samples are images (stored H x W x C).

    ``read_into`` is the fast path of a pack worker: a JPEG that libjpeg-turbo can
    decode exactly at the stored size goes straight into its row, the way
    ``PathDataset.read_samples_into`` fills a batch. That holds with a ``Resize``
    too: an image already of the size it resizes to comes out of it unchanged
    (stretched or cropped, the box is the whole image), so decoding it in place
    gives the same pixels. After ``_TRIES`` files in a row that do not fit (other
    sizes, PNGs, CMYK JPEGs) it is tried on one sample in ``_RETRY`` only, until one
    fits again, so that packing images that all need resizing rarely reads a file
    twice, while an odd file among ones that fit costs nothing.
    """

    _TRIES, _RETRY = 8, 64

    def __init__(self, dataset: PathDataset, images: bool) -> None:
        self.dataset = dataset
        self.images = images
        self.labels = dataset.labels
        self.classes = dataset.classes
        transform = dataset.transform
        direct = transform is None or type(transform) is Resize
        self._into = dataset.reader.read_into if images and direct and offers(dataset.reader, "read_into") else None
        self._misses = 0  # samples since the last one decoded in place

    def read_into(self, index: int, out: np.ndarray) -> bool:
        """Decode sample ``index`` straight into the ``H x W x C`` array ``out`` where
        that gives ``ds[index]``'s pixels exactly, and return True; else return False
        (``out`` may then hold anything): a file that does not fit, or that fails,
        is then read the ordinary way, which also words its error."""
        if self._into is None:
            return False
        self._misses += 1  # samples since the last one that fitted
        if self._misses > self._TRIES and self._misses % self._RETRY:
            return False
        try:
            done = self._into(self.dataset.path(index), out)
        except Exception:
            done = False
        if done:
            self._misses = 0
        return done

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
