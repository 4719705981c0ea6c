"""A secret saved in a real browser is never shown again (issue 8, "How it is shown").

A real panel (uvicorn on loopback) and a real tenant daemon started as the panel starts
one (CORRAL_TENANT set); headless Chromium logs in as a tenant manager, adds a secret on
the app's Environment tab, restarts the app from the page that follows, replaces the
secret, restarts again, then visits every page of the app and of the tenant. The app
proves it sees each value by writing its SHA-256 to a file.

Searched for every value and its base64 and hex forms (tests/support/leaks.py): each
page's HTML and text, every form field's live value, the pages' storage and the cookies,
the body and headers of every HTTP response Chromium received, every WebSocket frame,
the panel's log records, its database file and the tenant's home. The request that
carried the value to the panel is the positive control: the scan must find it there.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Error as PlaywrightError
from playwright.sync_api import Page, Request, Response, WebSocket, expect

from corral.config.model import AppConfig
from corral.panel.gateway import NoAutostart
from corral.paths import Home
from tests.conftest import Corral, wait_for
from tests.support.browser import Tab
from tests.support.leaks import SPECIAL, LeakScan, RecordCollector, leak_value
from tests.support.panel import add_tenant, add_user, grant, make_app, serve, short_dir

pytestmark = pytest.mark.slow

TENANT = "acme"
APP = "web"
NAME = "LEAK_BROWSER"
MANAGER = "mgr"
PASSWORD = "a manager's long passphrase"
SEER = """\
import hashlib, json, os, pathlib, sys, time

out = pathlib.Path(sys.argv[1])
seen = {k: hashlib.sha256(v.encode()).hexdigest() for k, v in os.environ.items()
        if k.startswith("LEAK_")}
tmp = out.with_name(out.name + ".tmp")
tmp.write_text(json.dumps({"pid": os.getpid(), "seen": seen}))
os.replace(tmp, out)
print("started with", sorted(seen), "and", os.environ.get("PLAIN_CONTROL"), flush=True)
while True:
    time.sleep(1)
