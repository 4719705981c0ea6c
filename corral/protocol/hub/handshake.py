"""Mutual challenge-response over the first three WebSocket messages (plain JSON, inside
TLS; nothing in them reveals the secret or a key)::

    hub   -> agent  {"v":1,"type":"challenge","nonce":b64(32 random),"dh":b64(X25519 pub)}
    agent -> hub    {"v":1,"type":"response","public_id":..,"nonce":b64(32 random),
                     "dh":b64(X25519 pub),"mac":b64(HMAC-SHA256(auth key, agent label))}
    hub   -> agent  {"v":1,"type":"confirm","mac":b64(HMAC-SHA256(auth key, hub label))}
                 or {"v":1,"type":"denied","reason":"authentication failed"}

with transcript = pack(label, "handshake", public id, hub nonce, hub dh, agent nonce,
agent dh) and each MAC over pack(label, "auth", direction, transcript): the two MACs
differ by their direction label, so neither can be reflected as the other. The hub
checks the agent's MAC in constant time (an unknown public id costs the same and gets
the same `denied`); the agent checks the hub's MAC before it sends a single frame, so it
never talks to a hub that does not know the bucket's keys. Both then derive the session
keys (`keys.session_key`) from the bucket keys, the X25519 shared secret and the
transcript: fresh per connection, forward secret.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
from typing import Any, Final

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from corral.protocol.hub.errors import HandshakeFailed
from corral.protocol.hub.frames import Session, dumps, loads
from corral.protocol.hub.keys import (
    AGENT_TO_HUB,
    HUB_TO_AGENT,
    KEY_BYTES,
    LABEL,
    NONCE_BYTES,
    PROTOCOL_VERSION,
    PUBLIC_ID_RE,
    BucketKeys,
    mac,
    pack,
    session_key,
)

MAX_HANDSHAKE_CHARS: Final = 1024
DENIED_REASON: Final = "authentication failed"
_DUMMY_AUTH_KEY: Final = secrets.token_bytes(KEY_BYTES)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _parse(text: str | bytes, type_name: str, expected: dict[str, str], who: str) -> dict[str, Any]:
    """A `type_name` handshake message with exactly the keys of `expected` (key -> "b64"
    or "str"), version checked; HandshakeFailed saying what is wrong otherwise."""
    if len(text) > MAX_HANDSHAKE_CHARS:
        raise HandshakeFailed(f"the {who} sent an oversized handshake message")
    try:
        message = loads(text)
    except (ValueError, RecursionError):
        raise HandshakeFailed(f"the {who} sent a handshake message that is not JSON") from None
    if not isinstance(message, dict) or message.get("v") != PROTOCOL_VERSION:
        raise HandshakeFailed(f"the {who} does not speak hub protocol version 1")
    if message.get("type") != type_name:
        raise HandshakeFailed(f"the {who} did not send a {type_name} message")
    wanted = {"v", "type", *expected}
    if set(message) != wanted:
        raise HandshakeFailed(
            f"the {who}'s {type_name} message must hold exactly {', '.join(sorted(wanted))}"
        )
    out: dict[str, Any] = {}
    for key, kind in expected.items():
        value = message[key]
        if not isinstance(value, str):
            raise HandshakeFailed(f"the {who}'s {key} is not a string")
        if kind == "b64":
            try:
                raw = base64.b64decode(value, validate=True)
            except (binascii.Error, ValueError):
                raise HandshakeFailed(f"the {who}'s {key} is not base64") from None
            if len(raw) != 32:
                raise HandshakeFailed(f"the {who}'s {key} is not 32 bytes")
            out[key] = raw
        else:
            out[key] = value
    return out


def _type(text: str | bytes) -> object:
    try:
        message = loads(text)
    except (ValueError, RecursionError):
        return None
    return message.get("type") if isinstance(message, dict) else None


def _transcript(
    public_id: str, hub_nonce: bytes, hub_dh: bytes, agent_nonce: bytes, agent_dh: bytes
) -> bytes:
    return pack(LABEL, "handshake", public_id, hub_nonce, hub_dh, agent_nonce, agent_dh)


def _auth_mac(auth_key: bytes, direction: str, transcript: bytes) -> bytes:
    return mac(auth_key, pack(LABEL, "auth", direction, transcript))


def _raw_public(key: X25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def _shared(own: X25519PrivateKey, peer: bytes, who: str) -> bytes:
    try:
        return own.exchange(X25519PublicKey.from_public_bytes(peer))
    except ValueError:
        raise HandshakeFailed(f"the {who}'s X25519 key is unusable") from None


def _session(
    keys: BucketKeys, shared: bytes, transcript: bytes, sending: str, receiving: str
) -> Session:
    session_id = hashlib.sha256(pack(LABEL, "session id", transcript)).digest()
    return Session(
        keys.public_id,
        session_id,
        (sending, session_key(keys, sending, shared, transcript)),
        (receiving, session_key(keys, receiving, shared, transcript)),
    )


class HubHandshake:
    """The hub's side: `challenge()`, then `read_response()` (which names the bucket to
    look up), then `accept(keys)` with that bucket's keys or None if it is unknown."""

    def __init__(self) -> None:
        self._nonce = secrets.token_bytes(NONCE_BYTES)
        self._dh = X25519PrivateKey.generate()
        self._response: dict[str, Any] | None = None
        self._done = False

    def challenge(self) -> str:
        return dumps(
            {
                "v": PROTOCOL_VERSION,
                "type": "challenge",
                "nonce": _b64(self._nonce),
                "dh": _b64(_raw_public(self._dh)),
            }
        )

    def read_response(self, text: str | bytes) -> str:
        """The public id the agent claims (not yet proven)."""
        if self._response is not None:
            raise HandshakeFailed("the agent's response was already read")
        expected = {"public_id": "str", "nonce": "b64", "dh": "b64", "mac": "b64"}
        response = _parse(text, "response", expected, "agent")
        if not PUBLIC_ID_RE.fullmatch(response["public_id"]):
            raise HandshakeFailed("the agent's public id is malformed")
        self._response = response
        return str(response["public_id"])

    def accept(self, keys: BucketKeys | None) -> tuple[str, Session]:
        """The confirm message to send and the session; HandshakeFailed (with the
        `denied` message as its `reply`) when the agent did not prove the bucket's key."""
        response = self._response
        if response is None or self._done:
            raise HandshakeFailed("accept() needs exactly one response read first")
        self._done = True
        public_id: str = response["public_id"]
        known = keys is not None and hmac.compare_digest(keys.public_id, public_id)
        transcript = _transcript(
            public_id, self._nonce, _raw_public(self._dh), response["nonce"], response["dh"]
        )
        # An unknown bucket is checked against a dummy key: same cost, same answer.
        auth_key = keys.auth if keys is not None and known else _DUMMY_AUTH_KEY
        expected = _auth_mac(auth_key, AGENT_TO_HUB, transcript)
        if not hmac.compare_digest(expected, response["mac"]) or keys is None or not known:
            denied = {"v": PROTOCOL_VERSION, "type": "denied", "reason": DENIED_REASON}
            raise HandshakeFailed(
                f"agent for bucket {public_id}: {DENIED_REASON}", reply=dumps(denied)
            )
        shared = _shared(self._dh, response["dh"], "agent")
        confirm = {
            "v": PROTOCOL_VERSION,
            "type": "confirm",
            "mac": _b64(_auth_mac(keys.auth, HUB_TO_AGENT, transcript)),
        }
        return dumps(confirm), _session(keys, shared, transcript, HUB_TO_AGENT, AGENT_TO_HUB)


