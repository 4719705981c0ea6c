"""The app limit held by the tenant's daemon too (issue 9), in development mode: the
panel's starter gives a daemon its tenant's limit, an admin's change is pushed to the
running daemon, and the daemon's own refusal (LIMIT_REACHED) reaches the user as the
panel's own limit does. Real daemons started by the panel; a CLI-style client on the
tenant's socket plays the tenant racing the panel.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import pytest

from corral.config.model import AppConfig
from corral.panel.audit import AuditFilter
from corral.panel.gateway import DevStarter
from corral.panel.services import Panel, TenantRef
from corral.paths import Home
from corral.protocol.client import ControlClient
from corral.protocol.wire import ErrorCode, ProtocolError
from tests.conftest import Corral
from tests.support.panel import (
    SLEEPER,
    Client,
    add_tenant,
    add_user,
    make_app,
    remove_dir,
    short_dir,
    stop_daemons,
)


@dataclass
class World:
    panel: Panel
    tenant: TenantRef
    admin: Client
    home: Path
    corral: Corral
    """The tenant's home as the CLI sees it (its daemon, once the panel started it)."""

    def create(self, name: str) -> Any:
        return self.admin.api(
            "POST", "/api/v1/tenants/acme/apps", {"name": name, "script": "app/server.py"}
        )

    def daemon(self) -> psutil.Process:
        self.corral._remember_daemon()
        pid = self.corral.daemon_pid()
        assert pid is not None, "the panel did not start the daemon"
        return psutil.Process(pid)

    def cli_start(self, name: str) -> list[dict[str, Any]]:
        """What `corral start` sends, on the tenant's own socket (not through the panel)."""
        config = AppConfig(
            name=name,
            script=str(self.home / "app" / "server.py"),
            interpreter=sys.executable,
            cwd=str(self.home),
        )
        with ControlClient.connect(self.corral.home.socket, timeout=30) as client:
            return list(client.call("start", apps=[config.to_dict()], cli_env={}))

    def audit(self, action: str) -> list[tuple[str, str]]:
        entries = self.panel.audit.query(AuditFilter(tenant="acme", action=action))
        return [(e.result, e.detail) for e in reversed(entries)]


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    """A panel with its own default starter (DevStarter with the tenants' limits), tenant
    `acme` at limit 2 with app/server.py in its home, an admin logged in. Every daemon
    the panel started is stopped at the end, even on failure."""
    homes = short_dir("cpl")
    home = homes / "acme"
    (home / "app").mkdir(parents=True)
    (home / "app" / "server.py").write_text(SLEEPER)
    corral = Corral(Home(home / ".corral"), env={"PATH": os.environ["PATH"]}, workdir=home)
    app, panel = make_app(tmp_path / "panel", allowed_hosts=("testserver",))
    try:
        assert isinstance(panel.starter, DevStarter)  # the panel's own, not given
        acme = add_tenant(panel, "acme", home, app_limit=2)
        add_user(panel, "boss", admin=True)
        admin = Client(app)
        assert admin.login("boss") == 303
        yield World(panel, acme, admin, home, corral)
    finally:
        stop_daemons([home])
        corral.shutdown()
        panel.starter.reap()  # type: ignore[attr-defined]
        panel.database.close()
        remove_dir(homes)


def test_the_daemon_the_panel_starts_gets_the_tenants_limit(world: World) -> None:
    with pytest.MonkeyPatch.context() as env:
        env.setenv("CORRAL_APP_LIMIT", "99")  # the panel's own environment never passes
        env.setenv("CORRAL_PANEL_UID", "12345")
        assert world.create("web").status_code == 201
    environ = world.daemon().environ()
    assert environ["CORRAL_APP_LIMIT"] == "2"
    assert environ["CORRAL_PANEL_UID"] == str(os.getuid())
    assert world.corral.call("ping")["app_limit"] == 2


def test_a_lowered_limit_holds_in_the_running_daemon(world: World) -> None:
    """The admin lowers the limit: the daemon the panel started refuses the tenant's own
    CLI beyond it at once, without a restart; raising it lets the CLI start again."""
    assert world.create("web").status_code == 201
    pid = world.daemon().pid
    page = world.admin.post(f"/admin/tenants/{world.tenant.id}/limit", {"app_limit": "1"})
    assert page.status_code == 303, page.text
    assert world.corral.call("ping")["app_limit"] == 1
    with pytest.raises(ProtocolError) as refused:
        world.cli_start("sneaky")
    assert refused.value.code is ErrorCode.LIMIT_REACHED
    assert "1 of 1" in refused.value.message
    assert {r["name"] for r in world.corral.jlist()} == {"web"}
    assert world.audit("tenant.limit") == [
        ("ok", "app limit 1 (was 2); the running daemon applies it now")
    ]

    patched = world.admin.api("PATCH", f"/api/v1/admin/tenants/{world.tenant.id}", {"app_limit": 2})
    assert patched.status_code == 200 and "warning" not in patched.json()
    assert {r["name"] for r in world.cli_start("allowed")} == {"allowed"}
    assert world.daemon().pid == pid  # the same daemon all along


