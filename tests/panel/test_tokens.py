"""Random tokens and their digests."""

from __future__ import annotations

import hashlib
import re

from hypothesis import given
from hypothesis import strategies as st

from corral.panel.security.tokens import (
    hash_token,
    new_csrf_token,
    new_session_id,
    new_token,
    tokens_equal,
)

URLSAFE = re.compile(r"[A-Za-z0-9_-]+")


@given(st.from_regex(r"[a-z][a-z0-9]{0,11}", fullmatch=True))
def test_new_token_is_prefix_and_32_random_bytes_with_its_digest(prefix: str) -> None:
    token, digest = new_token(prefix)
    assert token.startswith(prefix + "_")
    body = token[len(prefix) + 1 :]
    assert URLSAFE.fullmatch(body)
    assert len(body) == 43  # 32 bytes, urlsafe base64 without padding
    assert digest == hashlib.sha256(token.encode()).hexdigest()
    assert digest == hash_token(token)
    assert token not in digest


def test_tokens_are_all_different() -> None:
    tokens = {new_token("corral")[0] for _ in range(200)}
    sessions = {new_session_id() for _ in range(200)}
    csrf = {new_csrf_token() for _ in range(200)}
    assert len(tokens) == len(sessions) == len(csrf) == 200
    assert not sessions & csrf
    for value in sessions | csrf:
        assert URLSAFE.fullmatch(value) and len(value) >= 43


@given(st.text())
def test_hash_token_is_a_sha256_hex_digest(token: str) -> None:
    digest = hash_token(token)
    assert re.fullmatch(r"[0-9a-f]{64}", digest)
    assert digest == hash_token(token)


@given(st.text(), st.text())
def test_tokens_equal_is_string_equality(a: str, b: str) -> None:
    assert tokens_equal(a, a)
    assert tokens_equal(a, b) == (a == b)


def test_tokens_equal_on_non_ascii_and_prefixes() -> None:
    assert tokens_equal("tökén", "tökén")
    assert not tokens_equal("tökén", "token")
    assert not tokens_equal("abc", "abcd")
    assert not tokens_equal("", "a")
    assert tokens_equal("", "")
