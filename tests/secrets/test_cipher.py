"""AES-256-GCM sealing: round trip, fresh nonces, and every kind of tampering refused."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from corral.secrets.cipher import (
    KEY_BYTES,
    NONCE_BYTES,
    Sealed,
    associated_data,
    key_id,
    seal,
    unseal,
)
from corral.secrets.errors import SecretError
from tests.secrets.conftest import assert_hidden

KEY = bytes(range(32))
AD = associated_data("acme", "web", "DB_PASSWORD")
VALUE = "correct horse battery staple"


def flip(data: bytes, index: int) -> bytes:
    changed = bytearray(data)
    changed[index] ^= 0x01
    return bytes(changed)


def test_key_id_is_the_first_8_bytes_of_an_hmac_in_hex() -> None:
    expected = hmac.new(KEY, b"corral key id", hashlib.sha256).digest()[:8].hex()
    assert key_id(KEY) == expected
    assert len(expected) == 16
    assert key_id(os.urandom(KEY_BYTES)) != expected


def test_associated_data_layout() -> None:
    assert associated_data("t", "app", "NAME") == b"corral-secret-v1\0t\0app\0NAME"
    assert associated_data("", "wéb", "X") == b"corral-secret-v1\0\0w\xc3\xa9b\0X"


@pytest.mark.parametrize(
    ("parts", "label"),
    [(("a\0b", "app", "N"), "tenant"), (("t", "a\0", "N"), "app"), (("t", "app", "\0N"), "name")],
)
def test_associated_data_refuses_nul(parts: tuple[str, str, str], label: str) -> None:
    # With a NUL inside a part, ("a\0b", "c") and ("a", "b\0c") would be bound alike.
    with pytest.raises(SecretError, match=f"the {label} name .* contains a NUL"):
        associated_data(*parts)


def test_round_trip() -> None:
    sealed = seal(KEY, VALUE.encode(), AD)
    assert sealed.kid == key_id(KEY)
    assert len(sealed.nonce) == NONCE_BYTES
    assert VALUE.encode() not in sealed.ciphertext
    assert unseal({sealed.kid: KEY}, sealed, AD) == VALUE.encode()


def test_every_seal_uses_a_fresh_nonce() -> None:
    first = seal(KEY, VALUE.encode(), AD)
    second = seal(KEY, VALUE.encode(), AD)
    assert first.nonce != second.nonce
    assert first.ciphertext != second.ciphertext


@pytest.mark.parametrize("where", ["first", "middle", "tag"])
def test_a_flipped_ciphertext_byte_is_refused(where: str) -> None:
    sealed = seal(KEY, VALUE.encode(), AD)
    index = {"first": 0, "middle": len(VALUE) // 2, "tag": len(sealed.ciphertext) - 1}[where]
    tampered = Sealed(sealed.kid, sealed.nonce, flip(sealed.ciphertext, index))
    with pytest.raises(SecretError, match="does not authenticate") as info:
        unseal({sealed.kid: KEY}, tampered, AD)
    assert_hidden(str(info.value), VALUE)


def test_a_flipped_nonce_byte_is_refused() -> None:
    sealed = seal(KEY, VALUE.encode(), AD)
    tampered = Sealed(sealed.kid, flip(sealed.nonce, 5), sealed.ciphertext)
    with pytest.raises(SecretError, match="does not authenticate"):
        unseal({sealed.kid: KEY}, tampered, AD)


@pytest.mark.parametrize(
    "moved",
    [("acme", "api", "DB_PASSWORD"), ("acme", "web", "DB_USER"), ("other", "web", "DB_PASSWORD")],
    ids=["another-app", "another-name", "another-tenant"],
)
def test_a_moved_ciphertext_is_refused(moved: tuple[str, str, str]) -> None:
    sealed = seal(KEY, VALUE.encode(), AD)
    with pytest.raises(SecretError, match="moved from another tenant, app or variable"):
        unseal({sealed.kid: KEY}, sealed, associated_data(*moved))


def test_a_wrong_key_under_the_right_id_is_refused() -> None:
    sealed = seal(KEY, VALUE.encode(), AD)
    with pytest.raises(SecretError, match="does not authenticate"):
        unseal({sealed.kid: os.urandom(KEY_BYTES)}, sealed, AD)


def test_an_unknown_key_id_is_refused_and_named() -> None:
    sealed = seal(KEY, VALUE.encode(), AD)
    other = os.urandom(KEY_BYTES)
    with pytest.raises(SecretError, match=f"key id {sealed.kid}, which is not among") as info:
        unseal({key_id(other): other}, sealed, AD)
    assert key_id(other) in str(info.value)


def test_keys_of_the_wrong_length_are_refused() -> None:
    with pytest.raises(SecretError, match="must be 32 bytes, this one is 16"):
        seal(KEY[:16], b"x", AD)


def test_json_round_trip() -> None:
    sealed = seal(KEY, VALUE.encode(), AD)
    as_json = sealed.to_json()
    assert set(as_json) == {"kid", "nonce", "ct"}
    assert base64.b64decode(as_json["nonce"]) == sealed.nonce
    assert Sealed.from_json({**as_json, "set_at": 1.0}) == sealed


def _good_json() -> dict[str, Any]:
    return dict(seal(KEY, VALUE.encode(), AD).to_json())


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: ["not", "an", "object"], "must be an object"),
        (lambda d: {k: v for k, v in d.items() if k != "kid"}, r"key id \(kid\)"),
        (lambda d: {**d, "kid": "XYZ"}, r"key id \(kid\) is not 16"),
        (lambda d: {**d, "nonce": "@@@@"}, "nonce is not valid base64"),
        (lambda d: {**d, "nonce": base64.b64encode(b"short").decode()}, "nonce is 5 bytes"),
        (lambda d: {**d, "ct": 12}, "ct is missing or not a string"),
        (lambda d: {**d, "ct": base64.b64encode(b"tiny").decode()}, "shorter than the"),
    ],
    ids=["not-object", "no-kid", "bad-kid", "nonce-b64", "nonce-len", "ct-type", "ct-short"],
)
def test_malformed_json_is_refused_clearly(change: Any, message: str) -> None:
    with pytest.raises(SecretError, match=message):
        Sealed.from_json(change(_good_json()))


# Lone surrogates included: the encoding must stay one-to-one for them too.
_part = st.text(st.characters(exclude_characters="\0", exclude_categories=()), max_size=40)
_triple = st.tuples(_part, _part, _part)


@settings(max_examples=200, deadline=None)
@given(key=st.binary(min_size=32, max_size=32), triple=_triple, value=st.text(), other=_triple)
def test_round_trip_and_any_change_of_associated_data_fails(
    key: bytes, triple: tuple[str, str, str], value: str, other: tuple[str, str, str]
) -> None:
    ad = associated_data(*triple)
    sealed = seal(key, value.encode(), ad)
    assert unseal({key_id(key): key}, sealed, ad) == value.encode()
    if other != triple:
        assert associated_data(*other) != ad  # the encoding is one-to-one
        with pytest.raises(SecretError, match="does not authenticate"):
            unseal({key_id(key): key}, sealed, associated_data(*other))


@settings(max_examples=100, deadline=None)
@given(triple=_triple, value=st.binary(), part=st.integers(0, 2), extra=st.text(min_size=1))
def test_a_small_change_to_one_part_fails(
    triple: tuple[str, str, str], value: bytes, part: int, extra: str
) -> None:
    if "\0" in extra:
        extra = extra.replace("\0", "x")
    changed = list(triple)
    changed[part] += extra
    sealed = seal(KEY, value, associated_data(*triple))
    with pytest.raises(SecretError):
        unseal({key_id(KEY): KEY}, sealed, associated_data(*changed))
