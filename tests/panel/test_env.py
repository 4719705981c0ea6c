"""The Environment tab and its JSON API (issue 8), against a real tenant daemon.

A secret goes from the form or the API to the daemon, which keeps it encrypted; after
that, no page, no API answer and no audit entry carries its value (nor its base64 or hex
forms): `Site` keeps every answer it got and `assert_never_sent` searches them all. The
app proves it receives the secret by printing its SHA-256, never the value.

Plain variables are part of the app's config. By default saving one stores the config
(the daemon's `configure`) and restarts nothing, as saving a secret does: the page offers
Restart and Reload instead. A restart or a reload at once can still be chosen.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import re
import secrets
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
from starlette.applications import Starlette
from starlette.testclient import TestClient

from corral.config.model import AppConfig
from corral.panel.db.models import AuditEntry
from corral.panel.gateway import DevStarter, NoAutostart
from corral.panel.services import Panel, TenantRef
from corral.paths import Home
from tests.conftest import Corral, wait_for
from tests.support.panel import (
    ORIGIN,
    add_tenant,
    audit_entries,
    client_with,
    grant,
    last_audit_id,
    make_app,
    open_session,
    quick_user,
    remove_dir,
    short_dir,
    stop_daemons,
    tenant_daemon,
)

ALL_RIGHTS = ("access", "control", "logs", "manage")
PAGE = "/t/acme/apps/web/env"
API = "/api/v1/tenants/acme/apps/web/env"
SHOW_ENV = """\
import hashlib, os, time
secret = os.environ.get("API_KEY")
digest = hashlib.sha256(secret.encode()).hexdigest() if secret is not None else "unset"
print("API_KEY sha256", digest, flush=True)
print("MODE is", os.environ.get("MODE", "unset"), flush=True)
while True:
    time.sleep(1)
"""
"""An app that says which API_KEY it got (its SHA-256: the value never reaches a log) and
its MODE, once per start."""


def new_value() -> str:
    """A unique secret value: found anywhere, it can only have come from this test."""
    return f"s3cr3t-{secrets.token_urlsafe(18)}"


def forms_of(value: str) -> list[str]:
    """The value and its encodings an accidental leak would most likely take."""
    raw = value.encode()
    return [
        value,
        base64.b64encode(raw).decode(),
        base64.urlsafe_b64encode(raw).decode(),
        base64.b64encode(raw).decode().rstrip("="),
        raw.hex(),
        raw.hex().upper(),
    ]


def digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


@dataclass
class Site:
    app: Starlette
    panel: Panel
    tenant: TenantRef
    corral: Corral
    http: TestClient
    csrf: str
    seen: list[str] = field(default_factory=list)
    """The body of every answer the panel gave this test (pages, API, errors)."""

    def _keep(self, response: httpx.Response) -> httpx.Response:
        self.seen.append(f"{response.status_code} {dict(response.headers)}\n{response.text}")
        return response

    def get(self, path: str) -> httpx.Response:
        return self._keep(self.http.get(path))

    def post(
        self,
        path: str,
        data: dict[str, str] | None = None,
        *,
        csrf: str | None = "",
        origin: str | None = ORIGIN,
    ) -> httpx.Response:
        """A form POST as the browser sends it (not followed); `csrf` None: no token."""
        form = dict(data or {})
        if csrf is not None:
            form["csrf_token"] = csrf or self.csrf
        headers = {"Origin": origin} if origin else {}
        return self._keep(self.http.post(path, data=form, headers=headers))

    def api(self, method: str, path: str, body: Any = None, **params: str) -> httpx.Response:
        headers = {"Origin": ORIGIN, "X-CSRF-Token": self.csrf}
        return self._keep(
            self.http.request(method, path, json=body, headers=headers, params=params or None)
        )

    def follow(self, response: httpx.Response) -> httpx.Response:
        assert response.status_code == 303, response.text
        return self.get(response.headers["location"])

    def pid(self, name: str = "web") -> int:
        [record] = [r for r in self.corral.jlist() if r["name"] == name]
        assert record["status"] == "online", record
        return int(record["pid"])

    def says(self, line: str, name: str = "web") -> bool:
        """Whether the app's current log has printed `line`."""
        tail = self.corral.call("tail", target=name, lines=50, stream="out")
        return any(entry["line"] == line for entry in tail)

    def secret_names(self) -> list[str]:
        return [s["name"] for s in self.corral.call("secret_list", app="web")]

    def config_env(self) -> dict[str, str]:
        env: dict[str, str] = self.corral.call("describe", target="web")[0]["config"]["env"]
        return env

    def audit(self, since: int = 0) -> list[tuple[str, str | None, str, str]]:
        return [
            (e.action, e.app, e.result, e.detail)
            for e in audit_entries(self.panel, since)
            if e.tenant == "acme"
        ]

    def user(self, name: str, rights: tuple[str, ...]) -> tuple[TestClient, str]:
        """Another user holding `rights` on acme: their client and CSRF token."""
        user_id = quick_user(self.panel, name)
        grant(self.panel, user_id, self.tenant, rights)
        cookie = open_session(self.panel, user_id)
        return client_with(self.app, cookie), cookie.csrf

    def assert_never_sent(self, value: str) -> None:
        """Not in any answer so far, nor anywhere in the audit table."""
        for form in forms_of(value):
            for body in self.seen:
                assert form not in body, f"an answer carried the value ({form[:8]}...)"
            for entry in audit_entries(self.panel):
                row = " ".join(str(getattr(entry, c.name)) for c in AuditEntry.__table__.columns)
                assert form not in row, f"the audit table has the value: {entry.action}"


