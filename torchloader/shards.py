"""The packed on-disk format: ``.npy`` shards, labels and a JSON manifest written last.

A packed directory holds::

    DST/
        manifest.json        # written last, through a temp file and os.replace
        shard-00000.npy      # uint8 (n, H, W, C) (or any dtype for packed arrays)
        shard-00001.npy
        labels.npy           # int64 (N,), if the source had labels
        sources.txt          # one source path per sample, in order

A directory without ``manifest.json`` is not a data set (an interrupted pack);
readers check ``format`` and ``version`` and name the file and the fix.
Nothing is unpickled: every ``np.load`` uses ``allow_pickle=False``.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

__all__ = ["FORMAT", "VERSION", "Manifest", "ShardInfo", "sha256_of", "verify_pack", "write_json_atomic"]

FORMAT = "torchloader.pack"
VERSION = 1
MANIFEST = "manifest.json"


@dataclass
class ShardInfo:
    file: str
    start: int  # first sample index
    stop: int  # one past the last
    sha256: str
    nbytes: int


@dataclass
class Manifest:
    count: int
    sample_shape: list[int]
    dtype: str
    shards: list[ShardInfo]
    classes: list[str] | None = None
    labels: dict[str, Any] | None = None  # {"file": ..., "sha256": ...}
    options: dict[str, Any] = field(default_factory=dict)  # how it was packed
    skipped: list[dict[str, Any]] = field(default_factory=list)  # {"path", "error"}
    sources: dict[str, Any] | None = None  # {"file": "sources.txt", "sha256": ...}
    format: str = FORMAT
    version: int = VERSION

    @classmethod
    def read(cls, root: str) -> Manifest:
        """The manifest of the packed directory ``root``; errors name the file and the fix."""
        path = os.path.join(root, MANIFEST)
        if not os.path.isdir(root):
            raise FileNotFoundError(f"'{root}' is not a folder; pack a data set there with `torchloader pack SRC '{root}'`")
        if not os.path.exists(path):
            raise FileNotFoundError(
                f"'{root}' has no {MANIFEST}: it is not a packed data set, or its pack was "
                f"interrupted; run `torchloader pack SRC '{root}'` (again) to complete it"
            )
        try:
            with open(path) as f:
                raw = json.load(f)
        except (OSError, ValueError) as exc:
            raise ValueError(f"cannot read '{path}': {exc}; re-run `torchloader pack` with --overwrite") from exc
        if not isinstance(raw, dict) or raw.get("format") != FORMAT:
            raise ValueError(f"'{path}' is not a torchloader pack manifest (format={raw.get('format') if isinstance(raw, dict) else None!r})")
        if raw.get("version") != VERSION:
            raise ValueError(
                f"'{path}' is pack format version {raw.get('version')!r}; this torchloader "
                f"reads version {VERSION}: re-pack with `torchloader pack --overwrite` or "
                f"install the torchloader that wrote it"
            )
        try:
            raw["shards"] = [ShardInfo(**s) for s in raw["shards"]]
            return cls(**raw)
        except (KeyError, TypeError) as exc:  # a field missing, unknown or of the wrong kind
            raise ValueError(
                f"'{path}' is damaged ({type(exc).__name__}: {exc}); re-pack with "
                f"`torchloader pack SRC '{root}' --overwrite`"
            ) from exc

    def write(self, root: str) -> None:
        write_json_atomic(os.path.join(root, MANIFEST), asdict(self))

    def shard_of(self, index: int) -> tuple[int, int]:
        """``(shard number, index within the shard)`` of sample ``index``."""
        stops = self._stops()
        k = int(np.searchsorted(stops, index, side="right"))
        return k, index - self.shards[k].start

    def _stops(self) -> np.ndarray:
        return np.array([s.stop for s in self.shards], dtype=np.int64)


def write_json_atomic(path: str, value: Any) -> None:
    temp = f"{path}.{os.getpid()}.partial"
    with open(temp, "w") as f:
        json.dump(value, f, indent=1)
        f.flush()
        os.fsync(f.fileno())
    os.replace(temp, path)


def sha256_of(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verify_pack(root: str) -> list[str]:
    """Check every file of a packed directory against its manifest; [] if all is well.

    Each problem names the file and what differs (missing, shape, count, dtype, checksum).
    """
    manifest = Manifest.read(root)
    problems = []
    for shard in manifest.shards:
        path = os.path.join(root, shard.file)
        problems += _check_array(path, (shard.stop - shard.start, *manifest.sample_shape), manifest.dtype, shard.sha256)
    if manifest.labels is not None:
        path = os.path.join(root, manifest.labels["file"])
        problems += _check_array(path, (manifest.count,), "int64", manifest.labels["sha256"])
    if manifest.shards and manifest.shards[-1].stop != manifest.count:
        problems.append(f"{MANIFEST}: the shards hold {manifest.shards[-1].stop} samples, count says {manifest.count}")
    return problems


def _check_array(path: str, shape: tuple, dtype: str, sha256: str) -> list[str]:
    if not os.path.exists(path):
        return [f"'{path}' is missing"]
    try:
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except Exception as exc:
        return [f"'{path}' cannot be read: {type(exc).__name__}: {exc}"]
    if tuple(array.shape) != tuple(shape) or array.dtype != np.dtype(dtype):
        return [
            f"'{path}' holds {array.dtype} {tuple(array.shape)}, the manifest says "
            f"{np.dtype(dtype)} {tuple(shape)}"
        ]
    if sha256_of(path) != sha256:
        return [f"'{path}' has a different checksum than the manifest: its bytes changed"]
    return []
