"""WebSocket security (SPEC 2.4) against a real uvicorn server and a real WebSocket client:
every registered WebSocket route accepts a handshake only from the panel's exact origin
(scheme, host, port), with a live session whose user holds the route's right; an open
stream closes once its session ends or its right is taken away.

The bound: a stream re-checks its session and rights at least every 10 s (SPEC 2.4), so
each "closes" below is polled for 10 s plus a few seconds of slack, never timed exactly.
"""

from __future__ import annotations

import contextlib
import itertools
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import ClientConnection, connect

from corral.panel.app import load_routes
from corral.panel.gateway import NoAutostart
from corral.panel.routing import registry
from corral.panel.services import Panel, TenantRef
from tests.conftest import Corral
from tests.support.panel import (
    DATABASES,
    Cookie,
    add_tenant,
    client_tls_context,
    grant,
    make_app,
    module_database,
    open_session,
    quick_user,
    remove_dir,
    revoke_behind_the_panels_back,
    serve,
    short_dir,
    start_app,
    tenant_daemon,
)
from tests.support.tls import make_pki

APP = "web"
SPEC_BOUND = 10.0
"""SPEC 2.4: a stream re-checks its session and permissions at least every 10 s."""
SLACK = 5.0
EVIL = "http://evil.example"


def ws_routes() -> list[str]:
    load_routes()
    return sorted(spec.path for spec in registry.specs if spec.kind == "ws")


WS_ROUTES = ws_routes()
LIVE_ROUTES = [r for r in WS_ROUTES if "{deploy_id}" not in r]
"""Streams that deliver for as long as they are open. A deploy's stream ends with its deploy;
its closing at log-out is test_deploys.py::test_a_deploy_stream_closes_when_its_session_ends."""


@dataclass
class Server:
    origin: str
    panel: Panel
    a: TenantRef
    b: TenantRef
    corral: Corral
    ids: dict[str, int] = field(default_factory=dict)
    _serial: Iterator[int] = field(default_factory=itertools.count)

    @property
    def port(self) -> int:
        return int(self.origin.rsplit(":", 1)[1])

    def url(self, route: str) -> str:
        path = route.replace("{tenant}", self.a.name).replace("{app}", APP)
        return "ws://" + self.origin.split("://", 1)[1] + path

    def user(self, on_a: tuple[str, ...] = (), on_b: tuple[str, ...] = ()) -> tuple[int, Cookie]:
        """A new user with these rights, and a session of theirs."""
        user_id = quick_user(self.panel, f"u{next(self._serial)}")
        grant(self.panel, user_id, self.a, on_a)
        grant(self.panel, user_id, self.b, on_b)
        return user_id, open_session(self.panel, user_id, "127.0.0.1")

    def http(self, cookie: Cookie | None = None) -> httpx.Client:
        cookies = {cookie.name: cookie.token} if cookie else {}
        return httpx.Client(base_url=self.origin, cookies=cookies, trust_env=False)


@pytest.fixture(scope="module", params=DATABASES)
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    folder = tmp_path_factory.mktemp(f"ws-{request.param}")
    homes = short_dir("cpw")
    with contextlib.ExitStack() as stack:
        stack.callback(remove_dir, homes)
        url = stack.enter_context(module_database(request, folder))
        app, panel = make_app(folder / "panel", url, starter=NoAutostart())
        stack.callback(panel.database.close)
        corral = stack.enter_context(tenant_daemon(homes / "a"))
        start_app(corral, APP, "app/ticker.py")  # log lines all the time: streams never idle
        origin = stack.enter_context(serve(app))
        world = Server(
            origin,
            panel,
            add_tenant(panel, "a", homes / "a"),
            add_tenant(panel, "b", homes / "b"),
            corral,
        )
        world.ids["admin"] = quick_user(panel, "root", admin=True)
        yield world


def open_ws(url: str, cookie: Cookie | None, origin: str | None, **kwargs: Any) -> ClientConnection:
    headers = {"Cookie": f"{cookie.name}={cookie.token}"} if cookie else {}
    return connect(
        url,
        origin=origin,  # type: ignore[arg-type]
        additional_headers=headers,
        proxy=None,
        open_timeout=10,
        **kwargs,
    )


