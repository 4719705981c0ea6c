"""GET /api/v1/tenants/{tenant}/apps/{app}/metrics: samples in order, downsampled by
averaging time buckets, hidden from users of other tenants; on SQLite and PostgreSQL."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from playwright.sync_api import expect
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Mount, Route
from starlette.testclient import TestClient

from corral.panel.db.models import MetricSample
from corral.panel.security.headers import CONTENT_SECURITY_POLICY
from corral.panel.services import Panel, TenantRef
from tests.conftest import wait_for
from tests.support.browser import Tab
from tests.support.panel import PASSWORD, add_tenant, add_user, grant, login, make_app

URL = "/api/v1/tenants/{tenant}/apps/{app}/metrics"


@dataclass
class World:
    client: TestClient
    panel: Panel
    shop: TenantRef
    blog: TenantRef

    def get(self, tenant: str, app: str, **query: Any) -> Any:
        return self.client.get(URL.format(tenant=tenant, app=app), params=query)


def add_samples(
    panel: Panel, tenant: TenantRef, app: str, rows: Sequence[tuple[float, float, float, float]]
) -> None:
    with panel.database.session() as db:
        db.add_all(
            MetricSample(
                tenant_id=tenant.id, app=app, at=at, cpu=cpu, memory=int(mem), instances=int(n)
            )
            for at, cpu, mem, n in rows
        )


@pytest.fixture
def world(tmp_path: Path, database_url: str) -> Iterator[World]:
    app, panel = make_app(tmp_path, database_url, allowed_hosts=("testserver",))
    shop = add_tenant(panel, "shop", tmp_path / "shop")
    blog = add_tenant(panel, "blog", tmp_path / "blog")
    ann = add_user(panel, "ann")
    grant(panel, ann, shop, ["access"])
    logs_only = add_user(panel, "lou")
    grant(panel, logs_only, shop, ["logs"])
    with TestClient(app) as client:
        yield World(client, panel, shop, blog)
    panel.database.close()


def test_points_oldest_first_since_and_other_apps_apart(world: World) -> None:
    now = time.time()
    rows = [(now - 10 * k, 1.5 * k, 1_000_000 + k, 2) for k in range(20, 0, -1)]
    add_samples(world.panel, world.shop, "web", list(reversed(rows)))  # stored out of order
    add_samples(world.panel, world.shop, "worker", [(now - 5, 99.0, 5, 1)])
    add_samples(world.panel, world.blog, "web", [(now - 5, 77.0, 7, 1)])
    login(world.client, "ann")

    response = world.get("shop", "web")
    assert response.status_code == 200
    assert response.headers["cache-control"] == "no-store"
    body = response.json()
    assert body["app"] == "web"
    assert now - 0.001 <= body["now"] <= time.time() + 0.001
    assert body["interval"] == 10.0
    points = body["points"]
    assert [p["at"] for p in points] == [round(r[0], 3) for r in rows]  # newest last
    assert points[-1] == {"at": round(now - 10, 3), "cpu": 1.5, "memory": 1_000_001, "instances": 2}
    assert all(set(p) == {"at", "cpu", "memory", "instances"} for p in points)

    recent = world.get("shop", "web", since=now - 55).json()["points"]
    assert [p["cpu"] for p in recent] == [7.5, 6.0, 4.5, 3.0, 1.5]


def test_default_range_is_the_last_hour(world: World) -> None:
    now = time.time()
    add_samples(world.panel, world.shop, "web", [(now - 7200, 1, 1, 1), (now - 60, 2, 2, 1)])
    login(world.client, "ann")
    assert [p["cpu"] for p in world.get("shop", "web").json()["points"]] == [2.0]
    everything = world.get("shop", "web", since=0).json()["points"]
    assert [p["cpu"] for p in everything] == [1.0, 2.0]


def test_long_ranges_are_averaged_into_at_most_max_points(world: World) -> None:
    # 1000 samples 10 s apart; cpu and memory grow linearly with time, so each bucket's
    # average value must sit exactly on the line at the bucket's average time.
    start = time.time() - 10_000
    rows = [(start + 10 * i, i / 10, 1_000_000 + 1000 * i, 1 + i % 2) for i in range(1000)]
    add_samples(world.panel, world.shop, "web", rows)
    login(world.client, "ann")

    for max_points in (2, 50, 299):
        points = world.get("shop", "web", since=0, max_points=max_points).json()["points"]
        assert max_points // 2 <= len(points) <= max_points
        ats = [p["at"] for p in points]
        assert ats == sorted(ats)
        for p in points:
            i = (p["at"] - start) / 10
            assert p["cpu"] == pytest.approx(i / 10, abs=0.01)
            assert p["memory"] == pytest.approx(1_000_000 + 1000 * i, abs=1)
            assert p["instances"] in (1, 2)
            assert isinstance(p["memory"], int) and isinstance(p["instances"], int)
        if max_points < 50:
            continue
        # Averaging keeps the overall mean (buckets hold nearly equal numbers of samples).
        mean = sum(p["cpu"] for p in points) / len(points)
        assert mean == pytest.approx(sum(r[1] for r in rows) / len(rows), rel=0.02)

    default = world.get("shop", "web", since=0).json()["points"]
    assert 150 <= len(default) <= 300  # max_points defaults to 300
    few = world.get("shop", "web", since=0, max_points=5000).json()["points"]
    assert len(few) == 1000  # under the limit: the samples themselves


def test_unknown_app_in_a_visible_tenant_has_no_points(world: World) -> None:
    login(world.client, "ann")
    response = world.get("shop", "nothing-here")
    assert response.status_code == 200
    assert response.json()["points"] == []


@pytest.mark.parametrize(
    ("query", "field", "message"),
    [
        ({"since": "yesterday"}, "since", "must be a Unix time in seconds, not 'yesterday'"),
        ({"since": "-5"}, "since", "must be a Unix time in seconds, not '-5'"),
        ({"since": "nan"}, "since", "must be a Unix time in seconds, not 'nan'"),
        ({"max_points": "lots"}, "max_points", "must be a whole number, not 'lots'"),
        ({"max_points": "1"}, "max_points", "must be between 2 and 5000"),
        ({"max_points": "5001"}, "max_points", "must be between 2 and 5000"),
    ],
)
def test_bad_query_parameters_are_named(
    world: World, query: dict[str, str], field: str, message: str
) -> None:
    login(world.client, "ann")
    response = world.get("shop", "web", **query)
    assert response.status_code == 422
    assert response.json() == {"error": f"{field}: {message}", "errors": {field: message}}


def test_other_tenants_and_missing_rights(world: World) -> None:
    now = time.time()
    add_samples(world.panel, world.blog, "web", [(now - 5, 77.0, 7, 1)])
    assert world.get("shop", "web").status_code == 401  # anonymous

    login(world.client, "ann")
    hidden = world.get("blog", "web")
    assert hidden.status_code == 404  # ann has no grant on blog: it does not exist for her
    assert "77" not in hidden.text
    assert world.get("no-such-tenant", "web").status_code == 404

    world.client.cookies.clear()
    login(world.client, "lou")  # sees shop (logs) but lacks access
    assert world.get("shop", "web").status_code == 403


# --- the chart in a real browser --------------------------------------------------------
# No page of the panel shows a chart yet in this file's scope, so a tiny test page is
# served next to the real panel (same origin, same CSP): the chart fetches the real API
# with the real session cookie.

CHART_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>chart</title><link rel="icon" href="data:,">
<link rel="stylesheet" href="/static/css/panel.css">
<script src="/static/js/chart.js" defer></script></head>
<body><main><div class="card"><div class="chart" data-chart-src="{src}"></div></div></main>
</body></html>"""


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


