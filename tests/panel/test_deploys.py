"""The panel's deploy screens (SPEC 4, issue 10) against a real tenant daemon, a real git
repository served over HTTPS on loopback (a CA made by the test, trusted through the
app's environment) and real apps: the git source form, Deploy now, the live output over
the WebSocket, history, releases, rollback, the deploy key, and who may do what.

The panel never starts a daemon here (NoAutostart): the fixture starts the tenant's
daemon and stops it, with every app under it, at the end even on failure.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from starlette.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from corral.config.model import AppConfig
from corral.panel import deploy_service as dsvc
from corral.panel.app import create_app
from corral.panel.config import PanelConfig
from corral.panel.db.engine import Database
from corral.panel.db.models import AuditEntry
from corral.panel.gateway import NoAutostart
from corral.panel.services import Panel, TenantRef
from corral.panel.validation import FieldErrors
from corral.paths import Home
from tests.conftest import Corral, wait_for
from tests.support.gitrepos import GitRepo, git_https_server, make_repo
from tests.support.panel import ORIGIN, PASSWORD, add_tenant, add_user, grant, login
from tests.support.tls import make_pki

pytestmark = pytest.mark.slow

TOKEN = "s3cr3t-token-of-the-repo"
APP_CODE = """\
import pathlib, time
version = pathlib.Path(__file__).with_name("VERSION").read_text().strip()
while True:
    print(f"serving {version}", flush=True)
    time.sleep(0.2)
"""
STEP = 'python3 -c \'print("step ran in", __import__("os").getcwd())\''


@dataclass
class Site:
    client: TestClient
    panel: Panel
    tenant: TenantRef
    corral: Corral
    csrf: str
    repo: GitRepo
    url: str
    """The repository's URL, with the basic-auth user and token in it."""

    def form(self, path: str, data: dict[str, str]) -> Any:
        return self.client.post(
            path,
            data={**data, "csrf_token": self.csrf},
            headers={"Origin": ORIGIN},
            follow_redirects=False,
        )

    def api(self, method: str, path: str, body: Any = None) -> Any:
        return self.client.request(
            method,
            "/api/v1/tenants/acme/apps/" + path,
            json=body,
            headers={"Origin": ORIGIN, "X-CSRF-Token": self.csrf},
        )

    def config(self, app: str = "web") -> dict[str, Any]:
        detail = self.panel.daemon(self.tenant).describe(app)
        return dict(detail["config"])

    def tail(self, app: str = "web") -> list[str]:
        return [r["line"] for r in self.panel.daemon(self.tenant).tail(app, 50, "out")]

    def finished(self, deploy_id: str) -> dict[str, Any]:
        """The deploy's record once it has finished."""
        seen: dict[str, Any] = {}

        def done() -> bool:
            answer = self.api("GET", f"web/deploys/{deploy_id}")
            assert answer.status_code == 200, answer.text
            seen.update(answer.json())
            return seen["deploy"]["status"] in ("succeeded", "failed")

        wait_for(done, timeout=120)
        return seen


