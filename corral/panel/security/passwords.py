"""Password hashing (argon2id) and the password policy (SPEC 2.3).

Hashes are argon2-cffi's PHC strings, with the library's defaults (RFC 9106's low-memory
profile: argon2id, 64 MiB, 3 passes). `needs_rehash` says when a stored hash was made
with weaker parameters, so that a login can upgrade it.
"""

from __future__ import annotations

import functools
import secrets
import string

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

MIN_LENGTH = 12
MAX_LENGTH = 1024
"""Long enough for any passphrase; short enough that hashing stays a bounded cost."""
GENERATED_LENGTH = 24
_ALPHABET = string.ascii_letters + string.digits

_hasher = PasswordHasher()


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(stored_hash: str, password: str) -> bool:
    """True when `password` matches; False on a mismatch or a malformed hash."""
    try:
        return _hasher.verify(stored_hash, password)
    except (VerificationError, InvalidHashError):
        return False


@functools.cache
def _dummy_hash() -> str:
    # Made with the same parameters as real hashes, so that checking it costs the same.
    return _hasher.hash(secrets.token_urlsafe(16))


def verify_dummy(password: str) -> None:
    """Spend the time of one verification, for a login naming no (usable) user."""
    verify_password(_dummy_hash(), password)


def needs_rehash(stored_hash: str) -> bool:
    """Whether the hash should be remade with the current parameters (True if malformed)."""
    try:
        return _hasher.check_needs_rehash(stored_hash)
    except (InvalidHashError, ValueError):
        return True


def password_problem(password: str) -> str | None:
    """What is wrong with a new password, said for the user; None when it is acceptable."""
    if len(password) < MIN_LENGTH:
        return f"use at least {MIN_LENGTH} characters (a few words make a good password)"
    if len(password) > MAX_LENGTH:
        return f"use at most {MAX_LENGTH} characters"
    if "\x00" in password:
        return "a password cannot contain a NUL character"
    if len(set(password)) == 1:
        return "a password cannot be one character repeated"
    return None


def generate_password() -> str:
    """A random password (about 143 bits) for the first-run admin, safe to copy and paste."""
    return "".join(secrets.choice(_ALPHABET) for _ in range(GENERATED_LENGTH))
