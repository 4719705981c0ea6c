"""Sealed frames: what travels after the handshake, one per WebSocket text message.

A frame is the canonical JSON text (keys in this order, no spaces, ASCII only)::

    {"v":1,"kid":"<16 hex>","seq":7,"type":"metrics","ct":"<base64>"}

``ct`` is AES-256-GCM (ciphertext + 16-byte tag) of the message body as compact ASCII JSON,
under the session key of the frame's direction, with

- nonce = 4-byte direction tag || ``seq`` as 8 bytes big-endian: ``seq`` counts from 0
  in each direction of each connection, so a (key, nonce) pair is never used twice;
- associated data = pack(label, direction, public id, seq, type): moving a frame to
  another direction, bucket, position or type breaks the tag.

``kid`` names the key (`keys.key_id`), so a frame under another key is told apart from a
tampered one. The receiver takes frame ``seq`` only when it is exactly the next one.
The agent's first frame is its ``hello``, and only the first.
Any refusal closes the receiving side for good: the caller should drop the connection
(a new one gets new keys). Text, not binary, because every WebSocket stack and proxy
handles it and it can be logged safely (no field reveals anything). Limits: a body of at
most `MAX_PLAINTEXT` bytes; a frame longer than `MAX_FRAME_CHARS` is refused unread.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass
from typing import Any, Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from corral.protocol.hub.errors import (
    FrameRejected,
    HubProtocolError,
    MessageInvalid,
    RejectReason,
)
from corral.protocol.hub.keys import (
    AGENT_TO_HUB,
    HUB_TO_AGENT,
    LABEL,
    PROTOCOL_VERSION,
    key_id,
    pack,
)
from corral.protocol.hub.messages import DIRECTION_TYPES, MessageType, validate_body

MAX_PLAINTEXT: Final = 1024 * 1024
TAG_BYTES: Final = 16
MAX_FRAME_CHARS: Final = 4 * ((MAX_PLAINTEXT + TAG_BYTES + 2) // 3) + 200
MAX_SEQ: Final = 2**64 - 1
_DIRECTION_TAG: Final = {AGENT_TO_HUB: b"\0\0\0\1", HUB_TO_AGENT: b"\0\0\0\2"}
_ENVELOPE_KEYS: Final = ("v", "kid", "seq", "type", "ct")
_KID_RE: Final = re.compile(r"[0-9a-f]{16}")


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def loads(text: str | bytes) -> Any:
    """Strict JSON: no NaN/Infinity; ValueError (or RecursionError) otherwise."""
    return json.loads(text, parse_constant=_no_constants)


def dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=True, allow_nan=False)


def nonce(direction: str, seq: int) -> bytes:
    return _DIRECTION_TAG[direction] + seq.to_bytes(8, "big")


def associated_data(direction: str, public_id: str, seq: int, message_type: str) -> bytes:
    return pack(LABEL, direction, public_id, seq, message_type)


@dataclass(frozen=True)
class Received:
    """One opened frame: its type, its body (checked against the type's schema), its seq."""

    type: MessageType
    body: dict[str, Any]
    seq: int


class _Direction:
    def __init__(self, direction: str, key: bytes) -> None:
        self.direction = direction
        self.aead = AESGCM(key)
        self.kid = key_id(key)
        self.seq = 0


class Session:
    """Both directions of one authenticated connection (made by the handshake).

    `seal` and `open` must each be called in the order frames are sent and received.
    """

    def __init__(
        self,
        public_id: str,
        session_id: bytes,
        send: tuple[str, bytes],
        receive: tuple[str, bytes],
    ) -> None:
        self.public_id = public_id
        self.session_id = session_id
        """A public value naming this connection (both sides compute it; proofs bind it)."""
        self._send = _Direction(*send)
        self._receive = _Direction(*receive)
        self._closed = False

    @property
    def sending(self) -> str:
        return self._send.direction

    @property
    def next_send_seq(self) -> int:
        return self._send.seq

    @property
    def closed(self) -> bool:
        return self._closed

    def seal(self, message_type: MessageType, body: dict[str, Any]) -> str:
        """The frame carrying `body`; MessageInvalid if it breaks its schema or is too big."""
        direction = self._send.direction
        if message_type not in DIRECTION_TYPES[direction]:
            raise MessageInvalid(f"{message_type} is not a {direction} message")
        _check_hello_first(direction, self._send.seq, message_type)
        checked = validate_body(message_type, body)
        # ASCII JSON: a lone surrogate (a non-UTF-8 path or hostname) travels as \udcxx
        # and comes back as the same str.
        plain = dumps(checked).encode("ascii")
        if len(plain) > MAX_PLAINTEXT:
            raise MessageInvalid(f"{message_type}: {len(plain)} bytes, over {MAX_PLAINTEXT}")
        seq = self._send.seq
        if seq > MAX_SEQ:
            raise HubProtocolError("this connection has sent all the frames it may")
        ad = associated_data(direction, self.public_id, seq, message_type.value)
        ct = self._send.aead.encrypt(nonce(direction, seq), plain, ad)
        self._send.seq = seq + 1
        envelope = {
            "v": PROTOCOL_VERSION,
            "kid": self._send.kid,
            "seq": seq,
            "type": message_type.value,
            "ct": base64.b64encode(ct).decode("ascii"),
        }
        return dumps(envelope)

    def open(self, frame: str | bytes) -> Received:
        """The message in `frame`, or FrameRejected (MessageInvalid for an authentic frame
        whose body breaks its schema). After either, every later frame is refused."""
        if self._closed:
            raise FrameRejected(RejectReason.CLOSED, "an earlier frame was refused")
        try:
            return self._open(frame)
        except HubProtocolError:
            self._closed = True
            raise

    def _open(self, frame: str | bytes) -> Received:
        if len(frame) > MAX_FRAME_CHARS:
            raise FrameRejected(RejectReason.TOO_LARGE, f"{len(frame)} characters")
        if isinstance(frame, bytes):
            try:
                frame = frame.decode("ascii")
            except UnicodeDecodeError:
                raise FrameRejected(RejectReason.MALFORMED, "not ASCII text") from None
        env = _parse_envelope(frame)
        receiving = self._receive
        if env["kid"] == self._send.kid:
            raise FrameRejected(RejectReason.REFLECTED, "this side sealed that frame")
        if env["kid"] != receiving.kid:
            raise FrameRejected(RejectReason.WRONG_KEY, "sealed under another key")
        message_type = _direction_type(receiving.direction, env["type"])
        seq: int = env["seq"]
        if seq < receiving.seq:
            raise FrameRejected(RejectReason.REPLAYED, f"seq {seq} was already received")
        if seq > receiving.seq:
            raise FrameRejected(
                RejectReason.OUT_OF_ORDER, f"seq {seq} while {receiving.seq} is next"
            )
        ct = _canonical_b64(env["ct"])
        ad = associated_data(receiving.direction, self.public_id, seq, message_type.value)
        try:
            plain = receiving.aead.decrypt(nonce(receiving.direction, seq), ct, ad)
        except InvalidTag:
            raise FrameRejected(RejectReason.TAMPERED, "the authentication tag fails") from None
        receiving.seq = seq + 1
        _check_hello_first(receiving.direction, seq, message_type)
        try:
            body = loads(plain)
        except (ValueError, RecursionError):
            raise MessageInvalid(f"{message_type}: the body is not JSON") from None
        return Received(message_type, validate_body(message_type, body), seq)


def _check_hello_first(direction: str, seq: int, message_type: MessageType) -> None:
    if direction == AGENT_TO_HUB and (seq == 0) != (message_type is MessageType.HELLO):
        raise MessageInvalid("the agent's first frame must be its hello, and only the first")


def _parse_envelope(frame: str) -> dict[str, Any]:
    try:
        env = loads(frame)
    except (ValueError, RecursionError):
        raise FrameRejected(RejectReason.MALFORMED, "not JSON") from None
    if not isinstance(env, dict) or tuple(env) != _ENVELOPE_KEYS:
        if isinstance(env, dict) and env.get("v") not in (None, PROTOCOL_VERSION):
            raise FrameRejected(RejectReason.VERSION, "not protocol version 1")
        raise FrameRejected(RejectReason.MALFORMED, f"not an object with {_ENVELOPE_KEYS}")
    if type(env["v"]) is not int or env["v"] != PROTOCOL_VERSION:
        raise FrameRejected(RejectReason.VERSION, "not protocol version 1")
    if not isinstance(env["kid"], str) or not _KID_RE.fullmatch(env["kid"]):
        raise FrameRejected(RejectReason.MALFORMED, "kid is not 16 lowercase hex digits")
    if type(env["seq"]) is not int or not 0 <= env["seq"] <= MAX_SEQ:
        raise FrameRejected(RejectReason.MALFORMED, "seq is not an integer from 0 to 2**64-1")
    if not isinstance(env["type"], str) or not isinstance(env["ct"], str):
        raise FrameRejected(RejectReason.MALFORMED, "type and ct must be strings")
    if dumps(env) != frame:
        # Only the one encoding is accepted: no byte of a frame can change unnoticed.
        raise FrameRejected(RejectReason.MALFORMED, "not in canonical form")
    return env


def _direction_type(direction: str, name: str) -> MessageType:
    for message_type in DIRECTION_TYPES[direction]:
        if message_type.value == name:
            return message_type
    raise FrameRejected(RejectReason.UNKNOWN_TYPE, f"{name[:40]!r} may not travel {direction}")


def _canonical_b64(text: str) -> bytes:
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise FrameRejected(RejectReason.MALFORMED, "ct is not base64") from None
    if base64.b64encode(data).decode("ascii") != text:
        raise FrameRejected(RejectReason.MALFORMED, "ct is not canonical base64")
    if len(data) < TAG_BYTES:
        raise FrameRejected(RejectReason.MALFORMED, "ct is shorter than the tag")
    return data
