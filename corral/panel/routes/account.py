"""A user's own account (SPEC 2.3, 2.7): password, two-factor codes, API tokens, sessions.

Every action acts on the logged-in user only; another user's token or session answers
404 like a missing one. Guessing secrets through a stolen session is throttled with the
login throttle: a wrong current password or code counts as a failed login.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session as DbSession
from starlette.responses import JSONResponse, Response

from corral.panel.db.models import ApiToken, Session, User
from corral.panel.openapi import describe
from corral.panel.permissions import USER
from corral.panel.routing import Ctx, HttpError, registry
from corral.panel.security.passwords import hash_password, password_problem, verify_password
from corral.panel.security.tokens import new_token
from corral.panel.security.totp import new_secret, provisioning_uri, verify_code
from corral.panel.validation import FieldErrors

TOKEN_PREFIX = "crl"
MAX_TOKENS = 50
"""Personal API tokens per user: plenty for automation, bounded for the page."""
TOKEN_NAME_MAX = 64
EXPIRY_CHOICES = (7, 30, 90, 365)
"""Days offered on the page; the API takes any whole number of days up to MAX_EXPIRY_DAYS."""
MAX_EXPIRY_DAYS = 3650
SETUP_SECONDS = 15 * 60
"""How long a two-factor setup (secret shown, not yet confirmed) stays valid."""
SESSION_REF_LENGTH = 16
"""Sessions are named on the page by a prefix of their id (itself a hash of the cookie)."""
_SECRET_RE = re.compile(r"[A-Z2-7]{32}")
_TOKEN_NAME_RE = re.compile(r"[^\x00-\x1f\x7f]+")
_REF_RE = re.compile(f"[0-9a-f]{{{SESSION_REF_LENGTH}}}")

FLASHES = {
    "password": "Your password was changed; your other sessions were ended.",
    "totp-on": "Two-factor codes are on: from now on, log in with a code.",
    "totp-off": "Two-factor codes are off.",
    "token-revoked": "The token was revoked.",
    "session-ended": "The session was ended.",
}


def _json_invalid(exc: FieldErrors) -> Response:
    return JSONResponse({"error": "invalid input", "errors": exc.errors}, status_code=422)


def _me(db: DbSession, ctx: Ctx) -> User:
    user = db.get(User, ctx.user.user_id)
    if user is None:  # deleted between authentication and now
        raise HttpError(401)
    return user


def _text(data: Mapping[str, Any], key: str) -> str:
    value = data.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise FieldErrors({key: "must be text"})
    return value


def _throttled(ctx: Ctx, action: str) -> None:
    """Refuse while the user's account or address is locked by failed guesses."""
    wait = ctx.panel.throttle.retry_after(ctx.user.username, ctx.address)
    if wait > 0:
        ctx.audit(action, "denied", detail="throttled after wrong passwords or codes")
        raise HttpError(429, f"too many wrong passwords or codes; try again in {int(wait) + 1} s")


def _guessed_wrong(ctx: Ctx) -> None:
    ctx.panel.throttle.record_failure(ctx.user.username, ctx.address)


# --- password


def change_password(ctx: Ctx, data: Mapping[str, Any]) -> None:
    """Check the current password, store the new one, end every other session."""
    current = _text(data, "current_password")
    new = _text(data, "new_password")
    errors: dict[str, str] = {}
    if not current:
        errors["current_password"] = "enter your current password"
    problem = password_problem(new)
    if problem:
        errors["new_password"] = problem
    elif "new_password_again" in data and _text(data, "new_password_again") != new:
        errors["new_password_again"] = "the two new passwords differ"
    if errors:
        raise FieldErrors(errors)
    _throttled(ctx, "account.password")
    me = ctx.user
    with ctx.panel.database.session() as db:
        user = _me(db, ctx)
        if not verify_password(user.password_hash, current):
            _guessed_wrong(ctx)
            raise FieldErrors({"current_password": "this is not your current password"})
        if verify_password(user.password_hash, new):
            raise FieldErrors({"new_password": "this is your current password; choose a new one"})
        user.password_hash = hash_password(new)
        user.password_changed_at = time.time()
        ended = _end_sessions(db, me.user_id, keep=me.session_id)
    ctx.panel.auth.invalidate_user(me.user_id)
    ctx.audit("account.password", detail=f"ended {ended} other session(s)")


