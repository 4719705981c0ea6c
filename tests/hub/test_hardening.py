"""Hub hardening: the Host allow-list (DNS rebinding), the handshake throttle per client
address, the WebSocket message size limit in the served hub, the action time-out sweep,
refusing to remove a connected server, password change and the audit-log page."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select
from starlette.testclient import TestClient, WebSocketDenialResponse
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from corral.hub.actions import request_action
from corral.hub.app import create_app
from corral.hub.background import default_tasks
from corral.hub.cli import _config, _parser
from corral.hub.config import HubConfig
from corral.hub.db.engine import open_database
from corral.hub.db.models import Action, Server
from corral.hub.ingest import expire_actions
from corral.hub.services import Hub
from corral.panel.security.throttle import ACCOUNT_LIMIT, ADDRESS_LIMIT
from corral.protocol.hub import AgentHandshake, BucketKeys, HandshakeFailed, derive_bucket_keys
from corral.protocol.hub.frames import MAX_FRAME_CHARS
from corral.protocol.hub.keys import new_public_id
from tests.hub.support import (
    ProtocolAgent,
    add_bucket,
    add_user,
    agent_connection,
    await_until,
    keys_of,
    make_hub,
)
from tests.support.panel import serve


def test_host_allow_list(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    defaults = HubConfig(home=tmp_path, public_origin="https://hub.example.com:8443").hosts()
    assert {"127.0.0.1", "localhost", "[::1]", "hub.example.com"} <= set(defaults)
    assert "evil.example" not in defaults
    app, _ = make_hub(tmp_path, allowed_hosts=("hub.example.com",))
    with TestClient(app, base_url="http://hub.example.com") as client:
        assert client.get("/login").status_code == 200
    for origin in ("http://evil.example", "http://testserver"):
        with TestClient(app, base_url=origin) as client:
            response = client.get("/login")
            assert response.status_code == 400 and "Invalid host" in response.text
            with pytest.raises(WebSocketDenialResponse) as denied:
                client.websocket_connect("/agent/v1").__enter__()
            assert denied.value.status_code == 400
    # The command line: repeatable --allowed-host, else the defaults above.
    ns = _parser().parse_args(["--allowed-host", "a.example", "--allowed-host", "b.example"])
    assert _config(ns).hosts() == ["a.example", "b.example"]
    assert "localhost" in _config(_parser().parse_args(["serve"])).hosts()
    for bad in ("a*.example", "*", "http://x.example/"):
        with pytest.raises(SystemExit):
            _parser().parse_args(["--allowed-host", bad])
        assert "is not a host name" in capsys.readouterr().err


def _ws_url(origin: str) -> str:
    return origin.replace("http://", "ws://") + "/agent/v1"


async def _handshake(url: str, keys: BucketKeys, source: str) -> str:
    """One agent handshake from the loopback address `source`: "ok", "denied" or the
    close code the hub ended it with."""
    async with connect(url, local_addr=(source, 0)) as ws:
        handshake = AgentHandshake(keys)
        try:
            await ws.send(handshake.answer(await ws.recv()))
            handshake.finish(await ws.recv())
        except HandshakeFailed:
            return "denied"
        except ConnectionClosed as exc:
            return str(exc.rcvd.code if exc.rcvd else None)
        return "ok"


def test_failed_handshakes_are_throttled_per_address(tmp_path: Path) -> None:
    app, hub = make_hub(tmp_path)
    add_user(hub, "olive")
    bucket = add_bucket(hub, "prod", "olive")
    other = add_bucket(hub, "other", "olive")
    wrong = derive_bucket_keys(bucket.public_id, other.secret)  # a guessed secret

    async def scenario(url: str) -> None:
        assert await _handshake(url, keys_of(bucket), "127.0.0.1") == "ok"
        for _ in range(ACCOUNT_LIMIT):
            assert await _handshake(url, wrong, "127.0.0.1") == "denied"
        # Locked: even the right secret is not tried from that address (1013: later).
        assert await _handshake(url, keys_of(bucket), "127.0.0.1") == "1013"
        assert await _handshake(url, wrong, "127.0.0.1") == "1013"
        # Other addresses are not held up by one address's guesses.
        assert await _handshake(url, keys_of(bucket), "127.0.0.2") == "ok"
        # Guessing across many public ids from one address hits the address's limit.
        for _ in range(ADDRESS_LIMIT):
            guess = derive_bucket_keys(new_public_id(), other.secret)
            assert await _handshake(url, guess, "127.0.0.3") == "denied"
        assert await _handshake(url, keys_of(other), "127.0.0.3") == "1013"

    with serve(app) as origin:
        asyncio.run(scenario(_ws_url(origin)))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def _hub_process(home: Path) -> Iterator[str]:
    """`corral hub` as an operator runs it (the real uvicorn settings); its ws:// URL."""
    port = _free_port()
    command = [sys.executable, "-m", "corral", "hub", "--home", str(home), "--port", str(port)]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 30
        while True:
            assert process.poll() is None, process.stderr.read() if process.stderr else ""
            assert time.monotonic() < deadline, "corral hub did not start listening"
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
                break
            time.sleep(0.1)
        yield f"ws://127.0.0.1:{port}/agent/v1"
    finally:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.mark.slow
