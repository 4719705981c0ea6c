"""The process table, the app pages and their JSON API, against a real tenant daemon.

Each test gets its own panel (SQLite), a tenant `acme` whose home holds a small Python
app, and that tenant's daemon, started by the fixture (the panel never starts one here:
NoAutostart) and stopped with every app under it at the end, even on failure.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.testclient import TestClient

from corral.panel.app import create_app
from corral.panel.apps_service import config_yaml, overall_status, summarize
from corral.panel.audit import AuditFilter
from corral.panel.config import PanelConfig
from corral.panel.db.engine import Database
from corral.panel.db.models import ApiToken
from corral.panel.gateway import NoAutostart
from corral.panel.security.tokens import new_token
from corral.panel.services import Panel, TenantRef
from corral.panel.validation import config_text_to_apps
from corral.paths import Home
from tests.conftest import Corral
from tests.support.panel import ORIGIN, add_tenant, add_user, grant, login

SLEEPER = "import time\nwhile True:\n    time.sleep(1)\n"
ALL_RIGHTS = ("access", "control", "logs", "manage")


@dataclass
class Site:
    client: TestClient
    panel: Panel
    tenant: TenantRef
    corral: Corral
    csrf: str

    @property
    def home(self) -> Path:
        return self.corral.workdir

    def post(self, path: str, data: dict[str, str] | None = None) -> httpx.Response:
        """A form POST as the browser sends it (CSRF field, Origin), not followed."""
        form = {"csrf_token": self.csrf, **(data or {})}
        headers = {"Origin": ORIGIN}
        response: httpx.Response = self.client.post(
            path, data=form, headers=headers, follow_redirects=False
        )
        return response

    def api(self, method: str, path: str, body: Any = None) -> httpx.Response:
        headers = {"Origin": ORIGIN, "X-CSRF-Token": self.csrf}
        response: httpx.Response = self.client.request(method, path, json=body, headers=headers)
        return response

    def create(self, name: str = "web", **fields: Any) -> dict[str, Any]:
        body = {"name": name, "script": "app/server.py", **fields}
        response = self.api("POST", "/api/v1/tenants/acme/apps", body)
        assert response.status_code == 201, response.text
        result: dict[str, Any] = response.json()
        return result

    def apps(self) -> dict[str, list[dict[str, Any]]]:
        """The daemon's own view: app name -> its process records."""
        grouped: dict[str, list[dict[str, Any]]] = {}
        for record in self.corral.jlist():
            grouped.setdefault(record["name"], []).append(record)
        return grouped

    def config_of(self, name: str) -> dict[str, Any]:
        described = self.corral.call("describe", target=name)
        config: dict[str, Any] = described[0]["config"]
        return config

    def audit(self, action: str | None = None) -> list[tuple[str, str | None, str, str]]:
        """(action, app, result, detail) of this tenant's audit entries, oldest first."""
        entries = self.panel.audit.query(AuditFilter(tenant="acme", action=action))
        return [(e.action, e.app, e.result, e.detail) for e in reversed(entries)]


