"""TOTP codes: RFC 6238's own test vectors, drift of one step, replay, malformed codes."""

from __future__ import annotations

import base64
from urllib.parse import parse_qs, urlsplit

import pyotp
import pytest

from corral.panel.security.totp import new_secret, provisioning_uri, verify_code

# RFC 6238 appendix B, SHA-1: the secret is the ASCII "12345678901234567890"; a 6-digit
# code is the last 6 digits of the RFC's 8-digit one.
SECRET = base64.b32encode(b"12345678901234567890").decode()
VECTORS = [
    (59, "287082"),
    (1111111109, "081804"),
    (1111111111, "050471"),
    (1234567890, "005924"),
    (2000000000, "279037"),
    (20000000000, "353130"),
]


@pytest.mark.parametrize(("now", "code"), VECTORS)
def test_rfc_6238_vectors(now: int, code: str) -> None:
    assert verify_code(SECRET, code, last_step=None, now=now) == now // 30


def test_one_step_of_drift_either_way_is_accepted_and_no_more() -> None:
    now, code = 1111111109, "081804"
    step = now // 30
    assert verify_code(SECRET, code, last_step=None, now=now + 30) == step
    assert verify_code(SECRET, code, last_step=None, now=now - 30) == step
    assert verify_code(SECRET, code, last_step=None, now=now + 60) is None
    assert verify_code(SECRET, code, last_step=None, now=now - 60) is None


def test_a_used_step_or_an_older_one_is_refused() -> None:
    now, code = 1234567890, "005924"
    step = now // 30
    assert verify_code(SECRET, code, last_step=step - 1, now=now) == step
    assert verify_code(SECRET, code, last_step=step, now=now) is None  # replay
    assert verify_code(SECRET, code, last_step=step + 1, now=now) is None


def test_wrong_code_is_refused() -> None:
    assert verify_code(SECRET, "287083", last_step=None, now=59) is None
    assert verify_code(SECRET, "000000", last_step=None, now=59) is None


@pytest.mark.parametrize(
    "code",
    ["", "28708", "2870822", "abcdef", "28708a", "-28708", "٢٨٧٠٨٢", "287082\n", "+287082"],
)
def test_malformed_codes_are_refused(code: str) -> None:
    assert verify_code(SECRET, code, last_step=None, now=59) is None


def test_spaces_inside_a_code_are_ignored() -> None:
    assert verify_code(SECRET, "287 082", last_step=None, now=59) == 1
    assert verify_code(SECRET, " 287082 ", last_step=None, now=59) == 1


def test_the_current_time_is_used_without_now() -> None:
    secret = new_secret()
    assert verify_code(secret, "12345", last_step=None) is None  # malformed, still fine
    code = pyotp.TOTP(secret).now()
    assert verify_code(secret, code, last_step=None) is not None


def test_new_secrets_are_base32_of_160_bits_and_distinct() -> None:
    secrets = {new_secret() for _ in range(20)}
    assert len(secrets) == 20
    for secret in secrets:
        assert len(base64.b32decode(secret)) == 20


def test_provisioning_uri_names_the_account_and_issuer() -> None:
    uri = provisioning_uri(SECRET, "alice@example.com")
    parts = urlsplit(uri)
    assert (parts.scheme, parts.netloc) == ("otpauth", "totp")
    assert "alice" in parts.path
    query = parse_qs(parts.query)
    assert query["secret"] == [SECRET]
    assert query["issuer"] == ["corral"]
    other = urlsplit(provisioning_uri(SECRET, "bob", issuer="acme"))
    assert parse_qs(other.query)["issuer"] == ["acme"]
