"""The agents' endpoint over a real WebSocket (uvicorn on loopback) with the protocol's
AgentHandshake: handshake, hello, metrics ingest, actions out, results in; refusals."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from sqlalchemy import func, select
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from corral.hub.actions import ActionError, request_action
from corral.hub.db.models import Action, AppSample, Server, ServerSample
from corral.hub.services import Hub
from corral.protocol.hub import AgentHandshake, HandshakeFailed, derive_bucket_keys, make_verifier
from corral.protocol.hub.messages import MessageType
from corral.protocol.hub.proof import PasswordParams
from tests.hub.support import (
    AGENT_PASSWORD,
    ProtocolAgent,
    add_bucket,
    add_user,
    agent_connection,
    app_body,
    await_until,
    dump_tables,
    keys_of,
    make_hub,
    metrics_body,
)
from tests.support.panel import serve

# Cheap argon2 costs for tests (the schema's minimum memory); the scheme is the same.
FAST = PasswordParams(b"0123456789abcdef", time_cost=1, memory_cost=8192, parallelism=1)


def _ws_url(origin: str) -> str:
    return origin.replace("http://", "ws://") + "/agent/v1"


def _server(hub: Hub, server_id: str) -> Server | None:
    with hub.database.session() as db:
        return db.scalar(select(Server).where(Server.server_id == server_id))


def _count(hub: Hub, model: type) -> int:
    with hub.database.session() as db:
        return int(db.scalar(select(func.count()).select_from(model)) or 0)


def test_hello_metrics_and_actions(tmp_path: Path, database_url: str) -> None:
    app, hub = make_hub(tmp_path, database_url)
    add_user(hub, "olive")
    bucket = add_bucket(hub, "prod", "olive")
    verifier = make_verifier(AGENT_PASSWORD, FAST)
    agent = ProtocolAgent(keys_of(bucket), "web-1", verifier=verifier)

    async def scenario(url: str) -> None:
        async with agent_connection(url, agent):
            server = await await_until(lambda: _server(hub, agent.server_id))
            assert server.connected and server.hostname == "web-1"
            assert server.bucket_id == bucket.id
            await agent.send(MessageType.METRICS, metrics_body("web-1", [app_body("api")]))
            await await_until(lambda: _count(hub, AppSample) == 1)
            assert _count(hub, ServerSample) == 1
            # A harmless action: no password.
            sent = asyncio.to_thread(
                request_action, hub, bucket.id, server.id, "restart", "api", {}, "olive", None
            )
            action, done = await asyncio.gather(agent.answer_one_action(), sent)
            assert action["verb"] == "restart" and action["proof"] is None
            assert action["requested_by"] == "olive"
            row = await await_until(lambda: _action(hub, done.id, "ok"))
            assert row.message == "done" and not row.with_proof
            # A sensitive one: the proof derived from the typed password is accepted.
            sent = asyncio.to_thread(
                request_action, hub, bucket.id, server.id, "stop", "api", {}, "olive",
                AGENT_PASSWORD,
            )  # fmt: skip
            action, done = await asyncio.gather(agent.answer_one_action(), sent)
            assert action["proof"] is not None
            row = await await_until(lambda: _action(hub, done.id, "ok"))
            assert row.with_proof
            # A wrong password: the agent refuses it (bad_proof), the hub records that.
            sent = asyncio.to_thread(
                request_action, hub, bucket.id, server.id, "stop", "api", {}, "olive",
                "wrong password",
            )  # fmt: skip
            _, done = await asyncio.gather(agent.answer_one_action(), sent)
            row = await await_until(lambda: _action(hub, done.id, "refused"))
            assert row.code == "bad_proof"
            # No password at all: refused by the hub before anything is sent.
            with pytest.raises(ActionError, match="needs the agent password"):
                await asyncio.to_thread(
                    request_action, hub, bucket.id, server.id, "stop", "api", {}, "olive", None
                )
        gone = await await_until(lambda: _offline(hub, agent.server_id))
        assert not gone.connected

    with serve(app) as origin:
        asyncio.run(scenario(_ws_url(origin)))
    stored = dump_tables(hub)
    for secret in (bucket.secret, AGENT_PASSWORD, "wrong password"):
        assert secret not in stored
    with hub.database.session() as db:
        server = db.scalar(select(Server))
        assert server is not None and server.password_params is not None
        # The public argon2 parameters only: no public key, no hash.
        assert set(json.loads(server.password_params)) == {
            "salt", "time_cost", "memory_cost", "parallelism"
        }  # fmt: skip


def _action(hub: Hub, action_id: str, state: str) -> Action | None:
    with hub.database.session() as db:
        row = db.get(Action, action_id)
    return row if row is not None and row.state == state else None


def _offline(hub: Hub, server_id: str) -> Server | None:
    server = _server(hub, server_id)
    return server if server is not None and not server.connected else None


def test_unknown_bucket_and_wrong_secret_get_the_same_denial(tmp_path: Path) -> None:
    app, hub = make_hub(tmp_path)
    add_user(hub, "olive")
    bucket = add_bucket(hub, "prod", "olive")
    wrong = derive_bucket_keys(bucket.public_id, "x" * 43)
    unknown = derive_bucket_keys("0123456789abcdef", bucket.secret)

    async def attempt(url: str, keys: object) -> str:
        async with connect(url) as ws:
            handshake = AgentHandshake(keys)  # type: ignore[arg-type]
            await ws.send(handshake.answer(await ws.recv()))
            reply = await ws.recv()
            assert isinstance(reply, str)
            with pytest.raises(HandshakeFailed):
                handshake.finish(reply)
            with pytest.raises(ConnectionClosed):
                await ws.recv()
            assert ws.close_code == 1008
            return reply

    async def scenario(url: str) -> None:
        assert await attempt(url, wrong) == await attempt(url, unknown)

    with serve(app) as origin:
        asyncio.run(scenario(_ws_url(origin)))
    assert _count(hub, Server) == 0


def test_bad_frames_close_the_connection(tmp_path: Path) -> None:
    app, hub = make_hub(tmp_path)
    add_user(hub, "olive")
    bucket = add_bucket(hub, "prod", "olive")
    agent = ProtocolAgent(keys_of(bucket), "web-1")

    async def scenario(url: str) -> None:
        async with agent_connection(url, agent):
            assert agent.ws is not None and agent.session is not None
            frame = agent.session.seal(MessageType.METRICS, metrics_body("web-1", []))
            await agent.ws.send(frame)
            await await_until(lambda: _count(hub, ServerSample) == 1)
            await agent.ws.send(frame)  # replayed
            with pytest.raises(ConnectionClosed):
                await asyncio.wait_for(agent.ws.recv(), 15)
            assert agent.ws.close_code == 1008
        await await_until(lambda: _offline(hub, agent.server_id))

    with serve(app) as origin:
        asyncio.run(scenario(_ws_url(origin)))
    assert _count(hub, ServerSample) == 1


def test_a_server_is_known_by_its_id_across_renames_and_buckets(tmp_path: Path) -> None:
    app, hub = make_hub(tmp_path)
    add_user(hub, "olive")
    first = add_bucket(hub, "prod", "olive")
    second = add_bucket(hub, "staging", "olive")
    agent = ProtocolAgent(keys_of(first), "web-1")

    async def scenario(url: str) -> None:
        async with agent_connection(url, agent):
            await await_until(lambda: _server(hub, agent.server_id))
        await await_until(lambda: _offline(hub, agent.server_id))
        agent.hostname = "web-renamed"
        async with agent_connection(url, agent):
            await await_until(lambda: _count(hub, Server) == 1 and _renamed(hub))
        other = ProtocolAgent(keys_of(second), "web-1", server_id=agent.server_id)
        async with agent_connection(url, other):
            await await_until(lambda: _count(hub, Server) == 2)

    with serve(app) as origin:
        asyncio.run(scenario(_ws_url(origin)))


def _renamed(hub: Hub) -> bool:
    with hub.database.session() as db:
        return db.scalar(select(Server.hostname)) == "web-renamed"
