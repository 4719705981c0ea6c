"""Password hashing (argon2id) and the password policy."""

from __future__ import annotations

import string

import pytest
from argon2 import PasswordHasher
from argon2.low_level import Type

from corral.panel.security.passwords import (
    GENERATED_LENGTH,
    MAX_LENGTH,
    MIN_LENGTH,
    generate_password,
    hash_password,
    needs_rehash,
    password_problem,
    verify_dummy,
    verify_password,
)

GOOD = "correct horse battery staple"


def test_hash_is_argon2id_with_at_least_the_library_defaults() -> None:
    stored = hash_password(GOOD)
    assert stored.startswith("$argon2id$")
    params = stored.split("$")[3]  # m=65536,t=3,p=4
    values = dict(item.split("=") for item in params.split(","))
    defaults = PasswordHasher()
    assert int(values["m"]) >= defaults.memory_cost
    assert int(values["t"]) >= defaults.time_cost
    assert GOOD not in stored


def test_the_same_password_hashes_differently_each_time() -> None:
    assert hash_password(GOOD) != hash_password(GOOD)


def test_verify_accepts_the_password_and_refuses_others() -> None:
    stored = hash_password(GOOD)
    assert verify_password(stored, GOOD) is True
    assert verify_password(stored, GOOD + " ") is False
    assert verify_password(stored, GOOD.upper()) is False
    assert verify_password(stored, "") is False


def test_unicode_passwords_round_trip() -> None:
    password = "pässwörd-ünïcødé-密码-🔑"
    stored = hash_password(password)
    assert verify_password(stored, password)
    assert not verify_password(stored, "passwörd-ünïcødé-密码-🔑")


@pytest.mark.parametrize(
    "stored",
    [
        "",
        "not a hash",
        "$argon2id$",
        "$argon2id$v=19$m=65536,t=3,p=4$garbage",
        "$2b$12$abcdefghijklmnopqrstuuSgKCSvZm7kP9c6bK6B3pQ2VhRRcKJa2",  # bcrypt
        "$argon2id$v=19$m=65536,t=3,p=4$c29tZXNhbHQ$" + "A" * 10,
    ],
)
def test_verify_is_false_for_a_malformed_hash_and_never_raises(stored: str) -> None:
    assert verify_password(stored, GOOD) is False


def test_verify_dummy_never_raises() -> None:
    for password in (GOOD, "", "x" * MAX_LENGTH, "\x00", "密码"):
        verify_dummy(password)


def test_needs_rehash_for_weaker_parameters_or_a_broken_hash() -> None:
    assert needs_rehash(hash_password(GOOD)) is False
    weak = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1).hash(GOOD)
    assert needs_rehash(weak) is True
    argon2i = PasswordHasher(type=Type.I).hash(GOOD)
    assert needs_rehash(argon2i) is True
    assert verify_password(argon2i, GOOD)  # still usable for the login that upgrades it
    assert needs_rehash("garbage") is True


@pytest.mark.parametrize(
    ("password", "fragment"),
    [
        ("", f"at least {MIN_LENGTH}"),
        ("a" * (MIN_LENGTH - 1), f"at least {MIN_LENGTH}"),
        ("short pass", f"at least {MIN_LENGTH}"),
        ("x" * (MAX_LENGTH + 1), f"at most {MAX_LENGTH}"),
        ("a" * MIN_LENGTH, "one character repeated"),
        ("good password\x00with nul", "NUL"),
    ],
)
def test_password_problem_explains_what_is_wrong(password: str, fragment: str) -> None:
    problem = password_problem(password)
    assert problem is not None
    assert fragment in problem


@pytest.mark.parametrize(
    "password",
    [
        "abcdefghijkl",  # one character class is fine: length matters
        "012345678901",
        GOOD,
        "Ab1!" * (MAX_LENGTH // 4),
        "密码密码密码密码密码密码",
    ],
)
def test_password_problem_accepts_long_enough_passwords(password: str) -> None:
    assert password_problem(password) is None


def test_generated_passwords_are_long_random_and_acceptable() -> None:
    passwords = {generate_password() for _ in range(50)}
    assert len(passwords) == 50
    for password in passwords:
        assert len(password) == GENERATED_LENGTH >= 20
        assert set(password) <= set(string.ascii_letters + string.digits)
        assert password_problem(password) is None
