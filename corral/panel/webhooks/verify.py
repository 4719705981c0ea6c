"""The three ways a deploy webhook authenticates, and what a verified request asks for.

- generic: `X-Corral-Token: <token>`; an optional JSON body {"ref": "refs/heads/<branch>"};
- GitHub: `X-GitHub-Event`, `X-GitHub-Delivery` and `X-Hub-Signature-256: sha256=<hex>`,
  the HMAC-SHA256 of the raw body keyed with the token (the webhook's "secret");
- GitLab: `X-Gitlab-Token: <token>` and `X-Gitlab-Event: Push Hook`.

Every comparison is constant-time. Nothing here touches the database or the network.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import parse_qs

Format = Literal["generic", "github", "gitlab"]
TOKEN_HEADER = "x-corral-token"
_SIGNATURE_RE = re.compile(r"sha256=([0-9a-fA-F]{64})")
MAX_HEADER = 512
"""Longest credential header looked at (a token is 43 characters)."""


@dataclass(frozen=True)
class Credentials:
    format: Format
    secret: str
    """The token (generic, GitLab) or the hex signature (GitHub) as sent."""
    event: str
    """GitHub's or GitLab's event name; "push" for the generic format."""
    delivery: str = ""
    """GitHub's X-GitHub-Delivery."""

    @property
    def trigger(self) -> str:
        """The deploy record's `trigger`."""
        return "webhook" if self.format == "generic" else f"webhook: {self.format}"


class BadRequest(ValueError):
    """A request this endpoint cannot use; `str(exc)` says why (never with a secret)."""


def credentials(headers: Mapping[str, str]) -> Credentials:
    """Which format the request uses and its credential; BadRequest when it has none or a
    malformed one. Only the headers' presence and shape count here, never their value."""
    github_event = headers.get("x-github-event")
    if github_event is not None:
        match = _SIGNATURE_RE.fullmatch(headers.get("x-hub-signature-256", "").strip())
        if match is None:
            raise BadRequest(
                "a GitHub request needs X-Hub-Signature-256: sha256=<64 hex digits>"
                " (set the webhook's secret to the token)"
            )
        delivery = headers.get("x-github-delivery", "").strip()
        if not delivery or len(delivery) > 128:
            raise BadRequest("a GitHub request needs an X-GitHub-Delivery header")
        return Credentials("github", match.group(1).lower(), github_event.strip(), delivery)
    gitlab_token = headers.get("x-gitlab-token")
    if gitlab_token is not None:
        event = headers.get("x-gitlab-event", "").strip()
        return Credentials("gitlab", _bounded(gitlab_token), event)
    token = headers.get(TOKEN_HEADER)
    if token is not None:
        return Credentials("generic", _bounded(token), "push")
    raise BadRequest(
        "no credentials: send the token in an X-Corral-Token header, or use GitHub's"
        " X-Hub-Signature-256 or GitLab's X-Gitlab-Token"
    )


def _bounded(value: str) -> str:
    return value.strip()[:MAX_HEADER]


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).hexdigest()


def token_matches(given: str, stored_sha256: str) -> bool:
    return hmac.compare_digest(token_digest(given), stored_sha256)


def signature_matches(token: str, body: bytes, signature_hex: str) -> bool:
    """GitHub's X-Hub-Signature-256 check: HMAC-SHA256 of the raw body, keyed by the token."""
    expected = hmac.new(token.encode("utf-8"), body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, signature_hex)


def is_push(creds: Credentials) -> bool:
    if creds.format == "github":
        return creds.event == "push"
    if creds.format == "gitlab":
        return creds.event == "Push Hook"
    return True


def pushed_ref(body: bytes, content_type: str) -> str | None:
    """The `ref` of a push payload (None when the body is empty or has none); BadRequest
    when the body is not a JSON object (GitHub's form-encoded `payload=` included)."""
    if not body.strip():
        return None
    kind = content_type.split(";")[0].strip().lower()
    text: Any
    try:
        text = body.decode("utf-8")
        if kind == "application/x-www-form-urlencoded":
            payloads = parse_qs(text, strict_parsing=True).get("payload", [])
            if len(payloads) != 1:
                raise BadRequest("a form-encoded push needs exactly one `payload` field")
            text = payloads[0]
        payload = json.loads(text)
    except (UnicodeDecodeError, ValueError) as exc:
        if isinstance(exc, BadRequest):
            raise
        raise BadRequest("the body is not a JSON object") from None
    if not isinstance(payload, dict):
        raise BadRequest("the body is not a JSON object")
    ref = payload.get("ref")
    if ref is None:
        return None
    if not isinstance(ref, str):
        raise BadRequest("the body's `ref` is not a string")
    return ref


def branch_ref(branch: str) -> str:
    return f"refs/heads/{branch}"
