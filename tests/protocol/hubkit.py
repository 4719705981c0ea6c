"""Shared pieces of the hub protocol tests: buckets, connected session pairs, bodies."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from corral.protocol.hub import (
    AgentHandshake,
    BucketKeys,
    HubHandshake,
    Session,
    derive_bucket_keys,
    new_public_id,
    new_secret,
)
from corral.protocol.hub.proof import PasswordParams

# The lowest argon2 cost the hello schema allows: the scheme is the same, the tests fast.
FAST_PARAMS = PasswordParams(os.urandom(16), time_cost=1, memory_cost=8 * 1024, parallelism=1)


@dataclass
class Bucket:
    public_id: str
    secret: str
    keys: BucketKeys


def new_bucket() -> Bucket:
    public_id, secret = new_public_id(), new_secret()
    return Bucket(public_id, secret, derive_bucket_keys(public_id, secret))


@dataclass
class Connection:
    agent: Session
    hub: Session
    transcript: list[str]
    """Every handshake message, in order (frames are recorded by the tests)."""


def connect(agent_keys: BucketKeys, hub_keys: BucketKeys | None = None) -> Connection:
    """A full handshake between an agent and a hub that looks up `hub_keys`."""
    hub_side, agent_side = HubHandshake(), AgentHandshake(agent_keys)
    challenge = hub_side.challenge()
    response = agent_side.answer(challenge)
    assert hub_side.read_response(response) == agent_keys.public_id
    confirm, hub_session = hub_side.accept(hub_keys or agent_keys)
    agent_session = agent_side.finish(confirm)
    return Connection(agent_session, hub_session, [challenge, response, confirm])


def say_hello(conn: Connection) -> Connection:
    """The agent's first frame, sent and opened: after it, any agent message may follow."""
    from corral.protocol.hub import MessageType

    conn.hub.open(conn.agent.seal(MessageType.HELLO, hello_body()))
    return conn


def hello_body(password: PasswordParams | None = None) -> dict[str, Any]:
    return {
        "agent_version": "0.1.0",
        "server_id": "0123456789abcdef0123456789abcdef",
        "hostname": "web-1",
        "remote_actions": True,
        "password": None if password is None else password.to_json(),
    }


def metrics_body() -> dict[str, Any]:
    return {
        "sampled_at": 1_790_000_000.25,
        "server": {
            "hostname": "web-1",
            "addresses": ["10.0.0.5", "fe80::1"],
            "load": [0.5, 0.25, 0.125],
            "memory": {"total": 8 << 30, "available": 5 << 30, "swap_used": 0},
            "cpu": {"count": 2, "percent": 12.5},
        },
        "apps": [
            {
                "name": "api",
                "id": 0,
                "instance": 0,
                "status": "online",
                "cpu": 3.5,
                "memory": 52_428_800,
                "restarts": 2,
                "unstable_restarts": 0,
                "exec_mode": "cluster",
                "git_revision": "0123456789abcdef0123456789abcdef01234567",
                "custom": {
                    "queue_depth": {"kind": "gauge", "value": 12},
                    "jobs": {"kind": "meter", "rate": 0.5, "count": 30},
                    "latency_ms": {
                        "kind": "histogram",
                        **{k: 3.25 for k in ("count", "sum", "min", "max", "p50", "p95", "p99")},
                    },
                },
            }
        ],
    }


def action_body(verb: str = "restart", **overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": "act-1",
        "verb": verb,
        "target": "api",
        "args": {},
        "requested_by": "alice@example.com",
        "proof": None,
    }
    body.update(overrides)
    return body


def result_body(action_id: str = "act-1", code: str | None = None) -> dict[str, Any]:
    return {
        "id": action_id,
        "ok": code is None,
        "code": code,
        "message": "done" if code is None else "refused",
        "finished_at": 1_790_000_001.5,
    }
