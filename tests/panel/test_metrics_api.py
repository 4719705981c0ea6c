"""GET /api/v1/tenants/{tenant}/apps/{app}/metrics: samples in order, downsampled by
averaging time buckets, hidden from users of other tenants; on SQLite and PostgreSQL."""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from corral.panel.db.models import MetricSample
from corral.panel.services import Panel, TenantRef
from tests.support.panel import add_tenant, add_user, grant, login, make_app

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
