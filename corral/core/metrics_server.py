"""A minimal HTTP endpoint for Prometheus scrapes (SPEC 1.9, `metrics_port`), on loopback only.

`GET /metrics` (or `/`) answers the text `render()` returns; HEAD too. One request per
connection, then the connection is closed. A client has REQUEST_TIMEOUT seconds to send
at most MAX_HEAD bytes of request head; each connection is its own task, so a slow one
never holds up another, and at most MAX_CONNECTIONS are served at once (the rest are
closed at once). `render` is awaited on the event loop: it must not block it.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
from collections.abc import Awaitable, Callable
from typing import Final

log = logging.getLogger("corral.metrics")

CONTENT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"
MAX_HEAD: Final = 8 * 1024
REQUEST_TIMEOUT: Final = 5.0
WRITE_TIMEOUT: Final = 5.0
MAX_CONNECTIONS: Final = 64
LINGER_TIMEOUT: Final = 1.0
LINGER_BYTES: Final = 64 * 1024
PATHS: Final = ("/metrics", "/")

_REASONS: Final = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    503: "Service Unavailable",
}


def is_loopback(host: str) -> bool:
    """True for `localhost` and the loopback addresses (127.0.0.0/8, ::1)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class _TooLarge(Exception):
    pass


class MetricsServer:
    """Serves `render()` over HTTP on a loopback address.

    `MetricsServer("127.0.0.1", 0, render)` then `await start()`; `port` is the bound port.
    A host that is not loopback raises ValueError (here, not at start). `localhost` binds
    127.0.0.1 only, so that port 0 gives one port."""

    def __init__(self, host: str, port: int, render: Callable[[], Awaitable[bytes]]) -> None:
        if not is_loopback(host):
            raise ValueError(
                "the metrics endpoint only binds a loopback address (127.0.0.0/8, ::1,"
                f" localhost), not {host!r}"
            )
        if not 0 <= port <= 65535:
            raise ValueError(f"port must be 0-65535, not {port}")
        self.host = "127.0.0.1" if host.lower() == "localhost" else host.strip("[]")
        self._port = port
        self._render = render
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def port(self) -> int:
        """The bound port once started (the real one when 0 was asked), else the one asked."""
        if self._server is not None and self._server.sockets:
            return int(self._server.sockets[0].getsockname()[1])
        return self._port

    async def start(self) -> None:
        """Bind and listen. OSError if the address is taken."""
        if self._server is not None:
            return
        server = await asyncio.start_server(self._serve, self.host, self._port, limit=MAX_HEAD)
        bound = [s.getsockname()[0] for s in server.sockets]
        if not all(is_loopback(str(address)) for address in bound):  # belt and braces
            server.close()
            raise ValueError(f"the metrics endpoint resolved to non-loopback {bound}")
        self._server = server
        log.info("metrics endpoint on http://%s:%d/metrics", self.host, self.port)

    async def close(self) -> None:
        """Stop listening and drop the connections still being served."""
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)  # so that close() can end it
        try:
            if len(self._tasks) > MAX_CONNECTIONS:
                await self._respond(writer, 503, b"too many connections\n")
                await _linger(reader, writer)
                return
            try:
                head = await asyncio.wait_for(_read_head(reader), REQUEST_TIMEOUT)
            except TimeoutError:
                return  # a client that sends nothing in time gets nothing
            except _TooLarge:
                await self._respond(writer, 431, b"request head too large\n")
                await _linger(reader, writer)
                return
            except (OSError, asyncio.IncompleteReadError):
                return
            await self._answer(writer, head)
        except (OSError, TimeoutError):
            pass
        finally:
            if task is not None:
                self._tasks.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _answer(self, writer: asyncio.StreamWriter, head: bytes) -> None:
        request_line = head.split(b"\n", 1)[0].strip()
        parts = request_line.split()
        if len(parts) != 3 or not parts[2].startswith(b"HTTP/"):
            await self._respond(writer, 400, b"bad request\n")
            return
        method, target = parts[0], parts[1].split(b"?", 1)[0].decode("latin-1")
        if target not in PATHS:
            await self._respond(writer, 404, b"not found: try /metrics\n")
            return
        if method not in (b"GET", b"HEAD"):
            await self._respond(writer, 405, b"method not allowed\n", [("Allow", "GET, HEAD")])
            return
        try:
            body = await self._render()
        except Exception:
            log.exception("rendering the metrics failed")
            await self._respond(writer, 500, b"rendering the metrics failed\n")
            return
        await self._respond(writer, 200, body, head_only=method == b"HEAD")

    async def _respond(
        self,
        writer: asyncio.StreamWriter,
        status: int,
        body: bytes,
        headers: list[tuple[str, str]] | None = None,
        head_only: bool = False,
    ) -> None:
        content_type = CONTENT_TYPE if status == 200 else "text/plain; charset=utf-8"
        lines = [
            f"HTTP/1.1 {status} {_REASONS[status]}",
            f"Content-Type: {content_type}",
            f"Content-Length: {len(body)}",
            "Connection: close",
            *(f"{name}: {value}" for name, value in headers or ()),
        ]
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        if not head_only:
            writer.write(body)
        await asyncio.wait_for(writer.drain(), WRITE_TIMEOUT)


async def _linger(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """After answering a request that was not read whole: signal the end of the answer and
    read what the client still sends (a little, briefly), so that closing the socket with
    unread data does not reset the connection before the client has read the answer."""
    if writer.can_write_eof():
        writer.write_eof()
    with contextlib.suppress(OSError, TimeoutError, ValueError):
        async with asyncio.timeout(LINGER_TIMEOUT):
            left = LINGER_BYTES
            while left > 0 and (chunk := await reader.read(min(left, 8192))):
                left -= len(chunk)


async def _read_head(reader: asyncio.StreamReader) -> bytes:
    """The request line and headers, up to the empty line; _TooLarge past MAX_HEAD."""
    head = bytearray()
    while True:
        try:
            line = await reader.readline()
        except ValueError as e:  # a line longer than the reader's limit (MAX_HEAD)
            raise _TooLarge from e
        if not line:
            raise asyncio.IncompleteReadError(bytes(head), None)
        head += line
        if len(head) > MAX_HEAD:
            raise _TooLarge
        if line in (b"\r\n", b"\n"):
            return bytes(head)


__all__ = ["CONTENT_TYPE", "MetricsServer", "is_loopback"]