def start_web(corral: Corral, **config: Any) -> None:
    """App `web` of the tenant, started straight through its daemon."""
    script = corral.workdir / "app" / "show_env.py"
    script.write_text(SHOW_ENV)
    app = AppConfig(
        name="web",
        script=str(script),
        interpreter=sys.executable,
        cwd=str(corral.workdir),
        **config,
    )
    corral.call("start", apps=[app.to_dict()], cli_env={"PATH": corral.env["PATH"]})
    wait_for(lambda: {r["status"] for r in corral.jlist() if r["name"] == "web"} == {"online"})


@pytest.fixture
def make_site(database_url: str, tmp_path: Path) -> Iterator[Callable[..., Site]]:
    """A panel (SQLite, and PostgreSQL in the slow run) with tenant `acme`, its running
    daemon with app `web` (MODE=dev), and `ann` logged in with `rights` on acme."""
    homes = short_dir("cpe")
    with contextlib.ExitStack() as stack:
        stack.callback(remove_dir, homes)
        corral = stack.enter_context(tenant_daemon(homes / "acme"))
        start_web(corral, env={"MODE": "dev"})

        def open_site(rights: tuple[str, ...] = ALL_RIGHTS) -> Site:
            app, panel = make_app(
                tmp_path / "panel", database_url, starter=NoAutostart(),
                allowed_hosts=("testserver",),
            )  # fmt: skip
            stack.callback(panel.database.close)
            acme = add_tenant(panel, "acme", homes / "acme")
            user_id = quick_user(panel, "ann")
            grant(panel, user_id, acme, rights)
            cookie = open_session(panel, user_id)
            http = stack.enter_context(client_with(app, cookie))
            return Site(app, panel, acme, corral, http, cookie.csrf)

        yield open_site


@pytest.fixture
def site(make_site: Callable[..., Site]) -> Site:
    return make_site()


# --- secrets through the form ------------------------------------------------------------


