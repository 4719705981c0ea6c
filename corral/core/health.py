"""Health checks that decide when an instance is ready (SPEC 1.6): TCP connect or HTTP GET.

Only loopback targets are accepted by the config schema, so the daemon can never be used
to probe other machines.
"""

from __future__ import annotations

import asyncio
import contextlib
from urllib.parse import urlsplit

PROBE_TIMEOUT = 1.0
PROBE_INTERVAL = 0.2


async def probe(url: str, timeout: float = PROBE_TIMEOUT) -> bool:
    """True if `tcp://host:port` accepts a connection, or `http://...` answers 2xx/3xx."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
    except (OSError, TimeoutError):
        return False
    try:
        if parts.scheme == "tcp":
            return True
        path = parts.path or "/"
        if parts.query:
            path += "?" + parts.query
        writer.write(f"GET {path} HTTP/1.0\r\nHost: {host}\r\nUser-Agent: corral\r\n\r\n".encode())
        await writer.drain()
        status_line = await asyncio.wait_for(reader.readline(), timeout)
        fields = status_line.split()
        return len(fields) >= 2 and fields[1][:1] in (b"2", b"3")
    except (OSError, TimeoutError, ValueError):
        return False
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()


async def wait_healthy(url: str, until: asyncio.Event) -> bool:
    """Probe every PROBE_INTERVAL until healthy (True) or `until` is set (False)."""
    while not until.is_set():
        if await probe(url):
            return True
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(until.wait(), PROBE_INTERVAL)
    return False
