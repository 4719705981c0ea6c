"""Helpers for the hub tests: a hub app on a temp home, users and buckets, and a test
agent speaking the real protocol over a real WebSocket (engineer G's agent comes later)."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import secrets
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from websockets.asyncio.client import ClientConnection, connect

from corral.hub.accounts import create_user, find_user, set_role
from corral.hub.app import create_app
from corral.hub.buckets import NewBucket, create_bucket
from corral.hub.config import HubConfig
from corral.hub.db.engine import open_database
from corral.hub.db.models import User
from corral.hub.roles import Role
from corral.hub.services import Hub
from corral.panel.security.passwords import hash_password
from corral.protocol.hub import (
    AgentHandshake,
    BucketKeys,
    PasswordVerifier,
    Session,
    decide_action,
    derive_bucket_keys,
)
from corral.protocol.hub.messages import MessageType

PASSWORD = "correct horse battery staple"
AGENT_PASSWORD = "agent pass phrase 42"


def make_hub(home: Path, database_url: str = "", **config: Any) -> tuple[Starlette, Hub]:
    # TestClient's Host is "testserver"; real servers in tests are on 127.0.0.1.
    config.setdefault("allowed_hosts", ("testserver", "127.0.0.1", "localhost"))
    cfg = HubConfig(home=home, database_url=database_url, **config)
    app = create_app(cfg, database=open_database(cfg.url), background=())
    return app, app.state.hub


@functools.cache
def _password_hash() -> str:
    return hash_password(PASSWORD)


def add_user(hub: Hub, name: str, *, admin: bool = False) -> int:
    """A user whose password is PASSWORD (hashed once per test process)."""
    with hub.database.session() as db:
        user = User(
            username=name,
            password_hash=_password_hash(),
            is_admin=admin,
            disabled=False,
            created_at=time.time(),
        )
        db.add(user)
        db.flush()
        return user.id


def add_bucket(hub: Hub, name: str, owner: str) -> NewBucket:
    with hub.database.session() as db:
        user = find_user(db, owner)
        assert user is not None
        return create_bucket(db, hub.sealer, name, user, 7)


def grant(hub: Hub, user_id: int, bucket_id: int, role: Role) -> None:
    with hub.database.session() as db:
        set_role(db, user_id, bucket_id, role)


def new_user(hub: Hub, name: str, password: str) -> int:
    with hub.database.session() as db:
        return create_user(db, name, password).id


def app_body(name: str, **over: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "name": name,
        "id": 0,
        "instance": 0,
        "status": "online",
        "cpu": 1.5,
        "memory": 50 * 1024 * 1024,
        "restarts": 0,
        "unstable_restarts": 0,
        "exec_mode": "fork",
        "git_revision": None,
        "custom": {},
    }
    body.update(over)
    return body


def metrics_body(hostname: str, apps: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "sampled_at": time.time(),
        "server": {
            "hostname": hostname,
            "addresses": ["192.0.2.7"],
            "load": [0.5, 0.4, 0.3],
            "memory": {"total": 8 << 30, "available": 6 << 30, "swap_used": 0},
            "cpu": {"count": 4, "percent": 12.5},
        },
        "apps": apps,
    }


@dataclass
class ProtocolAgent:
    """One agent connection: handshake, hello, then metrics and action results on demand."""

    keys: BucketKeys
    hostname: str
    server_id: str = field(default_factory=lambda: secrets.token_hex(16))
    verifier: PasswordVerifier | None = None
    remote_actions: bool = True
    ws: ClientConnection | None = None
    session: Session | None = None
    results: list[dict[str, Any]] = field(default_factory=list)

    def hello(self) -> dict[str, Any]:
        return {
            "agent_version": "test",
            "server_id": self.server_id,
            "hostname": self.hostname,
            "remote_actions": self.remote_actions,
            "password": self.verifier.params.to_json() if self.verifier else None,
        }

    async def send(self, message_type: MessageType, body: dict[str, Any]) -> None:
        assert self.ws is not None and self.session is not None
        await self.ws.send(self.session.seal(message_type, body))

    async def send_metrics(self, body: dict[str, Any]) -> None:
        await self.send(MessageType.METRICS, body)

    async def answer_one_action(self) -> dict[str, Any]:
        """Receive one action, decide as the real agent does, answer; the action."""
        assert self.ws is not None and self.session is not None
        frame = await asyncio.wait_for(self.ws.recv(), 30)
        assert isinstance(frame, str)
        received = self.session.open(frame)
        action = received.body
        refusal = decide_action(
            self.session, received.seq, action, self.verifier, self.remote_actions
        )
        result = {
            "id": action["id"],
            "ok": refusal is None,
            "code": refusal.value if refusal else None,
            "message": "done" if refusal is None else f"refused: {refusal.value}",
            "finished_at": time.time(),
        }
        await self.send(MessageType.ACTION_RESULT, result)
        self.results.append(result)
        return action


@contextlib.asynccontextmanager
async def agent_connection(url: str, agent: ProtocolAgent) -> AsyncIterator[ProtocolAgent]:
    async with connect(url) as ws:
        handshake = AgentHandshake(agent.keys)
        challenge = await ws.recv()
        await ws.send(handshake.answer(challenge))
        agent.session = handshake.finish(await ws.recv())
        agent.ws = ws
        await agent.send(MessageType.HELLO, agent.hello())
        try:
            yield agent
        finally:
            agent.ws = None


def keys_of(bucket: NewBucket) -> BucketKeys:
    return derive_bucket_keys(bucket.public_id, bucket.secret)


def wait_until(check: Callable[[], bool], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "the condition never became true"
        time.sleep(0.05)


async def await_until(check: Callable[[], Any], timeout: float = 15.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = await asyncio.to_thread(check)
        if value:
            return value
        assert time.monotonic() < deadline, "the condition never became true"
        await asyncio.sleep(0.05)


def dump_tables(hub: Hub) -> str:
    """Every row of every hub table, as text (to prove a value is stored nowhere)."""
    from sqlalchemy import select

    from corral.hub.db.models import Base

    out: list[str] = []
    with hub.database.session() as db:
        for table in Base.metadata.sorted_tables:
            out.extend(repr(tuple(row)) for row in db.execute(select(table)))
    return "\n".join(out)