def refused(url: str, cookie: Cookie | None, origin: str | None, **kwargs: Any) -> int:
    """The HTTP status of a handshake that must fail; AssertionError if it is accepted."""
    try:
        ws = open_ws(url, cookie, origin, **kwargs)
    except InvalidStatus as exc:
        return exc.response.status_code
    ws.close()
    raise AssertionError(f"{url} accepted a handshake from origin {origin!r}")


def closes_within(ws: ClientConnection, seconds: float) -> int:
    """Read until the server closes the stream; its close code. Fails after `seconds`."""
    deadline = time.monotonic() + seconds
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"the stream was still open after {seconds:g} s")
        try:
            ws.recv(timeout=min(left, 1.0))
        except TimeoutError:
            continue
        except ConnectionClosed as exc:
            assert exc.rcvd is not None, "closed without a close frame"
            return exc.rcvd.code


def still_streaming(ws: ClientConnection) -> bool:
    with contextlib.suppress(TimeoutError):
        ws.recv(timeout=5)
        return True
    return False


# --- handshakes ---------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("route", WS_ROUTES)
def test_only_the_panels_exact_origin_may_open_a_stream(server: Server, route: str) -> None:
    _, cookie = server.user(on_a=("access", "logs"))
    url = server.url(route)
    host = server.origin.split("://", 1)[1]
    foreign = {
        "another site": EVIL,
        "another port": f"http://127.0.0.1:{server.port + 1}",
        "another scheme": f"https://{host}",
        "another name of this host": f"http://localhost:{server.port}",
        "null": "null",
        "with a path": f"{server.origin}/t/a",
    }
    for what, origin in foreign.items():
        assert refused(url, cookie, origin) == 403, what
    assert refused(url, cookie, None) == 403, "no Origin at all"
    with open_ws(url, cookie, server.origin) as ws:  # the same session, the own origin
        assert ws.recv(timeout=10)


@pytest.mark.slow
@pytest.mark.parametrize("route", WS_ROUTES)
def test_a_stream_needs_a_live_session(server: Server, route: str) -> None:
    url = server.url(route)
    assert refused(url, None, server.origin) == 403
    forged = Cookie(server.panel.cookie_name, "forged-session-token", "")
    assert refused(url, forged, server.origin) == 403


@pytest.mark.slow
@pytest.mark.parametrize("route", WS_ROUTES)
def test_another_tenants_user_and_a_user_without_the_right_are_refused(
    server: Server, route: str
) -> None:
    url = server.url(route)
    _, stranger = server.user(on_b=("access", "control", "logs", "manage"))
    assert refused(url, stranger, server.origin) == 403
    _, manager = server.user(on_a=("control", "manage"))  # sees A, neither access nor logs
    assert refused(url, manager, server.origin) == 403


@pytest.mark.slow
def test_dns_rebinding_a_foreign_host_name_is_refused(server: Server) -> None:
    """evil.example resolving to 127.0.0.1: the browser sends Host and Origin of
    evil.example, which agree with each other; the Host check refuses it."""
    _, cookie = server.user(on_a=("access",))
    route = next(r for r in WS_ROUTES if r.endswith("/ws/processes"))
    path = server.url(route).split(str(server.port), 1)[1]
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        status = refused(
            f"ws://evil.example:{server.port}{path}",
            cookie,
            f"http://evil.example:{server.port}",
            sock=sock,
        )
    assert status == 400


@pytest.mark.slow
def test_under_tls_only_the_https_origin_may_open_a_stream(
    database_url: str, tmp_path: Path
) -> None:
    """wss:// is reached from https:// pages: the http:// origin of the same host and port
    is another origin."""
    pki = make_pki(tmp_path / "pki")
    homes = short_dir("cpw")
    app, panel = make_app(
        tmp_path / "panel",
        database_url,
        starter=NoAutostart(),
        cert_file=pki.server_cert,
        key_file=pki.server_key,
    )
    try:
        a = add_tenant(panel, "a", homes / "a")
        user_id = quick_user(panel, "ann")
        grant(panel, user_id, a, ("access",))
        cookie = open_session(panel, user_id, "127.0.0.1")
        assert cookie.name.startswith("__Host-")
        with serve(app, pki) as origin:
            url = origin.replace("https://", "wss://") + "/t/a/ws/processes"
            tls = client_tls_context(pki)
            plain = origin.replace("https://", "http://")
            assert refused(url, cookie, plain, ssl=tls) == 403
            with open_ws(url, cookie, origin, ssl=tls) as ws:
                assert ws.recv(timeout=10)
    finally:
        panel.database.close()
        remove_dir(homes)


