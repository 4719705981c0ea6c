"""Security headers on every HTTP response, and the CSP as a real Chromium applies it."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator

import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.testclient import TestClient
from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocket

from corral.panel.security.headers import (
    CONTENT_SECURITY_POLICY,
    SecurityHeadersMiddleware,
)

EXPECTED = {
    "content-security-policy": CONTENT_SECURITY_POLICY,
    "x-content-type-options": "nosniff",
    "referrer-policy": "same-origin",
    "x-frame-options": "DENY",
    "cross-origin-opener-policy": "same-origin",
}

PAGE = """<!doctype html>
<html><head><title>csp</title><script src="/static/probe.js"></script>
<script>document.title = "inline script ran";</script></head>
<body><p style="color: red">x</p></body></html>
"""
PROBE_JS = """
window.violations = [];
document.addEventListener("securitypolicyviolation", (e) => {
  window.violations.push(e.violatedDirective + " " + (e.blockedURI || ""));
});
window.addEventListener("DOMContentLoaded", () => {
  const scheme = location.protocol === "https:" ? "wss://" : "ws://";
  const own = new WebSocket(scheme + location.host + "/ws");
  own.onmessage = (event) => { document.body.dataset.own = event.data; };
  own.onerror = () => { document.body.dataset.own = "error"; };
  try {
    const other = new WebSocket(scheme + "127.0.0.1:" + OTHER_PORT + "/ws");
    other.onerror = () => { document.body.dataset.other = "error"; };
    other.onopen = () => { document.body.dataset.other = "open"; };
  } catch (e) {
    document.body.dataset.other = "threw " + e.name;
  }
});
"""


async def page(request: Request) -> Response:
    return HTMLResponse(PAGE)


async def probe(request: Request) -> Response:
    other = request.app.state.other_port
    js = PROBE_JS.replace("OTHER_PORT", str(other))
    return Response(js, media_type="text/javascript")


async def own_headers(request: Request) -> Response:
    return PlainTextResponse("x", headers={"Cache-Control": "private, max-age=60"})


async def ws(websocket: WebSocket) -> None:
    await websocket.accept()
    await websocket.send_text("hello")
    await websocket.close()


def make_app(*, tls: bool, other_port: int = 1) -> SecurityHeadersMiddleware:
    app = Starlette(
        routes=[
            Route("/", page),
            Route("/static/probe.js", probe),
            Route("/own", own_headers),
            WebSocketRoute("/ws", ws),
        ]
    )
    app.state.other_port = other_port
    return SecurityHeadersMiddleware(app, tls=tls)


def test_every_response_gets_the_headers() -> None:
    client = TestClient(make_app(tls=False))
    for path in ("/", "/static/probe.js", "/missing", "/own"):
        response = client.get(path)
        for name, value in EXPECTED.items():
            assert response.headers[name] == value, (path, name)
        policy = response.headers["permissions-policy"]
        assert "camera=()" in policy and "microphone=()" in policy
        assert "strict-transport-security" not in response.headers
    assert client.get("/missing").status_code == 404


def test_csp_forbids_inline_script_and_framing() -> None:
    directives = dict(
        (part.split(" ", 1)[0], part.split(" ", 1)[1])
        for part in CONTENT_SECURITY_POLICY.split("; ")
    )
    assert directives["script-src"] == "'self'"
    assert "unsafe-inline" not in CONTENT_SECURITY_POLICY
    assert "unsafe-eval" not in CONTENT_SECURITY_POLICY
    assert directives["frame-ancestors"] == "'none'"
    assert directives["object-src"] == "'none'"
    assert directives["base-uri"] == "'none'"


def test_hsts_only_under_tls() -> None:
    response = TestClient(make_app(tls=True)).get("/")
    assert response.headers["strict-transport-security"] == "max-age=31536000"


def test_no_store_except_for_static_files() -> None:
    client = TestClient(make_app(tls=False))
    assert client.get("/").headers["cache-control"] == "no-store"
    assert client.get("/missing").headers["cache-control"] == "no-store"
    assert "cache-control" not in client.get("/static/probe.js").headers


def test_a_header_set_by_the_route_is_kept_once() -> None:
    response = TestClient(make_app(tls=False)).get("/own")
    assert response.headers.get_list("cache-control") == ["private, max-age=60"]
    assert response.headers.get_list("x-frame-options") == ["DENY"]


def test_websockets_and_lifespan_pass_through() -> None:
    with TestClient(make_app(tls=False)) as client, client.websocket_connect("/ws") as socket_:
        assert socket_.receive_text() == "hello"


def test_a_start_message_without_headers_gets_them() -> None:
    async def bare(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 204})
        await send({"type": "http.response.body", "body": b""})

    response = TestClient(SecurityHeadersMiddleware(bare, tls=False)).get("/")
    assert response.status_code == 204
    assert response.headers["x-content-type-options"] == "nosniff"


# --- In a real browser ---


@contextlib.contextmanager
def serve(app: SecurityHeadersMiddleware, sock: socket.socket) -> Iterator[None]:
    """uvicorn on a socket already bound to loopback, in a thread; stopped at the end."""
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not server.started:
            assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.02)
        yield
    finally:
        server.should_exit = True
        thread.join(10)


def _loopback_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


@pytest.mark.slow
def test_chromium_allows_own_websocket_and_blocks_inline_script_and_other_ports() -> None:
    # connect-src 'self' must cover ws:// to the same host and port (CSP Level 3).
    from tests.support.browser import ChromiumUnavailable, chromium

    with contextlib.ExitStack() as stack:
        served = stack.enter_context(_loopback_socket())
        other = stack.enter_context(_loopback_socket())  # bound, never listening
        app = make_app(tls=False, other_port=other.getsockname()[1])
        stack.enter_context(serve(app, served))
        try:
            browser = stack.enter_context(chromium())  # short /tmp path: socket length
        except ChromiumUnavailable as exc:
            pytest.fail(str(exc), pytrace=False)
        tab = browser.new_page()
        tab.goto(f"http://127.0.0.1:{served.getsockname()[1]}/")
        tab.wait_for_function("document.body && document.body.dataset.own !== undefined")
        tab.wait_for_function("document.body.dataset.other !== undefined")
        assert tab.evaluate("document.body.dataset.own") == "hello"
        assert tab.title() == "csp"  # the inline script never ran
        violations = tab.evaluate("window.violations")
        assert any(v.startswith("script-src") and "inline" in v for v in violations), violations
        assert any(v.startswith("style-src") for v in violations), violations
        assert any(
            v.startswith("connect-src") and str(other.getsockname()[1]) in v for v in violations
        ), violations
        assert tab.evaluate("document.body.dataset.other") != "open"