def _end_sessions(db: DbSession, user_id: int, *, keep: str | None) -> int:
    stmt = delete(Session).where(Session.user_id == user_id)
    if keep is not None:
        stmt = stmt.where(Session.id != keep)
    return int(db.execute(stmt).rowcount or 0)  # type: ignore[attr-defined]


# --- two-factor codes


@dataclass(frozen=True)
class TotpSetup:
    secret: str
    uri: str
    setup_token: str


def _setup_mac(user: User, secret: str, issued: int) -> str:
    # Keyed with the user's password hash: a secret only the server knows, so a client
    # cannot present a secret of its own choosing, and a password change voids the setup.
    key = user.password_hash.encode("utf-8")
    message = f"{user.id}:{secret}:{issued}".encode()
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def start_totp(ctx: Ctx) -> TotpSetup:
    """A new secret to enter in an authenticator app; nothing changes until confirmed."""
    with ctx.panel.database.session() as db:
        user = _me(db, ctx)
        if user.totp_secret:
            raise FieldErrors({"totp": "two-factor codes are already on; turn them off first"})
        secret = new_secret()
        issued = int(time.time())
        token = f"{issued}.{_setup_mac(user, secret, issued)}"
        return TotpSetup(secret, provisioning_uri(secret, user.username), token)


def _check_setup(user: User, secret: str, setup_token: str) -> bool:
    issued_text, _, mac = setup_token.partition(".")
    if not _SECRET_RE.fullmatch(secret) or not issued_text.isdigit():
        return False
    issued = int(issued_text)
    if not 0 <= time.time() - issued <= SETUP_SECONDS:
        return False
    return hmac.compare_digest(mac, _setup_mac(user, secret, issued))


def enable_totp(ctx: Ctx, data: Mapping[str, Any]) -> None:
    """Turn codes on once a code from the new secret proves the app has it."""
    secret = _text(data, "secret").strip().upper()
    setup_token = _text(data, "setup_token")
    code = _text(data, "code")
    _throttled(ctx, "account.totp_on")
    with ctx.panel.database.session() as db:
        user = _me(db, ctx)
        if user.totp_secret:
            raise FieldErrors({"code": "two-factor codes are already on"})
        if not _check_setup(user, secret, setup_token):
            raise FieldErrors({"secret": "this setup has expired or was altered; start again"})
        step = verify_code(secret, code, last_step=None)
        if step is None:
            _guessed_wrong(ctx)
            raise FieldErrors(
                {"code": "wrong code: enter the 6 digits the app shows now for this secret"}
            )
        user.totp_secret = secret
        user.totp_last_step = step  # the confirming code cannot be replayed at login
    ctx.panel.auth.invalidate_user(ctx.user.user_id)
    ctx.audit("account.totp_on")


def disable_totp(ctx: Ctx, data: Mapping[str, Any]) -> None:
    code = _text(data, "code")
    _throttled(ctx, "account.totp_off")
    with ctx.panel.database.session() as db:
        user = _me(db, ctx)
        if not user.totp_secret:
            raise FieldErrors({"code": "two-factor codes are not on"})
        step = verify_code(user.totp_secret, code, last_step=user.totp_last_step)
        if step is None:
            _guessed_wrong(ctx)
            raise FieldErrors({"code": "wrong or already used code"})
        user.totp_secret = None
        user.totp_last_step = None
    ctx.panel.auth.invalidate_user(ctx.user.user_id)
    ctx.audit("account.totp_off")


# --- API tokens


def token_json(row: ApiToken) -> dict[str, Any]:
    return {
        "id": row.id,
        "name": row.name,
        "created_at": row.created_at,
        "last_used_at": row.last_used_at,
        "expires_at": row.expires_at,
    }


