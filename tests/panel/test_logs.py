"""An app's logs in the panel: the page, its WebSocket, download, clear and the JSON API,
against a real tenant daemon running real apps that print to stdout and stderr.

The panel never starts a daemon here (NoAutostart): the fixture starts the tenant's
daemon itself and stops it, and every app under it, at the end even on failure.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import socket
import tempfile
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from playwright.sync_api import expect
from sqlalchemy import select
from starlette.applications import Starlette
from starlette.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from corral.panel.app import create_app
from corral.panel.config import PanelConfig
from corral.panel.db.engine import Database
from corral.panel.db.models import AuditEntry
from corral.panel.gateway import NoAutostart
from corral.panel.routes.logs import LineBuffer, download_name, download_text
from corral.panel.services import Panel, TenantRef
from corral.paths import Home
from tests.conftest import Corral, wait_for
from tests.support.browser import Tab
from tests.support.panel import ORIGIN, PASSWORD, add_tenant, add_user, grant, login

SCRIPT_LINE = "<script>alert(1)</script>"
OUT_LINES = [f"out {i:04d}" for i in range(1, 301)] + [SCRIPT_LINE]
ERR_LINES = [f"err {i:04d}" for i in range(1, 6)]

FIXED = f"""
import sys, time
for line in {OUT_LINES!r}:
    print(line)
for line in {ERR_LINES!r}:
    print(line, file=sys.stderr)
sys.stdout.flush()
sys.stderr.flush()
time.sleep(600)
"""

# Ticks on both streams so that a follower always has something coming (no receive
# waits forever); says the text of a file called `say` on both streams when one appears.
CHATTY = """
import itertools, os, sys, time
for i in itertools.count():
    print(f"tick {i}", flush=True)
    print(f"tock {i}", file=sys.stderr, flush=True)
    try:
        with open("say") as f:
            text = f.read()
        os.unlink("say")
    except FileNotFoundError:
        pass
    else:
        print(text, flush=True)
        print("E:" + text, file=sys.stderr, flush=True)
    time.sleep(0.05)
