"""The agent password's proof: the agent checks it against its stored verifier; it is
good for one action in one frame of one connection, and the remote-actions switch wins."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from corral.protocol.hub import (
    HubProtocolError,
    MessageType,
    Outcome,
    PasswordVerifier,
    Session,
    Verb,
    decide_action,
    derive_proof_key,
    make_verifier,
    seal_action,
)
from corral.protocol.hub.proof import PasswordParams, proof_message
from tests.protocol.hubkit import FAST_PARAMS, Connection, action_body, connect, new_bucket

PASSWORD = "tr0ub4dor&3-agent"
VERIFIER = make_verifier(PASSWORD, FAST_PARAMS)
KEY = derive_proof_key(PASSWORD, FAST_PARAMS)


def deliver(conn: Connection, frame: str) -> Outcome | None:
    received = conn.agent.open(frame)
    return decide_action(conn.agent, received.seq, received.body, VERIFIER, True)


@pytest.mark.parametrize("verb", ["stop", "delete", "env", "scale", "deploy"])
def test_a_sensitive_action_runs_with_a_proof_and_not_without(verb: str) -> None:
    args = {"env": {"set": {"A": "1"}, "unset": []}, "scale": {"count": "+1"}}
    body = action_body(verb, args=args.get(verb, {"ref": None} if verb == "deploy" else {}))
    conn = connect(new_bucket().keys)
    assert deliver(conn, seal_action(conn.hub, body, KEY)) is None
    assert deliver(conn, seal_action(conn.hub, body, None)) is Outcome.PASSWORD_REQUIRED


@pytest.mark.parametrize("verb", ["restart", "reload", "reset"])
def test_harmless_actions_need_no_proof(verb: str) -> None:
    conn = connect(new_bucket().keys)
    assert deliver(conn, seal_action(conn.hub, action_body(verb), None)) is None


def test_a_wrong_password_gives_a_bad_proof() -> None:
    conn = connect(new_bucket().keys)
    wrong = derive_proof_key(PASSWORD + "x", FAST_PARAMS)
    assert deliver(conn, seal_action(conn.hub, action_body("stop"), wrong)) is Outcome.BAD_PROOF


def test_other_argon2_parameters_give_a_bad_proof() -> None:
    conn = connect(new_bucket().keys)
    other = PasswordParams(bytes(16), 1, 8 * 1024, 1)
    key = derive_proof_key(PASSWORD, other)
    assert deliver(conn, seal_action(conn.hub, action_body("stop"), key)) is Outcome.BAD_PROOF


def proof_for(session: Session, seq: int, body: dict[str, Any]) -> str:
    """The proof the hub would attach to `body` in frame `seq` of `session`."""
    return base64.b64encode(KEY.sign(proof_message(session, seq, body))).decode()


def _open_plain(sender: Session, frame: str) -> dict[str, Any]:
    """What the sender sealed in `frame` (as the hub knows it), without delivering it."""
    from corral.protocol.hub import frames

    env = json.loads(frame)
    send = sender._send
    ad = frames.associated_data(send.direction, sender.public_id, env["seq"], env["type"])
    plain = send.aead.decrypt(
        frames.nonce(send.direction, env["seq"]), base64.b64decode(env["ct"]), ad
    )
    result: dict[str, Any] = json.loads(plain)
    return result


ENV_ACTION = action_body("env", args={"set": {"A": "1"}, "unset": []})


@pytest.mark.parametrize(
    ("body", "change"),
    [
        (action_body("stop"), {}),
        (action_body("stop"), {"id": "act-2"}),
        (action_body("stop"), {"verb": "delete"}),
        (action_body("stop"), {"target": "db"}),
        (action_body("stop"), {"requested_by": "mallory"}),
        (ENV_ACTION, {}),
        (ENV_ACTION, {"args": {"set": {"A": "2"}, "unset": []}}),
        (ENV_ACTION, {"args": {"set": {"A": "1"}, "unset": ["B"]}}),
    ],
)
def test_a_proof_moved_to_another_action_is_refused(
    body: dict[str, Any], change: dict[str, Any]
) -> None:
    conn = connect(new_bucket().keys)
    proof = proof_for(conn.hub, conn.hub.next_send_seq, body)
    frame = conn.hub.seal(MessageType.ACTION, body | change | {"proof": proof})
    # The unchanged action (the control case) runs; any change is a bad proof.
    assert deliver(conn, frame) is (Outcome.BAD_PROOF if change else None)


def test_a_relayed_proof_cannot_be_replayed_in_a_later_frame() -> None:
    """The hub itself re-sending the same signed action (fresh seq) is refused."""
    conn = connect(new_bucket().keys)
    body = action_body("stop")
    first = seal_action(conn.hub, body, KEY)
    proof = _open_plain(conn.hub, first)["proof"]
    assert deliver(conn, first) is None
    again = conn.hub.seal(MessageType.ACTION, body | {"proof": proof})
    assert deliver(conn, again) is Outcome.BAD_PROOF


def test_a_proof_from_another_connection_of_the_same_bucket_is_refused() -> None:
    bucket = new_bucket()
    one, two = connect(bucket.keys), connect(bucket.keys)
    body = action_body("delete")
    proof = _open_plain(one.hub, seal_action(one.hub, body, KEY))["proof"]
    frame = two.hub.seal(MessageType.ACTION, body | {"proof": proof})  # same seq 0
    assert deliver(two, frame) is Outcome.BAD_PROOF


def test_remote_actions_off_refuses_everything_even_with_a_proof() -> None:
    conn = connect(new_bucket().keys)
    for verb in Verb:
        body = action_body(verb.value, id=f"a-{verb.value}")
        body["args"] = {
            Verb.SCALE: {"count": "2"},
            Verb.ENV: {"set": {}, "unset": ["A"]},
            Verb.DEPLOY: {"ref": "main"},
        }.get(verb, {})
        received = conn.agent.open(seal_action(conn.hub, body, KEY))
        outcome = decide_action(conn.agent, received.seq, received.body, VERIFIER, False)
        assert outcome is Outcome.REMOTE_ACTIONS_OFF


def test_no_password_set_refuses_sensitive_verbs() -> None:
    conn = connect(new_bucket().keys)
    received = conn.agent.open(seal_action(conn.hub, action_body("stop"), KEY))
    outcome = decide_action(conn.agent, received.seq, received.body, None, True)
    assert outcome is Outcome.NO_PASSWORD_SET


def test_the_verifier_round_trips_and_hides_itself() -> None:
    text = VERIFIER.to_text()
    assert PasswordVerifier.from_text(text) == VERIFIER
    assert PASSWORD not in text and "hidden" in repr(VERIFIER) and "hidden" in repr(KEY)
    for bad in ["", "{}", '{"v":1}', text.replace('"v":1', '"v":2'), "[1]"]:
        with pytest.raises(HubProtocolError, match="malformed"):
            PasswordVerifier.from_text(bad)


def test_params_from_a_hostile_hello_are_bounded() -> None:
    with pytest.raises(HubProtocolError):
        PasswordParams.from_json(FAST_PARAMS.to_json() | {"memory_cost": 4 * 1024 * 1024})
    with pytest.raises(HubProtocolError):
        PasswordParams.from_json(FAST_PARAMS.to_json() | {"salt": "AAAA"})
    assert PasswordParams.from_json(FAST_PARAMS.to_json()) == FAST_PARAMS


def test_a_requester_name_that_is_not_utf8_still_gets_a_checked_proof() -> None:
    conn = connect(new_bucket().keys)
    body = action_body("stop", requested_by="\udcffroot")
    assert deliver(conn, seal_action(conn.hub, body, KEY)) is None
