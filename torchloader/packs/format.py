"""The packed on-disk format: ``.npy`` shards, labels and a JSON manifest written last.

A packed directory holds::

    DST/
        manifest.json        # written last, through a temp file and os.replace
        shard-00000.npy      # uint8 (n, H, W, C) (or any dtype for packed arrays)
        shard-00001.npy
        labels.npy           # int64 (N,), if the source had labels
        index.npy            # int64 (N, 4): offset, length, height, width (encoded packs)
        sources.txt          # one source path per sample, in order (see write_sources)
        .pack.lock           # held by the pack writing the folder (see _destination.py)

An encoded pack (``pack(..., encoded=True)``, format version 2) holds each source file's
bytes as they are instead: ``shard-*.npy`` are one-dimensional ``uint8`` arrays of the
files one after the other, and ``index.npy`` (``int64 (N, 4)``) gives each sample's
offset and length in its shard and the height and width its header states.

A directory without ``manifest.json`` is not a data set (an interrupted pack);
readers check ``format`` and ``version`` and name the file and the fix.
Nothing is unpickled: every ``np.load`` uses ``allow_pickle=False``.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from torchloader._core.files import atomic_file, write_json_atomic
from torchloader.errors import show_names

__all__ = [
    "ENCODED_VERSION",
    "FORMAT",
    "INDEX_COLUMNS",
    "VERSION",
    "foreign_files",
    "Manifest",
    "ShardInfo",
    "is_pack",
    "read_sources",
    "sha256_of",
    "sha256_of_stream",
    "write_sources",
]

FORMAT = "torchloader.pack"
VERSION = 1  # raw packs (what torchloader 0.1 reads)
ENCODED_VERSION = 2  # encoded packs: a torchloader that reads version 1 only refuses them by name
INDEX_COLUMNS = ("offset", "length", "height", "width")  # of index.npy
MANIFEST = "manifest.json"
LOCK = ".pack.lock"  # see _destination.py
_OWN = re.compile(  # every file a pack writes, finished or temporary
    r"(manifest\.json|labels\.npy|index\.npy|sources\.txt|shard-\d+\.npy)(\.\d+)?(\.partial)?(\.compact)?$"
)


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
    sources: dict[str, Any] | None = None  # {"file": "sources.txt", "sha256": ..., "escaped": true}
    checksum: str | None = None  # SHA-256 of the other fields (see _checksum); None in older packs
    format: str = FORMAT
    version: int = VERSION
    # encoded packs: {"index": {"file", "sha256"}, "shard_sizes": [data bytes of each shard]};
    # absent from a raw pack's manifest.json, which torchloader 0.1 then still reads
    encoded: dict[str, Any] | None = None

    def shard_shape(self, k: int) -> tuple[int, ...]:
        """The array shape of shard ``k``: samples x sample shape, or its bytes (encoded)."""
        if self.encoded is not None:
            return (self.encoded["shard_sizes"][k],)
        shard = self.shards[k]
        return (shard.stop - shard.start, *self.sample_shape)

    @classmethod
    def read(cls, root: str) -> Manifest:
        """The manifest of the packed directory ``root``; errors name the file and the fix."""
        path = os.path.join(root, MANIFEST)
        if not os.path.isdir(root):
            raise FileNotFoundError(
                f"'{root}' is not a folder; pack a data set there with `torchloader pack SRC '{root}'`"
            )
        foreign = foreign_files(root) if not os.path.exists(path) else []
        if foreign:
            raise FileNotFoundError(
                f"'{root}' has no {MANIFEST} and holds other files ({show_names(foreign)}): it is not "
                f"a packed data set; pack it into a new folder with `torchloader pack '{root}' DST`"
            )
        if not os.path.exists(path):
            raise FileNotFoundError(
                f"'{root}' has no {MANIFEST}: it is not a packed data set, or its pack was "
                f"interrupted; run `torchloader pack SRC '{root}'` (again) to complete it"
            )
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError as exc:
            raise ValueError(f"cannot read '{path}': {exc}; re-run `torchloader pack` with --overwrite") from exc
        return cls.parse(data, path, root)

    @classmethod
    def parse(cls, data: bytes, path: str, root: str) -> Manifest:
        """The manifest in ``data`` (the bytes of ``path``, the manifest of ``root``)."""
        try:
            raw = json.loads(data)
        except ValueError as exc:
            raise ValueError(f"cannot read '{path}': {exc}; re-run `torchloader pack` with --overwrite") from exc
        if not isinstance(raw, dict) or raw.get("format") != FORMAT:
            found = raw.get("format") if isinstance(raw, dict) else None
            raise ValueError(f"'{path}' is not a torchloader pack manifest (format={found!r})")
        if raw.get("version") not in (VERSION, ENCODED_VERSION):
            raise ValueError(
                f"'{path}' is pack format version {raw.get('version')!r}; this torchloader "
                f"reads versions {VERSION} and {ENCODED_VERSION}: re-pack with `torchloader pack --overwrite` or "
                f"install the torchloader that wrote it"
            )
        if isinstance(raw.get("checksum"), str) and raw["checksum"] != _checksum(raw):
            raise ValueError(
                f"'{path}' was changed after it was written (its checksum does not match): "
                f"`torchloader verify {root}` checks the rest; re-pack with `torchloader pack "
                f"SRC '{root}' --overwrite`"
            )
        try:
            raw["shards"] = [ShardInfo(**s) for s in raw["shards"]]
            manifest = cls(**raw)
            _check_fields(manifest)
        except (KeyError, TypeError, ValueError) as exc:  # a field missing, unknown or wrong
            raise ValueError(
                f"'{path}' is damaged ({type(exc).__name__}: {exc}); re-pack with "
                f"`torchloader pack SRC '{root}' --overwrite`"
            ) from exc
        manifest.fingerprint = hashlib.sha256(data).hexdigest()  # which pack this is (not a field)
        return manifest

    @staticmethod
    def fingerprint_of(root: str) -> str | None:
        """The fingerprint of the manifest now in ``root`` (None: there is none)."""
        try:
            with open(os.path.join(root, MANIFEST), "rb") as f:
                return hashlib.sha256(f.read()).hexdigest()
        except FileNotFoundError:
            return None

    def write(self, root: str) -> None:
        fields = asdict(self)
        if fields["encoded"] is None:  # a raw pack's manifest, as torchloader 0.1 wrote it
            del fields["encoded"]
        fields["checksum"] = self.checksum = _checksum(fields)
        write_json_atomic(os.path.join(root, MANIFEST), fields)

    def shard_of(self, index: int) -> tuple[int, int]:
        """``(shard number, index within the shard)`` of sample ``index``."""
        stops = self._stops()
        k = int(np.searchsorted(stops, index, side="right"))
        return k, index - self.shards[k].start

    def _stops(self) -> np.ndarray:
        return np.array([s.stop for s in self.shards], dtype=np.int64)


def is_pack(folder: str) -> bool:
    """Whether ``folder`` holds a pack's manifest (of this format, any version)."""
    try:
        with open(os.path.join(folder, MANIFEST), encoding="utf-8") as f:
            manifest = json.load(f)
    except (OSError, ValueError):  # none, or not JSON: some other manifest.json
        return False
    return isinstance(manifest, dict) and manifest.get("format") == FORMAT