def test_a_secret_saved_with_the_form_is_masked_restarts_nothing_and_reaches_the_app(
    site: Site,
) -> None:
    value = new_value()
    page = site.get(PAGE)
    assert page.status_code == 200
    assert 'href="/t/acme/apps/web/env" class="active" aria-current="page">Environment' in page.text
    assert 'type="password" class="mono" autocomplete="new-password"' in page.text
    pid = site.pid()

    saved = site.post(PAGE, {"name": "API_KEY", "value": value, "secret": "on"})
    assert saved.headers["location"] == f"{PAGE}?pending=1"
    html = site.follow(saved).text
    assert "Saved the secret API_KEY of web. It applies from the app&#39;s next start" in html
    row = html[html.index('<tr data-secret="API_KEY">') :]
    row = row[: row.index("</tr>")]
    assert '<span class="masked" aria-label="hidden">••••••••</span>' in row
    assert '<td class="muted" data-field="set">set 20' in row  # "set <date time>"
    assert ">Replace</summary>" in row and ">Remove</button>" in row
    [password] = re.findall(r'<input type="password" name="value"[^>]*>', row)
    assert "value=" not in password.replace('name="value"', "")  # never prefilled
    # Saving restarted nothing; the page offers it instead.
    assert site.pid() == pid
    offer = html[html.index("data-pending") : html.index("</div>", html.index("data-pending"))]
    for verb in ("restart", "reload"):
        assert f'action="/t/acme/apps/web/{verb}"' in offer
    assert f'name="back" value="{PAGE}"' in offer
    assert site.says("API_KEY sha256 unset")

    # The offered restart (the existing action route) starts the app with its secret.
    restarted = site.post("/t/acme/apps/web/restart", {"back": PAGE})
    assert restarted.headers["location"] == PAGE
    assert "Restarted web: online." in site.follow(restarted).text
    assert site.pid() != pid
    wait_for(lambda: site.says(f"API_KEY sha256 {digest(value)}"))

    shown = site.get(PAGE).text
    assert "data-pending" not in shown  # only right after a save
    assert site.secret_names() == ["API_KEY"]
    site.get(API)
    site.get("/t/acme/apps/web")
    site.get("/api/v1/tenants/acme/apps/web")
    site.get("/t/acme/apps/web/config")
    site.get("/api/v1/tenants/acme/apps/web/config")
    site.assert_never_sent(value)


def test_replacing_and_removing_a_secret_with_the_forms(site: Site) -> None:
    first, second = new_value(), new_value()
    since = last_audit_id(site.panel)
    site.follow(site.post(PAGE, {"name": "API_KEY", "value": first, "secret": "on"}))
    [before] = site.api("GET", API).json()["secrets"]

    replaced = site.post(PAGE, {"name": "API_KEY", "value": second, "secret": "on"})
    assert "Replaced the secret API_KEY of web" in site.follow(replaced).text
    [after] = site.api("GET", API).json()["secrets"]
    assert after["name"] == "API_KEY" and after["set_at"] >= before["set_at"]
    site.post("/t/acme/apps/web/reload", {"back": PAGE})
    wait_for(lambda: site.says(f"API_KEY sha256 {digest(second)}"))

    removed = site.post(f"{PAGE}/remove", {"name": "API_KEY", "kind": "secret"})
    assert removed.headers["location"] == f"{PAGE}?pending=1"
    html = site.follow(removed).text
    assert "Removed the secret API_KEY of web" in html and "No secrets." in html
    assert site.secret_names() == []
    assert site.audit(since) == [
        ("app.secret.set", "web", "ok", "secret API_KEY; applies from the next start"),
        ("app.secret.replace", "web", "ok", "secret API_KEY; applies from the next start"),
        ("app.reload", "web", "ok", ""),
        ("app.secret.remove", "web", "ok", "secret API_KEY; applies from the next start"),
    ]
    missing = site.post(f"{PAGE}/remove", {"name": "API_KEY", "kind": "secret"})
    assert missing.status_code == 404
    assert site.audit()[-1] == ("app.secret.remove", "web", "failed", "secret API_KEY: not set")
    site.assert_never_sent(first)
    site.assert_never_sent(second)