@pytest.fixture
def tenant_corral() -> Iterator[Corral]:
    """A tenant home (short path: the socket's is limited) with its daemon running."""
    base = Path(tempfile.mkdtemp(prefix="cpa", dir="/tmp"))
    home = base / "t"
    (home / "app").mkdir(parents=True)
    (home / "app" / "server.py").write_text(SLEEPER)
    env = {
        "PATH": os.environ.get("PATH", os.defpath),
        "LANG": "C.UTF-8",
        "CORRAL_HOME": str(home / ".corral"),
        "HOME": str(home),
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    corral = Corral(home=Home(home / ".corral"), env=env, workdir=home)
    try:
        corral.start_daemon()
        yield corral
    finally:
        corral.shutdown()
        shutil.rmtree(base, ignore_errors=True)


SiteFactory = Callable[..., Site]


@pytest.fixture
def make_site(tmp_path: Path, tenant_corral: Corral) -> Iterator[SiteFactory]:
    """Opens the panel with tenant `acme` (the daemon's home) at the given app limit and a
    logged-in user `ann` holding `rights` on it."""
    with contextlib.ExitStack() as stack:

        def open_site(limit: int = -1, rights: tuple[str, ...] = ALL_RIGHTS) -> Site:
            config = PanelConfig(
                home=tmp_path / "panel", allowed_hosts=("testserver",), database_url=""
            )
            app = create_app(
                config, database=Database.open(config.url), starter=NoAutostart(), background=()
            )
            panel: Panel = app.state.panel
            stack.callback(panel.database.close)
            acme = add_tenant(panel, "acme", tenant_corral.workdir, app_limit=limit)
            grant(panel, add_user(panel, "ann"), acme, rights)
            client = stack.enter_context(TestClient(app))
            return Site(client, panel, acme, tenant_corral, login(client, "ann"))

        yield open_site


@pytest.fixture
def site(make_site: SiteFactory) -> Site:
    return make_site()


def error_of(html: str, field: str) -> str | None:
    """The message shown next to a form field, if any."""
    match = re.search(rf'<span class="msg[^"]*" id="e-{field}" role="alert">([^<]*)</span>', html)
    return match.group(1) if match else None


# --- grouping records -------------------------------------------------------------------


def test_an_apps_status_sums_up_its_instances() -> None:
    assert overall_status(["online", "online"]) == ("online", "online")
    assert overall_status(["online", "stopped", "online"]) == ("partial", "2 of 3 online")
    assert overall_status(["online", "errored"]) == ("errored", "1 of 2 errored")
    assert overall_status(["online", "launching"]) == ("launching", "1 of 2 launching")
    assert overall_status([]) == ("stopped", "stopped")


def test_records_are_grouped_by_app_with_sums() -> None:
    def record(name: str, instance: int, **more: Any) -> dict[str, Any]:
        base = {"name": name, "id": 0 if name == "a" else 1, "instance": instance}
        base |= {"status": "online", "pid": 100 + instance, "restarts": 1, "exec_mode": "fork"}
        return base | more

    apps = summarize(
        [
            record("b", 0, cpu=None, memory=None),
            record("a", 1, cpu=1.5, memory=1000, uptime=50.0),
            record("a", 0, cpu=2.0, memory=2000, uptime=70.0, exit_code=3),
            record("a", 2, status="stopped", pid=None, cpu=9.0, memory=9000, uptime=None),
        ]
    )
    assert [a.name for a in apps] == ["a", "b"]
    a, b = apps
    assert (a.instances, a.cpu, a.memory, a.uptime, a.restarts) == (3, 3.5, 3000, 50.0, 3)
    assert [m.instance for m in a.members] == [0, 1, 2]
    assert a.members[0].last_exit == "exit code 3"
    assert (a.status, a.label) == ("partial", "2 of 3 online")
    assert (b.cpu, b.memory, b.cpu_text) == (None, None, "-")


def test_the_editor_yaml_reads_back_to_the_same_config(tmp_path: Path) -> None:
    (tmp_path / "app").mkdir()
    (tmp_path / "app" / "server.py").write_text(SLEEPER)
    text = """
apps:
  - name: web
    script: app/server.py
    args: ["--port", "8000"]
    instances: 2
    env: {MODE: prod, EMPTY: ""}
    kill_timeout: 2500ms
    min_uptime: 5s
    restart_delay: 1.5s
    max_memory_restart: 300M
    cron_restart: "0 3 * * *"
    watch: true
    umask: "027"
    stop_exit_codes: [0, 3]
"""
    [config] = config_text_to_apps(text, "yaml", tmp_path)
    again = config_text_to_apps(config_yaml(config), "yaml", tmp_path)
    assert again == [config]
    assert config["kill_timeout"] == 2.5 and config["umask"] == 0o027
    assert "kill_timeout: 2.5s" in config_yaml(config)


# --- the process table ------------------------------------------------------------------


def test_the_table_shows_each_app_with_its_numbers_and_buttons(site: Site) -> None:
    site.create("web", instances="2")
    page = site.client.get("/t/acme")
    assert page.status_code == 200
    html = page.text
    row = html[html.index('<tr class="proc" data-app="web">') :]
    row = row[: row.index("</tr>")]
    assert '<a class="name" href="/t/acme/apps/web">web</a>' in row
    assert '<span class="status online" data-field="status">online</span>' in row
    assert row.count('class="dot online"') == 2
    assert '<output data-field="instances">2</output>' in row
    for verb in ("start", "stop", "restart", "reload", "scale", "delete"):
        assert f'action="/t/acme/apps/web/{verb}"' in row
    assert "data-confirm=" in row  # delete asks first
    assert re.search(r'<button type="submit" class="small"\s+disabled>Start</button>', row)
    assert 'data-ws="/t/acme/ws/processes"' in html
    assert "<template data-row-template>" in html
    assert '<script src="/static/js/processes.js" defer></script>' in html
    assert "1\n      apps" in html or ">1</span>" in html  # the app count


def test_an_empty_tenant_invites_to_create_the_first_app(site: Site) -> None:
    html = site.client.get("/t/acme").text
    assert "No apps yet" in html
    assert 'href="/t/acme/apps/new"' in html


def test_without_control_or_manage_there_are_no_buttons(make_site: SiteFactory) -> None:
    site = make_site(rights=("access",))
    site.corral.start_app("web", SLEEPER)
    html = site.client.get("/t/acme").text
    assert 'data-app="web"' in html
    assert "data-verb=" not in html.split("<template")[0]
    assert 'href="/t/acme/apps/new"' not in html
    assert site.api("POST", "/api/v1/tenants/acme/apps/web/stop").status_code == 403


# --- creating apps ----------------------------------------------------------------------


def test_creating_an_app_with_the_form_starts_it(site: Site) -> None:
    assert site.client.get("/t/acme/apps/new").status_code == 200
    response = site.post(
        "/t/acme/apps/new",
        {
            "name": "web",
            "script": "app/server.py",
            "args": "--port 8000 'two words'",
            "instances": "2",
            "exec_mode": "fork",
            "env": "MODE=prod\n# a comment\nTOKEN=abc=def",
            "max_memory_restart": "200M",
            "cron_restart": "0 3 * * *",
            "autorestart": "on",
            "watch": "off",
        },
    )
    assert response.status_code == 303, response.text
    assert response.headers["location"] == "/t/acme/apps/web"
    records = site.apps()["web"]
    assert [r["status"] for r in records] == ["online", "online"]
    config = site.config_of("web")
    assert config["script"] == str(site.home / "app" / "server.py")
    assert config["args"] == ["--port", "8000", "two words"]
    assert config["env"] == {"MODE": "prod", "TOKEN": "abc=def"}
    assert config["max_memory_restart"] == 200 * 1024 * 1024
    assert config["cron_restart"] == "0 3 * * *"
    assert site.audit("app.create") == [
        ("app.create", "web", "ok", f"script {site.home / 'app' / 'server.py'}")
    ]
    page = site.client.get("/t/acme/apps/web")
    assert "Created web" in page.text  # the flash message, once
    assert "Created web" not in site.client.get("/t/acme/apps/web").text


def test_every_invalid_field_shows_its_own_message_and_nothing_starts(site: Site) -> None:
    typed = {
        "name": "bad name!",
        "script": "",
        "cwd": "no-such-dir",
        "instances": "zero",
        "exec_mode": "thread",
        "env": "MODE=prod\n1BAD=x",
        "max_memory_restart": "lots",
        "cron_restart": "every day",
        "listen": "nowhere",
        "autorestart": "maybe",
    }
    response = site.post("/t/acme/apps/new", typed)
    assert response.status_code == 422
    html = response.text
    for field in typed:
        assert error_of(html, field), f"no message next to {field}"
    assert "line 2" in (error_of(html, "env") or "")
    assert "letters, digits" in (error_of(html, "name") or "")
    assert 'value="bad name!"' in html and 'value="every day"' in html  # kept as typed
    assert "MODE=prod\n1BAD=x</textarea>" in html
    assert site.apps() == {}
    [(action, app, result, detail)] = site.audit("app.create")
    assert (action, app, result) == ("app.create", "bad name!", "failed")
    assert "instances" in detail


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("script", "/etc/passwd"),
        ("script", "../outside.py"),
        ("script", "app/link.py"),
        ("cwd", ".."),
        ("cwd", "linkdir"),
    ],
)
def test_paths_outside_the_home_are_refused(site: Site, field: str, value: str) -> None:
    outside = site.home.parent / "outside.py"
    outside.write_text(SLEEPER)
    (site.home / "app" / "link.py").symlink_to(outside)
    (site.home / "linkdir").symlink_to(site.home.parent)
    fields = {"name": "escape", "script": "app/server.py", field: value}
    response = site.post("/t/acme/apps/new", fields)
    assert response.status_code == 422
    message = error_of(response.text, field)
    assert message, response.text
    assert site.apps() == {}
    api = site.api("POST", "/api/v1/tenants/acme/apps", fields)
    assert api.status_code == 422
    assert field in api.json()["errors"]
    assert site.apps() == {}


