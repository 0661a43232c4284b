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
folder reached twice (a link loop) is scanned once.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

__all__ = ["find_classes", "scan_folder"]

_LAYOUT = "expected root/<class>/<file>"


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
) -> tuple[list[str], list[str], list[int]]:
    """Return ``(classes, paths, labels)`` for the files of a class-per-folder tree.

    Args:
        root: the folder holding one sub-folder per class.
        suffixes: file suffixes to keep (case-insensitive), e.g. ``(".jpg", ".png")``.
        allow_empty: accept class folders without any matching file.

    Raises:
        FileNotFoundError: ``root`` is missing, has no class folders, or (unless
            ``allow_empty``) a class folder holds no matching file. The message
            shows what was scanned and the expected layout.
    """
    root = os.fspath(root)
    if isinstance(suffixes, str):  # ".jpg" is one suffix, not four characters
        suffixes = (suffixes,)
    suffixes = tuple(s.lower() for s in suffixes)
    classes = find_classes(root)
    if not classes:
        raise FileNotFoundError(_no_classes_message(root, suffixes))
    paths: list[str] = []
    labels: list[int] = []
    empty = []
    for label, name in enumerate(classes):
        found = _files_under(os.path.join(root, name), suffixes)
        if not found:
            empty.append(name)
        paths.extend(found)
        labels.extend([label] * len(found))
    if not paths:
        raise FileNotFoundError(
            f"no files ending in {_show(suffixes)} under '{root}' (scanned "
            f"{len(classes)} class folders: {_show(classes)}); {_LAYOUT}. "
            f"Is the root one level too high?"
        )
    if empty and not allow_empty:
        raise FileNotFoundError(
            f"class folders without files ending in {_show(suffixes)} under "
            f"'{root}': {_show(empty)}; remove them or pass allow_empty=True"
        )
    return classes, paths, labels


def _files_under(folder: str, suffixes: tuple[str, ...]) -> list[str]:
    # Walk lazily so a loop can be pruned, then sort by folder like ImageFolder's
    # sorted(os.walk(...)) so the order matches it exactly.
    visits = []
    seen = set()
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        stat = os.stat(dirpath)
        if (stat.st_dev, stat.st_ino) in seen:  # a symlink loop: scanned already
            dirnames.clear()
            continue
        seen.add((stat.st_dev, stat.st_ino))
        dirnames.sort()  # so which of two links to one folder is kept is deterministic
        visits.append((dirpath, filenames))
    return [
        os.path.join(dirpath, name)
        for dirpath, filenames in sorted(visits)
        for name in sorted(filenames)
        if name.lower().endswith(suffixes)
    ]


def _no_classes_message(root: str, suffixes: tuple[str, ...]) -> str:
    with os.scandir(root) as entries:
        loose = sorted(e.name for e in entries if e.name.lower().endswith(suffixes))
    if loose:
        return (
            f"no class folders under '{root}', but {len(loose)} files directly in it "
            f"(e.g. {loose[0]!r}); {_LAYOUT}. Is the root one level too low? "
            f"Files without classes can be read with PathDataset(paths)."
        )
    return f"no class folders under '{root}'; {_LAYOUT}"


def _show(names: Iterable[str], limit: int = 5) -> str:
    names = list(names)
    shown = ", ".join(names[:limit])
    return shown + (f", ... ({len(names)} in all)" if len(names) > limit else "")
