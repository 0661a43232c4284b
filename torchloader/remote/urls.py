"""Which paths are URLs, and the fsspec filesystem that reads one.

Any ``scheme://...`` path is a URL (``s3://``, ``gs://``, ``https://``, ``file://``,
...), never a local path: without the optional extra, using one is refused with
the install command instead of, say, ``pack`` writing a folder named ``s3:``.
A Windows drive (``C:\\data``) has no ``//`` and stays a local path.
"""

from __future__ import annotations

import os
import re
from typing import Any

__all__ = ["INSTALL", "filesystem", "is_url", "join_url", "url_of"]

INSTALL = "pip install 'torchloader[remote]'"
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*://")


def is_url(path: Any) -> bool:
    """Whether ``path`` is a ``scheme://`` URL rather than a local path.

    Example:
        >>> is_url("s3://bucket/train"), is_url("data/train"), is_url(b"gs://b/x")
        (True, False, True)
    """
    if isinstance(path, bytes):
        path = os.fsdecode(path)
    return isinstance(path, str) and _URL.match(path) is not None


def join_url(url: str, name: str) -> str:
    """``url/name``, one slash between them."""
    return url.rstrip("/") + "/" + name


def url_of(fs: Any, path: str) -> str:
    """``path`` as a full URL of its filesystem's protocol (``fs.find`` drops it)."""
    return path if is_url(path) else fs.unstrip_protocol(path)


def filesystem(url: str, storage_options: dict[str, Any] | None = None) -> tuple[Any, str]:
    """``(fsspec filesystem, path within it)`` of ``url``.

    Raises:
        ImportError: fsspec, or the package fsspec needs for this protocol (s3fs,
            gcsfs, ...), is not installed; the message says what to install.
    """
    try:
        import fsspec.core
    except ImportError as exc:  # pragma: no cover - torch depends on fsspec
        raise ImportError(f"'{url}' is a URL; reading URLs needs fsspec: {INSTALL}") from exc
    try:
        return fsspec.core.url_to_fs(url, **(storage_options or {}))
    except ImportError as exc:
        raise ImportError(
            f"'{url}' is a URL, and reading it needs a package that is not installed ({exc}); "
            f"{INSTALL} installs fsspec and s3fs (for s3://), other protocols need fsspec's "
            f"package for them (gcsfs for gs://, aiohttp for https://)"
        ) from exc
    except ValueError as exc:  # an unknown protocol
        raise ValueError(f"'{url}' is not a URL fsspec can read ({exc})") from exc