def source_form(site: Site, **changes: str) -> dict[str, str]:
    form = {
        "repo": site.url,
        "branch": "main",
        "keep": "3",
        "timeout": "2m",
        "script": "app/main.py",
        "cwd": "",
        "steps": STEP,
    }
    form.update(changes)
    return form


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    base = Path(tempfile.mkdtemp(prefix="cpd", dir="/tmp"))  # short: the socket's path
    home = base / "t"
    home.mkdir()
    pki = make_pki(tmp_path / "pki")
    repo = make_repo(
        tmp_path / "git", {"app/main.py": APP_CODE, "app/VERSION": "v1\n"}, path="team/web.git"
    )
    env = {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "LANG": "C.UTF-8",
        "CORRAL_HOME": str(home / ".corral"),
        "HOME": str(home),
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    corral = Corral(home=Home(home / ".corral"), env=env, workdir=home)
    config = PanelConfig(home=tmp_path / "panel", allowed_hosts=("testserver",), database_url="")
    app = create_app(
        config, database=Database.open(config.url), starter=NoAutostart(), background=()
    )
    panel: Panel = app.state.panel
    try:
        with git_https_server(repo.served, pki, auth=("deployer", TOKEN)) as server:
            corral.start_daemon()
            (home / "app").mkdir()
            (home / "app" / "main.py").write_text(APP_CODE)
            (home / "app" / "VERSION").write_text("home\n")
            web = AppConfig(
                name="web",
                script=str(home / "app" / "main.py"),
                interpreter=sys.executable,
                cwd=str(home),
            )
            # The app's environment trusts the test's CA: every git command of its
            # deploys starts from it.
            corral.call(
                "start",
                apps=[web.to_dict()],
                cli_env={"PATH": env["PATH"], "GIT_SSL_CAINFO": str(pki.ca_cert)},
            )
            acme = add_tenant(panel, "acme", home)
            grant(panel, add_user(panel, "lou"), acme, ["access", "manage"])
            grant(panel, add_user(panel, "vic"), acme, ["access"])
            url = server.replace("https://", f"https://deployer:{TOKEN}@") + "/team/web.git"
            with TestClient(app) as client:
                yield Site(client, panel, acme, corral, login(client, "lou"), repo, url)
    finally:
        panel.database.close()
        corral.shutdown()
        shutil.rmtree(base, ignore_errors=True)


def audit_rows(panel: Panel) -> list[tuple[str, str, str | None, str, str]]:
    with panel.database.session() as db:
        rows = db.scalars(select(AuditEntry).order_by(AuditEntry.id)).all()
        return [
            (r.actor, r.action, r.app, r.result, r.detail)
            for r in rows
            if r.action.startswith("app.deploy") or r.action == "app.rollback"
        ]


def follow(site: Site, deploy_id: str) -> tuple[str, list[dict[str, Any]]]:
    """Read the deploy's WebSocket to its end: (the output it showed, the records)."""
    text = ""
    records: list[dict[str, Any]] = []
    with site.client.websocket_connect(
        f"/t/acme/apps/web/deploys/{deploy_id}/ws", headers={"Origin": ORIGIN}
    ) as ws:
        while not records or records[-1]["status"] not in ("succeeded", "failed"):
            message = ws.receive_json()
            assert "error" not in message, message
            if "output" in message:
                text = message["output"]
            if "append" in message:
                text += message["append"]
            if "deploy" in message:
                records.append(message["deploy"])
        # Everything is sent before the close: nothing more comes.
        with pytest.raises(WebSocketDisconnect) as closed:
            ws.receive_json()
        assert closed.value.code == 1000
    return text, records


# --- the git source form -----------------------------------------------------------------


def test_a_bad_git_source_is_refused_field_by_field_and_nothing_changes(site: Site) -> None:
    page = site.client.get("/t/acme/apps/web/deploy")
    assert page.status_code == 200
    assert "no git source yet" in page.text
    assert 'action="/t/acme/apps/web/deploy/source"' in page.text
    assert 'value="app/main.py"' in page.text  # the script offered relative to its cwd

    bad = source_form(
        site,
        repo="file:///srv/git/web.git",
        branch="--upload-pack=touch /tmp/x",
        keep="0",
        timeout="soon",
        script="/etc/passwd",
        steps="echo 'unbalanced",
    )
    response = site.form("/t/acme/apps/web/deploy/source", bad)
    assert response.status_code == 422
    html = response.text
    for field in ("repo", "branch", "keep", "timeout", "script", "steps"):
        assert f'id="e-{field}"' in html, field
    assert "file://" in html and "not allowed" in html
    assert "line 1: no closing quotation" in html
    assert "expected a path inside the release" in html
    assert 'value="--upload-pack=touch /tmp/x"' in html  # what was typed is kept
    assert "git" not in site.config() or site.config()["git"] is None

    assert "must not start with &#39;-&#39;" in html  # the --upload-pack=... branch
    for branch, message in (("-x", "start with &#39;-&#39;"), ("a..b", "contain &#39;..&#39;")):
        response = site.form("/t/acme/apps/web/deploy/source", source_form(site, branch=branch))
        assert response.status_code == 422
        assert 'id="e-branch"' in response.text and message in response.text
    for repo in ("ext::sh -c touch% /tmp/pwned", "https://host/a b.git", "/srv/web.git"):
        response = site.form("/t/acme/apps/web/deploy/source", source_form(site, repo=repo))
        assert response.status_code == 422 and 'id="e-repo"' in response.text, repo
    assert site.config().get("git") is None

    api = site.api("PUT", "web/deploy/source", {"repo": site.url, "script": "app/main.py",
                                                   "branch": "-x"})  # fmt: skip
    assert api.status_code == 422
    assert set(api.json()["errors"]) == {"branch"}
    failed = [row for row in audit_rows(site.panel) if row[1] == "app.deploy.source"]
    assert failed and {row[3] for row in failed} == {"failed"}


def test_the_source_is_saved_with_argv_steps_and_the_url_is_never_shown(site: Site) -> None:
    response = site.form("/t/acme/apps/web/deploy/source", source_form(site))
    assert response.status_code == 303, response.text
    git = site.config()["git"]
    assert git["repo"] == site.url  # stored as given (the daemon needs the credentials)
    assert git["keep"] == 3 and git["timeout"] == 120.0 and git["install"] is False
    assert git["steps"] == [["python3", "-c", 'print("step ran in", __import__("os").getcwd())']]
    assert site.config()["script"] == "app/main.py" and site.config()["cwd"] is None

    page = site.client.get("/t/acme/apps/web/deploy").text
    assert TOKEN not in page
    assert "https://***@localhost" in page
    assert "[&#34;python3&#34;, &#34;-c&#34;" in page  # each step shown as its argv list
    api = site.api("GET", "web/deploy").json()
    assert TOKEN not in str(api)
    assert api["source"]["steps"] == git["steps"]
    assert api["source"]["repo"].startswith("https://***@localhost")
    rows = [row for row in audit_rows(site.panel) if row[1] == "app.deploy.source"]
    assert rows == [("lou", "app.deploy.source", "web", "ok", rows[0][4])]
    assert "***@" in rows[0][4] and TOKEN not in rows[0][4]

    # The form again as the page fills it (the URL redacted): the credentials stay.
    form = source_form(site, repo=api["source"]["repo"], branch="release")
    assert site.form("/t/acme/apps/web/deploy/source", form).status_code == 303
    assert site.config()["git"]["repo"] == site.url
    assert site.config()["git"]["branch"] == "release"

    # Changing it again through the API: steps as argv lists, install on.
    changed = site.api(
        "PUT",
        "web/deploy/source",
        {"repo": site.url, "script": "app/main.py", "branch": "main", "install": True,
         "steps": [["echo", "a b", "$HOME"]]},
    )  # fmt: skip
    assert changed.status_code == 200, changed.text
    assert site.config()["git"]["steps"] == [["echo", "a b", "$HOME"]]
    assert site.config()["git"]["install"] is True


# --- deploying ---------------------------------------------------------------------------


def test_deploy_now_streams_the_output_and_the_new_release_serves(site: Site) -> None:
    steps = STEP + "\npython3 -c 'print(\"<b>bold</b>\")'"
    form = source_form(site, steps=steps)
    assert site.form("/t/acme/apps/web/deploy/source", form).status_code == 303
    wait_for(lambda: "serving home" in site.tail())

    response = site.form("/t/acme/apps/web/deploys", {"ref": ""})
    assert response.status_code == 303
    location = response.headers["location"]
    assert location.startswith("/t/acme/apps/web/deploys/")
    deploy_id = location.rsplit("/", 1)[1]

    text, records = follow(site, deploy_id)
    assert records[-1]["status"] == "succeeded", text
    assert records[-1]["trigger"] == "panel: lou"
    assert records[-1]["commit"] == site.repo.head()
    assert "$ git " in text
    assert "step ran in" in text and "/releases/" in text  # the step ran in the release
    assert "<b>bold</b>" in text
    assert TOKEN not in text
    kept = site.api("GET", f"web/deploys/{deploy_id}").json()
    assert kept["output"] == text  # the live view showed exactly the kept output
    wait_for(lambda: "serving v1" in site.tail()[-3:])

    page = site.client.get(location)
    assert page.status_code == 200
    assert "step ran in" in page.text and "succeeded" in page.text
    assert "&lt;b&gt;bold&lt;/b&gt;" in page.text and "<b>bold" not in page.text
    assert "data-ws=" not in page.text  # finished: nothing to follow
    history = site.api("GET", "web/deploys").json()
    assert [(d["id"], d["status"]) for d in history] == [(deploy_id, "succeeded")]
    releases = site.api("GET", "web/releases").json()
    assert len(releases) == 1 and releases[0]["current"] is True
    deploy_page = site.client.get("/t/acme/apps/web/deploy").text
    assert f'href="/t/acme/apps/web/deploys/{deploy_id}"' in deploy_page
    assert "serving</span>" in deploy_page
    assert ("lou", "app.deploy", "web", "ok") in [row[:4] for row in audit_rows(site.panel)]


def test_a_running_deploy_page_follows_live_and_a_failed_step_keeps_the_release(
    site: Site,
) -> None:
    assert site.form("/t/acme/apps/web/deploy/source", source_form(site)).status_code == 303
    first = site.api("POST", "web/deploys", {}).json()["deploy"]["id"]
    assert site.finished(first)["deploy"]["status"] == "succeeded"
    wait_for(lambda: "serving v1" in site.tail()[-3:])

    # A slow step that then fails: the page is opened while it runs.
    slow = "python3 -c 'import time; print(\"working\", flush=True); time.sleep(1.5); exit(3)'"
    form = source_form(site, steps=slow)
    assert site.form("/t/acme/apps/web/deploy/source", form).status_code == 303
    site.repo.commit({"app/VERSION": "v2\n"}, "v2")
    second = site.api("POST", "web/deploys", {"ref": "main"})
    assert second.status_code == 202, second.text
    deploy_id = second.json()["deploy"]["id"]
    wait_for(lambda: "working" in site.api("GET", f"web/deploys/{deploy_id}").json()["output"])
    page = site.client.get(f"/t/acme/apps/web/deploys/{deploy_id}").text
    assert f'data-ws="/t/acme/apps/web/deploys/{deploy_id}/ws"' in page
    assert "working" in page  # without JavaScript: the output so far

    text, records = follow(site, deploy_id)
    final = records[-1]
    assert final["status"] == "failed" and final["error"]
    assert "working" in text
    releases = site.api("GET", "web/releases").json()
    assert [r["current"] for r in releases] == [True]  # the failed build left nothing
    time.sleep(0.5)
    assert "serving v1" in site.tail()[-3:]  # the old release still serves
    history = site.api("GET", "web/deploys").json()
    assert [d["status"] for d in history] == ["failed", "succeeded"]


def test_rollback_goes_back_to_an_earlier_release(site: Site) -> None:
    form = source_form(site, steps="")
    assert site.form("/t/acme/apps/web/deploy/source", form).status_code == 303
    first = site.api("POST", "web/deploys", {}).json()["deploy"]["id"]
    assert site.finished(first)["deploy"]["status"] == "succeeded"
    site.repo.commit({"app/VERSION": "v2\n"}, "v2")
    second = site.api("POST", "web/deploys", {}).json()["deploy"]["id"]
    assert site.finished(second)["deploy"]["status"] == "succeeded"
    wait_for(lambda: "serving v2" in site.tail()[-3:])
    releases = site.api("GET", "web/releases").json()
    assert [r["current"] for r in releases] == [True, False]
    older = releases[1]["id"]

    page = site.client.get("/t/acme/apps/web/deploy").text
    assert f'name="release" value="{older}"' in page and "data-confirm=" in page
    response = site.form("/t/acme/apps/web/rollback", {"release": older})
    assert response.status_code == 303, response.text
    rollback_id = response.headers["location"].rsplit("/", 1)[1]
    record = site.finished(rollback_id)["deploy"]
    assert record["kind"] == "rollback" and record["status"] == "succeeded"
    assert record["trigger"] == "panel: lou"
    wait_for(lambda: "serving v1" in site.tail()[-3:])
    current = [r["id"] for r in site.api("GET", "web/releases").json() if r["current"]]
    assert current == [older]

    bad = site.form("/t/acme/apps/web/rollback", {"release": "../../etc"})
    assert bad.status_code == 303  # back to the tab with the message
    assert site.api("POST", "web/rollback", {"release": "no/such"}).status_code == 422
    rows = [row[:4] for row in audit_rows(site.panel) if row[1] == "app.rollback"]
    assert rows == [("lou", "app.rollback", "web", "ok"), ("lou", "app.rollback", "web", "failed"),
                    ("lou", "app.rollback", "web", "failed")]  # fmt: skip


def test_the_deploy_key_is_made_once_and_only_its_public_half_is_shown(site: Site) -> None:
    page = site.client.get("/t/acme/apps/web/deploy").text
    assert "Generate a deploy key" in page
    response = site.form("/t/acme/apps/web/deploy/key", {})
    assert response.status_code == 303
    page = site.client.get("/t/acme/apps/web/deploy").text
    assert "ssh-ed25519 AAAA" in page and "PRIVATE KEY" not in page
    key = site.api("POST", "web/deploy/key").json()["public_key"]
    assert key.startswith("ssh-ed25519 ") and key.split()[1] in page  # the same key
    assert site.api("GET", "web/deploy").json()["public_key"] == key
    assert ("lou", "app.deploy.key", "web", "ok") in [r[:4] for r in audit_rows(site.panel)]


# --- who may do what ---------------------------------------------------------------------


def test_access_reads_history_and_output_but_changes_nothing(site: Site) -> None:
    assert site.form("/t/acme/apps/web/deploy/source", source_form(site)).status_code == 303
    deploy_id = site.api("POST", "web/deploys", {}).json()["deploy"]["id"]
    site.finished(deploy_id)

    viewer = TestClient(site.client.app)
    csrf = login(viewer, "vic", PASSWORD)
    page = viewer.get("/t/acme/apps/web/deploy")
    assert page.status_code == 200
    assert deploy_id in page.text
    assert 'action="/t/acme/apps/web/deploys"' not in page.text  # no Deploy now
    assert "/deploy/source" not in page.text and "Rollback" not in page.text
    # The overview of a git app offers the Deploy tab to a viewer too.
    assert 'href="/t/acme/apps/web/deploy"' in viewer.get("/t/acme/apps/web").text
    assert viewer.get(f"/t/acme/apps/web/deploys/{deploy_id}").status_code == 200
    assert viewer.get(f"/api/v1/tenants/acme/apps/web/deploys/{deploy_id}").status_code == 200
    headers = {"Origin": ORIGIN, "X-CSRF-Token": csrf}
    for path in ("deploys", "rollback", "deploy/key"):
        assert viewer.post(f"/t/acme/apps/web/{path}", headers=headers).status_code == 403
        api = viewer.post(f"/api/v1/tenants/acme/apps/web/{path}", headers=headers, json={})
        assert api.status_code == 403, path
    assert viewer.post("/t/acme/apps/web/deploy/source", headers=headers).status_code == 403
    assert len(site.api("GET", "web/deploys").json()) == 1  # nothing was deployed


def test_a_deploy_stream_closes_when_its_session_ends(site: Site) -> None:
    """SPEC 2.4: the output stream re-checks the session and closes (4401) once it is
    gone, while the deploy itself goes on."""
    slow = "python3 -c 'import time; print(\"long step\", flush=True); time.sleep(15)'"
    form = source_form(site, steps=slow)
    assert site.form("/t/acme/apps/web/deploy/source", form).status_code == 303
    deploy_id = site.api("POST", "web/deploys", {}).json()["deploy"]["id"]
    with site.client.websocket_connect(
        f"/t/acme/apps/web/deploys/{deploy_id}/ws", headers={"Origin": ORIGIN}
    ) as ws:
        text = ""
        while "long step" not in text:
            message = ws.receive_json()
            text = message.get("output", text) + message.get("append", "")
        logout = site.form("/logout", {})
        assert logout.status_code == 303
        with pytest.raises(WebSocketDisconnect) as closed:
            for _ in range(1000):
                assert "error" not in ws.receive_json()
        assert closed.value.code == 4401
    site.client.cookies.clear()
    site.csrf = login(site.client, "lou")
    record = site.api("GET", f"web/deploys/{deploy_id}").json()["deploy"]
    assert record["status"] == "running"  # the stream ended, not the deploy
    assert site.finished(deploy_id)["deploy"]["status"] == "succeeded"


def test_unknown_apps_and_deploys_answer_404(site: Site) -> None:
    assert site.client.get("/t/acme/apps/ghost/deploy").status_code == 404
    assert site.client.get("/t/acme/apps/web/deploys/nope").status_code == 404
    assert site.client.get("/t/acme/apps/web/deploys/..%2f..%2fetc").status_code == 404
    assert site.api("GET", "ghost/deploys").status_code == 404
    assert site.api("POST", "ghost/deploys", {}).status_code == 404
    with (
        pytest.raises(WebSocketDisconnect) as closed,
        site.client.websocket_connect(
            "/t/acme/apps/web/deploys/nope/ws", headers={"Origin": ORIGIN}
        ) as ws,
    ):
        assert "error" in ws.receive_json()
        ws.receive_json()
    assert closed.value.code == 4404
    # A deploy of an app without a git source is refused, saying why.
    refused = site.api("POST", "web/deploys", {})
    assert refused.status_code == 422 and "git" in refused.json()["error"]


def test_the_deploy_websocket_wants_the_panels_own_origin(site: Site) -> None:
    with (
        pytest.raises(WebSocketDisconnect) as closed,
        site.client.websocket_connect(
            "/t/acme/apps/web/deploys/x/ws", headers={"Origin": "https://evil.example"}
        ) as ws,
    ):
        ws.receive_json()
    assert closed.value.code == 4403


# --- reading what the user typed ---------------------------------------------------------


def test_steps_are_split_into_argv_lists_never_for_a_shell() -> None:
    text = (
        "npm run build\n\n  python manage.py collectstatic --noinput \n"
        "echo 'a b' \"$HOME\" ; rm -rf /"
    )
    assert dsvc.parse_steps(text) == [
        ["npm", "run", "build"],
        ["python", "manage.py", "collectstatic", "--noinput"],
        ["echo", "a b", "$HOME", ";", "rm", "-rf", "/"],
    ]
    assert dsvc.parse_steps([["a", "b c"], "d 'e f'"]) == [["a", "b c"], ["d", "e f"]]
    assert dsvc.parse_steps("") == [] and dsvc.parse_steps(None) == []
    for bad, where in (
        ("ok\necho 'x", "line 2"),
        ([[]], "step 1"),
        ([["a", 1]], "step 1"),
        (3, ""),
    ):
        with pytest.raises(FieldErrors) as caught:
            dsvc.parse_steps(bad)
        assert set(caught.value.errors) == {"steps"} and where in caught.value.errors["steps"]


def test_release_paths_stay_inside_the_release() -> None:
    assert dsvc.release_path(" app/main.py ", "script", required=True) == "app/main.py"
    assert dsvc.release_path("./app/../main.py", "script", required=True) == "main.py"
    assert dsvc.release_path("", "cwd", required=False) is None
    assert dsvc.release_path(".", "cwd", required=False) is None
    for value in ("/etc/passwd", "../x", "a/../../x", "a b", "", "."):
        with pytest.raises(FieldErrors) as caught:
            dsvc.release_path(value, "script", required=True)
        assert set(caught.value.errors) == {"script"}, value


def test_source_errors_name_the_form_field() -> None:
    base = {"repo": "https://example.com/a.git", "script": "x.py"}
    for changes, field in (
        ({"repo": "git://example.com/a.git"}, "repo"),
        ({"branch": "a..b"}, "branch"),
        ({"keep": "101"}, "keep"),
        ({"timeout": "2d"}, "timeout"),
        ({"steps": [["ok"], "bad 'quote"]}, "steps"),
        ({"install": "maybe"}, "install"),
    ):
        with pytest.raises(FieldErrors) as caught:
            dsvc.source_of({**base, **changes}, form=False)
        assert field in caught.value.errors, changes
    with pytest.raises(FieldErrors) as caught:
        dsvc.source_of({**base, "colour": "red"}, form=False)
    assert "colour" in caught.value.errors
    source = dsvc.source_of({**base, "keep": "7", "install": ""}, form=True)
    assert source.keep == 7 and source.install is False
    assert dsvc.source_of(base, form=False).install is True
