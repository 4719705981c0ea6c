"""Login and logout (argon2id passwords, login throttling, session rotation)."""

from __future__ import annotations

from starlette.responses import JSONResponse, RedirectResponse, Response

from corral.hub import auth
from corral.hub.accounts import find_user
from corral.hub.roles import PUBLIC, USER
from corral.hub.routing import Ctx, HttpError, registry
from corral.panel.security.passwords import verify_dummy, verify_password


def _safe_next(target: str) -> str:
    # Only a path on this hub: never //host or a scheme (open redirect).
    if target.startswith("/") and not target.startswith("//") and "\\" not in target:
        return target
    return "/"


@registry.page("/login", need=PUBLIC)
def login_page(ctx: Ctx) -> Response:
    if ctx.principal is not None:
        return RedirectResponse("/", status_code=303)
    return ctx.render("login.html", next=_safe_next(ctx.request.query_params.get("next", "/")))


@registry.page("/login", need=PUBLIC, methods=("POST",), name="login")
def login(ctx: Ctx) -> Response:
    name = ctx.text("username").strip()
    password = ctx.text("password")
    target = _safe_next(ctx.text("next") or "/")
    hub = ctx.hub
    wait = hub.throttle.retry_after(name, ctx.address)
    if wait > 0:
        ctx.audit("login", "throttled", f"user {name[:64]!r}")
        raise HttpError(429, f"too many failed logins: wait {int(wait) + 1} s")
    with hub.database.session() as db:
        user = find_user(db, name) if name else None
        ok = False
        if user is None or user.disabled:
            verify_dummy(password)  # the same time whether or not the user exists
        else:
            ok = verify_password(user.password_hash, password)
        if not ok or user is None:
            hub.throttle.record_failure(name, ctx.address)
            token = None
        else:
            hub.throttle.record_success(name, ctx.address)
            token = auth.create_session(db, user, ctx.address)
    password = ""
    if token is None:
        ctx.audit("login", "failed", f"user {name[:64]!r}")
        return ctx.render("login.html", 401, error="wrong username or password", next=target)
    old = ctx.request.cookies.get(hub.cookie_name)
    if old:
        auth.end_session(hub.database, old)
    response = RedirectResponse(target, status_code=303)
    response.set_cookie(
        hub.cookie_name,
        token,
        httponly=True,
        secure=hub.config.tls,
        samesite="strict",
        path="/",
    )
    ctx.principal = None
    with hub.database.session() as db:
        from corral.hub.audit import record

        record(db, name, "login", address=ctx.address)
    return response


@registry.page("/logout", need=USER, methods=("POST",))
def logout(ctx: Ctx) -> Response:
    token = ctx.request.cookies.get(ctx.hub.cookie_name)
    if token:
        auth.end_session(ctx.hub.database, token)
    ctx.audit("logout")
    response: Response = RedirectResponse("/login", status_code=303)
    if ctx.is_api:
        response = JSONResponse({"ok": True})
    response.delete_cookie(ctx.hub.cookie_name, path="/")
    return response
