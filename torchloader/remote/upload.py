"""``pack(src, "s3://bucket/prefix")``: pack into a local staging folder, then upload it.

The pack is written locally first (``pack`` as always: resumable, checksummed), in
``<cache dir>-staging/<16 hex of the URL>``, then uploaded with the same rule as a
local pack, manifest last: the manifest to be written goes up first as
``manifest.json.partial`` (a journal), then every other file, then ``manifest.json``;
the journal is removed last. A killed upload never looks complete (no
``manifest.json``), and a re-run finds the staged pack, sees the same journal at
the URL and uploads only the files that are missing, of another size, or older than
the journal (a file of an earlier pack; where the store gives no times, every file). The
staging folder is removed once the pack is at the URL.

A URL that holds a pack already is reused when it was packed with the same options
(nothing is read or written) and refused otherwise unless ``overwrite``, which
first removes the old ``manifest.json``, so that the URL stops loading as a pack
before any of its files change. A URL that holds objects a pack does not write is
refused, as a local folder is.
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any

from torchloader._core.progress import progress_bar
from torchloader.errors import show_names
from torchloader.packs.format import _OWN, MANIFEST, Manifest
from torchloader.remote.cache import default_cache_dir
from torchloader.remote.retries import Retries, retrying
from torchloader.remote.urls import filesystem, join_url

__all__ = ["remote_pack_at", "staging_dir", "upload_pack"]

JOURNAL = MANIFEST + ".partial"


def staging_dir(url: str) -> str:
    """The local folder a pack for ``url`` is written to before it is uploaded: beside the
    default cache folder, not in it (its bytes are not the cache's to count or evict)."""
    cache = default_cache_dir().rstrip(os.sep)
    return os.path.join(cache + "-staging", hashlib.sha256(url.encode()).hexdigest()[:16])


def remote_pack_at(
    url: str, options: dict[str, Any], overwrite: bool, storage_options: dict[str, Any] | None
) -> Manifest | None:
    """The pack already at ``url`` if it was packed with ``options`` (None: pack it).

    Raises:
        FileExistsError: ``url`` holds another pack (and not ``overwrite``), or objects
            that a pack does not write.
    """
    fs, path = filesystem(url, storage_options)
    names = _names_at(fs, path, url)
    foreign = sorted(name for name in names if not _OWN.match(name))
    if foreign:
        raise FileExistsError(
            f"'{url}' holds objects that are not part of a pack ({show_names(foreign)}); pack to a new "
            f"or empty prefix (a pack owns its prefix, and --overwrite replaces a pack, never other objects)"
        )
    if MANIFEST not in names:
        return None
    data = retrying(lambda: fs.cat_file(join_url(path, MANIFEST)), join_url(url, MANIFEST), "reading")
    old = Manifest.parse(data, join_url(url, MANIFEST), url)
    differs = sorted(k for k in options if old.options.get(k) != options[k])
    if not differs:
        return old
    if not overwrite:
        raise FileExistsError(
            f"'{url}' holds a different pack (differs in {', '.join(differs)}); pass overwrite=True "
            f"(--overwrite) to replace it, or choose another prefix"
        )
    retrying(lambda: fs.rm_file(join_url(path, MANIFEST)), join_url(url, MANIFEST), "removing")
    return None


def upload_pack(staging: str, url: str, storage_options: dict[str, Any] | None, progress: bool) -> None:
    """Upload the finished local pack ``staging`` to ``url``, manifest last (see the module)."""
    fs, path = filesystem(url, storage_options)
    with open(os.path.join(staging, MANIFEST), "rb") as f:
        manifest = f.read()
    retries = Retries()
    names = _names_at(fs, path, url)
    resumed = JOURNAL in names and _read(fs, join_url(path, JOURNAL), url) == manifest
    done = _written_since_journal(fs, path) if resumed else {}
    if not resumed:
        retrying(lambda: fs.pipe_file(join_url(path, JOURNAL), manifest), join_url(url, JOURNAL), "writing", retries)
    files = _files_of(json.loads(manifest))
    bar = progress_bar(total=len(files), unit="file", desc="uploading", disable=not progress)
    for name in files:
        local = os.path.join(staging, name)
        if done.get(name) != os.path.getsize(local):
            target = join_url(path, name)
            retrying(lambda: fs.put_file(local, target), join_url(url, name), "uploading", retries)  # noqa: B023
        bar.update(1)
    bar.close()
    retrying(lambda: fs.pipe_file(join_url(path, MANIFEST), manifest), join_url(url, MANIFEST), "writing", retries)
    retrying(lambda: fs.rm_file(join_url(path, JOURNAL)), join_url(url, JOURNAL), "removing", retries)
    for name in sorted(names - set(files) - {MANIFEST, JOURNAL}):  # an earlier pack's files the new one lacks
        if _OWN.match(name):
            retrying(lambda: fs.rm_file(join_url(path, name)), join_url(url, name), "removing", retries)  # noqa: B023


def _files_of(manifest: dict[str, Any]) -> list[str]:
    files = [s["file"] for s in manifest["shards"]]
    for entry in (manifest.get("labels"), manifest.get("sources"), (manifest.get("encoded") or {}).get("index")):
        if entry:
            files.append(entry["file"])
    return files


def _names_at(fs: Any, path: str, url: str) -> set[str]:
    try:
        listed = retrying(lambda: fs.ls(path, detail=False, refresh=True), url, "listing")
    except FileNotFoundError:
        return set()
    return {item.rstrip("/").rsplit("/", 1)[-1] for item in listed}


def _written_since_journal(fs: Any, path: str) -> dict[str, int]:
    """``{name: size}`` of the objects at ``path`` written after the journal (by the
    interrupted upload of this pack); {} where the store gives no modification times."""
    items = {item["name"].rstrip("/").rsplit("/", 1)[-1]: item for item in fs.ls(path, detail=True, refresh=True)}
    since = _modified(items.get(JOURNAL, {}))
    if since is None:
        return {}
    return {
        name: int(item.get("size") or 0)
        for name, item in items.items()
        if (when := _modified(item)) is not None and when > since  # (a tie: written again, to be safe)
    }


def _modified(item: dict[str, Any]) -> Any:
    return item.get("LastModified") or item.get("mtime") or item.get("updated")


def _read(fs: Any, path: str, url: str) -> bytes:
    return retrying(lambda: fs.cat_file(path), url, "reading")