def test_served_hub_refuses_oversized_messages_unread(tmp_path: Path) -> None:
    async def first_close(url: str, size: int) -> int | None:
        async with connect(url, max_size=None) as ws:
            await ws.recv()  # the hub's challenge
            await ws.send("x" * size)  # instead of an answer
            with pytest.raises(ConnectionClosed) as closed:
                await asyncio.wait_for(ws.recv(), 30)
            return closed.value.rcvd.code if closed.value.rcvd else None

    with _hub_process(tmp_path / "hub") as url:
        # One character over the protocol's frame limit: uvicorn closes with 1009
        # (message too big) and the hub never reads it.
        assert asyncio.run(first_close(url, MAX_FRAME_CHARS + 1)) == 1009
        # At the limit the hub reads it and refuses it as a malformed answer (1008).
        assert asyncio.run(first_close(url, MAX_FRAME_CHARS)) == 1008


def _action_row(hub: Hub, action_id: str) -> Action:
    with hub.database.session() as db:
        row = db.get(Action, action_id)
        assert row is not None
        db.expunge(row)
        return row


def test_unanswered_actions_time_out(tmp_path: Path) -> None:
    config = HubConfig(
        home=tmp_path,
        allowed_hosts=("127.0.0.1",),
        action_timeout_seconds=0.5,
        action_sweep_every_seconds=0.1,
    )
    app = create_app(config, database=open_database(config.url), background=default_tasks())
    hub: Hub = app.state.hub
    add_user(hub, "olive")
    bucket = add_bucket(hub, "prod", "olive")
    agent = ProtocolAgent(keys_of(bucket), "web-1")

    async def scenario(url: str) -> None:
        async with agent_connection(url, agent):
            server = await await_until(lambda: _server_pk(hub))
            # The row is marked connected a moment before the link is registered.
            await await_until(lambda: hub.links.get(bucket.id, server))
            sent = await asyncio.to_thread(
                request_action, hub, bucket.id, server, "restart", "api", {}, "olive", None
            )
            # The agent stays connected and says nothing: the background sweep gives up.
            await await_until(lambda: _action_row(hub, sent.id).state == "lost")
            row = _action_row(hub, sent.id)
            assert row.message == "no answer from the agent within 0.5 s"
            assert hub.links.get(bucket.id, server) is not None  # still connected
            # A late answer changes nothing.
            await agent.answer_one_action()
            await asyncio.sleep(0.3)
            assert _action_row(hub, sent.id).state == "lost"

    with serve(app) as origin:
        asyncio.run(scenario(_ws_url(origin)))

    # The sweep itself on a fake clock: 60 s by default, only `sent` actions.
    with hub.database.session() as db:
        for action_id, state in (("a-sent", "sent"), ("a-done", "ok")):
            db.add(Action(id=action_id, bucket_id=bucket.id, server_id=None, hostname="web-1",
                          verb="restart", target="api", requested_by="olive", state=state,
                          created_at=1000.0))  # fmt: skip
    timeout = HubConfig(home=tmp_path).action_timeout_seconds
    with hub.database.session() as db:
        assert expire_actions(db, 1000.0 + timeout - 1, timeout) == []
    with hub.database.session() as db:
        assert expire_actions(db, 1000.0 + timeout + 1, timeout) == [bucket.id]
    assert _action_row(hub, "a-sent").state == "lost"
    assert _action_row(hub, "a-sent").message == "no answer from the agent within 60 s"
    assert _action_row(hub, "a-done").state == "ok"


def _server_pk(hub: Hub) -> int | None:
    with hub.database.session() as db:
        found: int | None = db.scalar(select(Server.id).where(Server.connected.is_(True)))
        return found
