"""Helpers for the secrets tests: real stores in temporary homes, and a leak check."""

from __future__ import annotations

import base64
import binascii
import os
import secrets
import stat
from collections.abc import Callable, Mapping
from pathlib import Path

import pytest

from corral.secrets.store import SecretStore

StoreFactory = Callable[..., SecretStore]


def unique_value() -> str:
    """A value that cannot appear anywhere by chance."""
    return f"v-{secrets.token_hex(16)}-é"


def value_forms(value: str) -> list[bytes]:
    """The value as it could leak: raw, base64 (standard and URL-safe), hex."""
    raw = value.encode()
    return [
        raw,
        base64.b64encode(raw),
        base64.urlsafe_b64encode(raw),
        base64.b64encode(raw).rstrip(b"="),
        binascii.hexlify(raw),
        binascii.hexlify(raw).upper(),
    ]


def assert_hidden(haystack: str | bytes, *values: str) -> None:
    """None of `values` appears in `haystack` in any of its forms."""
    data = haystack.encode("utf-8", "surrogateescape") if isinstance(haystack, str) else haystack
    for value in values:
        for form in value_forms(value):
            assert form not in data, f"a form of the secret value leaked: {form!r}"


def mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


@pytest.fixture
def home(tmp_path: Path) -> Path:
    folder = tmp_path / "home"
    folder.mkdir()
    return folder


@pytest.fixture
def new_store(home: Path) -> StoreFactory:
    """A loaded store on `home` (a new object each call, as a restarted daemon would make)."""

    def make(tenant: str = "", environ: Mapping[str, str] | None = None) -> SecretStore:
        store = SecretStore(home, tenant=tenant, environ=environ or {})
        store.load()
        return store

    return make
