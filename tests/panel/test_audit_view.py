"""The audit log screen and GET /api/v1/audit: filters, time range, paging, bad input."""

from __future__ import annotations

import datetime
import re
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from corral.panel.db.models import AuditEntry
from corral.panel.services import Panel
from tests.support.panel import ORIGIN, PASSWORD, add_user, csrf_of, make_app

DAY = 86400.0
BASE = datetime.datetime(2026, 3, 10, 12, 0).timestamp()
"""Noon on a fixed day (local time, as the screen shows times)."""


def logged_in(app: Any, name: str) -> TestClient:
    client = TestClient(app, follow_redirects=False)
    form = client.get("/login")
    token = re.search(r'name="csrf_token" value="([^"]+)"', form.text)
    assert token
    response = client.post(
        "/login",
        data={"username": name, "password": PASSWORD, "csrf_token": token[1]},
        headers={"Origin": ORIGIN},
    )
    assert response.status_code == 303
    csrf_of(client)
    return client


def add(panel: Panel, at: float, **fields: Any) -> None:
    values: dict[str, Any] = {
        "actor": "alice",
        "user_id": None,
        "address": "10.0.0.1",
        "tenant": None,
        "app": None,
        "action": "app.start",
        "result": "ok",
        "detail": "",
    }
    values.update(fields)
    with panel.database.session() as db:
        db.add(AuditEntry(at=at, **values))


@pytest.fixture
def setup(tmp_path: Path) -> tuple[TestClient, Panel]:
    app, panel = make_app(tmp_path / "panel", allowed_hosts=("testserver",))
    add_user(panel, "root", admin=True)
    add_user(panel, "bob")
    add(panel, BASE - 2 * DAY, actor="alice", tenant="acme", app="web", action="app.start")
    add(panel, BASE - DAY, actor="bob", tenant="acme", app="api", action="app.stop")
    add(panel, BASE, actor="bob", tenant="globex", app="web", action="app.delete")
    add(panel, BASE + 60, actor="anonymous", action="login", result="failed", detail="user 'x'")
    add(panel, BASE + 120, actor="webhook", tenant="globex", action="webhook", result="denied")
    return logged_in(app, "root"), panel


def cells(html: str) -> list[str]:
    """The action column of the screen's table."""
    return re.findall(r'<td class="mono">([^<]+)</td>\s*<td><span class="pill', html)


def actions(client: TestClient, query: str) -> list[str]:
    response = client.get(f"/api/v1/audit?{query}")
    assert response.status_code == 200, response.text
    return [e["action"] for e in response.json()["entries"]]


def seeded(client: TestClient, query: str = "") -> list[str]:
    """The actions of the seeded entries (not the test's own login) matching `query`."""
    response = client.get(f"/api/v1/audit?until={BASE + 121:.0f}&{query}")
    assert response.status_code == 200, response.text
    return [e["action"] for e in response.json()["entries"]]


def test_the_api_filters_by_every_field_newest_first(setup: tuple[TestClient, Panel]) -> None:
    client, _ = setup
    assert seeded(client) == ["webhook", "login", "app.delete", "app.stop", "app.start"]
    assert seeded(client, "actor=bob") == ["app.delete", "app.stop"]
    assert seeded(client, "tenant=acme") == ["app.stop", "app.start"]
    assert seeded(client, "app=web") == ["app.delete", "app.start"]
    assert seeded(client, "action=login") == ["login"]
    assert seeded(client, "result=denied") == ["webhook"]
    assert seeded(client, "tenant=globex&result=ok") == ["app.delete"]
    entry = client.get("/api/v1/audit?result=failed").json()["entries"][0]
    assert entry == {
        "id": entry["id"],
        "at": BASE + 60,
        "actor": "anonymous",
        "user_id": None,
        "address": "10.0.0.1",
        "tenant": None,
        "app": None,
        "action": "login",
        "result": "failed",
        "detail": "user 'x'",
    }