def foreign_files(root: str) -> list[str]:
    """The names in the folder ``root`` that are not files a pack writes (sorted)."""
    return sorted(name for name in os.listdir(root) if name != LOCK and not _OWN.match(name))


def _checksum(fields: dict[str, Any]) -> str:
    """SHA-256 of a manifest's fields but ``checksum``, as canonical JSON."""
    rest = {k: v for k, v in fields.items() if k != "checksum"}
    return hashlib.sha256(json.dumps(rest, sort_keys=True).encode()).hexdigest()


def _check_fields(m: Manifest) -> None:
    """Refuse a manifest whose fields have the wrong kind or do not fit together."""

    def is_int(v: Any) -> bool:
        return isinstance(v, int) and not isinstance(v, bool)

    def is_name(v: Any) -> bool:  # a file inside the packed directory, nowhere else
        return isinstance(v, str) and v not in ("", ".", "..") and "/" not in v and "\\" not in v

    if not is_int(m.count) or m.count < 0:
        raise ValueError(f"count must be an int >= 0 (got {m.count!r})")
    if not isinstance(m.sample_shape, list) or not all(is_int(d) and d >= 0 for d in m.sample_shape):
        raise ValueError(f"sample_shape must be a list of ints >= 0 (got {m.sample_shape!r})")
    if not isinstance(m.dtype, str) or np.dtype(m.dtype).hasobject:
        raise ValueError(f"dtype must name a numeric NumPy dtype (got {m.dtype!r})")
    if not isinstance(m.shards, list):
        raise ValueError(f"shards must be a list (got {m.shards!r})")
    position = 0
    for shard in m.shards:
        if not (
            is_name(shard.file)
            and is_int(shard.start)
            and is_int(shard.stop)
            and is_int(shard.nbytes)
            and isinstance(shard.sha256, str)
            and shard.start == position
            and shard.stop >= shard.start
        ):
            raise ValueError(f"shard {shard!r} is not the next range of a file in the directory")
        position = shard.stop  # (a count the shards do not add up to: verify_pack names it)
    if m.classes is not None and not (isinstance(m.classes, list) and all(isinstance(c, str) for c in m.classes)):
        raise ValueError(f"classes must be a list of names (got {m.classes!r})")
    for name in ("labels", "sources"):
        entry = getattr(m, name)
        if entry is not None and not (
            isinstance(entry, dict) and is_name(entry.get("file")) and isinstance(entry.get("sha256"), str)
        ):
            raise ValueError(f"{name} must be {{'file': <name in the directory>, 'sha256': ...}} (got {entry!r})")
    if m.checksum is not None and not isinstance(m.checksum, str):
        raise ValueError(f"checksum must be a string (got {m.checksum!r})")
    if not isinstance(m.options, dict) or not isinstance(m.skipped, list):
        raise ValueError("options must be a dict and skipped a list")
    if (m.encoded is not None) != (m.version == ENCODED_VERSION):
        raise ValueError(f"version {m.version} does not go with encoded={m.encoded!r}")
    if m.encoded is not None:
        index, sizes = m.encoded.get("index"), m.encoded.get("shard_sizes")
        if not (isinstance(index, dict) and is_name(index.get("file")) and isinstance(index.get("sha256"), str)):
            raise ValueError(f"encoded.index must be {{'file': <a name in the directory>, 'sha256': ...}}: {index!r}")
        if not (isinstance(sizes, list) and len(sizes) == len(m.shards) and all(is_int(n) and n >= 0 for n in sizes)):
            raise ValueError(f"encoded.shard_sizes must be one int >= 0 per shard (got {sizes!r})")


