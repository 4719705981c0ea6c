"""Logging in and out (SPEC 2.3, 2.4), and the start page."""

from __future__ import annotations

from starlette.responses import RedirectResponse, Response

from corral.panel.permissions import PUBLIC, USER
from corral.panel.routing import Ctx, HttpError, registry
from corral.panel.security.passwords import (
    hash_password,
    needs_rehash,
    verify_dummy,
    verify_password,
)
from corral.panel.security.tokens import new_csrf_token, tokens_equal
from corral.panel.security.totp import verify_code
from corral.panel.users import find_user

LOGIN_COOKIE = "corral_login"
"""A pre-session token: the login form's CSRF token (double submit)."""
GENERIC_FAILURE = "wrong user name, password or code"


def _safe_next(value: str | None) -> str:
    """Only a local path: `//evil.example` and `https://...` are open redirects."""
    if not value or not value.startswith("/") or value.startswith("//") or "\\" in value:
        return "/"
    return value


def _login_form(ctx: Ctx, *, error: str = "", status: int = 200, username: str = "") -> Response:
    token = ctx.request.cookies.get(LOGIN_COOKIE) or new_csrf_token()
    response = ctx.render(
        "login.html",
        status=status,
        login_token=token,
        error=error,
        username=username,
        next=_safe_next(ctx.request.query_params.get("next")),
    )
    response.set_cookie(
        LOGIN_COOKIE,
        token,
        httponly=True,
        samesite="strict",
        secure=ctx.panel.config.tls,
        path="/login",
        max_age=3600,
    )
    return response


@registry.page("/login", need=PUBLIC)
def login_page(ctx: Ctx) -> Response:
    """The login form."""
    if ctx.principal is not None:
        return ctx.redirect("/")
    return _login_form(ctx)


@registry.page("/login", need=PUBLIC, methods=("POST",), name="login")
def login(ctx: Ctx) -> Response:
    """Check the password (and TOTP code), start a new session."""
    form = ctx.data()
    cookie = ctx.request.cookies.get(LOGIN_COOKIE, "")
    if not cookie or not tokens_equal(str(form.get("csrf_token", "")), cookie):
        ctx.audit("login", "denied", detail="missing or wrong login form token")
        return _login_form(ctx, error="the login form expired; please try again", status=403)
    name = str(form.get("username", "")).strip().lower()[:64]
    password = str(form.get("password", ""))
    code = str(form.get("totp", "")).strip()
    panel = ctx.panel
    wait = panel.throttle.retry_after(name, ctx.address)
    if wait > 0:
        ctx.audit("login", "denied", detail=f"throttled: {name!r}")
        return _login_form(
            ctx,
            status=429,
            username=name,
            error=f"too many failed logins; try again in {int(wait) + 1} s",
        )
    with panel.database.session() as db:
        user = find_user(db, name) if name else None
        ok = False
        if user is None or user.disabled:
            verify_dummy(password)
        elif verify_password(user.password_hash, password):
            ok = True
            if user.totp_secret:
                step = verify_code(user.totp_secret, code, last_step=user.totp_last_step)
                ok = step is not None
                if step is not None:
                    user.totp_last_step = step
        if not ok or user is None:
            panel.throttle.record_failure(name, ctx.address)
            ctx.audit("login", "failed", detail=f"user {name!r}")
            return _login_form(ctx, error=GENERIC_FAILURE, status=401, username=name)
        if needs_rehash(user.password_hash):
            user.password_hash = hash_password(password)
        token = panel.auth.create_session(
            db, user, ctx.address, ctx.request.headers.get("user-agent", "")
        )
        username, user_id = user.username, user.id
    panel.throttle.record_success(name, ctx.address)
    panel.audit.record(actor=username, user_id=user_id, address=ctx.address, action="login")
    response = RedirectResponse(_safe_next(str(form.get("next", "/"))), status_code=303)
    config = panel.config
    response.set_cookie(
        panel.cookie_name,
        token,
        httponly=True,
        samesite="strict",
        secure=config.tls,
        path="/",
        max_age=int(config.session_absolute_seconds),
    )
    response.delete_cookie(LOGIN_COOKIE, path="/login")
    return response


@registry.page("/logout", need=USER, methods=("POST",))
def logout(ctx: Ctx) -> Response:
    """End the session at once (its streams close, its cache entry goes)."""
    token = ctx.request.cookies.get(ctx.panel.cookie_name)
    if token:
        ctx.panel.auth.end_session(token)
    ctx.audit("logout")
    response = ctx.redirect("/login")
    response.delete_cookie(
        ctx.panel.cookie_name,
        path="/",
        secure=ctx.panel.config.tls,
        httponly=True,
        samesite="strict",
    )
    return response


@registry.page("/", need=USER)
def home(ctx: Ctx) -> Response:
    """The tenants this user can see; straight to the only one when there is one."""
    me = ctx.user
    tenants = ctx.panel.tenants_for(None if me.is_admin else list(me.rights))
    if len(tenants) == 1 and not me.is_admin:
        return ctx.redirect(f"/t/{tenants[0].name}")
    return ctx.render("home.html", tenants=tenants)


@registry.page("/healthz", need=PUBLIC)
def healthz(ctx: Ctx) -> Response:
    """Liveness for load balancers and tests: no data, no session."""
    if ctx.request.method != "GET":
        raise HttpError(405)
    return Response("ok\n", media_type="text/plain")