def test_the_time_range_takes_dates_times_or_unix_seconds(
    setup: tuple[TestClient, Panel],
) -> None:
    client, _ = setup
    day = datetime.date.fromtimestamp(BASE).isoformat()
    assert seeded(client, f"since={day}") == ["webhook", "login", "app.delete"]
    # A bare date as the end means the end of that day.
    yesterday = datetime.date.fromtimestamp(BASE - DAY).isoformat()
    assert actions(client, f"until={yesterday}") == ["app.stop", "app.start"]
    noon = datetime.datetime.fromtimestamp(BASE).strftime("%Y-%m-%d %H:%M")
    assert actions(client, f"since={BASE - DAY:.0f}&until={noon}") == ["app.stop"]
    minute = datetime.datetime.fromtimestamp(BASE + 60).strftime("%Y-%m-%dT%H:%M")
    assert seeded(client, f"since={minute}") == ["webhook", "login"]


def test_paging_walks_every_entry_once(setup: tuple[TestClient, Panel]) -> None:
    client, panel = setup
    for i in range(250):
        add(panel, BASE + 1000 + i, actor="robot", action=f"step.{i}")
    seen: list[str] = []
    url = "/api/v1/audit?actor=robot&limit=100"
    before: int | None = None
    while True:
        page = client.get(url + (f"&before={before}" if before else "")).json()
        seen += [e["action"] for e in page["entries"]]
        before = page["next_before"]
        if before is None:
            break
    assert seen == [f"step.{i}" for i in reversed(range(250))]
    html = client.get("/admin/audit?actor=robot").text
    assert cells(html) == [f"step.{i}" for i in reversed(range(150, 250))]
    older = re.search(r'href="(/admin/audit\?[^"]*before=\d+)"', html)
    assert older and "actor=robot" in older[1]
    second = client.get(older[1].replace("&amp;", "&")).text
    assert cells(second)[0] == "step.149" and len(cells(second)) == 100 and "Newest" in second


def test_the_screen_shows_the_filtered_entries(setup: tuple[TestClient, Panel]) -> None:
    client, _ = setup
    page = client.get("/admin/audit?tenant=globex")
    assert page.status_code == 200
    assert cells(page.text) == ["webhook", "app.delete"]
    assert 'value="globex"' in page.text  # the filter stays in the form
    assert '<span class="pill denied">denied</span>' in page.text
    assert "Clear filters" in page.text
    empty = client.get("/admin/audit?actor=nobody")
    assert "No entries match this filter" in empty.text
    every = client.get("/admin/audit").text
    assert '<option value="app.delete">' in every  # known actions offered in the form


def test_bad_filters_are_explained_next_to_the_field(setup: tuple[TestClient, Panel]) -> None:
    client, _ = setup
    page = client.get("/admin/audit?result=maybe&since=yesterday&until=2026-01-01&limit=0")
    assert page.status_code == 422
    assert "must be one of ok, denied, failed" in page.text
    assert "is not a date (YYYY-MM-DD) or date and time" in page.text
    api = client.get("/api/v1/audit?result=maybe&since=2026-02-01&until=2026-01-01&before=x")
    assert api.status_code == 422
    assert set(api.json()["errors"]) == {"result", "until", "before"}
    assert client.get("/api/v1/audit?limit=501").json()["errors"]["limit"].startswith("must be")
    assert client.get(f"/api/v1/audit?actor={'x' * 129}").status_code == 422


def test_the_audit_log_is_for_admins_only(setup: tuple[TestClient, Panel]) -> None:
    client, _ = setup
    bob = logged_in(client.app, "bob")
    assert bob.get("/admin/audit").status_code == 404
    assert bob.get("/api/v1/audit").status_code == 404
    assert TestClient(client.app).get("/api/v1/audit").status_code == 401
    assert TestClient(client.app, follow_redirects=False).get("/admin/audit").status_code == 303


def test_admin_actions_appear_in_the_log(setup: tuple[TestClient, Panel]) -> None:
    client, _ = setup
    csrf = csrf_of(client)
    headers = {"Origin": ORIGIN, "X-CSRF-Token": csrf}
    client.post("/api/v1/users", json={"username": "carol", "password": "x"}, headers=headers)
    client.post("/api/v1/users", json={"username": "carol"}, headers=headers)
    entries = client.get("/api/v1/audit?action=user.create").json()["entries"]
    assert [(e["actor"], e["result"]) for e in entries] == [("root", "ok"), ("root", "failed")]
    assert entries[0]["detail"] == "user 'carol'" and entries[0]["address"] == "testclient"
    assert "password" in entries[1]["detail"]