@pytest.fixture
def chart_site(tmp_path: Path) -> Iterator[tuple[str, Panel, TenantRef]]:
    panel_app, panel = make_app(tmp_path)
    shop = add_tenant(panel, "shop", tmp_path / "shop")
    grant(panel, add_user(panel, "ann"), shop, ["access"])

    def chart_page(request: Request) -> Response:
        src = URL.format(tenant="shop", app=request.path_params["app"])
        return HTMLResponse(
            CHART_PAGE.format(src=src),
            headers={"Content-Security-Policy": CONTENT_SECURITY_POLICY},
        )

    site = Starlette(routes=[Route("/chart/{app}", chart_page), Mount("/", app=panel_app)])
    with serve(site) as base:
        yield base, panel, shop
    panel.database.close()


def test_the_chart_draws_real_samples_under_the_csp(
    chart_site: tuple[str, Panel, TenantRef], tab: Tab
) -> None:
    base, panel, shop = chart_site
    now = time.time()
    rows = [(now - 3000 + 20 * i, 5 + i % 10, 50 * 2**20 + i * 2**16, 2) for i in range(120)]
    add_samples(panel, shop, "web", rows)
    page = tab.page
    page.goto(f"{base}/login?next=/chart/web")
    page.fill("input[name=username]", "ann")
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"{base}/chart/web", timeout=30_000)

    chart = page.locator(".chart")
    # Generous: on a loaded machine the first fetch can take a while; after it, all is local.
    expect(chart).to_have_attribute("data-chart-points", "120", timeout=30_000)
    # chart.css was linked by the script and applies (a CSP violation would leave it out).
    assert page.locator('link[href$="/static/css/chart.css"]').count() == 1
    line = page.locator("path.chart-line-cpu")
    expect(line).to_have_count(1)
    assert line.evaluate("p => getComputedStyle(p).fill") == "none"
    assert (line.get_attribute("d") or "").count("L") == 119  # one segment, 120 points
    expect(page.locator("path.chart-line-memory")).to_have_count(1)
    # The newest sample: cpu 5 + 119 % 10 = 14, memory 50 MiB + 119 * 64 KiB = 57.4 MiB.
    expect(page.locator(".chart-key-cpu .chart-value")).to_have_text("14 %")
    expect(page.locator(".chart-key-memory .chart-value")).to_have_text("57.4 MiB")
    expect(page.locator(".chart-key-instances .chart-value")).to_have_text("2")
    assert page.locator("text.chart-tick-time").count() >= 3
    assert page.locator(".chart-empty").is_hidden()

    box = page.locator("rect.chart-hit").bounding_box()
    assert box is not None
    page.mouse.move(box["x"] + box["width"] - 2, box["y"] + box["height"] / 2)
    tooltip = page.locator(".chart-hover.chart-hover-on .chart-tooltip")
    expect(tooltip).to_be_visible(timeout=15_000)
    expect(page.locator(".chart-tooltip-cpu")).to_have_text("CPU 14 %")
    expect(page.locator(".chart-tooltip-instances")).to_have_text("2 instances")
    tab.screenshot("chart")
    # A refresh redraws the chart under a still pointer: the tooltip stays.
    page.evaluate("document.querySelector('.chart').chart.load()")
    expect(tooltip).to_be_visible()
    expect(page.locator(".chart-tooltip-cpu")).to_have_text("CPU 14 %")

    page.goto(f"{base}/chart/nothing-yet")
    empty = page.locator(".chart-empty")
    expect(empty).to_have_text("no samples yet: the panel samples every 10 s", timeout=30_000)
    expect(empty).to_be_visible()
    assert page.locator("path.chart-line-cpu").count() == 0
    tab.screenshot("chart-empty")
    tab.watch.assert_clean()
