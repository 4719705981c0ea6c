"""Sealed frames: every way of moving, repeating or changing a frame is refused, each
with its own reason, and the decoder never raises anything else."""

from __future__ import annotations

import base64
import json

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from corral.protocol.hub import (
    FrameRejected,
    HubProtocolError,
    MessageInvalid,
    MessageType,
    RejectReason,
    Session,
)
from corral.protocol.hub.frames import MAX_FRAME_CHARS, MAX_PLAINTEXT
from tests.protocol.hubkit import (
    Connection,
    connect,
    hello_body,
    metrics_body,
    new_bucket,
    say_hello,
)


@pytest.fixture
def conn() -> Connection:
    return connect(new_bucket().keys)


def reason_of(session: Session, frame: str | bytes) -> RejectReason:
    with pytest.raises(FrameRejected) as refused:
        session.open(frame)
    return refused.value.reason


def test_frames_open_in_order(conn: Connection) -> None:
    say_hello(conn)
    frames = [conn.agent.seal(MessageType.METRICS, metrics_body()) for _ in range(3)]
    assert [conn.hub.open(f).seq for f in frames] == [1, 2, 3]


def test_a_captured_frame_replayed_is_refused(conn: Connection) -> None:
    frame = conn.agent.seal(MessageType.HELLO, hello_body())
    conn.hub.open(frame)
    assert reason_of(conn.hub, frame) is RejectReason.REPLAYED


def test_a_reordered_frame_is_refused(conn: Connection) -> None:
    say_hello(conn)
    first = conn.agent.seal(MessageType.METRICS, metrics_body())
    second = conn.agent.seal(MessageType.METRICS, metrics_body())
    assert first != second
    assert reason_of(conn.hub, second) is RejectReason.OUT_OF_ORDER


def test_a_dropped_frame_resent_later_is_refused(conn: Connection) -> None:
    say_hello(conn)
    dropped = conn.agent.seal(MessageType.METRICS, metrics_body())
    later = conn.agent.seal(MessageType.METRICS, metrics_body())
    assert reason_of(conn.hub, later) is RejectReason.OUT_OF_ORDER
    # The receiving side is closed now: not even the missing frame is taken.
    assert reason_of(conn.hub, dropped) is RejectReason.CLOSED


def test_a_frame_reflected_to_its_sender_is_refused(conn: Connection) -> None:
    frame = conn.agent.seal(MessageType.HELLO, hello_body())
    assert reason_of(conn.agent, frame) is RejectReason.REFLECTED
    back = conn.hub.seal(MessageType.ACTION, _action())
    assert reason_of(conn.hub, back) is RejectReason.REFLECTED


def test_a_frame_under_another_buckets_key_is_refused(conn: Connection) -> None:
    other = connect(new_bucket().keys)
    frame = other.agent.seal(MessageType.HELLO, hello_body())
    assert reason_of(conn.hub, frame) is RejectReason.WRONG_KEY


def test_a_foreign_frame_relabelled_with_the_right_key_id_fails_its_tag(
    conn: Connection,
) -> None:
    other = connect(new_bucket().keys)
    mine = json.loads(conn.agent.seal(MessageType.HELLO, hello_body()))
    foreign = json.loads(other.agent.seal(MessageType.HELLO, hello_body()))
    foreign["kid"] = mine["kid"]
    assert reason_of(conn.hub, _dump(foreign)) is RejectReason.TAMPERED


def _dump(env: dict[str, object]) -> str:
    return json.dumps(env, separators=(",", ":"))


def _action() -> dict[str, object]:
    return {
        "id": "a1",
        "verb": "reload",
        "target": "api",
        "args": {},
        "requested_by": "bob",
        "proof": None,
    }


def test_every_changed_byte_of_a_frame_is_refused() -> None:
    bucket = new_bucket()
    frame = connect(bucket.keys).agent.seal(MessageType.HELLO, hello_body())
    raw = frame.encode()
    for index in range(len(raw)):
        for flip in (0x01, 0x20, 0x80):
            conn = connect(bucket.keys)
            sent = conn.agent.seal(MessageType.HELLO, hello_body())
            data = bytearray(sent.encode())
            data[index] ^= flip
            with pytest.raises(FrameRejected):
                conn.hub.open(bytes(data))