def parse_expiry(value: object) -> int | None:
    """Days until the token expires (None: never) from a form or JSON value."""
    if value is None or value == "" or value == "never":
        return None
    if isinstance(value, bool):
        raise FieldErrors({"expires_in_days": "must be a whole number of days or empty"})
    if isinstance(value, str):
        if not value.strip().isdigit():
            raise FieldErrors({"expires_in_days": f"must be a whole number of days, not {value!r}"})
        value = int(value.strip())
    if not isinstance(value, int):
        raise FieldErrors({"expires_in_days": "must be a whole number of days or empty"})
    if not 1 <= value <= MAX_EXPIRY_DAYS:
        raise FieldErrors({"expires_in_days": f"must be between 1 and {MAX_EXPIRY_DAYS} days"})
    return value


def create_token(ctx: Ctx, data: Mapping[str, Any]) -> tuple[str, ApiToken]:
    """A new token; the clear token is returned here and never again (only its hash is kept)."""
    name = _text(data, "name").strip()
    errors: dict[str, str] = {}
    if not name:
        errors["name"] = "give the token a name that says what uses it"
    elif len(name) > TOKEN_NAME_MAX:
        errors["name"] = f"use at most {TOKEN_NAME_MAX} characters"
    elif not _TOKEN_NAME_RE.fullmatch(name):
        errors["name"] = "control characters are not allowed"
    try:
        days = parse_expiry(data.get("expires_in_days"))
    except FieldErrors as exc:
        errors.update(exc.errors)
    if errors:
        raise FieldErrors(errors)
    user_id = ctx.user.user_id
    with ctx.panel.database.session() as db:
        mine = select(ApiToken).where(ApiToken.user_id == user_id)
        if db.scalar(mine.where(ApiToken.name == name)) is not None:
            raise FieldErrors({"name": f"you already have a token named {name!r}"})
        count = db.scalar(select(func.count()).select_from(mine.subquery())) or 0
        if count >= MAX_TOKENS:
            raise FieldErrors({"name": f"you have {MAX_TOKENS} tokens; revoke one first"})
        token, digest = new_token(TOKEN_PREFIX)
        now = time.time()
        row = ApiToken(
            user_id=user_id,
            name=name,
            token_hash=digest,
            created_at=now,
            expires_at=None if days is None else now + days * 86400,
        )
        db.add(row)
        db.flush()
    ctx.audit("token.create", detail=f"token {name!r} (id {row.id})")
    return token, row


def list_tokens(ctx: Ctx) -> list[ApiToken]:
    with ctx.panel.database.session() as db:
        stmt = (
            select(ApiToken)
            .where(ApiToken.user_id == ctx.user.user_id)
            .order_by(ApiToken.created_at.desc(), ApiToken.id.desc())
        )
        return list(db.scalars(stmt))


def revoke_token(ctx: Ctx, token_id: int) -> None:
    with ctx.panel.database.session() as db:
        row = db.get(ApiToken, token_id)
        if row is None or row.user_id != ctx.user.user_id:
            ctx.audit("token.revoke", "failed", detail=f"no token {token_id} of yours")
            raise HttpError(404, "no such token")
        name = row.name
        db.delete(row)
    ctx.audit("token.revoke", detail=f"token {name!r} (id {token_id})")


# --- sessions


@dataclass(frozen=True)
class SessionView:
    ref: str
    created_at: float
    last_seen_at: float
    address: str
    user_agent: str
    current: bool


def list_sessions(ctx: Ctx) -> list[SessionView]:
    me = ctx.user
    with ctx.panel.database.session() as db:
        stmt = (
            select(Session)
            .where(Session.user_id == me.user_id)
            .order_by(Session.last_seen_at.desc())
        )
        return [
            SessionView(
                row.id[:SESSION_REF_LENGTH],
                row.created_at,
                row.last_seen_at,
                row.address,
                row.user_agent,
                row.id == me.session_id,
            )
            for row in db.scalars(stmt)
        ]


