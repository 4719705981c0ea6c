"""Isolated mode's settings, refusals and failures, without a helper answering (issue 9).

The panel with a helper socket (`PanelConfig.helper_socket`): refused as root on the
command line; tenants made only by the helper (no home field); the helper's failures as
one line for the admin, audited; the UI says which mode it runs in. `HelperClient`
against small stand-in servers for answers the real helper never gives (the real
helper: test_isolated_helper.py).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from corral.panel.config import PanelConfig
from corral.panel.db.models import AuditEntry, Tenant
from corral.panel.gateway import DaemonDown, DevStarter, NoAutostart
from corral.panel.helper_client import HelperClient, HelperError, HelperStarter
from corral.panel.services import Panel, TenantRef
from corral.paths import Home
from corral.protocol.wire import ErrorCode
from tests.support.panel import Client, add_tenant, add_user, make_app, remove_dir, short_dir


@pytest.fixture
def nowhere(tmp_path: Path) -> Path:
    """A helper socket path nobody listens on."""
    return tmp_path / "helper.sock"


# --- the setting --------------------------------------------------------------------------


def test_isolated_is_exactly_a_helper_socket(tmp_path: Path) -> None:
    assert not PanelConfig(home=tmp_path).isolated
    assert PanelConfig(home=tmp_path, helper_socket=tmp_path / "h.sock").isolated
    env = {"CORRAL_PANEL_HOME": str(tmp_path), "CORRAL_PANEL_HELPER_SOCKET": "rel/h.sock"}
    config = PanelConfig.from_env(env)
    assert config.helper_socket == Path.cwd() / "rel" / "h.sock" and config.isolated
    assert not PanelConfig.from_env({"CORRAL_PANEL_HOME": str(tmp_path)}).isolated


def test_the_default_starter_follows_the_mode(tmp_path: Path, nowhere: Path) -> None:
    _, dev = make_app(tmp_path / "dev")
    assert isinstance(dev.starter, DevStarter) and dev.helper is None
    _, isolated = make_app(tmp_path / "iso", helper_socket=nowhere)
    assert isinstance(isolated.starter, HelperStarter)
    assert isolated.helper is not None and isolated.helper.path == nowhere
    ref = TenantRef(1, "acme", tmp_path, -1, "acme")
    assert isinstance(isolated.daemon(ref, start=True).starter, HelperStarter)
    assert isinstance(isolated.daemon(ref).starter, NoAutostart)  # a view never starts one


# --- the command line ---------------------------------------------------------------------


def corral_panel(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "corral", "panel", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, **(env or {})},
    )


@pytest.mark.skipif(os.geteuid() != 0, reason="the refusal is of root: needs root")
@pytest.mark.parametrize(
    "how",
    [
        ["--helper-socket", "{sock}"],
        ["serve", "--helper-socket", "{sock}"],
        ["add-tenant", "acme", "--helper-socket", "{sock}"],
        ["create-admin", "ann", "--password-stdin", "--helper-socket", "{sock}"],
        ["env"],
    ],
)
def test_root_is_refused_in_isolated_mode(tmp_path: Path, nowhere: Path, how: list[str]) -> None:
    home = tmp_path / "panel"
    env = {"CORRAL_PANEL_HELPER_SOCKET": str(nowhere)} if how == ["env"] else {}
    args = [] if how == ["env"] else [a.replace("{sock}", str(nowhere)) for a in how]
    result = corral_panel("--home", str(home), *args, env=env)
    assert result.returncode == 2, result
    assert result.stderr.count("\n") == 1 and result.stdout == ""
    assert result.stderr.startswith("corral panel: in isolated mode")
    assert "must not run as root" in result.stderr
    assert not home.exists()  # nothing was made


# --- the admin screens --------------------------------------------------------------------


@contextlib.contextmanager
def isolated_panel(tmp_path: Path, helper_socket: Path) -> Iterator[tuple[Panel, Client]]:
    app, panel = make_app(
        tmp_path / "panel", helper_socket=helper_socket, allowed_hosts=("testserver",)
    )
    add_user(panel, "boss", admin=True)
    admin = Client(app)
    assert admin.login("boss") == 303
    try:
        yield panel, admin
    finally:
        panel.database.close()


def audit(panel: Panel, action: str) -> list[tuple[str, str]]:
    with panel.database.session() as db:
        stmt = select(AuditEntry).where(AuditEntry.action == action).order_by(AuditEntry.id)
        return [(e.result, e.detail) for e in db.scalars(stmt)]


def tenant_rows(panel: Panel) -> list[str]:
    with panel.database.session() as db:
        return [t.name for t in db.scalars(select(Tenant))]


def test_the_ui_says_which_mode_the_panel_runs_in(tmp_path: Path, nowhere: Path) -> None:
    dev_app, dev = make_app(tmp_path / "dev", allowed_hosts=("testserver",))
    add_user(dev, "boss", admin=True)
    dev_admin = Client(dev_app)
    assert dev_admin.login("boss") == 303
    dev_page = dev_admin.get("/admin/tenants").text
    assert "Development mode: tenants are not isolated" in dev_page  # the banner
    assert 'data-mode="development"' in dev_page and 'name="home"' in dev_page
    dev.database.close()

    with isolated_panel(tmp_path, nowhere) as (_, admin):
        page = admin.get("/admin/tenants").text
        assert "Development mode" not in page and "not isolated" not in page
        assert 'data-mode="isolated"' in page and "Isolated mode" in page
        assert f"The helper does not answer: cannot reach the helper at {nowhere}" in page
        assert 'name="home"' not in page  # the admin never chooses a home
        assert "Development mode" not in admin.get("/account").text


def test_a_home_is_refused_and_helper_failures_are_one_line_and_audited(
    tmp_path: Path, nowhere: Path
) -> None:
    with isolated_panel(tmp_path, nowhere) as (panel, admin):
        given = admin.post("/admin/tenants", {"name": "acme", "home": str(tmp_path)})
        assert given.status_code == 422
        assert (
            'id="e-home" role="alert">in isolated mode the helper makes each tenant' in given.text
        )
        api_given = admin.api("POST", "/api/v1/admin/tenants", {"name": "acme", "home": "/srv"})
        assert api_given.status_code == 422 and set(api_given.json()["errors"]) == {"home"}

        down = admin.post("/admin/tenants", {"name": "acme"})
        assert down.status_code == 502
        assert f"The tenant was not created: cannot reach the helper at {nowhere}" in down.text
        api_down = admin.api("POST", "/api/v1/admin/tenants", {"name": "acme"})
        assert api_down.status_code == 502
        message = api_down.json()["error"]
        assert message.startswith(f"cannot reach the helper at {nowhere}") and "\n" not in message
        assert tenant_rows(panel) == []
        results = audit(panel, "tenant.create")
        assert [r for r, _ in results] == ["failed"] * 4
        assert "cannot reach the helper" in results[-1][1]


def test_starting_and_removing_an_isolated_tenant_need_the_helper(
    tmp_path: Path, nowhere: Path
) -> None:
    homes = short_dir("cpi")
    try:
        with isolated_panel(tmp_path, nowhere) as (panel, admin):
            acme = add_tenant(panel, "acme", homes / "acme")
            with panel.database.session() as db:
                row = db.get(Tenant, acme.id)
                assert row is not None
                row.system_user = "acme"
            (homes / "acme" / "x.py").write_text("")
            created = admin.api(
                "POST", "/api/v1/tenants/acme/apps", {"name": "web", "script": "x.py"}
            )
            assert created.status_code == 503
            assert created.json()["error"].startswith(
                f"cannot start the daemon of acme: cannot reach the helper at {nowhere}"
            )
            assert not (homes / "acme" / ".corral").exists()  # no dev daemon behind its back
            removed = admin.post(f"/admin/tenants/{acme.id}/delete", {"delete_files": "on"})
            assert removed.status_code == 502
            assert "cannot reach the helper" in removed.text
            assert tenant_rows(panel) == ["acme"] and (homes / "acme").is_dir()
            [(result, detail)] = audit(panel, "tenant.delete")
            assert result == "failed" and "cannot reach the helper" in detail
    finally:
        remove_dir(homes)


# --- HelperClient: answers the real helper never gives -------------------------------------


@contextlib.contextmanager
def stand_in(path: Path, answer: Callable[[dict[str, Any]], bytes]) -> Iterator[None]:
    """A unix socket at `path` answering each request line with `answer(request)`."""
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen()

    def serve() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            with conn, conn.makefile("rwb") as stream:
                line = stream.readline()
                if line:
                    stream.write(answer(json.loads(line)))
                    stream.flush()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield
    finally:
        server.shutdown(socket.SHUT_RDWR)
        server.close()
        thread.join(5)


def reply(request: dict[str, Any], result: Any) -> bytes:
    return json.dumps({"id": request["id"], "ok": True, "result": result}).encode() + b"\n"


def ask(client: HelperClient, verb: str) -> Any:
    calls: dict[str, Callable[[], Any]] = {
        "ping": client.ping,
        "create_tenant": lambda: client.create_tenant("acme"),
        "start_daemon": lambda: client.start_daemon("acme", 3),
        "remove_tenant": lambda: client.remove_tenant("acme", False),
    }
    return calls[verb]()


def test_helper_client_errors_are_one_line_with_the_code(tmp_path: Path, nowhere: Path) -> None:
    with pytest.raises(HelperError) as unreachable:
        HelperClient(nowhere).ping()
    assert unreachable.value.code is None and "\n" not in unreachable.value.message

    path = tmp_path / "s.sock"

    def refuse(request: dict[str, Any]) -> bytes:
        error = {"code": "conflict", "message": "a user named 'acme' exists"}
        return json.dumps({"id": request["id"], "ok": False, "error": error}).encode() + b"\n"

    with stand_in(path, refuse), pytest.raises(HelperError) as refused:
        HelperClient(path).create_tenant("acme")
    assert refused.value.code is ErrorCode.CONFLICT
    assert refused.value.message == "the helper refused create_tenant: a user named 'acme' exists"

    malformed = [
        ("ping", {"version": "1", "panel_uid": True, "tenants_dir": "/srv"}),
        ("create_tenant", {"tenant": "other", "user": "other", "uid": 5, "gid": 5, "home": "/h"}),
        ("create_tenant", {"tenant": "acme", "user": "acme", "uid": 5, "gid": 5, "home": "h"}),
        ("start_daemon", {"pid": 1, "socket": "/s", "started": 1}),
        ("remove_tenant", None),
    ]
    for verb, result in malformed:
        path.unlink(missing_ok=True)
        with stand_in(path, lambda r, result=result: reply(r, result)):
            with pytest.raises(HelperError) as bad:
                ask(HelperClient(path), verb)
            assert "malformed" in bad.value.message, verb

    path.unlink(missing_ok=True)
    seen: list[dict[str, Any]] = []

    def record(request: dict[str, Any]) -> bytes:
        seen.append(request)
        return reply(request, {"pid": 7, "socket": "/elsewhere/corral.sock", "started": True})

    with stand_in(path, record):
        starter = HelperStarter(HelperClient(path), lambda name: {"acme": 4}[name])
        with pytest.raises(DaemonDown) as wrong_place:
            starter.start(Home(tmp_path / "acme" / ".corral"), "acme")
    assert "the helper started the daemon of acme at /elsewhere/corral.sock" in str(
        wrong_place.value
    )
    assert seen == [{"id": 1, "cmd": "start_daemon", "args": {"tenant": "acme", "app_limit": 4}}]
