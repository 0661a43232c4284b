"""Where ``PathDataset``'s paths and labels come from: an image folder or a CSV file."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any, TypeVar

import numpy as np

from torchloader.datasets._csv import read_csv_table
from torchloader.datasets._folder import IMG_EXTENSIONS, scan_folder
from torchloader.readers.suffix import Reader, SuffixReader
from torchloader.remote.files import list_folder
from torchloader.remote.urls import is_url

__all__ = ["FromFiles"]

PathLike = str | os.PathLike[str]
T = TypeVar("T")


class FromFiles:
    """``PathDataset.from_folder`` and ``PathDataset.from_csv``: the constructors that
    find the paths and labels, then call ``cls(paths, labels, ...)``."""

    @classmethod
    def from_folder(
        cls: type[T],
        root: PathLike,
        *,
        extensions: Sequence[str] | None = None,
        allow_empty: bool = False,
        allow_nested_only: bool = False,
        reader: Reader | None = None,
        **options: Any,
    ) -> T:
        """One class per sub-folder, ``root/<class>/.../<file>``: the ``classes``,
        ``class_to_idx`` and samples (order included) ``ImageFolder`` gives: regular
        files (links followed, at any depth in a class folder) ending in ``extensions``.
        FIFOs, devices, broken links and files directly in ``root`` are not listed.

        Args:
            root: folder with one sub-folder per class.
            extensions: suffixes to keep, case-insensitive (default: torchvision's
                ``IMG_EXTENSIONS``, .jpg .jpeg .png .ppm .bmp .pgm .tif .tiff .webp;
                e.g. ``(".npy",)`` for arrays, or add ``".gif"``).
            allow_empty: accept class folders without matching files.
            allow_nested_only: accept a root that looks one level too high
                (``root/train/cat/1.jpg``; see ``torchloader.datasets._folder.scan_folder``).
            reader, **options: as for ``PathDataset`` (``transform``, ``decode``,
                ``target_transform``, ``on_error``, ``max_skipped``).
        ``root`` may be a URL (``s3://bucket/train``, with ``storage_options=``).
        Raises FileNotFoundError (no folder, no class folders or files, an empty class)
        or ValueError (a ``torchloader pack`` folder in the tree, a root too high).

        Example:
            >>> ds = PathDataset.from_folder("data/train")  # doctest: +SKIP
            >>> ds.classes  # doctest: +SKIP
            ['cat', 'dog']
        """
        extensions = IMG_EXTENSIONS if extensions is None else extensions
        if is_url(root):  # a bucket folder (remote/files.py)
            classes, paths, labels = list_folder(str(root), extensions, options.get("storage_options"))
        else:
            classes, paths, labels = scan_folder(
                root, extensions, allow_empty=allow_empty, allow_nested_only=allow_nested_only
            )
        if reader is None and options.get("decode") is None:  # (decode=...: an ImageReader)
            reader = SuffixReader()
        return cls(paths, np.asarray(labels, dtype=np.int64), reader=reader, classes=classes, **options)

    @classmethod
    def from_csv(
        cls: type[T],
        csv_path: PathLike,
        *,
        path_column: str = "path",
        label_column: str | None = "label",
        root: PathLike | None = None,
        **options: Any,
    ) -> T:
        """Paths and labels from a CSV file (UTF-8, a header row, one row per sample).

        Path cells are taken exactly as written, spaces included (an empty or all-space
        cell is refused); relative ones resolve against ``root`` (default: the CSV's
        folder) and must stay inside it. Labels (spaces around them ignored) are all
        integers (``7``, ``007``, ``-1``) or all class names (``classes``: their sorted
        set); decimals (``2.0``) or integers mixed with names are refused, naming the
        line of the first offending cell. ``label_column=None`` reads no labels. Other
        keyword arguments are as for ``PathDataset`` (``reader``, ``transform``, ...).

        Example:
            >>> ds = PathDataset.from_csv("train.csv", root="images")  # doctest: +SKIP
        """
        paths, labels = read_csv_table(csv_path, path_column, label_column, root)
        return cls(paths, labels, **options)