def test_a_name_already_taken_or_reserved_is_refused(site: Site) -> None:
    site.create("web")
    response = site.post("/t/acme/apps/new", {"name": "web", "script": "app/server.py"})
    assert response.status_code == 422
    assert "already exists" in (error_of(response.text, "name") or "")
    response = site.post("/t/acme/apps/new", {"name": "new", "script": "app/server.py"})
    assert response.status_code == 422
    assert "reserved" in (error_of(response.text, "name") or "")
    assert set(site.apps()) == {"web"}


def test_the_api_creates_apps_from_json(site: Site) -> None:
    result = site.create(
        "api-made", args=["-v", "a b"], env={"MODE": "prod"}, instances=2, autorestart=False
    )
    assert result["app"]["name"] == "api-made"
    assert result["app"]["instances"] == 2
    assert {p["name"] for p in result["processes"]} == {"api-made"}
    config = site.config_of("api-made")
    assert config["args"] == ["-v", "a b"]
    assert config["env"] == {"MODE": "prod"}
    assert config["autorestart"] is False

    bad = site.api(
        "POST",
        "/api/v1/tenants/acme/apps",
        {"name": "x", "script": "app/server.py", "env": {"A": "1\nB=2"}, "instances": [1]},
    )
    assert bad.status_code == 422
    assert set(bad.json()["errors"]) == {"env", "instances"}
    listed = site.api("GET", "/api/v1/tenants/acme/apps").json()
    assert [a["name"] for a in listed["apps"]] == ["api-made"]
    assert (listed["count"], listed["limit"]) == (1, -1)