def test_a_form_with_a_mistake_never_shows_the_secret_again(site: Site) -> None:
    value = new_value()
    response = site.post(PAGE, {"name": "1BAD", "value": value, "secret": "on"})
    assert response.status_code == 422
    html = response.text
    assert "Nothing was saved" in html
    assert 'id="e-name" role="alert">a variable name is letters, digits and _' in html
    assert 'value="1BAD"' in html and 'id="f-secret" name="secret" value="on" checked' in html
    assert site.secret_names() == []

    empty = site.post(PAGE, {"name": "API_KEY", "value": "", "secret": "on"})
    assert empty.status_code == 422
    assert "a secret cannot be empty" in empty.text
    nul = site.api("PUT", f"{API}/API_KEY", {"value": value + "\x00", "secret": True})
    assert nul.status_code == 422 and nul.json()["errors"] == {
        "value": "a value cannot contain a NUL character"
    }
    big = site.api("PUT", f"{API}/API_KEY", {"value": "x" * 65537, "secret": True})
    assert big.status_code == 422 and "at most 65536 bytes" in big.json()["errors"]["value"]
    not_text = site.api("PUT", f"{API}/API_KEY", {"value": 12345, "secret": True})
    assert not_text.status_code == 422 and "12345" not in not_text.text

    # A plain variable's form keeps what was typed: it is not a secret.
    plain = site.post(PAGE, {"name": "bad name", "value": "visible", "apply": "restart"})
    assert plain.status_code == 422 and 'value="visible"' in plain.text
    assert site.secret_names() == []
    site.assert_never_sent(value)
    # A value pasted into the name field by mistake never reaches the audit log.
    pasted = new_value()
    response = site.http.post(
        PAGE,
        data={"name": pasted, "value": "x", "secret": "on", "csrf_token": site.csrf},
        headers={"Origin": ORIGIN},
    )
    assert response.status_code == 422
    assert site.audit()[-1][2:] == ("failed", "secret (invalid name): invalid name")
    site.assert_never_sent(pasted)


# --- secrets through the API -------------------------------------------------------------


def test_the_api_sets_lists_replaces_and_removes_a_secret_without_ever_returning_it(
    site: Site,
) -> None:
    value, other = new_value(), new_value()
    pid = site.pid()
    put = site.api("PUT", f"{API}/API_KEY", {"value": value, "secret": True})
    assert put.status_code == 200, put.text
    body = put.json()
    assert body["name"] == "API_KEY" and body["secret"] is True
    assert body["pending"] is True and body["applied"] is None
    assert isinstance(body["set_at"], float)
    assert site.pid() == pid  # nothing restarted

    listed = site.api("GET", API).json()
    assert listed == {
        "env": {"MODE": "dev"},
        "secrets": [{"name": "API_KEY", "set_at": body["set_at"]}],
    }
    again = site.api("PUT", f"{API}/API_KEY", {"value": other, "secret": True})
    assert again.status_code == 200 and again.json()["set_at"] >= body["set_at"]
    site.api("POST", "/api/v1/tenants/acme/apps/web/restart")
    wait_for(lambda: site.says(f"API_KEY sha256 {digest(other)}"))
    site.api("GET", "/api/v1/tenants/acme/apps/web")
    site.api("GET", "/api/v1/tenants/acme/apps")
    site.api("GET", "/api/v1/tenants/acme/apps/web/config")

    deleted = site.api("DELETE", f"{API}/API_KEY")
    assert deleted.status_code == 200
    assert deleted.json()["removed"] == "secret" and deleted.json()["pending"] is True
    assert site.api("GET", API).json()["secrets"] == []
    gone = site.api("DELETE", f"{API}/API_KEY")
    assert gone.status_code == 404 and gone.json() == {"error": "web has no variable named API_KEY"}
    assert [a[:3] for a in site.audit() if a[0].startswith("app.secret")] == [
        ("app.secret.set", "web", "ok"),
        ("app.secret.replace", "web", "ok"),
        ("app.secret.remove", "web", "ok"),
    ]
    site.assert_never_sent(value)
    site.assert_never_sent(other)


def test_a_name_is_either_plain_or_secret_never_both(site: Site) -> None:
    clash = site.api("PUT", f"{API}/MODE", {"value": new_value(), "secret": True})
    assert clash.status_code == 409
    assert clash.json()["error"] == (
        "MODE is a plain variable of web: remove it first, then add it as a secret"
    )
    site.api("PUT", f"{API}/TOKEN", {"value": new_value(), "secret": True})
    plain = site.api("PUT", f"{API}/TOKEN", {"value": "visible"})
    assert plain.status_code == 409 and "TOKEN is a secret of web" in plain.json()["error"]
    form = site.post(PAGE, {"name": "MODE", "value": "x", "secret": "on"})
    assert form.status_code == 409 and "remove it first" in form.text
    assert site.config_env() == {"MODE": "dev"}
    assert site.secret_names() == ["TOKEN"]


