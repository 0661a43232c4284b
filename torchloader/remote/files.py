"""``PathDataset`` over URLs: listing a bucket folder, and reading many files at once.

One request per sample at a time is what makes per-file object-storage loading slow
(each waits a full round trip). A batch (``ds[indices]``, a ``ds.dataloader()``
batch, a ``ChunkedLoader`` run of 32 samples) therefore asks for all of its files at
once, ``fsspec``'s ``cat`` of the list (concurrent requests for s3fs, gcsfs and
http), inside :func:`fetched`; the readers then find each file's bytes there
(``readers/_files.read_bytes``). A file missing from a batch's answer, or one read
alone (``ds[i]``), is read by itself, with retries (``retries.py``).
"""

from __future__ import annotations

import contextvars
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from torchloader.remote.retries import retrying
from torchloader.remote.urls import filesystem, is_url, url_of

__all__ = ["fetched", "list_folder", "options", "read_url"]

# (storage options, {url: bytes or the error its request gave}) of the batch being read
_BATCH: contextvars.ContextVar[tuple[dict[str, Any] | None, dict[str, Any]]] = contextvars.ContextVar(
    "torchloader_remote_batch", default=(None, {})
)


@contextmanager
def fetched(paths: Sequence[str], storage_options: dict[str, Any] | None) -> Iterator[None]:
    """Inside: the URLs among ``paths`` already read, all at once (see the module); those
    the batch being read has already (a batch read inside another) are not asked again."""
    _, outer = _BATCH.get()
    urls = [p for p in paths if is_url(p) and p not in outer]
    urls = [u for u in urls if u.split("://", 1)[0] == urls[0].split("://", 1)[0]] if urls else urls  # one protocol
    found: dict[str, Any] = dict(outer)
    if len(urls) > 1:
        fs, _ = filesystem(urls[0], storage_options)
        try:
            answer = fs.cat([fs._strip_protocol(u) for u in urls], on_error="return")
        except Exception:  # the whole request failed: each file is read (and retried) alone
            answer = {}
        by_path = {fs._strip_protocol(u): u for u in urls}
        found.update({by_path[p]: v for p, v in answer.items() if p in by_path and isinstance(v, bytes)})
    token = _BATCH.set((storage_options, found))
    try:
        yield
    finally:
        _BATCH.reset(token)


@contextmanager
def options(storage_options: dict[str, Any] | None) -> Iterator[None]:
    """Inside: URLs read alone use ``storage_options``."""
    token = _BATCH.set((storage_options, _BATCH.get()[1]))  # a batch being read stays
    try:
        yield
    finally:
        _BATCH.reset(token)


def read_url(url: str) -> bytes:
    """The bytes at ``url``: from the batch being read, else one request (with retries)."""
    storage_options, found = _BATCH.get()
    data = found.pop(url, None)
    if data is not None:
        return data
    fs, path = filesystem(url, storage_options)
    return retrying(lambda: fs.cat_file(path), url, "reading")


def list_folder(
    root: str, suffixes: Sequence[str], storage_options: dict[str, Any] | None
) -> tuple[list[str], list[str], list[int]]:
    """``(classes, urls, labels)`` of ``root/<class>/.../<file>`` in a bucket, as
    ``scan_folder`` gives them for a local folder (sorted classes, sorted files)."""
    fs, path = filesystem(root, storage_options)
    base = path.rstrip("/") + "/"
    listed = retrying(lambda: fs.find(base), root, "listing")
    keep = tuple(s.lower() for s in suffixes)
    by_class: dict[str, list[str]] = {}
    for item in sorted(listed):
        rest = item[len(base) :] if item.startswith(base) else None
        if not rest or "/" not in rest or not rest.lower().endswith(keep):
            continue
        by_class.setdefault(rest.split("/", 1)[0], []).append(url_of(fs, item))
    if not by_class:
        raise FileNotFoundError(
            f"'{root}' holds no files ending in {', '.join(keep)} in class folders; expected "
            f"{root.rstrip('/')}/<class>/<file>"
        )
    classes = sorted(by_class)
    urls = [u for c in classes for u in by_class[c]]
    labels = [k for k, c in enumerate(classes) for _ in by_class[c]]
    return classes, urls, labels
