"""The admin screens and their API: users, grants, tenants, app limits, settings.

Everything goes through the real app (TestClient), logged in through the real login form.
Grant changes must bite on the user's very next request, not after the 10 s cache.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
from sqlalchemy import select
from starlette.testclient import TestClient

from corral.config.model import AppConfig
from corral.panel.db.models import ApiToken, AuditEntry, Grant, Session, Setting, Tenant, User
from corral.panel.gateway import DaemonDown, NoAutostart, TenantDaemon
from corral.panel.services import Panel
from corral.paths import Home
from tests.conftest import Corral, wait_for
from tests.support.panel import PASSWORD, Client, add_user, make_app, short_dir

OTHER_PASSWORD = "a different passphrase here"
METRICS = "/api/v1/tenants/{}/apps/web/metrics"
"""A tenant route needing `access` that does not touch the daemon."""


class World:
    def __init__(self, tmp_path: Path) -> None:
        self.tenants_dir = short_dir("cpa")
        self.app, self.panel = make_app(
            tmp_path / "panel", allowed_hosts=("testserver",), tenants_root=self.tenants_dir
        )
        self.root_id = add_user(self.panel, "root", admin=True)
        self.bob_id = add_user(self.panel, "bob")
        self.admin = self.client("root")

    def client(self, name: str, password: str = PASSWORD) -> Client:
        client = Client(self.app)
        assert client.login(name, password) == 303
        return client

    def tenant(self, name: str, **body: Any) -> dict[str, Any]:
        response = self.admin.api("POST", "/api/v1/admin/tenants", {"name": name, **body})
        assert response.status_code == 201, response.text
        result: dict[str, Any] = response.json()
        return result

    def rows(self, model: Any, *where: Any) -> list[Any]:
        with self.panel.database.session() as db:
            return list(db.scalars(select(model).where(*where)))

    def audit(self, action: str) -> list[AuditEntry]:
        return self.rows(AuditEntry, AuditEntry.action == action)


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    w = World(tmp_path)
    try:
        yield w
    finally:
        shutil.rmtree(w.tenants_dir, ignore_errors=True)


def rights(panel: Panel, user_id: int, tenant_id: int) -> set[str]:
    with panel.database.session() as db:
        stmt = select(Grant.right).where(Grant.user_id == user_id, Grant.tenant_id == tenant_id)
        return set(db.scalars(stmt))


# --- the screens ------------------------------------------------------------------------


def test_every_admin_screen_renders_for_an_admin_and_is_hidden_from_others(world: World) -> None:
    t = world.tenant("acme")
    pages = [
        "/admin/users",
        f"/admin/users/{world.bob_id}",
        "/admin/tenants",
        f"/admin/tenants/{t['id']}",
        "/admin/settings",
    ]
    for url in pages:
        page = world.admin.get(url)
        assert page.status_code == 200, url
        assert 'name="csrf_token"' in page.text
    bob = world.client("bob")
    for url in pages:
        assert bob.get(url).status_code == 404, url
    for url in ("/api/v1/users", "/api/v1/admin/tenants", "/api/v1/settings"):
        assert bob.get(url).status_code == 404, url
    assert bob.api("POST", "/api/v1/users", {"username": "eve"}).status_code == 404
    assert world.rows(User, User.username == "eve") == []


def test_the_users_screen_lists_users_with_their_grants(world: World) -> None:
    t = world.tenant("acme")
    world.admin.api("PUT", f"/api/v1/users/{world.bob_id}/grants", {"grants": {"acme": ["logs"]}})
    page = world.admin.get("/admin/users").text
    assert "bob" in page and "root" in page and "server admin" in page
    assert 'title="access, logs"' in page
    user = world.admin.get(f"/admin/users/{world.bob_id}").text
    assert f'name="g-{t["id"]}-logs" value="on" data-right="logs"' in user
    assert re.search(rf'name="g-{t["id"]}-logs"[^>]*checked', user)
    assert not re.search(rf'name="g-{t["id"]}-manage"[^>]*checked', user)


# --- users ------------------------------------------------------------------------------


def test_creating_a_user_shows_every_field_error_and_saves_nothing(world: World) -> None:
    page = world.admin.post("/admin/users", {"username": "X!", "password": "short"})
    assert page.status_code == 422
    assert "use 3 to 64 letters, digits" in page.text
    assert "use at least 12 characters" in page.text
    assert 'value="X!"' in page.text  # what was typed stays in the form
    assert world.rows(User, User.username == "x!") == []
    failed = world.audit("user.create")
    assert [e.result for e in failed] == ["failed"] and "password" in failed[0].detail


def test_a_created_user_with_a_generated_password_can_log_in(world: World) -> None:
    page = world.admin.post("/admin/users", {"username": "carol", "password": ""})
    assert page.status_code == 200
    shown = re.search(r'<code class="mono token" data-copy>([^<]+)</code>', page.text)
    assert shown, "the generated password is shown once"
    password = shown[1]
    [carol_row] = world.rows(User, User.username == "carol")
    assert password not in world.admin.get(f"/admin/users/{carol_row.id}").text
    carol = Client(world.app)
    assert carol.login("carol", password) == 303
    [entry] = world.audit("user.create")
    assert entry.actor == "root" and "'carol'" in entry.detail and password not in entry.detail


def test_user_api_create_validates_and_refuses_duplicates(world: World) -> None:
    created = world.admin.api(
        "POST", "/api/v1/users", {"username": "Dave", "password": OTHER_PASSWORD, "is_admin": True}
    )
    assert created.status_code == 201
    body = created.json()
    assert body["user"]["username"] == "dave" and body["user"]["is_admin"] is True
    assert body["password"] is None
    again = world.admin.api("POST", "/api/v1/users", {"username": "dave", "password": PASSWORD})
    assert again.status_code == 422
    assert "already exists" in again.json()["errors"]["username"]
    bad = world.admin.api(
        "POST", "/api/v1/users", {"username": "ok_name", "password": 5, "is_admin": "maybe"}
    )
    assert bad.status_code == 422
    assert set(bad.json()["errors"]) == {"password", "is_admin"}
    listed = world.admin.get("/api/v1/users").json()["users"]
    assert [u["username"] for u in listed] == ["bob", "dave", "root"]


def test_disabling_a_user_ends_their_sessions_and_tokens_at_once(world: World) -> None:
    bob = world.client("bob")
    token = bob.api("POST", "/api/v1/account/tokens", {"name": "ci"}).json()["token"]
    bearer = {"Authorization": f"Bearer {token}"}
    assert bob.get("/api/v1/account").status_code == 200  # cached for up to 10 s now
    assert world.admin.post(f"/admin/users/{world.bob_id}/disable").status_code == 303
    assert bob.get("/api/v1/account").status_code == 401
    assert bob.get("/account").headers["location"].startswith("/login")
    assert TestClient(world.app).get("/api/v1/account", headers=bearer).status_code == 401
    assert world.rows(Session, Session.user_id == world.bob_id) == []
    assert Client(world.app).login("bob") == 401
    assert world.admin.post(f"/admin/users/{world.bob_id}/enable").status_code == 303
    assert Client(world.app).login("bob") == 303
    assert [e.action for e in world.rows(AuditEntry, AuditEntry.action.like("user.%"))] == [
        "user.disable",
        "user.enable",
    ]


def test_a_password_reset_ends_the_users_sessions(world: World) -> None:
    bob = world.client("bob")
    reset = world.admin.post(f"/admin/users/{world.bob_id}/password", {"password": "short"})
    assert reset.status_code == 422 and "at least 12 characters" in reset.text
    assert bob.get("/api/v1/account").status_code == 200  # nothing happened
    reset = world.admin.post(f"/admin/users/{world.bob_id}/password", {"password": OTHER_PASSWORD})
    assert reset.status_code == 200 and "logged out everywhere" in reset.text
    assert bob.get("/api/v1/account").status_code == 401
    assert Client(world.app).login("bob") == 401
    assert Client(world.app).login("bob", OTHER_PASSWORD) == 303
    generated = world.admin.api("POST", f"/api/v1/users/{world.bob_id}/password", {})
    assert generated.status_code == 200
    assert Client(world.app).login("bob", generated.json()["password"]) == 303
    assert [e.result for e in world.audit("user.password_reset")] == ["failed", "ok", "ok"]


def test_an_admin_resetting_their_own_password_keeps_this_session(world: World) -> None:
    other = world.client("root")
    reset = world.admin.post(f"/admin/users/{world.root_id}/password", {"password": OTHER_PASSWORD})
    assert reset.status_code == 200
    assert world.admin.get("/api/v1/account").status_code == 200
    assert other.get("/api/v1/account").status_code == 401


def test_the_last_admin_cannot_be_deleted_disabled_or_demoted(world: World) -> None:
    root = f"/api/v1/users/{world.root_id}"
    deleted = world.admin.api("DELETE", root)
    assert deleted.status_code == 409 and "no admin left" in deleted.json()["error"]
    demoted = world.admin.api("PATCH", root, {"is_admin": False})
    assert demoted.status_code == 409 and "no admin left" in demoted.json()["error"]
    page = world.admin.post(f"/admin/users/{world.root_id}/delete")
    assert page.status_code == 409 and "no admin left" in page.text
    page = world.admin.post(f"/admin/users/{world.root_id}/disable")
    assert page.status_code == 409
    [user] = world.rows(User, User.id == world.root_id)
    assert user.is_admin and not user.disabled
    assert {e.result for e in world.rows(AuditEntry, AuditEntry.actor == "root")} >= {"failed"}
    # With a second admin, one may demote themself, but never delete themself.
    world.admin.api("PATCH", f"/api/v1/users/{world.bob_id}", {"is_admin": True})
    assert world.admin.api("DELETE", root).json()["error"] == "you cannot delete yourself"
    bob = world.client("bob")
    assert bob.api("DELETE", root).status_code == 200
    assert world.rows(User, User.id == world.root_id) == []
    assert world.admin.get("/api/v1/account").status_code == 401  # root's session ended


def test_deleting_a_user_removes_grants_sessions_and_tokens(world: World) -> None:
    t = world.tenant("acme")
    world.admin.api("PUT", f"/api/v1/users/{world.bob_id}/grants", {"grants": {"acme": ["manage"]}})
    bob = world.client("bob")
    bob.api("POST", "/api/v1/account/tokens", {"name": "ci"})
    page = world.admin.post(f"/admin/users/{world.bob_id}/delete")
    assert page.status_code == 303 and page.headers["location"] == "/admin/users?done=user-deleted"
    assert bob.get(METRICS.format("acme")).status_code == 401
    assert rights(world.panel, world.bob_id, t["id"]) == set()
    assert world.rows(ApiToken, ApiToken.user_id == world.bob_id) == []
    assert world.rows(Session, Session.user_id == world.bob_id) == []
    [entry] = world.audit("user.delete")
    assert entry.detail == "user 'bob'" and entry.actor == "root"
    assert world.admin.api("DELETE", f"/api/v1/users/{world.bob_id}").status_code == 404


def test_an_admin_can_turn_off_a_users_two_factor_codes(world: World) -> None:
    with world.panel.database.session() as db:
        user = db.get(User, world.bob_id)
        assert user is not None
        user.totp_secret, user.totp_last_step = "A" * 32, 5
    assert world.admin.get(f"/api/v1/users/{world.bob_id}").json()["totp"] is True
    assert world.admin.post(f"/admin/users/{world.bob_id}/totp/disable").status_code == 303
    [user] = world.rows(User, User.id == world.bob_id)
    assert user.totp_secret is None and user.totp_last_step is None
    assert Client(world.app).login("bob") == 303  # no code needed any more


def test_user_patch_refuses_unknown_fields_and_bad_values(world: World) -> None:
    url = f"/api/v1/users/{world.bob_id}"
    bad = world.admin.api("PATCH", url, {"username": "x", "disabled": "perhaps"})
    assert bad.status_code == 422
    assert set(bad.json()["errors"]) == {"username", "disabled"}
    assert world.admin.api("PATCH", "/api/v1/users/999", {"disabled": True}).status_code == 404
    assert world.admin.post("/admin/users/999/disable").status_code == 404
    assert [(e.result, e.detail) for e in world.audit("user.disable")] == [
        ("failed", "user id 999: no such user")
    ]


# --- grants -----------------------------------------------------------------------------


def test_grant_changes_take_effect_on_the_very_next_request(world: World) -> None:
    t = world.tenant("acme")
    bob = world.client("bob")
    url = METRICS.format("acme")
    assert bob.get(url).status_code == 404  # and now cached for up to 10 s
    grants = f"/api/v1/users/{world.bob_id}/grants"
    added = world.admin.api("PATCH", grants, {"grants": {"acme": ["logs"]}})
    assert added.status_code == 200
    assert added.json() == {"grants": {"acme": ["access", "logs"]}}
    assert rights(world.panel, world.bob_id, t["id"]) == {"access", "logs"}  # access stored
    assert bob.get(url).status_code == 200
    removed = world.admin.api("PUT", grants, {"grants": {}})
    assert removed.json() == {"grants": {}}
    assert bob.get(url).status_code == 404
    entries = world.audit("grants.set")
    assert [e.tenant for e in entries] == ["acme", "acme"]
    assert entries[0].detail == "user 'bob' on 'acme': access, logs (was: none)"
    assert entries[1].detail == "user 'bob' on 'acme': none (was: access, logs)"


def test_the_grant_grid_on_the_user_page_changes_only_the_tenants_shown(world: World) -> None:
    acme, globex = world.tenant("acme"), world.tenant("globex")
    world.admin.api("PUT", f"/api/v1/users/{world.bob_id}/grants", {"grants": {"globex": ["logs"]}})
    bob = world.client("bob")
    assert bob.get(METRICS.format("acme")).status_code == 404
    # The form was rendered before globex existed: it only names acme.
    saved = world.admin.post(
        f"/admin/users/{world.bob_id}/grants",
        {f"t-{acme['id']}": "1", f"g-{acme['id']}-control": "on"},
    )
    assert saved.status_code == 303
    assert rights(world.panel, world.bob_id, acme["id"]) == {"access", "control"}
    assert rights(world.panel, world.bob_id, globex["id"]) == {"access", "logs"}
    assert bob.get(METRICS.format("acme")).status_code == 200
    saved = world.admin.post(f"/admin/users/{world.bob_id}/grants", {f"t-{acme['id']}": "1"})
    assert rights(world.panel, world.bob_id, acme["id"]) == set()
    assert bob.get(METRICS.format("acme")).status_code == 404


def test_tenant_grants_page_and_api(world: World) -> None:
    t = world.tenant("acme")
    carol = add_user(world.panel, "carol")
    page = world.admin.post(
        f"/admin/tenants/{t['id']}/grants",
        {f"u-{world.bob_id}": "1", f"g-{world.bob_id}-manage": "on", f"u-{carol}": "1"},
    )
    assert page.status_code == 303
    url = f"/api/v1/admin/tenants/{t['id']}/grants"
    assert world.admin.get(url).json() == {"grants": {"bob": ["access", "manage"]}}
    patched = world.admin.api("PATCH", url, {"grants": {"carol": ["access"]}})
    assert patched.json() == {"grants": {"bob": ["access", "manage"], "carol": ["access"]}}
    replaced = world.admin.api("PUT", url, {"grants": {"carol": ["control"]}})
    assert replaced.json() == {"grants": {"carol": ["access", "control"]}}
    bad = world.admin.api("PATCH", url, {"grants": {"nobody": ["access"], "bob": ["root"]}})
    assert bad.status_code == 422
    errors = bad.json()["errors"]
    assert "unknown right 'root'" in errors["grants.bob"]
    assert world.admin.api("PATCH", url, {"grants": {"nobody": []}}).json()["errors"] == {
        "grants.nobody": "no such user"
    }
    assert world.admin.api("PATCH", url, {"grants": ["bob"]}).status_code == 422
    assert world.admin.get(url).json() == {"grants": {"carol": ["access", "control"]}}
    assert world.admin.get("/api/v1/admin/tenants/999/grants").status_code == 404


# --- tenants ----------------------------------------------------------------------------


def test_creating_a_tenant_makes_its_home(world: World) -> None:
    created = world.tenant("acme", app_limit=3)
    home = world.tenants_dir / "acme"
    assert created["home"] == str(home.resolve()) and created["app_limit"] == 3
    assert created["daemon"] == "down" and created["apps"] is None
    assert stat.S_IMODE(home.stat().st_mode) == 0o750
    assert world.panel.find_tenant("acme") is not None
    [entry] = world.audit("tenant.create")
    assert entry.tenant == "acme" and entry.result == "ok"


def test_creating_a_tenant_reports_every_bad_field_and_saves_nothing(world: World) -> None:
    page = world.admin.post("/admin/tenants", {"name": "Bad Name", "app_limit": "lots"})
    assert page.status_code == 422
    assert "lower-case letters" in page.text and "a whole number from -1" in page.text
    assert world.rows(Tenant) == []
    world.tenant("acme")
    again = world.admin.api("POST", "/api/v1/admin/tenants", {"name": "acme"})
    assert again.status_code == 422 and "already exists" in again.json()["errors"]["name"]
    (world.tenants_dir / "leftover").mkdir()
    taken = world.admin.api("POST", "/api/v1/admin/tenants", {"name": "leftover"})
    assert "already exists: enter it as the home" in taken.json()["errors"]["home"]
    assert [e.result for e in world.audit("tenant.create")] == ["failed", "ok", "failed", "failed"]


def test_a_tenant_home_given_by_an_admin_must_be_a_safe_existing_directory(
    world: World, tmp_path: Path
) -> None:
    existing = short_dir("cph")
    try:
        cases = {
            "relative/path": "absolute path",
            "/no/such/dir/here": "not an existing directory",
            "/": "root directory",
            str(world.panel.config.home): "panel's own files",
            str(world.panel.config.home.parent): "panel's own files",
            str(world.tenants_dir / "acme"): "overlaps the home of tenant 'acme'",
        }
        world.tenant("acme")
        (tmp_path / "panel" / "inside").mkdir()
        cases[str(tmp_path / "panel" / "inside")] = "may hold homes inside the panel's folder"
        long = existing / ("x" * 100)
        long.mkdir()
        cases[str(long)] = "too long"
        for home, message in cases.items():
            response = world.admin.api(
                "POST", "/api/v1/admin/tenants", {"name": "other", "home": home}
            )
            assert response.status_code == 422, home
            assert message in response.json()["errors"]["home"], home
        link = existing / "link"
        os.symlink(existing, link)
        ok = world.admin.api("POST", "/api/v1/admin/tenants", {"name": "other", "home": str(link)})
        assert ok.status_code == 201
        assert ok.json()["home"] == str(existing.resolve())  # stored resolved
        assert ok.json()["app_limit"] == -1
    finally:
        shutil.rmtree(existing, ignore_errors=True)


def test_the_app_limit_can_be_changed_with_inline_errors(world: World) -> None:
    t = world.tenant("acme")
    page = world.admin.post(f"/admin/tenants/{t['id']}/limit", {"app_limit": "-5"})
    assert page.status_code == 422 and "a whole number from -1" in page.text
    assert world.panel.find_tenant("acme").app_limit == -1  # type: ignore[union-attr]
    assert (
        world.admin.post(f"/admin/tenants/{t['id']}/limit", {"app_limit": "4"}).status_code == 303
    )
    assert world.panel.find_tenant("acme").app_limit == 4  # type: ignore[union-attr]
    api = f"/api/v1/admin/tenants/{t['id']}"
    assert world.admin.api("PATCH", api, {"app_limit": 0}).json()["app_limit"] == 0
    bad = world.admin.api("PATCH", api, {"app_limit": True, "home": "/"})
    assert bad.status_code == 422 and set(bad.json()["errors"]) == {"home"}
    assert world.admin.api("PATCH", api, {"app_limit": "x"}).status_code == 422
    assert world.admin.get(api).json()["app_limit"] == 0
    entries = world.audit("tenant.limit")
    assert [e.result for e in entries] == ["failed", "ok", "ok", "failed", "failed"]
    assert entries[1].detail == (
        "app limit 4 (was -1); the daemon is not running: it gets the limit when it starts"
    )


def _start_sleeper(home: Path) -> tuple[Corral, int]:
    """Start the tenant's daemon with one app, as the panel's dev mode would."""
    env = {
        "PATH": os.environ.get("PATH", os.defpath),
        "LANG": "C.UTF-8",
        "CORRAL_HOME": str(home / ".corral"),
        "HOME": str(home),
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    corral = Corral(home=Home(home / ".corral"), env=env, workdir=home)
    corral.start_daemon()
    script = home / "sleeper.py"
    script.write_text("import time\ntime.sleep(600)\n")
    config = AppConfig(
        name="sleeper", script=str(script), interpreter=sys.executable, cwd=str(home)
    )
    corral.call("start", apps=[config.to_dict()], cli_env={"PATH": env["PATH"]}, env_name=None)
    pid = wait_for(lambda: corral.proc("sleeper")["pid"])
    return corral, int(pid)


@pytest.mark.slow
def test_removing_a_tenant_stops_its_daemon_and_keeps_its_files(world: World) -> None:
    t = world.tenant("acme")
    home = Path(t["home"])
    world.admin.api("PUT", f"/api/v1/users/{world.bob_id}/grants", {"grants": {"acme": ["access"]}})
    corral, pid = _start_sleeper(home)
    try:
        app = psutil.Process(pid)  # remembers the start time: a reused pid is not it
        [listed] = world.admin.get("/api/v1/admin/tenants").json()["tenants"]
        assert listed["daemon"] == "up" and listed["apps"] == 1 and listed["users"] == 1
        assert "up" in world.admin.get("/admin/tenants").text
        bob = world.client("bob")
        assert bob.get(METRICS.format("acme")).status_code == 200
        page = world.admin.post(f"/admin/tenants/{t['id']}/delete")
        assert page.status_code == 303
        with pytest.raises(DaemonDown):
            TenantDaemon(home, NoAutostart(), timeout=5).ping()
        wait_for(lambda: not app.is_running() or app.status() == psutil.STATUS_ZOMBIE)
        assert world.rows(Tenant) == [] and world.rows(Grant) == []
        assert bob.get(METRICS.format("acme")).status_code == 404
        assert (home / "sleeper.py").exists()  # files kept
        [entry] = world.audit("tenant.delete")
        assert entry.tenant == "acme" and entry.detail.startswith("daemon stopped; files kept")
    finally:
        corral.shutdown()


def test_removing_a_tenant_deletes_files_only_of_homes_the_panel_made(world: World) -> None:
    made = world.tenant("acme")
    home = Path(made["home"])
    (home / "app.py").write_text("print(1)\n")
    removed = world.admin.api("DELETE", f"/api/v1/admin/tenants/{made['id']}?delete_files=on")
    assert removed.status_code == 200 and removed.json() == {"deleted": "acme", "note": ""}
    assert not home.exists()
    given = short_dir("cpg")
    try:
        other = world.tenant("globex", home=str(given))
        refused = world.admin.api("DELETE", f"/api/v1/admin/tenants/{other['id']}?delete_files=1")
        assert refused.status_code == 409 and "not made by the panel" in refused.json()["error"]
        assert world.panel.find_tenant("globex") is not None and given.exists()
        page = world.admin.get(f"/admin/tenants/{other['id']}").text
        assert 'name="delete_files"' not in page
        kept = world.admin.post(f"/admin/tenants/{other['id']}/delete")
        assert kept.status_code == 303 and given.exists()
        assert world.panel.find_tenant("globex") is None
    finally:
        shutil.rmtree(given, ignore_errors=True)
    assert [e.result for e in world.audit("tenant.delete")] == ["ok", "failed", "ok"]
    assert world.admin.api("DELETE", f"/api/v1/admin/tenants/{made['id']}").status_code == 404


# --- settings ---------------------------------------------------------------------------


def test_settings_are_saved_all_or_none_with_errors_next_to_the_field(world: World) -> None:
    page = world.admin.get("/admin/settings").text
    assert 'name="metrics.retention" value="7d"' in page
    bad = world.admin.post("/admin/settings", {"metrics.retention": "2d", "metrics.interval": "1s"})
    assert bad.status_code == 422
    assert "must be between 2s and 1h" in bad.text
    assert 'value="2d"' in bad.text  # what was typed is kept
    assert world.rows(Setting) == []  # the good one was not saved either
    good = world.admin.post(
        "/admin/settings", {"metrics.retention": "2d", "metrics.interval": "30s"}
    )
    assert good.status_code == 303
    settings = world.admin.get("/api/v1/settings").json()["settings"]
    assert settings["metrics.retention"]["value"] == 2 * 86400
    assert settings["metrics.interval"]["shown"] == "30s"
    patched = world.admin.api("PATCH", "/api/v1/settings", {"audit.retention": 86400 * 30})
    assert patched.json()["settings"]["audit.retention"]["shown"] == "30d"
    bad_api = world.admin.api("PATCH", "/api/v1/settings", {"no.such": "1d"})
    assert bad_api.status_code == 422 and bad_api.json()["errors"] == {"no.such": "no such setting"}
    bad_api = world.admin.api("PATCH", "/api/v1/settings", {"audit.retention": [1]})
    assert bad_api.status_code == 422
    results = [(e.result, e.detail) for e in world.audit("settings.set")]
    assert [r for r, _ in results] == ["failed", "ok", "ok", "failed", "failed"]
    assert "metrics.interval: 30s (was 10s)" in results[1][1]