def test_an_unknown_app_is_404_everywhere(site: Site) -> None:
    for path in ("/t/acme/apps/nope/env", "/api/v1/tenants/acme/apps/nope/env"):
        assert site.get(path).status_code == 404, path
    put = site.api("PUT", "/api/v1/tenants/acme/apps/nope/env/A", {"value": "x", "secret": True})
    assert put.status_code == 404 and put.json() == {"error": "no app named 'nope'"}
    form = site.post("/t/acme/apps/nope/env", {"name": "A", "value": "x", "secret": "on"})
    assert form.status_code == 404
    assert site.corral.call("secret_list", app=None) == []


def test_a_secret_the_config_needs_and_lacks_is_pointed_out(site: Site) -> None:
    """`secrets: [NAME]` in the config: the tab says which are missing (the daemon will
    not start the app without them)."""
    site.api("PUT", f"{API}/DB_PASSWORD", {"value": new_value(), "secret": True})
    text = site.api("GET", "/api/v1/tenants/acme/apps/web/config").json()["text"]
    text = text.replace("  env:\n", "  secrets: [DB_PASSWORD]\n  env:\n")
    put = site.api("PUT", "/api/v1/tenants/acme/apps/web/config", {"text": text})
    assert put.status_code == 200, put.text
    assert "needs a secret" not in site.get(PAGE).text
    site.api("DELETE", f"{API}/DB_PASSWORD")
    html = site.get(PAGE).text
    assert "needs a secret that is not set:" in html
    assert '<span class="mono">DB_PASSWORD</span>' in html
    refused = site.post("/t/acme/apps/web/restart", {"back": PAGE})
    assert "DB_PASSWORD" in site.follow(refused).text  # the daemon's reason, as a flash


# --- plain variables ---------------------------------------------------------------------


def test_a_plain_variable_saved_by_default_restarts_nothing_and_the_page_offers_it(
    site: Site,
) -> None:
    html = site.get(PAGE).text
    row = html[html.index('<tr data-var="MODE">') :]
    row = row[: row.index("</tr>")]
    assert '<td class="mono wrap">dev</td>' in row
    assert 'name="value" class="mono" value="dev"' in row  # the edit form
    assert 'name="apply" value="later" checked' in row
    since = last_audit_id(site.panel)
    pid = site.pid()

    saved = site.post(PAGE, {"name": "MODE", "value": "prod"})
    assert saved.headers["location"] == f"{PAGE}?pending=1"
    html = site.follow(saved).text
    assert "Set the variable MODE of web. It applies from the app&#39;s next start" in html
    offer = html[html.index("data-pending") : html.index("</div>", html.index("data-pending"))]
    for verb in ("restart", "reload"):
        assert f'action="/t/acme/apps/web/{verb}"' in offer
    # Stored in the app's config, the running process untouched.
    assert site.config_env() == {"MODE": "prod"}
    assert site.pid() == pid
    assert not site.says("MODE is prod")

    put = site.api("PUT", f"{API}/EXTRA", {"value": "a b=c"})
    assert put.status_code == 200, put.text
    body = put.json()
    assert body["applied"] is None and body["pending"] is True
    assert body["app"]["status"] == "online"
    assert [p["pid"] for p in body["processes"]] == [pid]
    assert site.api("GET", API).json()["env"] == {"MODE": "prod", "EXTRA": "a b=c"}
    assert site.pid() == pid

    # The offered restart starts the app with what was saved.
    restarted = site.post("/t/acme/apps/web/restart", {"back": PAGE})
    assert "Restarted web: online." in site.follow(restarted).text
    assert site.pid() != pid
    wait_for(lambda: site.says("MODE is prod"))

    removed = site.post(f"{PAGE}/remove", {"name": "EXTRA", "kind": "variable"})
    assert removed.headers["location"] == f"{PAGE}?pending=1"
    assert "Removed the variable EXTRA of web. It applies from" in site.follow(removed).text
    deleted = site.api("DELETE", f"{API}/MODE")
    assert deleted.status_code == 200 and deleted.json()["removed"] == "variable"
    assert deleted.json()["pending"] is True
    assert site.config_env() == {}
    assert site.audit(since) == [
        ("app.env.set", "web", "ok", "variable MODE, saved; applies from the next start"),
        ("app.env.set", "web", "ok", "variable EXTRA, saved; applies from the next start"),
        ("app.restart", "web", "ok", ""),
        ("app.env.remove", "web", "ok", "variable EXTRA, saved; applies from the next start"),
        ("app.env.remove", "web", "ok", "variable MODE, saved; applies from the next start"),
    ]


