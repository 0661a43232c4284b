"""``verify_pack``: every file of a pack checked against its manifest, on disk or at a URL."""

from __future__ import annotations

import hashlib
import os
from typing import Any

import numpy as np

from torchloader.packs.format import INDEX_COLUMNS, MANIFEST, Manifest, sha256_of
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


def header_problem(path: str, array_shape: tuple, array_dtype: Any, shape: tuple, dtype: str) -> list[str]:
    found, expected = f"{np.dtype(array_dtype)} {tuple(array_shape)}", f"{np.dtype(dtype)} {tuple(shape)}"
    return [] if found == expected else [f"'{path}' holds {found}, the manifest says {expected}"]


def _check_array(path: str, shape: tuple, dtype: str, sha256: str) -> list[str]:
    if not os.path.exists(path):
        return [f"'{path}' is missing"]
    try:
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except Exception as exc:
        return [f"'{path}' cannot be read: {type(exc).__name__}: {exc}"]
    problems = header_problem(path, array.shape, array.dtype, shape, dtype)
    if problems:
        return problems
    if sha256_of(path) != sha256:
        return [f"'{path}' has a different checksum than the manifest: its bytes changed"]
    return []


def digest_of_stream(stream: Any, block: int = 8 << 20) -> str:
    digest = hashlib.sha256()
    while chunk := stream.read(block):
        digest.update(chunk)
    return digest.hexdigest()