def test_the_next_start_applies_a_limit_changed_while_the_daemon_was_down(world: World) -> None:
    assert world.create("web").status_code == 201
    daemon = world.daemon()
    world.corral.call("kill")
    daemon.wait(30)
    url = f"/api/v1/admin/tenants/{world.tenant.id}"
    response = world.admin.api("PATCH", url, {"app_limit": 1})
    assert response.status_code == 200 and "warning" not in response.json()
    assert world.audit("tenant.limit")[-1] == (
        "ok",
        "app limit 1 (was 2); the daemon is not running: it gets the limit when it starts",
    )
    # a state change starts the daemon again (it brings web back), with the new limit
    assert world.create("other").status_code == 409
    assert world.daemon().environ()["CORRAL_APP_LIMIT"] == "1"
    with pytest.raises(ProtocolError) as refused:
        world.cli_start("sneaky")
    assert refused.value.code is ErrorCode.LIMIT_REACHED


def test_the_daemons_own_refusal_is_the_panels_limit_message(world: World) -> None:
    """Two panels (or the tenant's CLI) race: this panel's database says 2, the daemon
    holds a limit of 1 (another panel lowered it). The daemon refuses; the user sees the
    limit refusal, the audit log says denied."""
    assert world.create("web").status_code == 201
    world.corral.call("set_app_limit", limit=1)  # another panel lowered it (root may)
    created = world.create("two")
    assert created.status_code == 409, created.text
    assert "the app limit is reached" in created.json()["error"]
    page = world.admin.post("/t/acme/apps/new", {"name": "two", "script": "app/server.py"})
    assert page.status_code == 409 and "the app limit is reached" in page.text
    imported = world.admin.api(
        "POST",
        "/api/v1/tenants/acme/apps/import",
        {"text": "apps:\n  - name: two\n    script: app/server.py\n"},
    )
    assert imported.status_code == 409 and "limit" in imported.json()["error"]
    assert {r["name"] for r in world.corral.jlist()} == {"web"}
    results = [r for r, _ in world.audit("app.create")]
    assert results == ["ok", "denied", "denied", "denied"]


@contextlib.contextmanager
def refusing_daemon(home: Path) -> Iterator[list[dict[str, Any]]]:
    """A stand-in daemon on the tenant's socket that refuses set_app_limit as a daemon
    refuses a caller it does not trust (PERMISSION_DENIED). Yields the requests it got."""
    path = Home(home / ".corral").socket
    path.parent.mkdir(parents=True, exist_ok=True)
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen()
    seen: list[dict[str, Any]] = []
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                return
            with conn, conn.makefile("rwb") as stream:
                for line in stream:
                    request = json.loads(line)
                    seen.append(request)
                    error = {"code": "permission_denied", "message": "only the panel may"}
                    reply = {"id": request["id"], "ok": False, "error": error}
                    stream.write(json.dumps(reply).encode() + b"\n")
                    stream.flush()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield seen
    finally:
        stop.set()
        server.shutdown(socket.SHUT_RDWR)
        server.close()
        thread.join(5)
        path.unlink(missing_ok=True)


def test_a_daemon_that_refuses_the_new_limit_is_shown_and_audited(world: World) -> None:
    with refusing_daemon(world.home) as seen:
        page = world.admin.post(f"/admin/tenants/{world.tenant.id}/limit", {"app_limit": "5"})
        assert page.status_code == 200
        assert "The app limit was saved, but the running daemon did not take" in page.text
        assert "only the panel may" in page.text
        api = world.admin.api("PATCH", f"/api/v1/admin/tenants/{world.tenant.id}", {"app_limit": 4})
    assert api.status_code == 200
    assert api.json()["app_limit"] == 4 and "at its next start" in api.json()["warning"]
    pushed = [r["args"] for r in seen if r["cmd"] == "set_app_limit"]
    assert pushed == [{"limit": 5}, {"limit": 4}]
    assert world.panel.find_tenant("acme").app_limit == 4  # type: ignore[union-attr]
    assert [r for r, _ in world.audit("tenant.limit")] == ["ok", "ok"]
    pushes = world.audit("tenant.limit.push")
    assert [r for r, _ in pushes] == ["failed", "failed"]
    assert "only the panel may" in pushes[0][1]
