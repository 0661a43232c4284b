"""A real S3-compatible server on 127.0.0.1 for the tests: moto's, in a thread of the test.

``S3Server`` serves moto's S3 application through werkzeug on a free loopback port,
behind a small WSGI layer that counts requests (by the access key that signed them,
so that each rank of a job can sign with its own key and be counted apart), can add
latency to every request, and can be stopped and started again on the same port
(the "server went away" test). Clients reach it through s3fs exactly as a user's
code reaches AWS, with ``storage_options(key)``. Stopped by the fixture.
"""

from __future__ import annotations

import collections
import re
import threading
import time
import urllib.request
from typing import Any

from moto.server import DomainDispatcherApplication, create_backend_app
from werkzeug.serving import WSGIRequestHandler, make_server

__all__ = ["S3Server"]

_KEY = re.compile(r"Credential=([^/]+)/")


class _Quiet(WSGIRequestHandler):
    def log(self, *args: Any, **kwargs: Any) -> None:  # no line per request in the test output
        pass


class S3Server:
    def __init__(self, latency: float = 0.0) -> None:
        self.latency = latency
        self.requests: collections.Counter[tuple[str, str, str]] = collections.Counter()  # (key, method, path)
        self.bytes_sent: collections.Counter[tuple[str, str]] = collections.Counter()  # (key, path)
        self._lock = threading.Lock()
        self.in_flight = self.peak_in_flight = 0  # requests being answered at once
        self._app = DomainDispatcherApplication(create_backend_app)
        self.port = 0
        self._server: Any = None
        self._thread: threading.Thread | None = None
        self.start()
        # moto keeps its buckets in this process: each server starts empty
        urllib.request.urlopen(urllib.request.Request(f"{self.endpoint}/moto-api/reset", method="POST")).read()

    def _wsgi(self, environ: dict, start_response: Any) -> Any:
        match = _KEY.search(environ.get("HTTP_AUTHORIZATION", ""))
        key = match.group(1) if match else "anonymous"
        path = environ.get("PATH_INFO", "")
        with self._lock:
            self.requests[(key, environ["REQUEST_METHOD"], path)] += 1
            self.in_flight += 1
            self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
        try:
            if self.latency:
                time.sleep(self.latency)
            body = self._app(environ, start_response)
        finally:
            with self._lock:
                self.in_flight -= 1
        if environ["REQUEST_METHOD"] == "GET":
            body = list(body)
            with self._lock:
                self.bytes_sent[(key, path)] += sum(len(part) for part in body)
        return body

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def storage_options(self, key: str = "test", retries: int = 1) -> dict[str, Any]:
        """s3fs's options for this server, signed with ``key``; botocore's own retries
        off (``retries`` tries), so that the library's retries are what is tested."""
        return {
            "key": key,
            "secret": "secret",
            "client_kwargs": {"endpoint_url": self.endpoint},
            "config_kwargs": {"retries": {"max_attempts": retries, "mode": "standard"}, "connect_timeout": 2},
        }

    def start(self) -> None:
        self._server = make_server("127.0.0.1", self.port, self._wsgi, threaded=True, request_handler=_Quiet)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, name="s3-server", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._thread.join()
            self._server = None

    def downloaded(self, key: str | None = None) -> collections.Counter[str]:
        """Bytes sent by GET requests (of ``key``), by path."""
        with self._lock:
            out: collections.Counter[str] = collections.Counter()
            for (k, path), n in self.bytes_sent.items():
                if key is None or k == key:
                    out[path] += n
            return out

    def gets(self, key: str | None = None, suffix: str = "") -> list[str]:
        """The paths of the GET requests (of ``key``) whose path ends with ``suffix``, one per request."""
        with self._lock:
            return sorted(
                p
                for (k, m, p), n in self.requests.items()
                for _ in range(n)
                if m == "GET" and (key is None or k == key) and p.endswith(suffix)
            )
