"""Scan a class-per-folder tree, the layout torchvision's ``ImageFolder`` reads::

    root/
        cat/
            001.jpg
            nested/002.jpg      # sub-folders of a class folder belong to it
        dog/
            003.png

Classes are the sorted names of ``root``'s sub-folders and files are sorted, so
index -> file is the same on every machine and ``classes``/``class_to_idx`` equal
what ``ImageFolder`` gives on the same folder. Symbolic links are followed, but a
folder reached twice (a link loop) is scanned once. Only regular files (links to
them included) are samples: a FIFO, a device, a socket or a broken link is never
listed, so a scan never opens one. Refused rather than read as samples:

- a pack written by ``torchloader pack`` (a folder with ``manifest.json`` of
  format ``"torchloader.pack"``) anywhere in the tree: its shards are not images;
- a root one level too high (see :func:`scan_folder`, ``allow_nested_only``).
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterable

from torchloader.errors import show_names
from torchloader.packs.format import FORMAT, MANIFEST, is_pack

__all__ = ["IMG_EXTENSIONS", "find_classes", "scan_folder"]

_LAYOUT = "expected root/<class>/<file>"
# torchvision.datasets.folder.IMG_EXTENSIONS: what ImageFolder takes by default.
IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


def find_classes(root: str) -> list[str]:
    """Sorted names of the sub-folders of ``root`` (the classes)."""
    if not os.path.isdir(root):
        raise FileNotFoundError(f"'{root}' is not a folder; {_LAYOUT}")
    with os.scandir(root) as entries:
        return sorted(entry.name for entry in entries if entry.is_dir())


def scan_folder(
    root: str | os.PathLike[str],
    suffixes: Iterable[str],
    *,
    allow_empty: bool = False,
    allow_nested_only: bool = False,
) -> tuple[list[str], list[str], list[int]]:
    """Return ``(classes, paths, labels)`` for the files of a class-per-folder tree.

    Args:
        root: the folder holding one sub-folder per class.
        suffixes: file suffixes to keep (case-insensitive), e.g. ``(".jpg", ".png")``.
        allow_empty: accept class folders without any matching file.
        allow_nested_only: accept a tree that looks one level too high. Without
            it, the scan is refused when no class folder holds a matching file
            directly (all are in sub-folders) and the sub-folders look like
            classes themselves: one class folder with two or more of them, or a
            sub-folder name found in two class folders (``train/cat``, ``test/cat``).
            Sub-classes with names of their own (``cat/tabby``, ``dog/pug``), or
            any class folder with a file of its own, pass.

    Raises:
        FileNotFoundError: ``root`` is missing, has no class folders, or (unless
            ``allow_empty``) a class folder holds no matching file. The message
            shows what was scanned and the expected layout.
        ValueError: a pack directory in the tree, or a root one level too high.
    """
    root = os.fspath(root)
    if isinstance(suffixes, str):  # ".jpg" is one suffix, not four characters
        suffixes = (suffixes,)
    suffixes = tuple(s.lower() for s in suffixes)
    if is_pack(root):
        raise ValueError(_pack_message(root, None))
    classes = find_classes(root)
    if not classes:
        raise FileNotFoundError(_no_classes_message(root, suffixes))
    found = {name: _files_under(root, os.path.join(root, name), suffixes) for name in classes}
    paths = [path for name in classes for path in found[name]]
    labels = [label for label, name in enumerate(classes) for _ in found[name]]
    if not paths:
        raise FileNotFoundError(
            f"no files ending in {show_names(suffixes)} under '{root}' (scanned "
            f"{len(classes)} class folders: {show_names(classes)}); {_LAYOUT}. "
            f"Is the root one level too high?"
        )
    if not allow_nested_only:
        _check_not_too_high(root, found, suffixes)
    empty = [name for name in classes if not found[name]]
    if empty and not allow_empty:
        raise FileNotFoundError(
            f"class folders without files ending in {show_names(suffixes)} under "
            f"'{root}': {show_names(empty)}; remove them or pass allow_empty=True"
        )
    return classes, paths, labels


def _files_under(root: str, folder: str, suffixes: tuple[str, ...]) -> list[str]:
    # Depth first in sorted order (as os.walk with sorted dirnames), pruning a
    # folder seen before (a link loop); then sorted by folder like ImageFolder's
    # sorted(os.walk(...)) so the order matches it exactly.
    visits = []
    seen = set()
    stack = [folder]
    while stack:
        dirpath = stack.pop()
        stat = os.stat(dirpath)
        if (stat.st_dev, stat.st_ino) in seen:  # a symlink loop: scanned already
            continue
        seen.add((stat.st_dev, stat.st_ino))
        files, folders = [], []
        with os.scandir(dirpath) as entries:
            for entry in entries:
                if entry.is_dir():  # links followed, as os.walk(followlinks=True)
                    folders.append(entry.path)
                elif entry.is_file():  # regular files only: no stat for a plain entry
                    files.append(entry.name)
        if MANIFEST in files and is_pack(dirpath):
            raise ValueError(_pack_message(dirpath, root))
        stack.extend(sorted(folders, reverse=True))  # so the smallest name is next
        visits.append((dirpath, files))
    return [
        os.path.join(dirpath, name)
        for dirpath, files in sorted(visits)
        for name in sorted(files)
        if name.lower().endswith(suffixes)
    ]


def _pack_message(folder: str, root: str | None) -> str:
    where = "" if root is None else f" inside the image root '{root}'"
    fix = "" if root is None else f", and move it out of '{root}'"
    return (
        f"'{folder}'{where} is a pack written by `torchloader pack` ({MANIFEST} of format "
        f"{FORMAT!r}), not a folder of images: its shards are not samples. Load it with "
        f"PackedDataset('{folder}'){fix}"
    )


def _check_not_too_high(root: str, found: dict[str, list[str]], suffixes: tuple[str, ...]) -> None:
    """Refuse ``root/<split>/<class>/<file>`` (see ``allow_nested_only``)."""
    children: dict[str, set[str]] = {}
    for name, paths in found.items():
        if not paths:
            continue  # an empty class folder says nothing about the layout
        start = len(os.path.join(root, name)) + 1
        if any(os.sep not in p[start:] for p in paths):
            return  # a class folder with files of its own: an ordinary tree
        children[name] = {p[start:].split(os.sep, 1)[0] for p in paths}
    counts = Counter(child for names in children.values() for child in names)
    alone = len(children) == 1 and len(counts) > 1
    if not (alone or any(n > 1 for n in counts.values())):
        return  # sub-classes with names of their own: cat/tabby, dog/pug
    tops = sorted(children)
    split = next((t for t in tops if t.lower() == "train"), tops[0])
    raise ValueError(
        f"'{root}' looks one level too high: its folders {show_names(tops)} hold no files "
        f"ending in {show_names(suffixes)} of their own, only sub-folders ({show_names(sorted(counts))}) "
        f"that hold them, as class folders do; {_LAYOUT}. Use from_folder("
        f"'{os.path.join(root, split)}') for one of them, or pass allow_nested_only=True "
        f"if {show_names(tops)} are the classes and their sub-folders belong to them"
    )


def _no_classes_message(root: str, suffixes: tuple[str, ...]) -> str:
    with os.scandir(root) as entries:
        loose = sorted(e.name for e in entries if e.name.lower().endswith(suffixes) and e.is_file())
    if loose:
        return (
            f"no class folders under '{root}', but {len(loose)} files directly in it "
            f"(e.g. {loose[0]!r}); {_LAYOUT}. Is the root one level too low? "
            f"Files without classes can be read with PathDataset(paths)."
        )
    return f"no class folders under '{root}'; {_LAYOUT}"