class AgentHandshake:
    """The agent's side: `answer(challenge)`, then `finish(confirm)` gives the session
    once the hub has proven it knows the bucket's keys."""

    def __init__(self, keys: BucketKeys) -> None:
        self._keys = keys
        self._nonce = secrets.token_bytes(NONCE_BYTES)
        self._dh = X25519PrivateKey.generate()
        self._transcript: bytes | None = None
        self._shared = b""
        self._done = False

    def answer(self, challenge: str | bytes) -> str:
        if self._transcript is not None:
            raise HandshakeFailed("the hub's challenge was already answered")
        parsed = _parse(challenge, "challenge", {"nonce": "b64", "dh": "b64"}, "hub")
        self._shared = _shared(self._dh, parsed["dh"], "hub")
        own_dh = _raw_public(self._dh)
        public_id = self._keys.public_id
        transcript = _transcript(public_id, parsed["nonce"], parsed["dh"], self._nonce, own_dh)
        self._transcript = transcript
        response = {
            "v": PROTOCOL_VERSION,
            "type": "response",
            "public_id": public_id,
            "nonce": _b64(self._nonce),
            "dh": _b64(own_dh),
            "mac": _b64(_auth_mac(self._keys.auth, AGENT_TO_HUB, transcript)),
        }
        return dumps(response)

    def finish(self, reply: str | bytes) -> Session:
        transcript = self._transcript
        if transcript is None or self._done:
            raise HandshakeFailed("finish() needs exactly one answered challenge first")
        self._done = True
        if _type(reply) == "denied":
            raise HandshakeFailed(
                "the hub refused this agent: wrong secret or unknown public id"
                f" ({self._keys.public_id})"
            )
        parsed = _parse(reply, "confirm", {"mac": "b64"}, "hub")
        expected = _auth_mac(self._keys.auth, HUB_TO_AGENT, transcript)
        if not hmac.compare_digest(expected, parsed["mac"]):
            raise HandshakeFailed(
                "the hub could not prove it knows this bucket's secret: not talking to it"
            )
        return _session(self._keys, self._shared, transcript, AGENT_TO_HUB, HUB_TO_AGENT)