def end_session(ctx: Ctx, ref: str) -> bool:
    """End one of my sessions by its reference; True when it was the current one."""
    me = ctx.user
    if not _REF_RE.fullmatch(ref):
        raise HttpError(404, "no such session")
    with ctx.panel.database.session() as db:
        stmt = select(Session).where(
            Session.user_id == me.user_id, Session.id.startswith(ref, autoescape=True)
        )
        rows = list(db.scalars(stmt))
        if len(rows) != 1:
            ctx.audit("session.end", "failed", detail=f"no session {ref} of yours")
            raise HttpError(404, "no such session")
        current = rows[0].id == me.session_id
        db.delete(rows[0])
    ctx.panel.auth.invalidate_user(me.user_id)
    ctx.audit("session.end", detail=f"session {ref}" + (" (this one)" if current else ""))
    return current


def session_json(view: SessionView) -> dict[str, Any]:
    return {
        "id": view.ref,
        "created_at": view.created_at,
        "last_seen_at": view.last_seen_at,
        "address": view.address,
        "user_agent": view.user_agent,
        "current": view.current,
    }


def account_json(ctx: Ctx) -> dict[str, Any]:
    with ctx.panel.database.session() as db:
        user = _me(db, ctx)
        return {
            "id": user.id,
            "username": user.username,
            "is_admin": user.is_admin,
            "totp": bool(user.totp_secret),
            "created_at": user.created_at,
            "password_changed_at": user.password_changed_at,
        }


# --- the page


def _page(
    ctx: Ctx,
    *,
    status: int = 200,
    errors: dict[str, str] | None = None,
    section: str = "",
    setup: TotpSetup | None = None,
    new_token_value: str = "",
    form: Mapping[str, Any] | None = None,
    flash: str = "",
    flash_kind: str = "ok",
) -> Response:
    flash_key = ctx.request.query_params.get("done", "")
    return ctx.render(
        "account.html",
        status=status,
        account=account_json(ctx),
        tokens=list_tokens(ctx),
        sessions=list_sessions(ctx),
        errors=errors or {},
        section=section,
        setup=setup,
        new_token=new_token_value,
        form=form or {},
        expiry_choices=EXPIRY_CHOICES,
        flash=flash or FLASHES.get(flash_key, ""),
        flash_kind=flash_kind,
        now=time.time(),
    )


def _failed(ctx: Ctx, action: str, exc: FieldErrors | HttpError) -> None:
    detail = str(exc) if isinstance(exc, FieldErrors) else exc.message
    ctx.audit(action, "failed", detail=detail)


@registry.page("/account", need=USER)
def account_page(ctx: Ctx) -> Response:
    """Your password, two-factor codes, API tokens and sessions."""
    return _page(ctx)


@registry.page("/account/password", need=USER, methods=("POST",))
def account_password(ctx: Ctx) -> Response:
    """Change your password (ends your other sessions)."""
    data = ctx.data()
    try:
        change_password(ctx, data)
    except FieldErrors as exc:
        _failed(ctx, "account.password", exc)
        return _page(ctx, status=422, errors=exc.errors, section="password")
    return ctx.redirect("/account?done=password")


@registry.page("/account/totp/setup", need=USER, methods=("POST",))
def account_totp_setup(ctx: Ctx) -> Response:
    """Show a new two-factor secret to confirm with a code."""
    try:
        setup = start_totp(ctx)
    except FieldErrors as exc:
        return _page(ctx, status=422, errors=exc.errors, section="totp")
    return _page(ctx, setup=setup, section="totp")


@registry.page("/account/totp/enable", need=USER, methods=("POST",))
def account_totp_enable(ctx: Ctx) -> Response:
    """Turn two-factor codes on with a code from the new secret."""
    data = ctx.data()
    try:
        enable_totp(ctx, data)
    except FieldErrors as exc:
        _failed(ctx, "account.totp_on", exc)
        setup = None
        secret = _text(data, "secret").strip().upper()
        if "secret" not in exc.errors and _SECRET_RE.fullmatch(secret):
            setup = TotpSetup(
                secret, provisioning_uri(secret, ctx.user.username), _text(data, "setup_token")
            )
        return _page(ctx, status=422, errors=exc.errors, section="totp", setup=setup)
    return ctx.redirect("/account?done=totp-on")


