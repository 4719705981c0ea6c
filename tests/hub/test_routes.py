"""Every route of the hub, walked as each role of the bucket, as a member of another
bucket only (404, exactly as a bucket that does not exist), and logged out."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import select
from starlette.testclient import TestClient

from corral.hub import ingest
from corral.hub.alerts import add_rule
from corral.hub.db.models import AlertRule, AuditEntry, Membership, Server
from corral.hub.roles import Level, Role
from corral.hub.routing import RouteSpec, registry
from corral.hub.services import Hub
from tests.hub.support import (
    PASSWORD,
    add_bucket,
    add_user,
    app_body,
    grant,
    make_hub,
    metrics_body,
)

ORIGIN = "http://testserver"
SERVER_ID = "ab" * 16


@dataclass
class World:
    hub: Hub
    client: TestClient
    a: str
    a_id: int
    b: str
    users: dict[str, int]

    def server_pk(self) -> int:
        with self.hub.database.session() as db:
            found = db.scalar(select(Server.id).where(Server.bucket_id == self.a_id))
        return found if found is not None else self.restore_server()

    def restore_server(self) -> int:
        with self.hub.database.session() as db:
            pk = ingest.record_hello(db, self.a_id, _hello(), time.time())
            ingest.record_metrics(db, pk, metrics_body("web-1", [app_body("api")]), time.time())
            return pk

    def rule_id(self) -> int:
        with self.hub.database.session() as db:
            found = db.scalar(select(AlertRule.id).where(AlertRule.bucket_id == self.a_id))
            return found if found is not None else add_rule(db, self.a_id, "memory", "100", "300")

    def restore_victim(self) -> None:
        with self.hub.database.session() as db:
            if db.get(Membership, (self.users["victim"], self.a_id)) is None:
                db.add(Membership(user_id=self.users["victim"], bucket_id=self.a_id, role="viewer"))


def _hello() -> dict[str, object]:
    return {
        "agent_version": "t",
        "server_id": SERVER_ID,
        "hostname": "web-1",
        "remote_actions": True,
        "password": None,
    }


ROLES = {"viewer": Role.VIEWER, "dev": Role.DEVELOPER, "adam": Role.ADMIN, "olive": Role.OWNER}


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    app, hub = make_hub(tmp_path)
    users = {name: add_user(hub, name) for name in (*ROLES, "eve", "victim")}
    bucket_a = add_bucket(hub, "alpha", "olive")
    bucket_b = add_bucket(hub, "beta", "eve")
    for name, role in ROLES.items():
        grant(hub, users[name], bucket_a.id, role)
    with TestClient(app, base_url=ORIGIN) as client:
        w = World(hub, client, bucket_a.public_id, bucket_a.id, bucket_b.public_id, users)
        w.restore_server()
        w.rule_id()
        w.restore_victim()
        yield w


def login(client: TestClient, name: str) -> str:
    client.cookies.clear()
    response = client.post(
        "/login",
        data={"username": name, "password": PASSWORD},
        headers={"Origin": ORIGIN},
        follow_redirects=False,
    )
    assert response.status_code == 303, response.text
    page = client.get("/")
    found = re.search(r'<meta name="csrf-token" content="([^"]+)"', page.text)
    assert found
    return found[1]


def url(spec: RouteSpec, world: World, bucket: str) -> str:
    path = spec.path.replace("{bucket}", bucket)
    path = path.replace("{server}", str(world.server_pk()))
    path = path.replace("{rule}", str(world.rule_id()))
    return path.replace("{user}", "victim")


def call(world: World, spec: RouteSpec, path: str, csrf: str) -> int:
    if spec.kind == "ws":
        from starlette.websockets import WebSocketDisconnect

        try:
            with world.client.websocket_connect(path, headers={"Origin": ORIGIN}) as ws:
                ws.close()
                return 200
        except WebSocketDisconnect as exc:
            return int({4401: 401, 4403: 403, 4404: 404}.get(exc.code, 500))
    if spec.changes_state:
        headers = {"Origin": ORIGIN, "X-CSRF-Token": csrf, "Accept": "application/json"}
        response = world.client.post(path, json={}, headers=headers, follow_redirects=False)
    else:
        response = world.client.get(path, follow_redirects=False)
    return int(response.status_code)


def test_every_route_as_every_role(world: World) -> None:
    specs = [s for s in registry.specs if s.need.level is Level.BUCKET]
    assert len(specs) >= 25
    seen: set[tuple[str, int]] = set()
    for name, role in ROLES.items():
        csrf = login(world.client, name)
        for spec in specs:
            status = call(world, spec, url(spec, world, world.a), csrf)
            assert spec.need.role is not None
            if role >= spec.need.role:
                assert status not in (401, 403, 404), (name, spec.path, status)
                assert status < 500, (name, spec.path, status)
                seen.add((spec.path, status))
            else:
                assert status == 403, (name, spec.path, status)
            world.restore_server()
            world.rule_id()
            world.restore_victim()
    with world.hub.database.session() as db:
        denied = db.scalars(select(AuditEntry).where(AuditEntry.result == "denied")).all()
    assert denied  # refused state changes are audited


def test_a_member_of_another_bucket_sees_nothing(world: World) -> None:
    csrf = login(world.client, "eve")
    for spec in registry.specs:
        if spec.need.level is not Level.BUCKET:
            continue
        # Bucket A by its real public id, and bucket B (hers) pointing at A's server.
        assert call(world, spec, url(spec, world, world.a), csrf) == 404, spec.path
        if "{server}" in spec.path:
            assert call(world, spec, url(spec, world, world.b), csrf) == 404, spec.path
    listing = world.client.get("/api/buckets").json()
    assert [b["public_id"] for b in listing["buckets"]] == [world.b]
    assert world.a not in world.client.get("/").text


def test_logged_out_and_hub_admin_routes(world: World) -> None:
    world.client.cookies.clear()
    for spec in registry.specs:
        if spec.need.level is Level.PUBLIC:
            continue
        status = call(world, spec, url(spec, world, world.a), "")
        assert status in (401, 303, 403), (spec.path, status)  # 403: no Origin/CSRF first
    csrf = login(world.client, "olive")
    response = world.client.post(
        "/api/buckets", json={"name": "x"}, headers={"Origin": ORIGIN, "X-CSRF-Token": csrf}
    )
    assert response.status_code == 403  # an owner is not a hub administrator


def test_csrf_and_origin_are_checked(world: World) -> None:
    csrf = login(world.client, "olive")
    path = f"/api/b/{world.a}/alerts/rules"
    body = {"kind": "memory", "threshold": "5"}
    no_token = world.client.post(path, json=body, headers={"Origin": ORIGIN})
    assert no_token.status_code == 403
    evil = world.client.post(
        path, json=body, headers={"Origin": "http://evil.example", "X-CSRF-Token": csrf}
    )
    assert evil.status_code == 403
    ok = world.client.post(path, json=body, headers={"Origin": ORIGIN, "X-CSRF-Token": csrf})
    assert ok.status_code == 200
