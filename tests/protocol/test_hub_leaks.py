"""A whole recorded session (handshake, hello, metrics, an action with the password's
proof, its result) holds neither the bucket secret nor the agent password nor any key,
in any usual encoding, in any frame, and not inside the encrypted bodies either."""

from __future__ import annotations

import base64
import contextlib
import json

from corral.protocol.hub import (
    MessageType,
    decide_action,
    derive_proof_key,
    make_verifier,
    seal_action,
)
from tests.protocol.hubkit import (
    FAST_PARAMS,
    action_body,
    connect,
    hello_body,
    metrics_body,
    new_bucket,
    result_body,
)

PASSWORD = "agent-pässword-Kz81"


def forms(value: bytes) -> list[str]:
    """The ways a secret usually leaks into text."""
    b64 = base64.b64encode(value).decode()
    url = base64.urlsafe_b64encode(value).decode()
    out = [value.hex(), value.hex().upper(), b64, b64.rstrip("="), url, url.rstrip("=")]
    with contextlib.suppress(UnicodeDecodeError):
        out.append(value.decode())
    return out


def test_no_secret_password_or_key_appears_in_a_recorded_session() -> None:
    bucket = new_bucket()
    conn = connect(bucket.keys)
    verifier = make_verifier(PASSWORD, FAST_PARAMS)
    recorded: list[str] = list(conn.transcript)
    bodies: list[dict[str, object]] = []

    def agent_to_hub(message_type: MessageType, body: dict[str, object]) -> None:
        recorded.append(conn.agent.seal(message_type, body))
        bodies.append(conn.hub.open(recorded[-1]).body)

    agent_to_hub(MessageType.HELLO, hello_body(FAST_PARAMS))
    agent_to_hub(MessageType.METRICS, metrics_body())
    key = derive_proof_key(PASSWORD, FAST_PARAMS)
    for action in (action_body("stop", id="a1"), action_body("restart", id="a2")):
        recorded.append(seal_action(conn.hub, action, key if action["verb"] == "stop" else None))
        received = conn.agent.open(recorded[-1])
        bodies.append(received.body)
        assert decide_action(conn.agent, received.seq, received.body, verifier, True) is None
        agent_to_hub(MessageType.ACTION_RESULT, result_body(str(action["id"])))
    assert len(recorded) == 3 + 6

    needles = [PASSWORD, bucket.secret]
    for value in (
        bucket.secret.encode(),
        PASSWORD.encode(),
        bucket.keys.auth,
        bucket.keys.agent_to_hub,
        bucket.keys.hub_to_agent,
    ):
        needles += forms(value)
    plaintexts = [json.dumps(b, ensure_ascii=False) for b in bodies]
    plaintexts += [json.dumps(b) for b in bodies]
    for text in recorded + plaintexts:
        for needle in needles:
            assert needle not in text
    # Stored forms: the hub's bucket keys and the agent's verifier hold neither.
    stored = json.dumps(bucket.keys.to_json()) + verifier.to_text()
    for needle in forms(bucket.secret.encode()) + forms(PASSWORD.encode()):
        assert needle not in stored
