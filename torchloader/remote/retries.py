"""Reading from a URL with retries and backoff, and errors that name the URL.

Object stores drop connections and throttle; a training run should ride out a
server that is briefly away. A call is tried ``attempts`` times, waiting
``backoff * 2**k`` seconds (plus jitter) between tries; then
:class:`RemoteError` names the URL, the attempts and the last error. Errors that
another try cannot fix are raised at once, with the URL: a missing object
(``FileNotFoundError``), no permission or no credentials (the provider's own
error, passed through with the URL in front), a bad argument.
"""

from __future__ import annotations

import errno
import random
import time
from collections.abc import Callable
from typing import TypeVar

__all__ = ["RemoteError", "Retries", "retrying"]

T = TypeVar("T")
# errors that a retry cannot fix: the object or the permission is missing, or the call is wrong
_FINAL = (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError, ValueError, TypeError, ImportError)
_FINAL_NAMES = (
    "Credentials",
    "AccessDenied",
    "Forbidden",
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "ParamValidation",
    "NoSuchBucket",
    "InvalidBucketName",
)
_LOCAL_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS}  # of the cache's disk, not the network
# where the errors of a dropped connection or a busy server come from (besides OSError)
_NETWORK = {"botocore", "aiobotocore", "aiohttp", "urllib3", "requests", "http", "s3fs", "gcsfs", "fsspec", "asyncio"}


class RemoteError(OSError):
    """A URL could not be read (or written) after every attempt; names both.

    It takes one message argument, so that a ``DataLoader`` re-raises it in the main
    process with its own type when it happened in a worker.

    Example:
        >>> str(RemoteError.of("s3://b/x", "reading", 3, ConnectionError("refused")))
        "reading 's3://b/x' failed 3 times; the last error: ConnectionError: refused"
    """

    def __init__(self, message: str, *, url: str | None = None, attempts: int | None = None) -> None:
        super().__init__(message)
        self.url = url
        self.attempts = attempts

    @classmethod
    def of(cls, url: str, what: str, attempts: int, last: BaseException) -> RemoteError:
        message = f"{what} '{url}' failed {attempts} times; the last error: {type(last).__name__}: {last}"
        return cls(message, url=url, attempts=attempts)

    def __reduce__(self) -> tuple:
        return _remote_error, (str(self), self.url, self.attempts)


def _remote_error(message: str, url: str | None, attempts: int | None) -> RemoteError:
    return RemoteError(message, url=url, attempts=attempts)


class Retries:
    """How often and how patiently to retry (picklable: datasets carry one).

    Args:
        attempts: tries in all (1: no retry).
        backoff: seconds before the second try, doubled for each one after it.
    """

    def __init__(self, attempts: int = 5, backoff: float = 0.5) -> None:
        if not isinstance(attempts, int) or attempts < 1:
            raise ValueError(f"attempts must be an int >= 1 (got {attempts!r})")
        if not backoff >= 0:
            raise ValueError(f"backoff must be >= 0 seconds (got {backoff!r})")
        self.attempts = attempts
        self.backoff = float(backoff)

    def __repr__(self) -> str:
        return f"Retries(attempts={self.attempts}, backoff={self.backoff})"


def is_final(exc: BaseException) -> bool:
    """Whether another try cannot help (see the module docstring): also a full or
    read-only local disk, which is not the network's doing."""
    if isinstance(exc, OSError) and exc.errno in _LOCAL_ERRNOS:
        return True
    return isinstance(exc, _FINAL) or any(name in type(exc).__name__ for name in _FINAL_NAMES)


def is_transient(exc: BaseException) -> bool:
    """Whether the network or the server may be to blame (so another try may pass)."""
    return isinstance(exc, (OSError, EOFError)) or type(exc).__module__.split(".")[0] in _NETWORK


def retrying(call: Callable[[], T], url: str, what: str, retries: Retries | None = None) -> T:
    """``call()``, tried again after a failure that may pass (see the module docstring).

    Raises:
        RemoteError: every attempt failed.
        OSError: a final failure (missing object, no permission or credentials),
            with the URL in its message (the original error is its cause).
    """
    retries = retries or Retries()
    for attempt in range(1, retries.attempts + 1):
        try:
            return call()
        except Exception as exc:
            if is_final(exc):
                raise _final(exc, url, what) from exc
            if not is_transient(exc):
                raise  # a bug, not the network: as it is
            if attempt == retries.attempts:
                raise RemoteError.of(url, what, attempt, exc) from exc
            time.sleep(retries.backoff * 2 ** (attempt - 1) * (1 + random.random() / 4))
    raise AssertionError("unreachable")  # pragma: no cover


def _final(exc: BaseException, url: str, what: str) -> BaseException:
    """The error, with the URL in front (as its base type: a subclass may take other arguments)."""
    message = f"{what} '{url}': {type(exc).__name__}: {exc}"
    if isinstance(exc, OSError) and exc.errno in _LOCAL_ERRNOS:
        return OSError(exc.errno, f"{message} (on this machine's disk: make room for the cache, or move cache_dir)")
    for kind in (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError, ImportError, TypeError):
        if isinstance(exc, kind):
            return kind(message)
    if isinstance(exc, ValueError) or "ParamValidation" in type(exc).__name__ or "Bucket" in type(exc).__name__:
        return ValueError(f"{message} (check the URL and the storage_options)")
    return PermissionError(f"{message} (check the credentials and the storage_options for this URL)")