# --- open streams close when the session or the right goes -----------------------------


@contextlib.contextmanager
def streams(server: Server, cookie: Cookie) -> Iterator[dict[str, ClientConnection]]:
    """One open stream per WebSocket route, each already delivering."""
    with contextlib.ExitStack() as stack:
        opened = {}
        for route in LIVE_ROUTES:
            ws = stack.enter_context(open_ws(server.url(route), cookie, server.origin))
            assert ws.recv(timeout=10)
            opened[route] = ws
        yield opened


def assert_all_close(opened: dict[str, ClientConnection]) -> None:
    started = time.monotonic()
    for route, ws in opened.items():
        left = SPEC_BOUND + SLACK - (time.monotonic() - started)
        assert closes_within(ws, left) == 4401, route


@pytest.mark.slow
def test_logging_out_closes_the_sessions_open_streams(server: Server) -> None:
    _, cookie = server.user(on_a=("access", "logs"))
    with streams(server, cookie) as opened, server.http(cookie) as http:
        response = http.post(
            "/logout", data={"csrf_token": cookie.csrf}, headers={"Origin": server.origin}
        )
        assert response.status_code == 303
        assert_all_close(opened)


@pytest.mark.slow
def test_streams_close_when_the_admin_takes_the_grant_away(server: Server) -> None:
    """Through the admin API (which drops the permission cache at once): the logs stream
    closes when `logs` goes while the process table, still allowed, keeps streaming; both
    close when the last grant goes."""
    user_id, cookie = server.user(on_a=("access", "logs"))
    admin = open_session(server.panel, server.ids["admin"], "127.0.0.1")
    headers = {"Origin": server.origin, "X-CSRF-Token": admin.csrf}
    logs_route = next(r for r in WS_ROUTES if r.endswith("/logs/ws"))
    with streams(server, cookie) as opened, server.http(admin) as http:

        def set_rights(rights: list[str]) -> None:
            response = http.put(
                f"/api/v1/users/{user_id}/grants", json={"grants": {"a": rights}}, headers=headers
            )
            assert response.status_code == 200, response.text

        set_rights(["access"])
        assert_all_close({logs_route: opened.pop(logs_route)})
        (table,) = opened.values()
        assert still_streaming(table), "the process table closed though access stayed"
        set_rights([])
        assert_all_close(opened)


@pytest.mark.slow
def test_a_grant_removed_behind_the_panels_back_closes_the_stream_once_the_cache_expires(
    server: Server,
) -> None:
    """A grant deleted straight in the database (no cache invalidation): the cached
    rights hold for at most permission_cache_seconds, then the next re-check refuses.
    The panel's clock is moved past the cache instead of waiting for it."""
    user_id, cookie = server.user(on_a=("access", "logs"))
    auth = server.panel.auth
    with streams(server, cookie) as opened:
        revoke_behind_the_panels_back(server.panel, user_id, server.a)
        ttl = server.panel.config.permission_cache_seconds
        real_clock = auth.clock
        auth.clock = lambda: real_clock() + ttl
        try:
            assert_all_close(opened)
        finally:
            auth.clock = real_clock


@pytest.mark.slow
def test_a_session_ended_from_the_account_page_closes_its_streams(server: Server) -> None:
    """Ending one's own other session (a lost laptop) closes that session's streams."""
    user_id, cookie = server.user(on_a=("access", "logs"))
    other = open_session(server.panel, user_id, "127.0.0.1")
    with streams(server, cookie) as opened, server.http(other) as http:
        response = http.delete(
            f"/api/v1/account/sessions/{cookie.ref}",
            headers={"Origin": server.origin, "X-CSRF-Token": other.csrf},
        )
        assert response.status_code == 200, response.text
        assert_all_close(opened)
