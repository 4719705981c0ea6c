"""The metrics HTTP endpoint with real sockets on 127.0.0.1 (port 0)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import pytest

from corral.core import metrics_server
from corral.core.metrics_server import CONTENT_TYPE, MetricsServer, is_loopback

BODY = b"# HELP corral_up test\n# TYPE corral_up gauge\ncorral_up 1.0\n"


async def static_body() -> bytes:
    return BODY


def run(main: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(main(), 30))


@asynccontextmanager
async def serving(
    render: Callable[[], Awaitable[bytes]] = static_body,
) -> AsyncIterator[MetricsServer]:
    server = MetricsServer("127.0.0.1", 0, render)
    await server.start()
    try:
        yield server
    finally:
        await server.close()


async def request(port: int, raw: bytes, timeout: float = 5.0) -> tuple[int, dict[str, str], bytes]:
    """Send `raw`, read to EOF: (status, headers with lower-case names, body)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(raw)
        await writer.drain()
        response = await asyncio.wait_for(reader.read(), timeout)
    finally:
        writer.close()
    head, _, body = response.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(status_line.split()[1]), headers, body


def get(path: str, method: str = "GET") -> bytes:
    return f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: */*\r\n\r\n".encode()


def test_get_metrics() -> None:
    calls = []

    async def render() -> bytes:
        calls.append(1)
        return BODY

    async def main() -> None:
        async with serving(render) as server:
            assert server.port > 0
            status, headers, body = await request(server.port, get("/metrics"))
            assert status == 200
            assert headers["content-type"] == CONTENT_TYPE
            assert headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
            assert headers["content-length"] == str(len(BODY))
            assert headers["connection"] == "close"
            assert body == BODY
            # "/" and a query string answer too; each request renders anew
            for path in ("/", "/metrics?name[]=x"):
                status, _, body = await request(server.port, get(path))
                assert (status, body) == (200, BODY)
            assert len(calls) == 3

    run(main)


def test_head_has_headers_only() -> None:
    async def main() -> None:
        async with serving() as server:
            status, headers, body = await request(server.port, get("/metrics", "HEAD"))
            assert (status, body) == (200, b"")
            assert headers["content-length"] == str(len(BODY))

    run(main)


def test_bare_newlines_and_http_1_0() -> None:
    async def main() -> None:
        async with serving() as server:
            status, _, body = await request(server.port, b"GET /metrics HTTP/1.0\n\n")
            assert (status, body) == (200, BODY)

    run(main)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (get("/other"), 404),
        (get("/metrics/"), 404),
        (get("/../etc/passwd"), 404),
        (get("/metrics", "POST"), 405),
        (get("/", "DELETE"), 405),
        (b"GET /metrics\r\n\r\n", 400),
        (b"garbage\r\n\r\n", 400),
        (b"GET /metrics HTTP/1.1\r\nX: " + b"a" * 9000 + b"\r\n\r\n", 431),
        (b"GET /metrics HTTP/1.1\r\n" + b"X: aaaaaaaa\r\n" * 1000 + b"\r\n", 431),
    ],
)
def test_other_requests(raw: bytes, expected: int) -> None:
    async def main() -> None:
        async with serving() as server:
            status, headers, body = await request(server.port, raw)
            assert status == expected
            assert BODY not in body
            assert headers["connection"] == "close"
            if expected == 405:
                assert headers["allow"] == "GET, HEAD"

    run(main)


def test_a_failing_render_answers_500_and_the_server_goes_on() -> None:
    fail = [True]

    async def render() -> bytes:
        if fail[0]:
            raise RuntimeError("boom")
        return BODY

    async def main() -> None:
        async with serving(render) as server:
            status, _, _ = await request(server.port, get("/metrics"))
            assert status == 500
            fail[0] = False
            assert (await request(server.port, get("/metrics")))[0] == 200

    run(main)


def test_a_client_that_closes_early_is_harmless() -> None:
    async def main() -> None:
        async with serving() as server:
            for raw in (b"", b"GET /metr"):
                _, writer = await asyncio.open_connection("127.0.0.1", server.port)
                writer.write(raw)
                writer.close()
            assert (await request(server.port, get("/metrics")))[0] == 200

    run(main)


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "", "10.0.0.1", "192.168.1.2", "example.com"])
def test_non_loopback_hosts_are_refused(host: str) -> None:
    with pytest.raises(ValueError, match="loopback"):
        MetricsServer(host, 0, static_body)


def test_loopback_hosts() -> None:
    for host in ("127.0.0.1", "127.8.9.10", "::1", "[::1]", "localhost", "LOCALHOST"):
        assert is_loopback(host), host
    for host in ("0.0.0.0", "::", "", "128.0.0.1", "::ffff:10.0.0.1", "local"):
        assert not is_loopback(host), host
    assert MetricsServer("localhost", 0, static_body).host == "127.0.0.1"
    with pytest.raises(ValueError):
        MetricsServer("127.0.0.1", 70000, static_body)


def test_localhost_binds_loopback() -> None:
    async def main() -> None:
        server = MetricsServer("localhost", 0, static_body)
        await server.start()
        try:
            assert (await request(server.port, get("/metrics")))[0] == 200
        finally:
            await server.close()

    run(main)


def test_a_slow_client_does_not_block_others_and_times_out(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(metrics_server, "REQUEST_TIMEOUT", 1.5)

    async def main() -> None:
        async with serving() as server:
            # one client sends half a request head and then nothing
            slow_reader, slow_writer = await asyncio.open_connection("127.0.0.1", server.port)
            slow_writer.write(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
            await slow_writer.drain()
            started = time.monotonic()
            # others are served meanwhile...
            for _ in range(5):
                assert (await request(server.port, get("/metrics")))[0] == 200
            # ...while the slow one is still waiting (a server serving one connection at a
            # time would only have answered them after dropping it)
            slow_read = asyncio.ensure_future(slow_reader.read())
            done, _ = await asyncio.wait([slow_read], timeout=0.05)
            assert not done
            # the slow one is dropped after the timeout, without an answer
            assert await asyncio.wait_for(slow_read, 10) == b""
            assert time.monotonic() - started >= 1.0
            slow_writer.close()

    run(main)


def test_connections_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(metrics_server, "MAX_CONNECTIONS", 2)

    async def main() -> None:
        async with serving() as server:
            idle = [await asyncio.open_connection("127.0.0.1", server.port) for _ in range(2)]
            await asyncio.sleep(0.1)  # let the server pick them up
            assert (await request(server.port, get("/metrics")))[0] == 503
            for _, writer in idle:
                writer.close()
            await asyncio.sleep(0.1)
            assert (await request(server.port, get("/metrics")))[0] == 200

    run(main)


def test_close_drops_pending_connections_and_frees_the_port() -> None:
    async def main() -> None:
        server = MetricsServer("127.0.0.1", 0, static_body)
        await server.start()
        port = server.port
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        await asyncio.sleep(0.05)
        started = time.monotonic()
        await server.close()
        assert time.monotonic() - started < 2
        assert await asyncio.wait_for(reader.read(), 5) == b""
        writer.close()
        with pytest.raises(OSError):
            await asyncio.open_connection("127.0.0.1", port)
        await server.close()  # twice is fine
        # the same port can be bound again
        again = MetricsServer("127.0.0.1", port, static_body)
        await again.start()
        assert again.port == port
        await again.close()

    run(main)


def test_port_in_use_raises_oserror() -> None:
    async def main() -> None:
        async with serving() as first:
            second = MetricsServer("127.0.0.1", first.port, static_body)
            with pytest.raises(OSError):
                await second.start()

    run(main)