def test_the_app_limit_is_enforced_and_scaling_is_not_a_new_app(make_site: SiteFactory) -> None:
    site = make_site(limit=1)
    site.create("one")
    assert site.client.get("/t/acme/apps/new").text.count("App limit") + 1  # page renders
    response = site.post("/t/acme/apps/new", {"name": "two", "script": "app/server.py"})
    assert response.status_code == 409
    assert "the app limit is reached: 1 of 1 apps" in response.text
    api = site.api("POST", "/api/v1/tenants/acme/apps", {"name": "two", "script": "app/server.py"})
    assert api.status_code == 409
    assert "limit" in api.json()["error"]
    assert set(site.apps()) == {"one"}
    denied = [e for e in site.audit("app.create") if e[2] == "denied"]
    assert [(e[1], e[2]) for e in denied] == [("two", "denied"), ("two", "denied")]

    table = site.client.get("/t/acme").text
    assert "data-new-app hidden" in table and "App limit reached: 1 of 1." in table
    scaled = site.api("POST", "/api/v1/tenants/acme/apps/one/scale", {"count": "+1"})
    assert scaled.status_code == 200, scaled.text
    assert scaled.json()["app"]["instances"] == 2


def test_a_limit_of_zero_allows_no_app(make_site: SiteFactory) -> None:
    site = make_site(limit=0)
    form = site.client.get("/t/acme/apps/new").text
    assert "may not run any app" in form
    assert re.search(r'class="primary"\s+disabled>Create and start', form)
    response = site.post("/t/acme/apps/new", {"name": "web", "script": "app/server.py"})
    assert response.status_code == 409
    assert site.apps() == {}
    assert [e[2] for e in site.audit("app.create")] == ["denied"]
    assert "no apps allowed" in site.client.get("/t/acme").text


