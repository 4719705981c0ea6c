"""hub.key: the AES-256-GCM key that seals each bucket's derived keys at rest.

A copy of the database alone yields no bucket's keys. The associated data is the
bucket's public id, so a sealed blob moved to another bucket's row does not open.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import secrets
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from corral.protocol.hub import BucketKeys
from corral.protocol.hub.errors import HubProtocolError

KEY_BYTES = 32
NONCE_BYTES = 12


class SealError(Exception):
    """hub.key is missing, malformed, or does not open a bucket's keys."""


def load_or_create_key(path: Path) -> bytes:
    """The hub's key (made on first use: 0600, written atomically)."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        key = secrets.token_bytes(KEY_BYTES)
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(base64.b64encode(key) + b"\n")
        try:
            os.link(tmp, path)  # never replaces a key another process just made
        except FileExistsError:
            pass
        finally:
            tmp.unlink()
        return load_or_create_key(path)
    try:
        key = base64.b64decode(raw.strip(), validate=True)
    except (binascii.Error, ValueError):
        key = b""
    if len(key) != KEY_BYTES:
        raise SealError(f"{path} is not a base64 {KEY_BYTES}-byte key")
    return key


class Sealer:
    def __init__(self, key: bytes) -> None:
        self._aead = AESGCM(key)

    def seal(self, keys: BucketKeys) -> str:
        nonce = secrets.token_bytes(NONCE_BYTES)
        plain = json.dumps(keys.to_json()).encode("ascii")
        ct = self._aead.encrypt(nonce, plain, keys.public_id.encode("ascii"))
        return base64.b64encode(nonce + ct).decode("ascii")

    def open(self, public_id: str, sealed: str) -> BucketKeys:
        try:
            blob = base64.b64decode(sealed, validate=True)
            plain = self._aead.decrypt(
                blob[:NONCE_BYTES], blob[NONCE_BYTES:], public_id.encode("ascii")
            )
            keys = BucketKeys.from_json(json.loads(plain))
        except (binascii.Error, ValueError, InvalidTag, HubProtocolError):
            raise SealError(f"bucket {public_id}: its keys do not open with hub.key") from None
        if keys.public_id != public_id:
            raise SealError(f"bucket {public_id}: sealed keys of another bucket")
        return keys
