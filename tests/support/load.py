"""A small, bounded HTTP load generator for loopback servers (reload-without-loss tests).

    with Load("http://127.0.0.1:8000/", concurrency=8, max_seconds=10) as load:
        ... reload the app ...
    assert load.failed == 0, load
    assert len(load.pids) >= 2

`concurrency` threads send GET requests, each on a new connection (no keep-alive), until
`stop()` (called on leaving the `with` block), `max_requests` requests in all, or
`max_seconds`, whichever comes first: it always stops by itself. A 200 answer is a success;
anything else (another status, a refused or reset connection, a 5 s timeout) is a failure,
and the first few failures are kept as text in `errors`. `pids` collects the `pid=<n>`
values of the answers' bodies, which tells which instances served.

Load only ever goes to this machine: a URL whose host is not loopback (127.0.0.0/8, ::1,
or a `localhost` that resolves only to those) is refused with ValueError before any request.
"""

from __future__ import annotations

import http.client
import ipaddress
import re
import socket
import threading
import time
from types import TracebackType
from urllib.parse import urlsplit

PID_RE = re.compile(rb"\bpid=(\d+)")
KEEP_ERRORS = 10
TIMEOUT = 5.0


def check_loopback(host: str) -> None:
    """Raise ValueError unless `host` is a loopback address (or a loopback-only name)."""
    if not host:
        raise ValueError("load: the URL has no host")
    if host.lower() in ("localhost", "localhost."):
        try:
            infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
        except socket.gaierror as exc:
            raise ValueError(f"load: cannot resolve {host!r}: {exc}") from exc
        addresses = {str(info[4][0]) for info in infos}
    else:
        addresses = {host}
    for address in addresses:
        try:
            ip = ipaddress.ip_address(address.split("%", 1)[0])
        except ValueError:
            raise ValueError(
                f"load: {host!r} is not a loopback address: load only goes to 127.0.0.0/8, "
                "::1 or localhost"
            ) from None
        if not ip.is_loopback:
            raise ValueError(
                f"load: {host!r} ({ip}) is not a loopback address: load only goes to "
                "127.0.0.0/8, ::1 or localhost"
            )


class Load:
    """HTTP GET load on a loopback URL from `concurrency` threads, bounded in count and time.

    Counters (`ok`, `failed`, `errors`, `pids`) may be read while it runs."""

    def __init__(
        self,
        url: str,
        *,
        concurrency: int = 8,
        max_requests: int = 20000,
        max_seconds: float = 60.0,
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme != "http":
            raise ValueError(f"load: only http:// URLs, not {url!r}")
        if concurrency < 1 or max_requests < 0 or max_seconds < 0:
            raise ValueError("load: concurrency must be >= 1, the limits >= 0")
        host = parts.hostname or ""
        check_loopback(host)
        self.url = url
        self.host = host
        self.port = parts.port or 80
        self.path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self.concurrency = concurrency
        self.max_requests = max_requests
        self.max_seconds = max_seconds

        self.ok = 0
        self.failed = 0
        self.errors: list[str] = []
        self.pids: set[int] = set()
        self.started: float | None = None
        self.elapsed = 0.0

        self._issued = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._deadline = 0.0

    # -------------------------------------------------------------- lifecycle
    def start(self) -> Load:
        if self._threads:
            raise RuntimeError("load: already started")
        self.started = time.monotonic()
        self._deadline = self.started + self.max_seconds
        self._threads = [
            threading.Thread(target=self._run, name=f"load-{i}", daemon=True)
            for i in range(self.concurrency)
        ]
        for thread in self._threads:
            thread.start()
        return self

    def stop(self) -> Load:
        """Stop sending and wait for the requests in flight (at most the 5 s timeout)."""
        self._stop.set()
        for thread in self._threads:
            thread.join()
        if self.started is not None and not self.elapsed:
            self.elapsed = time.monotonic() - self.started
        return self

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until the load ends by itself (max_requests or max_seconds reached), or
        `timeout` seconds. True when it has ended."""
        deadline = None if timeout is None else time.monotonic() + timeout
        for thread in self._threads:
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            thread.join(remaining)
            if thread.is_alive():
                return False
        return True

    def wait_for(self, ok: int = 0, failed: int = 0, timeout: float = 10.0) -> bool:
        """Wait until at least `ok` successes and `failed` failures were counted; False if
        that did not happen within `timeout` seconds or the load ended first."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if self.ok >= ok and self.failed >= failed:
                    return True
            if self._threads and not any(t.is_alive() for t in self._threads):
                break
            time.sleep(0.005)
        with self._lock:
            return self.ok >= ok and self.failed >= failed

    def __enter__(self) -> Load:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def requests(self) -> int:
        with self._lock:
            return self.ok + self.failed

    def __repr__(self) -> str:
        with self._lock:
            return (
                f"Load({self.url!r}: ok={self.ok} failed={self.failed} "
                f"pids={sorted(self.pids)} errors={self.errors!r})"
            )

    # -------------------------------------------------------------- the workers
    def _take(self) -> bool:
        """Reserve one request within the bounds."""
        if self._stop.is_set() or time.monotonic() >= self._deadline:
            return False
        with self._lock:
            if self._issued >= self.max_requests:
                return False
            self._issued += 1
            return True

    def _run(self) -> None:
        while self._take():
            error: str | None = None
            pid: int | None = None
            conn = http.client.HTTPConnection(self.host, self.port, timeout=TIMEOUT)
            try:
                conn.request("GET", self.path, headers={"Connection": "close"})
                response = conn.getresponse()
                body = response.read()
                if response.status == 200:
                    match = PID_RE.search(body)
                    pid = int(match.group(1)) if match else None
                else:
                    error = f"HTTP {response.status} {response.reason}: {body[:200]!r}"
            except (OSError, http.client.HTTPException) as exc:
                error = f"{type(exc).__name__}: {exc}"
            finally:
                conn.close()
            with self._lock:
                if error is None:
                    self.ok += 1
                    if pid is not None:
                        self.pids.add(pid)
                else:
                    self.failed += 1
                    if len(self.errors) < KEEP_ERRORS:
                        self.errors.append(error)
