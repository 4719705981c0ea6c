"""The user's own account: change the password (the current one required, CSRF and
Origin checked by the route wrapper, a wrong current password throttled as a failed
login, every other session ended)."""

from __future__ import annotations

from starlette.responses import JSONResponse, RedirectResponse, Response

from corral.hub.accounts import AccountError, WrongPassword, change_password
from corral.hub.roles import USER
from corral.hub.routing import Ctx, HttpError, registry

CHANGED = "Your password was changed; your other sessions were ended."


@registry.page("/account", need=USER)
def account_page(ctx: Ctx) -> Response:
    changed = ctx.request.query_params.get("changed") == "1"
    return ctx.render("account.html", error="", flash=CHANGED if changed else "")


@registry.page("/account/password", need=USER, methods=("POST",))
@registry.api("/api/account/password", need=USER, methods=("POST",), name="password_api")
def password_change(ctx: Ctx) -> Response:
    me = ctx.user
    hub = ctx.hub
    current = ctx.text("current_password")
    new = ctx.text("new_password")
    again = ctx.data().get("new_password_again")
    wait = hub.throttle.retry_after(me.username, ctx.address)
    if wait > 0:
        ctx.audit("account.password", "denied", "throttled after wrong passwords")
        raise HttpError(429, f"too many wrong passwords: wait {int(wait) + 1} s")
    error = ""
    ended = 0
    if again is not None and again != new:
        error = "the two new passwords differ"
    else:
        try:
            with hub.database.session() as db:
                ended = change_password(db, me.user_id, current, new, keep_session=me.session_id)
        except WrongPassword as exc:
            hub.throttle.record_failure(me.username, ctx.address)
            ctx.audit("account.password", "failed", "wrong current password")
            error = str(exc)
        except AccountError as exc:
            error = str(exc)
    current = new = ""
    if error:
        if ctx.is_api:
            return JSONResponse({"error": error}, status_code=422)
        return ctx.render("account.html", 422, error=error, flash="")
    ctx.audit("account.password", detail=f"ended {ended} other session(s)")
    if ctx.is_api:
        return JSONResponse({"ok": True, "sessions_ended": ended})
    return RedirectResponse("/account?changed=1", status_code=303)
