"""AES-256-GCM sealing of one secret value, bound to its tenant, app and variable name."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from corral.secrets.errors import SecretError

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

KEY_BYTES = 32
NONCE_BYTES = 12
TAG_BYTES = 16
_KID_RE = re.compile(r"[0-9a-f]{16}\Z")


def key_id(key: bytes) -> str:
    """A short public name for a key: it tells which key sealed an entry, reveals nothing."""
    return hmac.new(key, b"corral key id", hashlib.sha256).digest()[:8].hex()


def associated_data(tenant: str, app: str, name: str) -> bytes:
    """What a ciphertext is bound to: moved to another tenant, app or name, it fails to open.

    NUL separates the parts, so no part may hold one (else two triples could collide).
    Lone surrogates are encoded with surrogatepass, which keeps the encoding one-to-one.
    """
    for label, part in (("tenant", tenant), ("app", app), ("name", name)):
        if "\0" in part:
            raise SecretError(f"the {label} name {part!r} contains a NUL character")
    parts = (p.encode("utf-8", "surrogatepass") for p in (tenant, app, name))
    return b"corral-secret-v1\0" + b"\0".join(parts)


@dataclass(frozen=True)
class Sealed:
    """One encrypted value: the key id that sealed it, its nonce, ciphertext + GCM tag."""

    kid: str
    nonce: bytes
    ciphertext: bytes

    def to_json(self) -> dict[str, str]:
        return {
            "kid": self.kid,
            "nonce": base64.b64encode(self.nonce).decode("ascii"),
            "ct": base64.b64encode(self.ciphertext).decode("ascii"),
        }

    @classmethod
    def from_json(cls, d: Any) -> Sealed:
        """Parse `to_json` output (other keys are ignored); SecretError saying what is wrong."""
        if not isinstance(d, Mapping):
            raise SecretError("a sealed secret must be an object with kid, nonce and ct")
        kid = d.get("kid")
        if not isinstance(kid, str) or not _KID_RE.match(kid):
            raise SecretError("its key id (kid) is not 16 lowercase hex characters")
        nonce = _b64_field(d, "nonce")
        if len(nonce) != NONCE_BYTES:
            raise SecretError(f"its nonce is {len(nonce)} bytes, not {NONCE_BYTES}")
        ciphertext = _b64_field(d, "ct")
        if len(ciphertext) < TAG_BYTES:
            raise SecretError("its ciphertext (ct) is shorter than the authentication tag")
        return cls(kid, nonce, ciphertext)


def _b64_field(d: Mapping[str, Any], field: str) -> bytes:
    raw = d.get(field)
    if not isinstance(raw, str):
        raise SecretError(f"its {field} is missing or not a string")
    try:
        return base64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError):
        raise SecretError(f"its {field} is not valid base64") from None


def _aesgcm(key: bytes) -> AESGCM:
    # Imported on first use: every daemon imports this module, most never hold a secret,
    # and loading cryptography's bindings costs ~10 ms of each daemon's start.
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    return AESGCM(key)


def seal(key: bytes, plaintext: bytes, ad: bytes) -> Sealed:
    """Encrypt under `key` with a fresh random nonce (never reused: 96 random bits each time)."""
    _check_key(key)
    nonce = os.urandom(NONCE_BYTES)
    return Sealed(key_id(key), nonce, _aesgcm(key).encrypt(nonce, plaintext, ad))


def unseal(keys: Mapping[str, bytes], sealed: Sealed, ad: bytes) -> bytes:
    """Decrypt with the key `sealed.kid` names; SecretError if it is unknown or the tag fails."""
    key = keys.get(sealed.kid)
    if key is None:
        raise SecretError(
            f"it was sealed with key id {sealed.kid}, which is not among the available keys"
            f" ({', '.join(sorted(keys)) or 'none'})"
        )
    _check_key(key)
    from cryptography.exceptions import InvalidTag

    try:
        return _aesgcm(key).decrypt(sealed.nonce, sealed.ciphertext, ad)
    except InvalidTag:
        raise SecretError(
            "it does not authenticate: the ciphertext or nonce was changed, it was moved"
            " from another tenant, app or variable, or the key is not the one that sealed it"
        ) from None


def _check_key(key: bytes) -> None:
    if len(key) != KEY_BYTES:
        raise SecretError(f"a secret key must be {KEY_BYTES} bytes, this one is {len(key)}")