def test_a_plain_variable_can_still_be_applied_at_once(site: Site) -> None:
    since = last_audit_id(site.panel)
    pid = site.pid()
    edited = site.post(PAGE, {"name": "MODE", "value": "prod", "apply": "reload"})
    assert edited.headers["location"] == PAGE
    assert "Set the variable MODE of web and reloaded without downtime: online." in (
        site.follow(edited).text
    )
    assert site.config_env() == {"MODE": "prod"}
    reloaded = site.pid()
    assert reloaded != pid
    wait_for(lambda: site.says("MODE is prod"))

    put = site.api("PUT", f"{API}/EXTRA", {"value": "a b=c", "apply": "restart"})
    assert put.status_code == 200, put.text
    assert put.json()["applied"] == "restart" and put.json()["pending"] is False
    assert put.json()["app"]["status"] == "online"
    assert site.pid() != reloaded

    removed = site.post(f"{PAGE}/remove", {"name": "MODE", "kind": "variable", "apply": "restart"})
    assert removed.headers["location"] == PAGE
    assert "Removed the variable MODE of web and restarted" in site.follow(removed).text
    deleted = site.api("DELETE", f"{API}/EXTRA", apply="reload")
    assert deleted.status_code == 200 and deleted.json()["removed"] == "variable"
    assert deleted.json()["applied"] == "reload" and deleted.json()["pending"] is False
    assert site.config_env() == {}
    wait_for(lambda: site.says("MODE is unset"))
    assert site.audit(since) == [
        ("app.env.set", "web", "ok", "variable MODE, applied with reload"),
        ("app.env.set", "web", "ok", "variable EXTRA, applied with restart"),
        ("app.env.remove", "web", "ok", "variable MODE, applied with restart"),
        ("app.env.remove", "web", "ok", "variable EXTRA, applied with reload"),
    ]
    bad = site.api("PUT", f"{API}/MODE", {"value": "x", "apply": "sometime"})
    assert bad.status_code == 422 and bad.json()["errors"] == {
        "apply": "expected later, restart or reload"
    }
    assert site.config_env() == {}


# --- rights, CSRF and Origin -------------------------------------------------------------


def test_without_manage_nothing_of_the_environment_is_visible(site: Site) -> None:
    """Plain values may be sensitive too: reading them needs `manage`, as editing does."""
    site.api("PUT", f"{API}/API_KEY", {"value": new_value(), "secret": True})
    viewer, csrf = site.user("vic", ("access", "control", "logs"))
    headers = {"Origin": ORIGIN, "X-CSRF-Token": csrf}
    overview = viewer.get("/t/acme/apps/web")
    assert overview.status_code == 200 and 'href="/t/acme/apps/web/env"' not in overview.text
    assert ">Environment</a>" not in overview.text
    assert viewer.get(PAGE).status_code == 403
    assert viewer.get(API).status_code == 403
    assert (
        viewer.put(f"{API}/X", json={"value": "x", "secret": True}, headers=headers).status_code
        == 403
    )
    assert viewer.delete(f"{API}/API_KEY", headers=headers).status_code == 403
    form = {"csrf_token": csrf, "name": "API_KEY", "kind": "secret"}
    assert viewer.post(f"{PAGE}/remove", data=form, headers={"Origin": ORIGIN}).status_code == 403
    assert site.secret_names() == ["API_KEY"]
    denied = [(a, r) for a, _, r, _ in site.audit() if r == "denied"]
    assert denied == [
        ("api_app_env_put", "denied"),
        ("api_app_env_delete", "denied"),
        ("app_env_remove", "denied"),
    ]


