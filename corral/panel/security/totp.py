"""Time-based one-time passwords (RFC 6238) for the optional second login factor.

Codes are 6 digits over 30 s steps. One step of clock drift either way is accepted, and
a step is never accepted twice: the caller stores the step `verify_code` returns and
passes it back as `last_step`, so a code seen over a shoulder cannot be replayed.
"""

from __future__ import annotations

import hmac
import re
import time

import pyotp

STEP_SECONDS = 30
DIGITS = 6
DRIFT_STEPS = 1
_CODE_RE = re.compile(r"[0-9]{6}")


def new_secret() -> str:
    """A base32 secret of 160 bits (RFC 4226's recommended length)."""
    return pyotp.random_base32()


def provisioning_uri(secret: str, account: str, issuer: str = "corral") -> str:
    """The otpauth:// URI that authenticator apps read from a QR code."""
    return pyotp.TOTP(secret, digits=DIGITS, interval=STEP_SECONDS).provisioning_uri(
        name=account, issuer_name=issuer
    )


def verify_code(
    secret: str, code: str, *, last_step: int | None, now: float | None = None
) -> int | None:
    """The time step `code` belongs to, or None: wrong, malformed, or already used.

    Spaces are ignored ("123 456", as apps show it); anything but 6 ASCII digits is
    refused without computing a code.
    """
    code = code.replace(" ", "")
    if not _CODE_RE.fullmatch(code):
        return None
    totp = pyotp.TOTP(secret, digits=DIGITS, interval=STEP_SECONDS)
    current = int((time.time() if now is None else now) // STEP_SECONDS)
    matched: int | None = None
    # Oldest step first, every candidate compared (no early exit that timing could show).
    for step in range(current - DRIFT_STEPS, current + DRIFT_STEPS + 1):
        if last_step is not None and step <= last_step:
            continue
        if hmac.compare_digest(totp.generate_otp(step), code) and matched is None:
            matched = step
    return matched