@registry.page("/account/totp/disable", need=USER, methods=("POST",))
def account_totp_disable(ctx: Ctx) -> Response:
    """Turn two-factor codes off (needs a current code)."""
    try:
        disable_totp(ctx, ctx.data())
    except FieldErrors as exc:
        _failed(ctx, "account.totp_off", exc)
        return _page(ctx, status=422, errors=exc.errors, section="totp")
    return ctx.redirect("/account?done=totp-off")


@registry.page("/account/tokens", need=USER, methods=("POST",))
def account_token_create(ctx: Ctx) -> Response:
    """Create a personal API token (shown once)."""
    data = ctx.data()
    try:
        token, row = create_token(ctx, data)
    except FieldErrors as exc:
        _failed(ctx, "token.create", exc)
        return _page(ctx, status=422, errors=exc.errors, section="tokens", form=data)
    return _page(
        ctx,
        new_token_value=token,
        section="tokens",
        flash=f"Token {row.name!r} created. Copy it now: it is not shown again.",
    )


@registry.page("/account/tokens/{token_id:int}/revoke", need=USER, methods=("POST",))
def account_token_revoke(ctx: Ctx) -> Response:
    """Revoke one of your API tokens."""
    revoke_token(ctx, int(ctx.params["token_id"]))
    return ctx.redirect("/account?done=token-revoked#tokens")


@registry.page("/account/sessions/{ref}/end", need=USER, methods=("POST",))
def account_session_end(ctx: Ctx) -> Response:
    """End one of your sessions (log it out)."""
    if end_session(ctx, str(ctx.params["ref"])):
        return ctx.redirect("/login")
    return ctx.redirect("/account?done=session-ended#sessions")


# --- the JSON API

_ACCOUNT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "id": {"type": "integer"},
        "username": {"type": "string"},
        "is_admin": {"type": "boolean"},
        "totp": {"type": "boolean", "description": "Two-factor codes are on."},
        "created_at": {"type": "number"},
        "password_changed_at": {"type": "number"},
    },
}
_TOKEN_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "id": {"type": "integer"},
        "name": {"type": "string"},
        "created_at": {"type": "number"},
        "last_used_at": {"type": ["number", "null"]},
        "expires_at": {"type": ["number", "null"]},
    },
}
_SESSION_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "id": {"type": "string"},
        "created_at": {"type": "number"},
        "last_seen_at": {"type": "number"},
        "address": {"type": "string"},
        "user_agent": {"type": "string"},
        "current": {"type": "boolean"},
    },
}


@registry.api("/api/v1/account", need=USER, name="api_account")
@describe(response=_ACCOUNT_SCHEMA)
def api_account(ctx: Ctx) -> Response:
    """Who you are."""
    return JSONResponse(account_json(ctx))


@registry.api("/api/v1/account/password", need=USER, methods=("POST",))
@describe(
    body={
        "type": "object",
        "required": ["current_password", "new_password"],
        "properties": {
            "current_password": {"type": "string"},
            "new_password": {"type": "string", "minLength": 12},
        },
    }
)
def api_account_password(ctx: Ctx) -> Response:
    """Change your password.

    Your other sessions end (with an API token: all of them).
    """
    try:
        change_password(ctx, ctx.data())
    except FieldErrors as exc:
        _failed(ctx, "account.password", exc)
        return _json_invalid(exc)
    return JSONResponse({"ok": True})


@registry.api("/api/v1/account/totp/setup", need=USER, methods=("POST",))
@describe(
    response={
        "type": "object",
        "properties": {
            "secret": {"type": "string"},
            "uri": {"type": "string", "description": "otpauth:// URI for authenticator apps."},
            "setup_token": {"type": "string"},
        },
    }
)
def api_totp_setup(ctx: Ctx) -> Response:
    """Start turning two-factor codes on: a new secret, not active yet.

    Confirm it within 15 minutes with POST /api/v1/account/totp/enable, sending back the
    secret, the setup_token and a current code.
    """
    try:
        setup = start_totp(ctx)
    except FieldErrors as exc:
        return _json_invalid(exc)
    return JSONResponse(
        {"secret": setup.secret, "uri": setup.uri, "setup_token": setup.setup_token}
    )


