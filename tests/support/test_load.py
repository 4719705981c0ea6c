"""The load generator itself, against small servers in this process."""

from __future__ import annotations

import http.server
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from tests.support.load import Load, check_loopback


class _State:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.in_flight = 0
        self.most_in_flight = 0
        self.served = 0


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    state: _State  # set per server class below
    delay = 0.0

    def do_GET(self) -> None:
        state = self.state
        with state.lock:
            state.in_flight += 1
            state.most_in_flight = max(state.most_in_flight, state.in_flight)
        try:
            if self.delay:
                time.sleep(self.delay)
            if self.path == "/teapot":
                status, body = 418, b"short and stout"
            elif self.path == "/nopid":
                status, body = 200, b"hello"
            else:
                status, body = 200, f"pid={os.getpid()} instance=0\n".encode()
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        finally:
            with state.lock:
                state.in_flight -= 1
                state.served += 1

    def log_message(self, format: str, *args: object) -> None:
        pass


@contextmanager
def server(delay: float = 0.0) -> Iterator[tuple[str, _State, http.server.ThreadingHTTPServer]]:
    state = _State()
    handler = type("Handler", (_Handler,), {"state": state, "delay": delay})
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    httpd.daemon_threads = False  # server_close() waits for the handlers
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", state, httpd
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()


def test_counts_add_up_to_max_requests() -> None:
    with server() as (url, state, _):
        with Load(url + "/", concurrency=4, max_requests=150, max_seconds=30) as load:
            assert load.wait(timeout=30)
        assert load.ok == 150, load
        assert load.failed == 0 and load.errors == []
        assert load.requests == 150
        assert load.pids == {os.getpid()}
    assert state.served == 150  # once the server has closed: every handler has finished


def test_runs_requests_concurrently() -> None:
    with server(delay=0.05) as (url, state, _):
        with Load(url, concurrency=4, max_requests=24, max_seconds=30) as load:
            assert load.wait(timeout=30)
        assert load.ok == 24, load
        assert state.most_in_flight >= 2


def test_stops_by_itself_after_max_seconds() -> None:
    with server() as (url, _, _):
        start = time.monotonic()
        with Load(url, concurrency=2, max_requests=10**9, max_seconds=0.3) as load:
            assert load.wait(timeout=10)
        took = time.monotonic() - start
        assert 0.3 <= took < 5
        assert load.ok > 0 and load.failed == 0, load
        assert load.ok < 10**9


def test_stop_ends_it_early_and_is_idempotent() -> None:
    with server() as (url, _, _):
        load = Load(url, concurrency=2, max_seconds=30).start()
        assert load.wait_for(ok=5)
        start = time.monotonic()
        load.stop()
        load.stop()
        assert time.monotonic() - start < 5
        assert load.wait(timeout=0)  # the threads are gone
        count = load.requests
        time.sleep(0.05)
        assert load.requests == count  # nothing runs any more
        assert load.failed == 0, load


def test_failures_are_counted_when_the_server_goes_away() -> None:
    with server() as (url, _, httpd):
        load = Load(url, concurrency=2, max_requests=100_000, max_seconds=30).start()
        try:
            assert load.wait_for(ok=20)
            httpd.shutdown()
            httpd.server_close()  # the port is closed: connections are refused
            assert load.wait_for(failed=20)
        finally:
            load.stop()
    assert load.ok >= 20 and load.failed >= 20
    assert load.ok + load.failed == load.requests
    assert 0 < len(load.errors) <= 10
    assert any("ConnectionRefused" in error for error in load.errors), load.errors


def test_non_200_is_a_failure_with_the_status() -> None:
    with server() as (url, _, _), Load(url + "/teapot", concurrency=1, max_requests=3) as load:
        assert load.wait(timeout=10)
    assert load.ok == 0 and load.failed == 3
    assert load.errors[0].startswith("HTTP 418"), load.errors
    assert load.pids == set()


def test_a_body_without_pid_is_still_a_success() -> None:
    with server() as (url, _, _), Load(url + "/nopid", concurrency=2, max_requests=10) as load:
        assert load.wait(timeout=10)
    assert load.ok == 10 and load.pids == set()


@pytest.mark.parametrize(
    "url",
    [
        "http://10.0.0.1:8000/",
        "http://192.168.1.10/",
        "http://172.16.0.1/",
        "http://8.8.8.8/",
        "http://0.0.0.0:8000/",
        "http://[2001:db8::1]:80/",
        "http://[::ffff:10.0.0.1]/",
        "http://example.com/",
        "http://localhost.example.com/",
        "http:///nohost",
    ],
)
def test_non_loopback_is_refused(url: str) -> None:
    with pytest.raises(ValueError, match="load: "):
        Load(url)


@pytest.mark.parametrize("url", ["https://127.0.0.1/", "ftp://127.0.0.1/", "127.0.0.1:80"])
def test_only_http_urls(url: str) -> None:
    with pytest.raises(ValueError, match="only http"):
        Load(url)


@pytest.mark.parametrize("host", ["127.0.0.1", "127.9.8.7", "::1", "localhost"])
def test_loopback_is_accepted(host: str) -> None:
    check_loopback(host)  # no exception; and Load() sends nothing until start()
    Load(f"http://{'[' + host + ']' if ':' in host else host}:9/")


def test_bad_bounds_are_refused() -> None:
    with pytest.raises(ValueError):
        Load("http://127.0.0.1/", concurrency=0)
    with pytest.raises(ValueError):
        Load("http://127.0.0.1/", max_seconds=-1)
