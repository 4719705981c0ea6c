"""Key derivation: HKDF-SHA256 exactly as documented, every key bound to its purpose,
bucket and version; secrets never echoed in errors."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from corral.protocol.hub import BucketKeys, HubProtocolError, derive_bucket_keys
from corral.protocol.hub.keys import new_public_id, new_secret, pack

SECRET = "s" * 20 + "-Q9_x" * 4


def hkdf_by_hand(ikm: bytes, salt: bytes, info: bytes) -> bytes:
    """RFC 5869 for one 32-byte block, written out independently of `cryptography`."""
    prk = hmac.new(salt, ikm, hashlib.sha256).digest()
    return hmac.new(prk, info + b"\x01", hashlib.sha256).digest()


def test_keys_follow_the_documented_derivation() -> None:
    keys = derive_bucket_keys("bucket-0001", SECRET)
    for purpose, key in (
        ("auth", keys.auth),
        ("agent->hub", keys.agent_to_hub),
        ("hub->agent", keys.hub_to_agent),
    ):
        info = pack(b"corral-hub/1", "bucket", purpose, "bucket-0001")
        assert key == hkdf_by_hand(SECRET.encode(), b"corral-hub/1", info)


def test_every_key_differs_by_purpose_bucket_and_secret() -> None:
    a = derive_bucket_keys("bucket-0001", SECRET)
    b = derive_bucket_keys("bucket-0002", SECRET)
    c = derive_bucket_keys("bucket-0001", SECRET + "x")
    all_keys = [k for keys in (a, b, c) for k in (keys.auth, keys.agent_to_hub, keys.hub_to_agent)]
    assert len(set(all_keys)) == 9
    assert derive_bucket_keys("bucket-0001", SECRET) == a


def test_pack_is_unambiguous() -> None:
    assert pack("ab", "c") != pack("a", "bc")
    assert pack(b"", "x") != pack("x", b"")


def test_stored_keys_round_trip_and_hide_themselves() -> None:
    keys = derive_bucket_keys(new_public_id(), new_secret())
    assert BucketKeys.from_json(keys.to_json()) == keys
    assert "hidden" in repr(keys) and keys.auth.hex() not in repr(keys)
    for bad in (None, {}, {**keys.to_json(), "v": 2}, {**keys.to_json(), "auth": "AAAA"}):
        with pytest.raises(HubProtocolError, match="stored bucket keys"):
            BucketKeys.from_json(bad)


@pytest.mark.parametrize("secret", ["short-secret", "x" * 31, "with space " * 4, "é" * 40])
def test_a_bad_secret_is_refused_without_echoing_it(secret: str) -> None:
    with pytest.raises(HubProtocolError) as refused:
        derive_bucket_keys("bucket-0001", secret)
    assert secret not in str(refused.value)


@pytest.mark.parametrize("public_id", ["short", "a/b/c/d/e", "x" * 65, ""])
def test_a_bad_public_id_is_refused(public_id: str) -> None:
    with pytest.raises(HubProtocolError, match="public id"):
        derive_bucket_keys(public_id, SECRET)


def test_generated_ids_and_secrets_are_valid_and_fresh() -> None:
    assert new_secret() != new_secret() and len(new_secret()) >= 43
    derive_bucket_keys(new_public_id(), new_secret())