@pytest.mark.parametrize(
    ("field", "change", "reason"),
    [
        ("seq", lambda env: {**env, "seq": 1}, RejectReason.OUT_OF_ORDER),
        ("type", lambda env: {**env, "type": "metrics"}, RejectReason.TAMPERED),
        ("type", lambda env: {**env, "type": "action"}, RejectReason.UNKNOWN_TYPE),
        ("v", lambda env: {**env, "v": 2}, RejectReason.VERSION),
        ("ct", lambda env: {**env, "ct": _flip_b64(env["ct"], 0)}, RejectReason.TAMPERED),
        ("tag", lambda env: {**env, "ct": _flip_b64(env["ct"], -1)}, RejectReason.TAMPERED),
        ("ct", lambda env: {**env, "ct": env["ct"][:-4]}, RejectReason.TAMPERED),
        ("ct", lambda env: {**env, "ct": ""}, RejectReason.MALFORMED),
        ("extra", lambda env: {**env, "x": 1}, RejectReason.MALFORMED),
        ("seq", lambda env: {**env, "seq": True}, RejectReason.MALFORMED),
        ("seq", lambda env: {**env, "seq": 0.0}, RejectReason.MALFORMED),
        ("kid", lambda env: {**env, "kid": "zz"}, RejectReason.MALFORMED),
    ],
)
def test_each_tampered_field_is_refused_with_its_reason(
    conn: Connection, field: str, change: object, reason: RejectReason
) -> None:
    env = json.loads(conn.agent.seal(MessageType.HELLO, hello_body()))
    assert callable(change)
    assert reason_of(conn.hub, _dump(change(env))) is reason, field


def _flip_b64(text: str, index: int) -> str:
    data = bytearray(base64.b64decode(text))
    data[index] ^= 1
    return base64.b64encode(bytes(data)).decode()


def test_non_canonical_json_or_base64_is_refused(conn: Connection) -> None:
    frame = conn.agent.seal(MessageType.HELLO, hello_body())
    spaced = json.dumps(json.loads(frame))  # same values, other spacing
    assert reason_of(conn.hub, spaced) is RejectReason.MALFORMED
    conn2 = connect(new_bucket().keys)
    # A ciphertext (the body and a 16-byte tag) whose length is not a multiple of 3 ends
    # in a base64 character with unused low bits: changing them decodes to the same bytes.
    hostname = next(
        "h" * n
        for n in range(1, 4)
        if (len(json.dumps(hello_body() | {"hostname": "h" * n}, separators=(",", ":"))) + 16) % 3
    )
    env = json.loads(conn2.agent.seal(MessageType.HELLO, hello_body() | {"hostname": hostname}))
    ct = env["ct"]
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    body = ct.rstrip("=")
    twin = body[:-1] + alphabet[alphabet.index(body[-1]) ^ 1] + ct[len(body) :]
    assert twin != ct and base64.b64decode(twin) == base64.b64decode(ct)
    env["ct"] = twin
    assert reason_of(conn2.hub, _dump(env)) is RejectReason.MALFORMED


def test_after_a_refusal_the_connection_takes_nothing_more(conn: Connection) -> None:
    good = conn.agent.seal(MessageType.HELLO, hello_body())
    assert reason_of(conn.hub, "garbage") is RejectReason.MALFORMED
    assert conn.hub.closed
    assert reason_of(conn.hub, good) is RejectReason.CLOSED


def test_a_body_up_to_the_limit_travels_and_one_over_it_is_refused(conn: Connection) -> None:
    values = {f"V{i}": "x" * 32768 for i in range(31)}  # just under 1 MiB of JSON
    body = {**_action(), "verb": "env", "args": {"set": values, "unset": []}}
    frame = conn.hub.seal(MessageType.ACTION, body)
    assert len(frame) <= MAX_FRAME_CHARS
    assert conn.agent.open(frame).body == body
    values["V31"] = "x" * 32768
    with pytest.raises(MessageInvalid, match=f"over {MAX_PLAINTEXT}"):
        conn.hub.seal(MessageType.ACTION, body)
    # The receiver refuses an oversized frame before reading it.
    assert reason_of(conn.agent, "x" * (MAX_FRAME_CHARS + 1)) is RejectReason.TOO_LARGE
    assert MAX_PLAINTEXT == 1024 * 1024


