"""Keys of the hub protocol, all derived with HKDF-SHA256 (RFC 5869).

From the bucket secret (never sent, never stored by the hub once derived)::

    bucket key(purpose) = HKDF(ikm=secret, salt="corral-hub/1",
                               info=pack("corral-hub/1", "bucket", purpose, public_id))

with purpose "auth" (the challenge-response MACs), "agent->hub" and "hub->agent" (the
roots of the two frame keys). Per connection, after the handshake::

    session key(dir) = HKDF(ikm=bucket key(dir) || X25519 shared secret,
                            salt=SHA-256(transcript),
                            info=pack("corral-hub/1", "session", dir, public_id))

so a frame sealed on one connection never opens on another, and a recording of a
connection stays sealed even if the bucket keys leak later (the X25519 keys are
ephemeral). `pack` length-prefixes every part, so two different tuples never encode
to the same bytes.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from typing import Any, Final

from corral.protocol.hub.errors import HubProtocolError

PROTOCOL_VERSION: Final = 1
LABEL: Final = b"corral-hub/1"
"""The protocol version label bound into every key, MAC, nonce and signature."""
KEY_BYTES: Final = 32
NONCE_BYTES: Final = 32
"""Handshake nonces (the hub's challenge and the agent's nonce)."""

AGENT_TO_HUB: Final = "agent->hub"
HUB_TO_AGENT: Final = "hub->agent"

PUBLIC_ID_RE: Final = re.compile(r"[A-Za-z0-9_-]{8,64}")
SECRET_RE: Final = re.compile(r"[\x21-\x7e]{32,512}")
"""A bucket secret: 32 to 512 printable ASCII characters without spaces (the hub makes
them with `new_secret`: 256 random bits)."""


def pack(*parts: bytes | str | int) -> bytes:
    """An unambiguous encoding of a tuple: each part with a 4-byte length before it
    (str as UTF-8 with surrogatepass, int as 8 bytes big-endian)."""
    out = bytearray()
    for part in parts:
        if isinstance(part, str):
            data = part.encode("utf-8", "surrogatepass")  # one-to-one, never raises
        elif isinstance(part, int):
            data = part.to_bytes(8, "big")
        else:
            data = part
        out += len(data).to_bytes(4, "big") + data
    return bytes(out)


def hkdf(ikm: bytes, salt: bytes, info: bytes, length: int = KEY_BYTES) -> bytes:
    # Imported here: a daemon reads its saved keys at start-up without deriving any.
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    return HKDF(algorithm=hashes.SHA256(), length=length, salt=salt, info=info).derive(ikm)


def mac(key: bytes, data: bytes) -> bytes:
    return hmac.new(key, data, hashlib.sha256).digest()


def key_id(key: bytes) -> str:
    """A short public name for a frame key (which key sealed a frame); reveals nothing."""
    return mac(key, LABEL + b" key id")[:8].hex()


def new_public_id() -> str:
    return secrets.token_hex(8)


def new_secret() -> str:
    return secrets.token_urlsafe(32)


def check_public_id(public_id: str) -> str:
    if not PUBLIC_ID_RE.fullmatch(public_id):
        raise HubProtocolError(
            "a bucket's public id is 8 to 64 characters among letters, digits, '_' and '-'"
        )
    return public_id


def check_secret(secret: str) -> str:
    if not SECRET_RE.fullmatch(secret):
        # Never repeat the secret in the message: it may end up in a log.
        raise HubProtocolError(
            "a bucket secret is 32 to 512 printable ASCII characters without spaces"
        )
    return secret


@dataclass(frozen=True, repr=False)
class BucketKeys:
    """The three long-term keys of one bucket. The hub stores these, not the secret.

    They are as sensitive as the secret for this protocol version (whoever holds them can
    pose as the bucket's agents or as the hub), so store them encrypted at rest.
    """

    public_id: str
    auth: bytes
    agent_to_hub: bytes
    hub_to_agent: bytes

    def __repr__(self) -> str:
        return f"BucketKeys(public_id={self.public_id!r}, <keys hidden>)"

    def direction(self, direction: str) -> bytes:
        return self.agent_to_hub if direction == AGENT_TO_HUB else self.hub_to_agent

    def to_json(self) -> dict[str, Any]:
        return {
            "v": PROTOCOL_VERSION,
            "public_id": self.public_id,
            "auth": _b64(self.auth),
            "agent_to_hub": _b64(self.agent_to_hub),
            "hub_to_agent": _b64(self.hub_to_agent),
        }

    @classmethod
    def from_json(cls, data: Any) -> BucketKeys:
        if not isinstance(data, dict) or data.get("v") != PROTOCOL_VERSION:
            raise HubProtocolError(f"stored bucket keys: not a version {PROTOCOL_VERSION} object")
        public_id = data.get("public_id")
        if not isinstance(public_id, str):
            raise HubProtocolError("stored bucket keys: public_id is missing")
        check_public_id(public_id)
        keys = [_unb64_key(data, name) for name in ("auth", "agent_to_hub", "hub_to_agent")]
        return cls(public_id, keys[0], keys[1], keys[2])


def derive_bucket_keys(public_id: str, secret: str) -> BucketKeys:
    """The bucket's keys from its secret, each bound to the public id and the version."""
    check_public_id(public_id)
    ikm = check_secret(secret).encode("ascii")

    def derive(purpose: str) -> bytes:
        return hkdf(ikm, LABEL, pack(LABEL, "bucket", purpose, public_id))

    return BucketKeys(public_id, derive("auth"), derive(AGENT_TO_HUB), derive(HUB_TO_AGENT))


def session_key(keys: BucketKeys, direction: str, shared: bytes, transcript: bytes) -> bytes:
    """The frame key of one direction of one connection."""
    salt = hashlib.sha256(transcript).digest()
    info = pack(LABEL, "session", direction, keys.public_id)
    return hkdf(keys.direction(direction) + shared, salt, info)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64_key(data: dict[str, Any], name: str) -> bytes:
    raw = data.get(name)
    try:
        key = base64.b64decode(raw, validate=True) if isinstance(raw, str) else b""
    except (binascii.Error, ValueError):
        key = b""
    if len(key) != KEY_BYTES:
        raise HubProtocolError(f"stored bucket keys: {name} is not a {KEY_BYTES}-byte key")
    return key