def test_a_change_needs_the_csrf_token_and_the_panels_origin(site: Site) -> None:
    value = new_value()
    body = {"name": "API_KEY", "value": value, "secret": "on"}
    since = last_audit_id(site.panel)
    assert site.post(PAGE, body, csrf=None).status_code == 403
    assert site.post(PAGE, body, csrf="wrong-token").status_code == 403
    assert site.post(PAGE, body, origin="https://evil.example").status_code == 403
    assert site.post(PAGE, body, origin=None).status_code == 403
    no_token = site.http.put(
        f"{API}/API_KEY", json={"value": value, "secret": True}, headers={"Origin": ORIGIN}
    )
    assert no_token.status_code == 403
    cross = site.http.put(
        f"{API}/API_KEY",
        json={"value": value, "secret": True},
        headers={"Origin": "https://evil.example", "X-CSRF-Token": site.csrf},
    )
    assert cross.status_code == 403
    assert site.secret_names() == []
    assert [(a, r) for a, _, r, _ in site.audit(since)] == [
        ("csrf:app_env_save", "denied"),
        ("csrf:app_env_save", "denied"),
        ("csrf:app_env_save", "denied"),
        ("csrf:app_env_save", "denied"),
        ("csrf:api_app_env_put", "denied"),
        ("csrf:api_app_env_put", "denied"),
    ]
    site.seen += [no_token.text, cross.text]
    site.assert_never_sent(value)


def test_the_openapi_document_describes_the_env_api(site: Site) -> None:
    paths = site.get("/api/openapi.json").json()["paths"]
    env = paths["/api/v1/tenants/{tenant}/apps/{app}/env"]
    one = paths["/api/v1/tenants/{tenant}/apps/{app}/env/{var}"]
    assert set(env) == {"get"} and set(one) == {"put", "delete"}
    for operation in (env["get"], one["put"], one["delete"]):
        assert operation["x-corral-permission"] == "tenant:manage"
    schema = env["get"]["responses"]["200"]["content"]["application/json"]["schema"]
    assert set(schema["properties"]) == {"env", "secrets"}
    body = one["put"]["requestBody"]["content"]["application/json"]["schema"]
    assert body["required"] == ["value"] and set(body["properties"]) == {"value", "secret", "apply"}
    apply = body["properties"]["apply"]
    assert apply["enum"] == ["later", "restart", "reload"] and apply["default"] == "later"
    assert {p["name"] for p in one["delete"]["parameters"]} == {
        "tenant",
        "app",
        "var",
        "kind",
        "apply",
    }
    [query] = [p for p in one["delete"]["parameters"] if p["name"] == "apply"]
    assert query["schema"]["default"] == "later"


# --- the daemon the panel starts knows its tenant -----------------------------------------


def test_the_panels_starter_gives_the_daemon_its_tenant_name(tmp_path: Path) -> None:
    """The store binds the tenant into every ciphertext: a daemon the panel starts must
    get CORRAL_TENANT=<tenant name>, whatever the panel's own environment says."""
    homes = short_dir("cps")
    home = homes / "shop"
    starter = DevStarter()
    corral = Corral(Home(home / ".corral"), env={}, workdir=home)
    try:
        app, panel = make_app(tmp_path / "panel", starter=starter, allowed_hosts=("testserver",))
        shop = add_tenant(panel, "shop", home)
        user_id = quick_user(panel, "ann")
        grant(panel, user_id, shop, ALL_RIGHTS)
        cookie = open_session(panel, user_id)
        (home / "app").mkdir()
        (home / "app" / "server.py").write_text("import time\nwhile True:\n    time.sleep(1)\n")
        with client_with(app, cookie) as http, pytest.MonkeyPatch.context() as env:
            env.setenv("CORRAL_TENANT", "not-this-one")
            created = http.post(
                "/api/v1/tenants/shop/apps",
                json={"name": "web", "script": "app/server.py"},
                headers={"Origin": ORIGIN, "X-CSRF-Token": cookie.csrf},
            )
        assert created.status_code == 201, created.text
        corral._remember_daemon()
        pid = corral.daemon_pid()
        assert pid is not None
        assert psutil.Process(pid).environ().get("CORRAL_TENANT") == "shop"
        panel.database.close()
    finally:
        stop_daemons([home])
        corral.shutdown()
        starter.reap()
        remove_dir(homes)
