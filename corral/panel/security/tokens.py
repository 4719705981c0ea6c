"""Random tokens: API tokens (shown once, stored hashed), session ids, CSRF tokens."""

from __future__ import annotations

import hashlib
import hmac
import secrets

TOKEN_BYTES = 32


def new_token(prefix: str) -> tuple[str, str]:
    """(token to show the user once, its digest to store). `prefix` names the kind, so a
    leaked token is recognisable (`corral_...`)."""
    token = f"{prefix}_{secrets.token_urlsafe(TOKEN_BYTES)}"
    return token, hash_token(token)


def hash_token(token: str) -> str:
    """The sha256 hex digest of a token: the token has 256 random bits, so no salt or
    slow hash is needed, and a lookup by digest stays one index probe."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def tokens_equal(a: str, b: str) -> bool:
    """Constant-time comparison (for CSRF tokens and the like)."""
    return hmac.compare_digest(a.encode("utf-8"), b.encode("utf-8"))


def new_session_id() -> str:
    return secrets.token_urlsafe(TOKEN_BYTES)


def new_csrf_token() -> str:
    return secrets.token_urlsafe(TOKEN_BYTES)