@registry.api("/api/v1/account/totp/enable", need=USER, methods=("POST",))
@describe(
    body={
        "type": "object",
        "required": ["secret", "setup_token", "code"],
        "properties": {
            "secret": {"type": "string"},
            "setup_token": {"type": "string"},
            "code": {"type": "string", "pattern": "^[0-9]{6}$"},
        },
    }
)
def api_totp_enable(ctx: Ctx) -> Response:
    """Turn two-factor codes on, proving the secret with a current code."""
    try:
        enable_totp(ctx, ctx.data())
    except FieldErrors as exc:
        _failed(ctx, "account.totp_on", exc)
        return _json_invalid(exc)
    return JSONResponse({"totp": True})


@registry.api("/api/v1/account/totp/disable", need=USER, methods=("POST",))
@describe(
    body={
        "type": "object",
        "required": ["code"],
        "properties": {"code": {"type": "string", "pattern": "^[0-9]{6}$"}},
    }
)
def api_totp_disable(ctx: Ctx) -> Response:
    """Turn two-factor codes off (needs a current code)."""
    try:
        disable_totp(ctx, ctx.data())
    except FieldErrors as exc:
        _failed(ctx, "account.totp_off", exc)
        return _json_invalid(exc)
    return JSONResponse({"totp": False})


@registry.api("/api/v1/account/tokens", need=USER, name="api_tokens")
@describe(
    response={"type": "object", "properties": {"tokens": {"type": "array", "items": _TOKEN_SCHEMA}}}
)
def api_tokens(ctx: Ctx) -> Response:
    """Your personal API tokens (never the tokens themselves)."""
    return JSONResponse({"tokens": [token_json(row) for row in list_tokens(ctx)]})


@registry.api("/api/v1/account/tokens", need=USER, methods=("POST",), name="api_token_create")
@describe(
    body={
        "type": "object",
        "required": ["name"],
        "properties": {
            "name": {"type": "string", "maxLength": TOKEN_NAME_MAX},
            "expires_in_days": {
                "type": ["integer", "null"],
                "minimum": 1,
                "maximum": MAX_EXPIRY_DAYS,
                "description": "Omitted or null: the token never expires.",
            },
        },
    },
    response={
        "type": "object",
        "properties": {
            "token": {"type": "string", "description": "Shown only in this answer."},
            "info": _TOKEN_SCHEMA,
        },
    },
)
def api_token_create(ctx: Ctx) -> Response:
    """Create a personal API token.

    The token is in this answer only; the panel keeps just its SHA-256. Send it as
    `Authorization: Bearer <token>`.
    """
    try:
        token, row = create_token(ctx, ctx.data())
    except FieldErrors as exc:
        _failed(ctx, "token.create", exc)
        return _json_invalid(exc)
    return JSONResponse({"token": token, "info": token_json(row)}, status_code=201)


@registry.api("/api/v1/account/tokens/{token_id:int}", need=USER, methods=("DELETE",))
def api_token_revoke(ctx: Ctx) -> Response:
    """Revoke one of your API tokens."""
    revoke_token(ctx, int(ctx.params["token_id"]))
    return JSONResponse({"revoked": int(ctx.params["token_id"])})


@registry.api("/api/v1/account/sessions", need=USER, name="api_sessions")
@describe(
    response={
        "type": "object",
        "properties": {"sessions": {"type": "array", "items": _SESSION_SCHEMA}},
    }
)
def api_sessions(ctx: Ctx) -> Response:
    """Your logged-in sessions."""
    return JSONResponse({"sessions": [session_json(s) for s in list_sessions(ctx)]})


@registry.api("/api/v1/account/sessions/{ref}", need=USER, methods=("DELETE",))
def api_session_end(ctx: Ctx) -> Response:
    """End one of your sessions (its id as listed)."""
    ref = str(ctx.params["ref"])
    current = end_session(ctx, ref)
    return JSONResponse({"ended": ref, "current": current})