"""
CONTROL = leak_value("crlPLAIN")
FIELD_VALUES = "() => [...document.querySelectorAll('input, textarea')].map(e => e.value)"
STORAGE = "() => JSON.stringify([Object.entries(localStorage), Object.entries(sessionStorage)])"


def sha(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


@dataclass
class Scans:
    """The search for the secrets, and the same search for a control value: a plain
    variable's, which the app prints. Where the control is found, that place was really
    searched; the secrets must be found nowhere."""

    secrets: LeakScan
    control: LeakScan

    def text(self, where: str, data: str | bytes) -> None:
        self.secrets.text(where, data)
        self.control.text(where, data)

    def control_found(self) -> set[str]:
        return {h.where for h in self.control.hits}


@dataclass
class Traffic:
    """What Chromium sent and received: requests with a body, responses, WebSocket frames."""

    sent: list[tuple[str, bytes]] = field(default_factory=list)
    responses: list[Response] = field(default_factory=list)
    """Received, body not read yet (read by `drain` while the page that made them is open:
    Chromium forgets the bodies of earlier pages)."""
    read: int = 0
    unreadable: list[str] = field(default_factory=list)
    frames: list[tuple[str, bytes]] = field(default_factory=list)

    def on_request(self, request: Request) -> None:
        body = request.post_data_buffer
        if body:
            self.sent.append((f"{request.method} {request.url}", body))

    def on_response(self, response: Response) -> None:
        self.responses.append(response)

    def on_websocket(self, socket: WebSocket) -> None:
        def received(payload: str | bytes) -> None:
            data = payload.encode() if isinstance(payload, str) else payload
            self.frames.append((f"WebSocket {socket.url}", data))

        socket.on("framereceived", received)

    def drain(self, scan: Scans) -> None:
        pending, self.responses = self.responses, []
        for response in pending:
            label = f"{response.request.method} {response.url} -> {response.status}"
            scan.text(f"{label}: headers", json.dumps(response.headers))
            if 300 <= response.status < 400:
                continue  # a redirect has no body
            try:
                body = response.body()
            except PlaywrightError as exc:
                self.unreadable.append(f"{label}: {exc}")
                continue
            self.read += 1
            scan.text(f"{label}: body", body)


@dataclass
class Site:
    corral: Corral
    tenant_home: Path
    panel_home: Path
    base: str = ""

    def url(self, path: str) -> str:
        return self.base + path

    def pid(self, not_pid: int | None = None) -> int:
        def ready() -> int | None:
            record = self.corral.proc(APP)
            if record["status"] == "online" and record["pid"] and record["pid"] != not_pid:
                return int(record["pid"])
            return None

        pid: int = wait_for(ready, timeout=30)
        return pid

    def seen(self, pid: int) -> dict[str, str]:
        path = self.tenant_home / "seen.json"

        def current() -> dict[str, Any] | None:
            try:
                data: dict[str, Any] = json.loads(path.read_text())
            except (OSError, ValueError):
                return None
            return data if data["pid"] == pid else None

        seen: dict[str, str] = wait_for(current, timeout=30)["seen"]
        return seen


@pytest.fixture
def site() -> Iterator[Site]:
    base = short_dir("csb")
    tenant_home = base / TENANT
    (tenant_home / "app").mkdir(parents=True)
    (tenant_home / "app" / "seer.py").write_text(SEER)
    env = {
        "PATH": os.environ.get("PATH", os.defpath),
        "LANG": "C.UTF-8",
        "CORRAL_HOME": str(tenant_home / ".corral"),
        "HOME": str(tenant_home),
        "PYTHONDONTWRITEBYTECODE": "1",
        "CORRAL_TENANT": TENANT,  # as the panel's starter sets it
    }
    corral = Corral(home=Home(tenant_home / ".corral"), env=env, workdir=tenant_home)
    try:
        corral.start_daemon()
        config = AppConfig(
            name=APP,
            script=str(tenant_home / "app" / "seer.py"),
            args=[str(tenant_home / "seen.json")],
            interpreter=sys.executable,
            cwd=str(tenant_home),
        )
        corral.call("start", apps=[config.to_dict()], cli_env={"PATH": env["PATH"]})
        yield Site(corral, tenant_home, base / "panel")
    finally:
        corral.shutdown()
        shutil.rmtree(base, ignore_errors=True)


def _log_in(page: Page, site: Site, scan: Scans, traffic: Traffic) -> None:
    page.goto(site.url(f"/login?next=/t/{TENANT}/apps/{APP}/env"))
    traffic.drain(scan)
    form = page.locator("form[action='/login']")
    form.locator("input[name=username]").fill(MANAGER)
    form.locator("input[name=password]").fill(PASSWORD)
    form.get_by_role("button", name="Log in").click()
    page.wait_for_url(site.url(f"/t/{TENANT}/apps/{APP}/env"))


def _restart_from_the_pending_card(page: Page, site: Site) -> int:
    old = site.pid()
    card = page.locator("[data-pending]")
    expect(card).to_be_visible()
    card.locator("form[data-verb=restart] button").click()
    page.wait_for_load_state()
    return site.pid(not_pid=old)


def _look(page: Page, scan: Scans, traffic: Traffic, label: str) -> None:
    """Everything the page holds right now, and every answer received since the last look."""
    traffic.drain(scan)
    scan.text(f"{label}: HTML", page.content())
    scan.text(f"{label}: text", page.locator("body").inner_text())
    scan.text(f"{label}: form fields", json.dumps(page.evaluate(FIELD_VALUES)))
    scan.text(f"{label}: storage", page.evaluate(STORAGE))


def test_a_secret_saved_in_the_browser_is_never_shown_again(
    site: Site, tab: Tab, tmp_path: Path
) -> None:
    collector = RecordCollector()
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(collector)
    root.setLevel(logging.DEBUG)
    first, second = leak_value(), leak_value(special=SPECIAL)
    scan = Scans(LeakScan([first, second]), LeakScan([CONTROL]))
    traffic = Traffic()
    tab.context.on("request", traffic.on_request)
    tab.context.on("response", traffic.on_response)
    page = tab.page
    page.on("websocket", traffic.on_websocket)
    try:
        app, panel = make_app(site.panel_home, starter=NoAutostart())
        try:
            tenant = add_tenant(panel, TENANT, site.tenant_home)
            manager = add_user(panel, MANAGER, password=PASSWORD)
            grant(panel, manager, tenant, ("access", "control", "logs", "manage"))
            with serve(app) as base:
                site.base = base
                _browse(page, site, scan, traffic, first, second)
                _look_everywhere(page, site, scan, traffic)
                scan.text("cookies", json.dumps(tab.context.cookies()))
        finally:
            panel.database.close()
    finally:
        root.removeHandler(collector)
        root.setLevel(old_level)
    # The positive control: the value went to the panel in a request, and the scan saw it.
    sent = LeakScan([first, second])
    for label, body in traffic.sent:
        sent.text(label, body)
    assert {h.form.rsplit("#", 1)[1] for h in sent.hits} == {"1", "2"}, sent.hits
    _read_traffic(traffic, scan)
    assert traffic.frames, "no WebSocket frame was received: the live pages did not run"
    scan.text("the panel's log records", "\n".join(collector.lines))
    searched = [p.name for p in scan.secrets.tree(site.panel_home)]
    assert "panel.db" in searched, searched
    scan.secrets.tree(site.tenant_home)
    scan.secrets.assert_clean()
    assert len(scan.secrets.places) > 50, scan.secrets.places
    # The control was found in the page, the answers and the WebSocket frames.
    found = scan.control_found()
    env, api = f"/t/{TENANT}/apps/{APP}/env", f"/api/v1/tenants/{TENANT}/apps/{APP}"
    for where in (f"{env}: HTML", f"{env}: text", f"GET {site.base}{api}/env -> 200: body",
                  f"GET {site.base}{api}/logs -> 200: body"):  # fmt: skip
        assert where in found, f"{where}: not searched? the control is not there: {found}"
    assert any(w.startswith("WebSocket") for w in found), f"WebSocket frames? {found}"
    # Opening a JSON answer as a page makes Chromium ask for /favicon.ico: not a problem.
    problems = [p for p in tab.watch.problems() if "/favicon.ico" not in p]
    assert not problems, "the pages had problems:\n  " + "\n  ".join(problems)


def _browse(page: Page, site: Site, scan: Scans, traffic: Traffic, first: str, second: str) -> None:
    _log_in(page, site, scan, traffic)
    _look(page, scan, traffic, "the Environment tab")
    # First the control: a plain variable.
    form = page.locator("form[data-env-form]")
    form.locator("#f-name").fill("PLAIN_CONTROL")
    form.locator("#f-secret").uncheck()
    expect(form.locator("#f-value")).to_have_attribute("type", "text")
    form.locator("#f-value").fill(CONTROL)
    form.get_by_role("button", name="Save").click()
    page.wait_for_url(site.url(f"/t/{TENANT}/apps/{APP}/env?pending=1"))
    _look(page, scan, traffic, "after saving the plain variable")
    assert site.seen(_restart_from_the_pending_card(page, site)) == {}
    _look(page, scan, traffic, "after the plain variable")
    # Then the secret.
    form.locator("#f-name").fill(NAME)
    secret = form.locator("#f-secret")
    if not secret.is_checked():
        secret.check()
    expect(form.locator("#f-value")).to_have_attribute("type", "password")
    form.locator("#f-value").fill(first)
    form.get_by_role("button", name="Save").click()
    page.wait_for_url(site.url(f"/t/{TENANT}/apps/{APP}/env?pending=1"))
    _look(page, scan, traffic, "after saving")
    row = page.locator(f"tr[data-secret={NAME}]")
    expect(row).to_be_visible()
    pid = _restart_from_the_pending_card(page, site)
    assert site.seen(pid) == {NAME: sha(first)}, "the app does not see the secret"
    _look(page, scan, traffic, "after the restart")
    # Replace it with another value, from the secret's row.
    page.goto(site.url(f"/t/{TENANT}/apps/{APP}/env"))
    _look(page, scan, traffic, "the Environment tab again")
    row = page.locator(f"tr[data-secret={NAME}]")
    row.locator("summary", has_text="Replace").click()
    row.locator("input[name=value]").fill(second)
    row.get_by_role("button", name="Replace").click()
    page.wait_for_url(site.url(f"/t/{TENANT}/apps/{APP}/env?pending=1"))
    _look(page, scan, traffic, "after replacing")
    pid = _restart_from_the_pending_card(page, site)
    assert site.seen(pid) == {NAME: sha(second)}, "the app does not see the new value"
    _look(page, scan, traffic, "after the second restart")


def _look_everywhere(page: Page, site: Site, scan: Scans, traffic: Traffic) -> None:
    paths = (
        "/",
        f"/t/{TENANT}",
        f"/t/{TENANT}/apps/{APP}",
        f"/t/{TENANT}/apps/{APP}/logs",
        f"/t/{TENANT}/apps/{APP}/env",
        f"/t/{TENANT}/apps/{APP}/config",
        f"/t/{TENANT}/apps/new",
        "/account",
        f"/api/v1/tenants/{TENANT}/apps",
        f"/api/v1/tenants/{TENANT}/apps/{APP}",
        f"/api/v1/tenants/{TENANT}/apps/{APP}/env",
        f"/api/v1/tenants/{TENANT}/apps/{APP}/config",
        f"/api/v1/tenants/{TENANT}/apps/{APP}/logs",
    )
    for path in paths:
        answer = page.goto(site.url(path))
        assert answer is not None and answer.status == 200, (path, answer and answer.status)
        page.wait_for_load_state("networkidle")
        if path.endswith("/logs") and path.startswith("/t/"):
            # A start while the page follows the log: its line comes in a WebSocket frame.
            shown = page.locator("pre.logs")
            expect(shown).to_contain_text("started with")
            before = shown.inner_text().count("started with")
            site.corral.call("restart", target=APP)
            page.wait_for_function(
                "n => document.querySelector('pre.logs').innerText.split('started with')"
                ".length - 1 > n",
                arg=before,
            )
        _look(page, scan, traffic, path)
    page.goto(site.url(f"/t/{TENANT}/apps/{APP}/env"))
    expect(page.locator(f"tr[data-secret={NAME}]")).to_contain_text(NAME)


def _read_traffic(traffic: Traffic, scan: Scans) -> None:
    traffic.drain(scan)
    assert not traffic.unreadable, "bodies not searched:\n" + "\n".join(traffic.unreadable)
    assert traffic.read > 20, traffic.read
    for label, data in traffic.frames:
        scan.text(label, data)
