"""Sessions (logout, idle end, login throttling, safe redirects), the live stream of a
bucket page, removing a linked server refused (unlink first), and removing a bucket
closing its agents' connections."""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, update
from starlette.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from corral.hub.db.models import Server, Session
from corral.protocol.hub import AgentHandshake, BucketKeys
from corral.protocol.hub import Session as WireSession
from corral.protocol.hub.messages import MessageType
from tests.hub.support import (
    PASSWORD,
    add_bucket,
    add_user,
    app_body,
    keys_of,
    make_hub,
    metrics_body,
    wait_until,
)

ORIGIN = "http://testserver"


def _login(client: TestClient, name: str, password: str = PASSWORD, **extra: str) -> Any:
    return client.post(
        "/login",
        data={"username": name, "password": password, **extra},
        headers={"Origin": ORIGIN},
        follow_redirects=False,
    )


def _csrf(client: TestClient) -> str:
    found = re.search(r'<meta name="csrf-token" content="([^"]+)"', client.get("/").text)
    assert found
    return found[1]


@pytest.fixture
def hub_client(tmp_path: Path) -> Iterator[tuple[TestClient, Any]]:
    app, hub = make_hub(tmp_path)
    add_user(hub, "olive")
    with TestClient(app, base_url=ORIGIN) as client:
        yield client, hub


def test_logout_and_idle_sessions_end(hub_client: tuple[TestClient, Any]) -> None:
    client, hub = hub_client
    assert _login(client, "olive").status_code == 303
    assert client.get("/api/buckets").status_code == 200
    response = client.post("/logout", data={"csrf_token": _csrf(client)},
                           headers={"Origin": ORIGIN}, follow_redirects=False)  # fmt: skip
    assert response.status_code == 303
    assert client.get("/api/buckets").status_code == 401
    assert _login(client, "olive").status_code == 303
    with hub.database.session() as db:
        db.execute(update(Session).values(last_seen_at=0.0))  # idle since 1970
    assert client.get("/api/buckets").status_code == 401
    with hub.database.session() as db:
        assert db.scalars(select(Session)).all() == []


def test_login_refusals(hub_client: tuple[TestClient, Any]) -> None:
    client, _ = hub_client
    assert _login(client, "olive", "wrong password!").status_code == 401
    assert _login(client, "nobody", "wrong password!").status_code == 401
    evil = client.post("/login", data={"username": "olive", "password": PASSWORD},
                       headers={"Origin": "http://evil.example"})  # fmt: skip
    assert evil.status_code == 403
    away = _login(client, "olive", next="//evil.example/x")
    assert away.headers["location"] == "/"
    for _ in range(10):
        _login(client, "olive", "wrong password!")
    assert _login(client, "olive").status_code == 429  # throttled, even with the right one


def _agent(
    stack: contextlib.ExitStack, client: TestClient, keys: BucketKeys, server_id: str
) -> tuple[Any, WireSession]:
    ws = stack.enter_context(client.websocket_connect("/agent/v1"))
    handshake = AgentHandshake(keys)
    ws.send_text(handshake.answer(ws.receive_text()))
    session = handshake.finish(ws.receive_text())
    hello = {"agent_version": "t", "server_id": server_id, "hostname": "web-1",
             "remote_actions": True, "password": None}  # fmt: skip
    ws.send_text(session.seal(MessageType.HELLO, hello))
    return ws, session


def test_live_stream_and_removals_close_agents(hub_client: tuple[TestClient, Any]) -> None:
    with contextlib.ExitStack() as stack:
        _live_stream_and_removals(stack, *hub_client)


def _live_stream_and_removals(stack: contextlib.ExitStack, client: TestClient, hub: Any) -> None:
    bucket = add_bucket(hub, "prod", "olive")
    _login(client, "olive")
    with client.websocket_connect(f"/b/{bucket.public_id}/ws", headers={"Origin": ORIGIN}) as live:
        ws, session = _agent(stack, client, keys_of(bucket), "c" * 32)
        assert json.loads(live.receive_text()) == {"changed": True}  # connected
        ws.send_text(session.seal(MessageType.METRICS, metrics_body("web-1", [app_body("api")])))
        assert json.loads(live.receive_text()) == {"changed": True}
    page = client.get(f"/b/{bucket.public_id}")
    assert "web-1" in page.text and "api" in page.text and "connected" in page.text

    def pk() -> int | None:
        with hub.database.session() as db:
            found: int | None = db.scalar(select(Server.id))
            return found

    server = pk()
    assert server is not None
    csrf = _csrf(client)
    delete_url = f"/api/b/{bucket.public_id}/servers/{server}/delete"
    headers = {"Origin": ORIGIN, "X-CSRF-Token": csrf}
    # Still linked: refused with what to do (its agent would add it back on reconnect).
    page = client.get(f"/b/{bucket.public_id}/servers/{server}")
    assert (
        "run <code>corral unlink</code> on it first" in page.text
        and "Remove server" not in page.text
    )
    response = client.post(delete_url, headers=headers)
    assert response.status_code == 409 and "corral unlink" in response.json()["error"]
    assert pk() == server and len(hub.links.connected()) == 1
    ws.close()  # the agent unlinks
    wait_until(lambda: not hub.links.connected())
    # The server's row is marked gone by the ingest thread just after the link drops.
    wait_until(
        lambda: "Remove server" in client.get(f"/b/{bucket.public_id}/servers/{server}").text
    )
    assert client.post(delete_url, headers=headers).status_code == 200
    assert pk() is None
    ws2, _ = _agent(stack, client, keys_of(bucket), "d" * 32)
    wait_until(lambda: len(hub.links.connected()) == 1)
    response = client.post(f"/api/b/{bucket.public_id}/delete", json={"confirm": "prod"},
                           headers={"Origin": ORIGIN, "X-CSRF-Token": csrf})  # fmt: skip
    assert response.status_code == 200
    with pytest.raises(WebSocketDisconnect):
        ws2.receive_text()
    # The bucket is gone: its agents are now refused like any unknown bucket.
    with pytest.raises(Exception, match="refused"):
        _agent(stack, client, keys_of(bucket), "d" * 32)


def test_stream_refusals(hub_client: tuple[TestClient, Any]) -> None:
    client, hub = hub_client
    bucket = add_bucket(hub, "prod", "olive")
    path = f"/b/{bucket.public_id}/ws"
    for headers, code in (({"Origin": ORIGIN}, 4401), ({"Origin": "http://evil.example"}, 4403)):
        with (
            pytest.raises(WebSocketDisconnect) as caught,
            client.websocket_connect(path, headers=headers) as ws,
        ):
            ws.receive_text()
        assert caught.value.code == code
    add_user(hub, "eve")
    _login(client, "eve")
    with (
        pytest.raises(WebSocketDisconnect) as caught,
        client.websocket_connect(path, headers={"Origin": ORIGIN}) as ws,
    ):
        ws.receive_text()
    assert caught.value.code == 4404