# --- actions ----------------------------------------------------------------------------


def test_forms_act_and_come_back_with_a_message(site: Site) -> None:
    site.create("web")
    stopped = site.post("/t/acme/apps/web/stop")
    assert stopped.status_code == 303 and stopped.headers["location"] == "/t/acme"
    assert [r["status"] for r in site.apps()["web"]] == ["stopped"]
    table = site.client.get("/t/acme").text
    assert "Stopped web: stopped." in table
    assert "Stopped web" not in site.client.get("/t/acme").text

    started = site.post("/t/acme/apps/web/start", {"back": "/t/acme/apps/web"})
    assert started.headers["location"] == "/t/acme/apps/web"
    assert [r["status"] for r in site.apps()["web"]] == ["online"]
    pid = site.apps()["web"][0]["pid"]
    restarted = site.post("/t/acme/apps/web/restart", {"back": "https://evil.example/"})
    assert restarted.headers["location"] == "/t/acme"
    assert site.apps()["web"][0]["pid"] != pid
    assert site.post("/t/acme/apps/web/reload").status_code == 303
    assert [r["status"] for r in site.apps()["web"]] == ["online"]

    failed = site.post("/t/acme/apps/web/start")  # already running: the daemon says so
    assert failed.status_code == 303
    assert "already running" in site.client.get("/t/acme").text
    assert [(a, app, result) for a, app, result, _ in site.audit()[1:]] == [
        ("app.stop", "web", "ok"),
        ("app.start", "web", "ok"),
        ("app.restart", "web", "ok"),
        ("app.reload", "web", "ok"),
        ("app.start", "web", "failed"),
    ]
    assert "already running" in site.audit()[-1][3]


def test_the_api_acts_and_answers_with_the_process_records(site: Site) -> None:
    site.create("web", instances=2)
    for verb, status in (("stop", "stopped"), ("start", "online"), ("restart", "online")):
        response = site.api("POST", f"/api/v1/tenants/acme/apps/web/{verb}")
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["app"]["status"] == status
        assert [p["status"] for p in body["processes"]] == [status, status]
        assert [p["instance"] for p in body["processes"]] == [0, 1]
    reloaded = site.api("POST", "/api/v1/tenants/acme/apps/web/reload")
    assert reloaded.status_code == 200 and reloaded.json()["app"]["status"] == "online"

    again = site.api("POST", "/api/v1/tenants/acme/apps/web/start")
    assert again.status_code == 409 and "already running" in again.json()["error"]
    missing = site.api("POST", "/api/v1/tenants/acme/apps/nope/stop")
    assert missing.status_code == 404
    assert missing.json() == {"error": "no app named 'nope'"}
    assert site.audit()[-1] == ("app.stop", "nope", "failed", "no app named 'nope'")
    assert site.post("/t/acme/apps/nope/restart").status_code == 404


def test_scaling_up_and_down(site: Site) -> None:
    site.create("web")
    up = site.post("/t/acme/apps/web/scale", {"count": "+1"})
    assert up.status_code == 303
    assert len(site.apps()["web"]) == 2
    assert "Scaled web to 2 instances." in site.client.get("/t/acme").text
    down = site.api("POST", "/api/v1/tenants/acme/apps/web/scale", {"count": "-1"})
    assert down.status_code == 200 and down.json()["app"]["instances"] == 1
    three = site.api("POST", "/api/v1/tenants/acme/apps/web/scale", {"count": 3})
    assert three.json()["app"]["instances"] == 3
    assert len(site.apps()["web"]) == 3

    for count, status in (("abc", 422), ("0", 422), ("-5", 422), ("+999", 422)):
        refused = site.api("POST", "/api/v1/tenants/acme/apps/web/scale", {"count": count})
        assert refused.status_code == status, (count, refused.text)
    assert (
        "errors"
        in site.api("POST", "/api/v1/tenants/acme/apps/web/scale", {"count": "many"}).json()
    )
    assert len(site.apps()["web"]) == 3
    results = [(e[2], e[3]) for e in site.audit("app.scale")]
    assert results[:3] == [("ok", "count +1"), ("ok", "count -1"), ("ok", "count 3")]
    assert all(result == "failed" for result, _ in results[3:]) and len(results) == 8

    missing = site.api("POST", "/api/v1/tenants/acme/apps/nope/scale", {"count": "+1"})
    assert missing.status_code == 404
    assert site.audit()[-1] == ("app.scale", "nope", "failed", "count +1: no app named 'nope'")