"""

MESSAGES_MAX = 5000
"""A follower gives up after this many messages (the app ticks 20 times a second)."""


@dataclass
class Site:
    client: TestClient
    panel: Panel
    tenant: TenantRef
    corral: Corral
    csrf: str

    def tail(self, app: str, lines: int = 1000, stream: str = "both") -> list[dict[str, Any]]:
        return self.panel.daemon(self.tenant).tail(app, lines, stream)  # type: ignore[arg-type]

    def start(self, name: str, code: str, settled: Callable[[list[dict[str, Any]]], bool]) -> None:
        self.corral.start_app(name, code)
        wait_for(lambda: settled(self.tail(name)))

    def say(self, text: str) -> None:
        """Make the chatty app print `text` (atomically: it never reads half a file)."""
        staging = self.corral.workdir / "say.tmp"
        staging.write_text(text, encoding="utf-8")
        staging.rename(self.corral.workdir / "say")


@pytest.fixture
def tenant_corral() -> Iterator[Corral]:
    """A tenant home (short path: the socket's is limited) with its daemon running."""
    base = Path(tempfile.mkdtemp(prefix="cpl", dir="/tmp"))
    home = base / "t"
    home.mkdir()
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


@contextlib.contextmanager
def open_site(panel_home: Path, corral: Corral, database_url: str = "") -> Iterator[Site]:
    """The panel on its own database; tenant `acme` (the daemon's home); user `lou` with
    the `logs` right on it, logged in."""
    config = PanelConfig(
        home=panel_home, database_url=database_url, allowed_hosts=("testserver", "127.0.0.1")
    )
    app = create_app(
        config, database=Database.open(config.url), starter=NoAutostart(), background=()
    )
    panel: Panel = app.state.panel
    try:
        acme = add_tenant(panel, "acme", corral.workdir)
        grant(panel, add_user(panel, "lou"), acme, ["access", "logs"])
        with TestClient(app) as client:
            yield Site(client, panel, acme, corral, login(client, "lou"))
    finally:
        panel.database.close()


@pytest.fixture
def site(tmp_path: Path, tenant_corral: Corral) -> Iterator[Site]:
    with open_site(tmp_path / "panel", tenant_corral) as opened:
        yield opened


def has_all(records: list[dict[str, Any]]) -> bool:
    return len(records) == len(OUT_LINES) + len(ERR_LINES)


def api(site: Site, app: str, **query: str | int) -> Any:
    response = site.client.get(f"/api/v1/tenants/acme/apps/{app}/logs", params=query)
    assert response.status_code == 200, response.text
    return response.json()


# --- tail ------------------------------------------------------------------------------


def test_the_api_gives_the_end_of_each_stream(site: Site) -> None:
    site.start("fixed", FIXED, has_all)

    everything = api(site, "fixed", lines=1000)
    assert everything == [
        *({"instance": 0, "stream": "out", "line": line} for line in OUT_LINES),
        *({"instance": 0, "stream": "err", "line": line} for line in ERR_LINES),
    ]
    assert len(api(site, "fixed")) == 100 + len(ERR_LINES)  # the default: 100 per file

    out = api(site, "fixed", lines=10, stream="out")
    assert [r["line"] for r in out] == OUT_LINES[-10:]
    assert {r["stream"] for r in out} == {"out"}
    err = api(site, "fixed", lines=3, stream="err")
    assert [(r["stream"], r["line"]) for r in err] == [("err", line) for line in ERR_LINES[-3:]]
    both = api(site, "fixed", lines=1)
    assert [(r["stream"], r["line"]) for r in both] == [("out", SCRIPT_LINE), ("err", "err 0005")]


def test_the_page_shows_the_last_200_lines_as_text(site: Site) -> None:
    site.start("fixed", FIXED, has_all)

    page = site.client.get("/t/acme/apps/fixed/logs")
    assert page.status_code == 200
    html = page.text
    # 200 lines per file: out 0102..0300 and the script line.
    assert "out 0102" in html and "out 0300" in html
    assert "out 0101" not in html
    assert "err 0001" in html and "err 0005" in html
    assert SCRIPT_LINE not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert 'data-ws="/t/acme/apps/fixed/logs/ws?stream=both"' in html
    assert 'class="ln err"' in html
    for stream in ("out", "err"):
        assert f'href="/t/acme/apps/fixed/logs/download?stream={stream}"' in html
    assert 'action="/t/acme/apps/fixed/logs/clear"' in html and "data-confirm=" in html

    only_err = site.client.get("/t/acme/apps/fixed/logs", params={"stream": "err"}).text
    assert "err 0003" in only_err and "out 0300" not in only_err
    assert 'data-ws="/t/acme/apps/fixed/logs/ws?stream=err"' in only_err
    assert "download?stream=out" not in only_err


def test_an_unknown_app_answers_404(site: Site) -> None:
    assert site.client.get("/t/acme/apps/ghost/logs").status_code == 404
    response = site.client.get("/api/v1/tenants/acme/apps/ghost/logs")
    assert response.status_code == 404
    assert "ghost" in response.json()["error"]
    assert site.client.get("/t/acme/apps/ghost/logs/download").status_code == 404


# --- download --------------------------------------------------------------------------


def test_download_is_the_log_as_a_text_attachment(site: Site) -> None:
    site.start("fixed", FIXED, has_all)

    response = site.client.get("/t/acme/apps/fixed/logs/download", params={"stream": "out"})
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/plain; charset=utf-8"
    disposition = response.headers["content-disposition"]
    assert re.fullmatch(r'attachment; filename="acme-fixed-out-\d{8}T\d{6}Z\.log"', disposition)
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.text == "\n".join(OUT_LINES) + "\n"

    err = site.client.get("/t/acme/apps/fixed/logs/download", params={"stream": "err"})
    assert err.text == "\n".join(ERR_LINES) + "\n"
    assert "-err-" in err.headers["content-disposition"]
    default = site.client.get("/t/acme/apps/fixed/logs/download")
    assert default.text == response.text  # stdout unless asked


def test_download_names_and_instances() -> None:
    assert download_name("acme", "web", "out", 0) == "acme-web-out-19700101T000000Z.log"
    assert download_name('a"b', "c\r\nd", "err", 0) == "a_b-c_d-err-19700101T000000Z.log"
    records = [
        {"instance": 0, "stream": "out", "line": "a"},
        {"instance": 1, "stream": "out", "line": "b"},
    ]
    assert download_text(records) == "==> instance 0 <==\na\n==> instance 1 <==\nb\n"
    assert download_text(records[:1]) == "a\n"
    assert download_text([]) == ""


# --- clear -----------------------------------------------------------------------------


def audit_rows(panel: Panel) -> list[tuple[str, str, str | None, str | None, str]]:
    with panel.database.session() as db:
        rows = db.scalars(select(AuditEntry).order_by(AuditEntry.id)).all()
        return [(r.actor, r.action, r.tenant, r.app, r.result) for r in rows if r.action != "login"]


def test_clear_empties_the_logs_and_is_audited(
    tmp_path: Path, tenant_corral: Corral, database_url: str
) -> None:
    with open_site(tmp_path / "panel", tenant_corral, database_url) as site:
        site.start("fixed", FIXED, has_all)

        response = site.client.post(
            "/t/acme/apps/fixed/logs/clear",
            data={"csrf_token": site.csrf},
            headers={"Origin": ORIGIN},
            follow_redirects=False,
        )
        assert response.status_code == 303
        assert response.headers["location"] == "/t/acme/apps/fixed/logs?cleared=1"
        assert api(site, "fixed") == []
        page = site.client.get(response.headers["location"]).text
        assert "Logs cleared." in page and "No log lines yet." in page
        assert audit_rows(site.panel) == [("lou", "logs.clear", "acme", "fixed", "ok")]

        cleared = site.client.post(
            "/api/v1/tenants/acme/apps/fixed/logs/clear",
            headers={"Origin": ORIGIN, "X-CSRF-Token": site.csrf},
        )
        assert cleared.status_code == 200
        assert cleared.json() == {"app": "fixed", "files": 2}

        missing = site.client.post(
            "/api/v1/tenants/acme/apps/ghost/logs/clear",
            headers={"Origin": ORIGIN, "X-CSRF-Token": site.csrf},
        )
        assert missing.status_code == 404
        assert audit_rows(site.panel)[1:] == [
            ("lou", "logs.clear", "acme", "fixed", "ok"),
            ("lou", "logs.clear", "acme", "ghost", "failed"),
        ]


def test_clear_needs_the_csrf_token(site: Site) -> None:
    site.start("fixed", FIXED, has_all)
    response = site.client.post(
        "/t/acme/apps/fixed/logs/clear", data={}, headers={"Origin": ORIGIN}
    )
    assert response.status_code == 403
    assert len(api(site, "fixed", lines=1000)) == len(OUT_LINES) + len(ERR_LINES)


# --- live lines ------------------------------------------------------------------------


class Follower:
    """Reads a log WebSocket line by line (a message carries a batch of lines)."""

    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self.waiting: list[dict[str, Any]] = []
        self.seen: list[dict[str, Any]] = []

    def until(self, found: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
        """The first line (from here on) that satisfies `found`."""
        for _ in range(MESSAGES_MAX):
            while self.waiting:
                line = self.waiting.pop(0)
                self.seen.append(line)
                if found(line):
                    return line
            message = self.ws.receive_json()
            assert "error" not in message, message
            self.waiting.extend(message.get("lines", []))
        raise AssertionError("the line never came")


def ws_headers(site: Site) -> dict[str, str]:
    cookie = site.client.cookies.get(site.panel.cookie_name)
    assert cookie
    return {"Origin": ORIGIN, "Cookie": f"{site.panel.cookie_name}={cookie}"}


def test_the_websocket_sends_new_lines_as_text(site: Site) -> None:
    site.start("chatty", CHATTY, lambda records: bool(records))
    payload = f"{SCRIPT_LINE} <img src=x onerror=alert(2)> ünïcode"
    url = "/t/acme/apps/chatty/logs/ws?stream=both"
    with site.client.websocket_connect(url, headers=ws_headers(site)) as ws:
        follower = Follower(ws)
        follower.until(lambda line: line["line"].startswith("tick"))  # subscribed
        site.say(payload)
        # stdout and stderr are two pipes: which of the two lines comes first is not fixed.
        got = [follower.until(lambda line: payload in line["line"]) for _ in range(2)]
        assert sorted(got, key=lambda line: line["stream"]) == [
            {"instance": 0, "stream": "err", "line": "E:" + payload},
            {"instance": 0, "stream": "out", "line": payload},
        ]


def test_the_websocket_sends_only_the_stream_asked_for(site: Site) -> None:
    site.start("chatty", CHATTY, lambda records: bool(records))
    url = "/t/acme/apps/chatty/logs/ws?stream=err"
    with site.client.websocket_connect(url, headers=ws_headers(site)) as ws:
        follower = Follower(ws)
        first = follower.until(lambda line: line["line"].startswith("tock"))
        number = int(first["line"].split()[1])
        follower.until(lambda line: line["line"] == f"tock {number + 20}")
    seen = follower.seen
    assert [line["line"] for line in seen[-21:]] == [f"tock {number + i}" for i in range(21)]
    assert {line["stream"] for line in seen} == {"err"}


def test_the_websocket_refuses_bad_input(site: Site) -> None:
    site.start("chatty", CHATTY, lambda records: bool(records))
    with site.client.websocket_connect(
        "/t/acme/apps/chatty/logs/ws?stream=all", headers=ws_headers(site)
    ) as ws:
        assert ws.receive_json() == {"error": "stream: expected out or err or both, not 'all'"}
        with pytest.raises(WebSocketDisconnect) as closed:
            ws.receive_json()
        assert closed.value.code == 4422
    with site.client.websocket_connect(
        "/t/acme/apps/ghost/logs/ws", headers=ws_headers(site)
    ) as ws:
        assert "ghost" in ws.receive_json()["error"]
        with pytest.raises(WebSocketDisconnect) as closed:
            ws.receive_json()
        assert closed.value.code == 4404
    with (
        pytest.raises(WebSocketDisconnect) as refused,
        site.client.websocket_connect(
            url="/t/acme/apps/chatty/logs/ws",
            headers={**ws_headers(site), "Origin": "http://evil.example"},
        ),
    ):
        pass
    assert refused.value.code == 4403


def test_the_websocket_says_when_the_daemon_goes_away(site: Site) -> None:
    site.start("chatty", CHATTY, lambda records: bool(records))
    url = "/t/acme/apps/chatty/logs/ws"
    with site.client.websocket_connect(url, headers=ws_headers(site)) as ws:
        Follower(ws).until(lambda line: line["line"].startswith("tick"))
        site.corral.call("kill")
        for _ in range(MESSAGES_MAX):
            message = ws.receive_json()
            if "error" in message:
                break
        assert "daemon" in message["error"]  # the gateway's own words
        with pytest.raises(WebSocketDisconnect) as closed:
            ws.receive_json()
        assert closed.value.code == 1011  # the page tries again later


def test_the_line_buffer_batches_and_keeps_the_newest() -> None:
    async def scenario() -> None:
        buffer = LineBuffer(limit=2500)
        for i in range(3000):
            buffer.add({"instance": 0, "stream": "out", "line": str(i)})
        buffer.add_dropped(7)
        messages = await buffer.next_batch()  # full already: no waiting
        assert messages[:2] == [{"skipped": 500}, {"dropped": 7}]
        batches = [m["lines"] for m in messages[2:]]
        assert [len(b) for b in batches] == [1000, 1000, 500]
        assert [line["line"] for b in batches for line in b] == [str(i) for i in range(500, 3000)]
        assert buffer.take() == [] and len(buffer) == 0

        buffer.add({"instance": 1, "stream": "err", "line": "one"})
        assert await buffer.next_batch() == [
            {"lines": [{"instance": 1, "stream": "err", "line": "one"}]}
        ]

    asyncio.run(scenario())


# --- bad input and rights ----------------------------------------------------------------


BAD_QUERIES = [
    ({"lines": "0"}, "lines", "expected a whole number from 1 to 10000, not 0"),
    ({"lines": "10001"}, "lines", "expected a whole number from 1 to 10000, not 10001"),
    ({"lines": "ten"}, "lines", "expected a whole number from 1 to 10000, not 'ten'"),
    ({"lines": "-5"}, "lines", "expected a whole number from 1 to 10000, not '-5'"),
    ({"lines": "1e3"}, "lines", "expected a whole number from 1 to 10000, not '1e3'"),
    ({"stream": "stdout"}, "stream", "expected out or err or both, not 'stdout'"),
    ({"stream": ""}, "stream", "expected out or err or both, not ''"),
]


def test_bad_api_parameters_give_422(site: Site) -> None:
    for query, field, message in BAD_QUERIES:
        response = site.client.get("/api/v1/tenants/acme/apps/any/logs", params=query)
        assert response.status_code == 422, query
        assert response.json() == {"error": f"{field}: {message}", "errors": {field: message}}


def test_bad_page_parameters_give_422(site: Site) -> None:
    page = site.client.get("/t/acme/apps/any/logs", params={"stream": "x"})
    assert page.status_code == 422
    assert "stream: expected out or err or both, not &#39;x&#39;" in page.text
    download = site.client.get("/t/acme/apps/any/logs/download", params={"stream": "both"})
    assert download.status_code == 422
    assert "stream: expected out or err, not &#39;both&#39;" in download.text


def test_logs_need_the_logs_right(site: Site) -> None:
    site.start("fixed", FIXED, has_all)
    grant(site.panel, add_user(site.panel, "ann"), site.tenant, ["access", "control", "manage"])
    with TestClient(site.client.app) as other:
        csrf = login(other, "ann")
        for url in (
            "/t/acme/apps/fixed/logs",
            "/t/acme/apps/fixed/logs/download",
            "/api/v1/tenants/acme/apps/fixed/logs",
        ):
            assert other.get(url).status_code == 403, url
        for url in ("/t/acme/apps/fixed/logs/clear", "/api/v1/tenants/acme/apps/fixed/logs/clear"):
            response = other.post(url, headers={"Origin": ORIGIN, "X-CSRF-Token": csrf})
            assert response.status_code == 403, url
        cookie = other.cookies.get(site.panel.cookie_name)
        with (
            pytest.raises(WebSocketDisconnect) as refused,
            other.websocket_connect(
                "/t/acme/apps/fixed/logs/ws",
                headers={"Origin": ORIGIN, "Cookie": f"{site.panel.cookie_name}={cookie}"},
            ),
        ):
            pass
        assert refused.value.code == 4403
    assert len(api(site, "fixed", lines=1000)) == len(OUT_LINES) + len(ERR_LINES)


# --- in a real browser -----------------------------------------------------------------


@contextlib.contextmanager
def serve(app: Starlette) -> Iterator[str]:
    """Run `app` on uvicorn on a free loopback port; stopped (and joined) at the end."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, name="test-uvicorn")
    thread.start()
    try:
        wait_for(lambda: server.started or not thread.is_alive())
        assert server.started, "uvicorn did not start"
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


AT_BOTTOM_AND_FULL = """() => {
  const v = document.querySelector("pre.logs");
  const below = v.scrollHeight - v.scrollTop - v.clientHeight;
  return v.scrollHeight > v.clientHeight + 100 && below < 30;
}"""


@pytest.mark.slow
def test_the_browser_follows_lines_as_text_and_clears(site: Site, tab: Tab) -> None:
    site.start("chatty", CHATTY, lambda records: bool(records))
    page = tab.page
    with serve(site.client.app) as base:  # type: ignore[arg-type]
        page.goto(f"{base}/login?next=/t/acme/apps/chatty/logs")
        page.fill("input[name=username]", "lou")
        page.fill("input[name=password]", PASSWORD)
        page.click("button[type=submit]")
        page.wait_for_url(f"{base}/t/acme/apps/chatty/logs")
        expect(page.locator("[data-state]")).to_have_attribute("data-state", "live")

        payload = f'{SCRIPT_LINE}<img src=x onerror="window.pwned=1">'
        site.say(payload)
        view = page.locator("pre.logs")
        expect(view.locator(".ln.out", has_text=payload)).to_have_count(1)
        expect(view.locator(".ln.err", has_text="E:" + payload)).to_have_count(1)
        assert view.locator("script, img").count() == 0
        assert page.evaluate("window.pwned") is None
        err_colour = view.locator(".ln.err").first.evaluate("n => getComputedStyle(n).color")
        out_colour = view.locator(".ln.out").first.evaluate("n => getComputedStyle(n).color")
        assert err_colour != out_colour
        # Following keeps the newest line in view, unless the reader scrolled up.
        page.wait_for_function(AT_BOTTOM_AND_FULL)
        view.evaluate("v => { v.scrollTop = 0; }")
        count = view.locator(".ln").count()
        page.wait_for_function(
            "n => document.querySelectorAll('pre.logs .ln').length > n", arg=count
        )
        assert view.evaluate("v => v.scrollTop") == 0
        view.evaluate("v => { v.scrollTop = v.scrollHeight; }")
        tab.screenshot("logs-live")

        page.locator("[data-follow]").uncheck()
        expect(page.locator("[data-state]")).to_have_attribute("data-state", "paused")
        site.say("while paused")
        expect(page.locator("[data-state]")).to_contain_text("new")
        assert view.locator(".ln.out", has_text="while paused").count() == 0
        page.locator("[data-follow]").check()
        expect(view.locator(".ln.out", has_text="while paused")).to_have_count(1)

        page.locator("button", has_text="Clear").click()
        page.locator("dialog [data-role=confirm]").click()
        page.wait_for_url(f"{base}/t/acme/apps/chatty/logs?cleared=1")
        expect(page.locator(".flash")).to_have_text("Logs cleared.")
        tab.screenshot("logs-cleared")
    tab.watch.assert_clean()
