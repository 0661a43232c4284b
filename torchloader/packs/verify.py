"""``verify_pack``: every file of a pack checked against its manifest, on disk or at a URL."""

from __future__ import annotations

import contextlib
import os
from typing import Any

import numpy as np

from torchloader.packs.format import INDEX_COLUMNS, MANIFEST, Manifest, sha256_of_stream
from torchloader.readers._npy_header import read_npy_header
from torchloader.remote.urls import is_url

__all__ = ["verify_pack"]


def verify_pack(root: str, *, storage_options: dict[str, Any] | None = None) -> list[str]:
    """Check every file of a packed directory against its manifest; [] if all is well.

    Each problem names the file and what differs (missing, shape, count, dtype, checksum).
    ``root`` may be a URL (``s3://bucket/train.packed``): each file is then read once
    from the store and hashed as it streams (nothing is cached); ``storage_options``
    go to fsspec.

    Example:
        >>> verify_pack("data/train.packed")  # doctest: +SKIP
        []
    """
    root = os.fspath(root)
    if is_url(root):
        from torchloader.remote.packs import RemotePack

        return RemotePack(root, storage_options=storage_options).verify()
    manifest = Manifest.read(root)
    problems = []
    for name, shape, dtype, sha256 in expected_files(manifest):
        problems += _check_array(os.path.join(root, name), shape, dtype, sha256)
    return problems + count_problems(manifest)


def expected_files(manifest: Manifest) -> list[tuple[str, tuple[int, ...], str, str]]:
    """``(name, shape, dtype, sha256)`` of every array file of the pack."""
    files = [(s.file, manifest.shard_shape(k), manifest.dtype, s.sha256) for k, s in enumerate(manifest.shards)]
    if manifest.labels is not None:
        files.append((manifest.labels["file"], (manifest.count,), "int64", manifest.labels["sha256"]))
    if manifest.encoded is not None:
        index = manifest.encoded["index"]
        files.append((index["file"], (manifest.count, len(INDEX_COLUMNS)), "int64", index["sha256"]))
    return files


def count_problems(manifest: Manifest) -> list[str]:
    if manifest.shards and manifest.shards[-1].stop != manifest.count:
        return [f"{MANIFEST}: the shards hold {manifest.shards[-1].stop} samples, count says {manifest.count}"]
    return []


def check_npy(f: Any, where: str, shape: tuple, dtype: str, sha256: str) -> list[str]:
    """Problems of the ``.npy`` stream ``f`` (of ``where``: a path or a URL) against its
    manifest entry: its header's shape and dtype, then its SHA-256."""
    try:
        header = read_npy_header(f, where)
    except ValueError as exc:
        return [f"'{where}' cannot be read: ValueError: {exc}"]
    size = getattr(f, "size", None)  # an fsspec file's; a local file's from fstat
    if size is None:
        with contextlib.suppress(OSError, ValueError, AttributeError):  # (a stream of no known size: by checksum)
            size = os.fstat(f.fileno()).st_size
    if size is not None and size != header.file_size:
        return [f"'{where}' cannot be read: ValueError: it is {size} bytes, its header needs {header.file_size}"]
    found, expected = f"{header.dtype} {header.shape}", f"{np.dtype(dtype)} {tuple(shape)}"
    if found != expected:
        return [f"'{where}' holds {found}, the manifest says {expected}"]
    f.seek(0)
    if sha256_of_stream(f) != sha256:
        return [f"'{where}' has a different checksum than the manifest: its bytes changed"]
    return []


def _check_array(path: str, shape: tuple, dtype: str, sha256: str) -> list[str]:
    if not os.path.exists(path):
        return [f"'{path}' is missing"]
    try:
        f = open(path, "rb")
    except OSError as exc:
        return [f"'{path}' cannot be read: {type(exc).__name__}: {exc}"]
    with f:
        return check_npy(f, path, shape, dtype, sha256)