def test_deleting_an_app(site: Site) -> None:
    site.create("web")
    site.create("other")
    response = site.post("/t/acme/apps/web/delete", {"back": "/t/acme/apps/web"})
    assert response.status_code == 303 and response.headers["location"] == "/t/acme"
    assert set(site.apps()) == {"other"}
    assert "Deleted web." in site.client.get("/t/acme").text
    assert site.client.get("/t/acme/apps/web").status_code == 404

    deleted = site.api("POST", "/api/v1/tenants/acme/apps/other/delete")
    assert deleted.status_code == 200 and deleted.json() == {"deleted": ["other"]}
    assert site.apps() == {}
    assert site.api("POST", "/api/v1/tenants/acme/apps/other/delete").status_code == 404
    assert [(e[1], e[2]) for e in site.audit("app.delete")] == [
        ("web", "ok"),
        ("other", "ok"),
        ("other", "failed"),
    ]


def test_an_api_token_works_without_csrf(site: Site) -> None:
    site.create("web")
    token, digest = new_token("corral")
    with site.panel.database.session() as db:
        db.add(ApiToken(user_id=1, name="ci", token_hash=digest, created_at=time.time()))
    bearer = {"Authorization": f"Bearer {token}"}
    client = TestClient(site.client.app)
    listed = client.get("/api/v1/tenants/acme/apps", headers=bearer)
    assert listed.status_code == 200 and listed.json()["count"] == 1
    stopped = client.post("/api/v1/tenants/acme/apps/web/stop", headers=bearer)
    assert stopped.status_code == 200 and stopped.json()["app"]["status"] == "stopped"


# --- the app page -------------------------------------------------------------------------


def test_the_overview_shows_the_app_but_never_env_values(site: Site) -> None:
    site.create("web", env={"DB_PASSWORD": "s3cr3t-value"}, instances=2)
    page = site.client.get("/t/acme/apps/web")
    assert page.status_code == 200
    html = page.text
    assert "s3cr3t-value" not in html and "DB_PASSWORD" not in html
    assert "1 set" in html
    chart = '<div class="chart" data-chart-src="/api/v1/tenants/acme/apps/web/metrics"></div>'
    assert chart in html
    assert '<script src="/static/js/chart.js" defer></script>' in html
    assert str(site.home / "app" / "server.py") in html
    for pid in (r["pid"] for r in site.apps()["web"]):
        assert f'<td class="num mono">{pid}</td>' in html
    assert 'class="tabs"' in html and 'href="/t/acme/apps/web/config"' in html
    assert 'href="/t/acme/apps/web/logs"' in html

    described = site.api("GET", "/api/v1/tenants/acme/apps/web").json()
    assert "s3cr3t-value" not in str(described)
    assert described["config"]["env"] == ["DB_PASSWORD"]
    assert described["app"]["instances"] == 2
    assert site.client.get("/t/acme/apps/nope").status_code == 404
    assert site.api("GET", "/api/v1/tenants/acme/apps/nope").status_code == 404


# --- the config editor --------------------------------------------------------------------


def edit(site: Site, text: str, apply: str = "restart") -> httpx.Response:
    return site.post("/t/acme/apps/web/config", {"text": text, "format": "yaml", "apply": apply})