def test_the_sender_refuses_a_type_of_the_other_direction(conn: Connection) -> None:
    with pytest.raises(MessageInvalid):
        conn.agent.seal(MessageType.ACTION, _action())
    with pytest.raises(MessageInvalid):
        conn.hub.seal(MessageType.METRICS, metrics_body())


def test_the_agent_starts_with_hello_and_says_it_once(conn: Connection) -> None:
    with pytest.raises(MessageInvalid, match="first frame must be its hello"):
        conn.agent.seal(MessageType.METRICS, metrics_body())
    say_hello(conn)
    with pytest.raises(MessageInvalid, match="only the first"):
        conn.agent.seal(MessageType.HELLO, hello_body())


def test_a_first_frame_other_than_hello_is_refused_on_opening(conn: Connection) -> None:
    from corral.protocol.hub import frames

    send = conn.agent._send
    body = json.dumps(metrics_body()).encode()
    ad = frames.associated_data(send.direction, conn.agent.public_id, 0, "metrics")
    ct = send.aead.encrypt(frames.nonce(send.direction, 0), body, ad)
    env = {
        "v": 1,
        "kid": send.kid,
        "seq": 0,
        "type": "metrics",
        "ct": base64.b64encode(ct).decode(),
    }
    with pytest.raises(MessageInvalid, match="first frame must be its hello"):
        conn.hub.open(_dump(env))


def test_an_authentic_frame_with_an_invalid_body_is_refused(conn: Connection) -> None:
    # Seal by hand what `seal` would never send: a hello with an unknown field.
    from corral.protocol.hub import frames

    send = conn.agent._send
    body = json.dumps({**hello_body(), "debug": True}).encode()
    ad = frames.associated_data(send.direction, conn.agent.public_id, 0, "hello")
    ct = send.aead.encrypt(frames.nonce(send.direction, 0), body, ad)
    env = {"v": 1, "kid": send.kid, "seq": 0, "type": "hello", "ct": base64.b64encode(ct).decode()}
    with pytest.raises(MessageInvalid, match="hello: unknown field 'debug'"):
        conn.hub.open(_dump(env))
    assert conn.hub.closed


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=12,
)


def _envelopes() -> st.SearchStrategy[str]:
    return st.fixed_dictionaries(
        {
            "v": st.sampled_from([1, 0, 2, "1", None]),
            "kid": st.text(alphabet="0123456789abcdef", min_size=16, max_size=16) | _JSON,
            "seq": st.integers(-2, 2**65) | _JSON,
            "type": st.sampled_from(["hello", "metrics", "action", "action_result"]) | _JSON,
            "ct": st.binary(max_size=64).map(lambda b: base64.b64encode(b).decode()) | _JSON,
        }
    ).map(lambda d: json.dumps(d, separators=(",", ":")))


@settings(max_examples=400)
@given(data=st.binary(max_size=300) | st.text(max_size=300) | _envelopes() | _JSON.map(json.dumps))
def test_the_decoder_only_ever_raises_its_own_errors(data: str | bytes) -> None:
    session = connect(new_bucket().keys).hub
    with pytest.raises(HubProtocolError):
        session.open(data)


@settings(max_examples=200)
@given(data=st.binary(max_size=200))
def test_random_bytes_spliced_into_a_real_frame_are_refused(data: bytes) -> None:
    conn = connect(new_bucket().keys)
    frame = conn.agent.seal(MessageType.HELLO, hello_body()).encode()
    cut = len(data) % len(frame)
    spliced = frame[:cut] + data + frame[cut + len(data) :]
    assume(spliced != frame)
    with pytest.raises(FrameRejected):
        conn.hub.open(spliced)