_ESCAPES = {"\\": "\\\\", "\n": "\\n", "\r": "\\r"}
_UNESCAPES = {"\\": "\\", "n": "\n", "r": "\r"}


def write_sources(root: str, paths: list[str]) -> dict[str, Any]:
    """Write ``sources.txt``: one path per line, ``\\``, newline and carriage return
    escaped as ``\\\\``, ``\\n`` and ``\\r`` (so any name is one line), bytes that are
    not UTF-8 kept as they are. Returns its manifest entry."""
    path = os.path.join(root, "sources.txt")
    with atomic_file(path, encoding="utf-8", errors="surrogateescape", newline="\n") as f:
        f.writelines(re.sub(r"[\\\n\r]", lambda m: _ESCAPES[m.group()], p) + "\n" for p in paths)
    return {"file": "sources.txt", "sha256": sha256_of(path), "escaped": True}


def read_sources(root: str) -> list[str]:
    """The source path of every sample of the pack in ``root``, in order."""
    manifest = Manifest.read(root)
    if manifest.sources is None:
        return []
    with open(
        os.path.join(root, manifest.sources["file"]), encoding="utf-8", errors="surrogateescape", newline="\n"
    ) as f:
        lines = f.read().split("\n")[:-1]
    if not manifest.sources.get("escaped"):
        return lines
    return [re.sub(r"\\(.)", lambda m: _UNESCAPES.get(m.group(1), m.group()), line) for line in lines]


def sha256_of(path: str) -> str:
    with open(path, "rb") as f:
        return sha256_of_stream(f)


def sha256_of_stream(f: Any, block: int = 1 << 20) -> str:
    """SHA-256 of what is left to read in the binary stream ``f`` (a file, a remote object)."""
    digest = hashlib.sha256()
    while chunk := f.read(block):
        digest.update(chunk)
    return digest.hexdigest()