def test_the_config_editor_applies_a_valid_config(site: Site) -> None:
    site.create("web", env={"MODE": "dev"})
    page = site.client.get("/t/acme/apps/web/config")
    assert page.status_code == 200
    text = site.api("GET", "/api/v1/tenants/acme/apps/web/config").json()["text"]
    assert "name: web" in text and "MODE: dev" in text
    assert "MODE: dev" in page.text  # the user's own env, in their own editor
    pid = site.apps()["web"][0]["pid"]

    edited = text.replace("MODE: dev", "MODE: prod\n    EXTRA: 'yes'").replace(
        "instances: 1", "instances: 2\n  kill_timeout: 3s"
    )
    response = edit(site, edited)
    assert response.status_code == 303, response.text
    assert response.headers["location"] == "/t/acme/apps/web"
    config = site.config_of("web")
    assert config["env"] == {"MODE": "prod", "EXTRA": "yes"}
    assert config["kill_timeout"] == 3.0
    records = site.apps()["web"]
    assert len(records) == 2 and records[0]["pid"] != pid
    assert "Saved the config of web and restarted" in site.client.get("/t/acme/apps/web").text

    as_json = '{"apps": [{"name": "web", "script": "app/server.py", "env": {"MODE": "json"}}]}'
    put = site.api(
        "PUT",
        "/api/v1/tenants/acme/apps/web/config",
        {"text": as_json, "format": "json", "apply": "reload"},
    )
    assert put.status_code == 200, put.text
    assert put.json()["app"]["status"] == "online"
    assert site.config_of("web")["env"] == {"MODE": "json"}
    assert [(e[2], e[3]) for e in site.audit("app.config")] == [
        ("ok", "applied with restart"),
        ("ok", "applied with reload"),
    ]


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (("instances: 1", "instance: 1"), "did you mean 'instances'"),
        (("name: web", "name: other"), "renaming is not possible"),
        (("script: ", "script: /etc/passwd\n  #"), "is outside your home"),
        (("cwd: ", "cwd: /\n  #"), "outside"),
        (("exec_mode: fork", "exec_mode: [fork"), "line"),
    ],
)
def test_an_invalid_config_changes_nothing(
    site: Site, change: tuple[str, str], expected: str
) -> None:
    site.create("web")
    before = site.config_of("web")
    pid = site.apps()["web"][0]["pid"]
    text = site.api("GET", "/api/v1/tenants/acme/apps/web/config").json()["text"]
    broken = text.replace(*change, 1)
    assert broken != text
    response = edit(site, broken)
    assert response.status_code == 422, response.text
    assert "Nothing was changed" in response.text
    assert '<ul class="config-errors"' in response.text
    assert expected in response.text.replace("&#39;", "'"), response.text
    assert broken.split("\n")[3] in response.text.replace("&#39;", "'")  # kept as typed
    assert site.config_of("web") == before
    assert site.apps()["web"][0]["pid"] == pid
    put = site.api("PUT", "/api/v1/tenants/acme/apps/web/config", {"text": broken})
    assert put.status_code == 422 and put.json()["errors"]
    assert [e[2] for e in site.audit("app.config")] == ["failed", "failed"]


def test_a_config_with_two_apps_is_refused(site: Site) -> None:
    site.create("web")
    text = site.api("GET", "/api/v1/tenants/acme/apps/web/config").json()["text"]
    two = text + text.split("apps:\n", 1)[1].replace("name: web", "name: web2")
    response = site.api("PUT", "/api/v1/tenants/acme/apps/web/config", {"text": two})
    assert response.status_code == 422
    assert "exactly one app" in response.json()["errors"]["config"]
    assert set(site.apps()) == {"web"}
    bad_mode = site.api(
        "PUT", "/api/v1/tenants/acme/apps/web/config", {"text": text, "apply": "later"}
    )
    assert bad_mode.status_code == 422 and "apply" in bad_mode.json()["errors"]
    missing = site.api("PUT", "/api/v1/tenants/acme/apps/nope/config", {"text": text})
    assert missing.status_code == 404
    assert site.audit()[-1][:3] == ("app.config", "nope", "failed")
    assert site.client.get("/t/acme/apps/nope/config").status_code == 404
