"""A bounded HTTP load on a loopback port, for the reload workload.

`threads` threads each send `GET /` on a new connection (no keep-alive: every request
needs an accept, which is what a reload can break) until `stop()` or `max_seconds`.
A request fails when the connection is refused or reset, times out (5 s), or the answer
is not `200`. Only 127.0.0.1 is ever connected to.
"""

from __future__ import annotations

import re
import socket
import threading
import time
from dataclasses import dataclass, field

TIMEOUT = 5.0
PID_RE = re.compile(rb"pid=(\d+)")


@dataclass
class Tally:
    ok: int = 0
    failed: int = 0
    errors: list[str] = field(default_factory=list)
    pids: dict[int, float] = field(default_factory=dict)
    """pid that answered -> monotonic time of its last answer."""


class Load:
    def __init__(self, port: int, *, threads: int = 4, max_seconds: float = 90.0) -> None:
        self.port = port
        self.max_seconds = max_seconds
        self.tally = Tally()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]
        self._request = f"GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"

    def start(self) -> Load:
        self._deadline = time.monotonic() + self.max_seconds
        for thread in self._threads:
            thread.start()
        return self

    def stop(self) -> Tally:
        self._stop.set()
        for thread in self._threads:
            thread.join()
        return self.tally

    def snapshot(self) -> tuple[int, int]:
        with self._lock:
            return self.tally.ok, self.tally.failed

    def _run(self) -> None:
        request = self._request.encode()
        while not self._stop.is_set() and time.monotonic() < self._deadline:
            error, pid = self._once(request)
            with self._lock:
                if error is None:
                    self.tally.ok += 1
                    if pid is not None:
                        self.tally.pids[pid] = time.monotonic()
                else:
                    self.tally.failed += 1
                    if len(self.tally.errors) < 5:
                        self.tally.errors.append(error)

    def _once(self, request: bytes) -> tuple[str | None, int | None]:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=TIMEOUT) as sock:
                sock.sendall(request)
                data = b""
                while chunk := sock.recv(65536):
                    data += chunk
        except OSError as exc:
            return f"{type(exc).__name__}: {exc}", None
        if not data.startswith(b"HTTP/1.1 200"):
            return f"answer: {data[:60]!r}", None
        match = PID_RE.search(data)
        return None, int(match.group(1)) if match else None
