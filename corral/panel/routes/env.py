"""An app's Environment tab (/t/{tenant}/apps/{app}/env) and its JSON API
(/api/v1/tenants/{tenant}/apps/{app}/env): plain variables with their values, secrets by
name only. Everything here needs `manage`: plain values may be sensitive too, so reading
them is editing-level. The logic is corral/panel/env_service.py.

A secret's value is accepted here and handed to the daemon; no page or answer ever
carries it back (a form shown again after a mistake leaves the secret's field empty).
"""

from __future__ import annotations

from typing import Any

from starlette.responses import JSONResponse, Response

from corral.panel import env_service as env
from corral.panel.apps_service import ActionFailed
from corral.panel.openapi import QueryParam, describe
from corral.panel.permissions import Right, tenant
from corral.panel.routes.apps import RESULT_SCHEMA
from corral.panel.routes.tenants import render_with_flash, set_flash
from corral.panel.routing import Ctx, HttpError, registry
from corral.panel.validation import FieldErrors

PAGE = "/t/{tenant}/apps/{app}/env"
API = "/api/v1/tenants/{tenant}/apps/{app}/env"
MANAGE = tenant(Right.MANAGE)

# --- OpenAPI shapes ------------------------------------------------------------------------

ENV_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "env": {
            "type": "object",
            "description": "The plain variables (the app's config `env`), with values.",
            "additionalProperties": {"type": "string"},
        },
        "secrets": {
            "type": "array",
            "description": "The app's secrets: names and when each was set, never values.",
            "items": {
                "type": "object",
                "properties": {"name": {"type": "string"}, "set_at": {"type": "number"}},
            },
        },
    },
}
PUT_BODY: dict[str, Any] = {
    "type": "object",
    "required": ["value"],
    "properties": {
        "value": {"type": "string", "description": "Write-only for a secret."},
        "secret": {
            "type": "boolean",
            "default": False,
            "description": "Store it encrypted by the daemon; never readable again.",
        },
        "apply": {
            "enum": ["later", "restart", "reload"],
            "default": "later",
            "description": "For a plain variable (part of the app's config): `later` stores "
            "the changed config and restarts nothing, it applies from the app's next start "
            "(restart or reload it when ready); `restart` or `reload` (zero downtime) apply "
            "it at once. A secret always applies from the app's next start.",
        },
    },
}
_SAVED_PROPERTIES: dict[str, Any] = {
    "name": {"type": "string"},
    "secret": {"type": "boolean"},
    "set_at": {"type": ["number", "null"], "description": "When the secret was stored."},
    "applied": {
        "type": ["string", "null"],
        "description": "How the change was applied (restart, reload); null when it applies "
        "from the app's next start (a secret, or apply=later).",
    },
    "pending": {
        "type": "boolean",
        "description": "True: the change applies from the app's next start or reload.",
    },
    **RESULT_SCHEMA["properties"],
}
SAVED_SCHEMA: dict[str, Any] = {"type": "object", "properties": _SAVED_PROPERTIES}
REMOVED_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"removed": {"enum": ["secret", "variable"]}, **_SAVED_PROPERTIES},
}
DELETE_QUERY = (
    QueryParam(
        "kind",
        {"enum": ["secret", "variable"]},
        "Which to remove when a name is both; default: the secret if there is one.",
    ),
    QueryParam(
        "apply",
        {"enum": ["later", "restart", "reload"], "default": "later"},
        "For a plain variable: later (from the app's next start, nothing restarted), or "
        "applied at once with a restart or a reload.",
    ),
)

# --- helpers -------------------------------------------------------------------------------


def _app(ctx: Ctx) -> str:
    return ctx.params["app"]


def _page_url(ctx: Ctx) -> str:
    assert ctx.tenant is not None  # every route here has {tenant}
    return f"/t/{ctx.tenant.name}/apps/{_app(ctx)}/env"


def _json_error(exc: ActionFailed | FieldErrors) -> Response:
    if isinstance(exc, FieldErrors):
        return JSONResponse({"error": "invalid input", "errors": exc.errors}, status_code=422)
    return JSONResponse({"error": exc.message}, status_code=exc.status)


def _render(ctx: Ctx, status: int = 200, **context: Any) -> Response:
    context.setdefault("form", {"secret": "on", "apply": "later"})
    context.setdefault("errors", {})
    context.setdefault("pending", ctx.request.query_params.get("pending") == "1")
    view = env.read_env(ctx, _app(ctx))
    form = context["form"]
    # Never a secret's value back: Secret ticked, or typed under an existing secret's name.
    if "value" in form and (
        form.get("secret") == "on" or form.get("name") in {s.name for s in view.secrets}
    ):
        context["form"] = {k: v for k, v in form.items() if k != "value"}
    return render_with_flash(
        ctx, "app_env.html", status=status, app_name=_app(ctx), view=view, **context
    )


def _kept(data: Any) -> dict[str, str]:
    """What the form shows again after a mistake (`_render` drops a secret's value)."""
    form = {k: str(data.get(k, "")) for k in ("name", "apply", "value")}
    if env.flag(data.get("secret")):
        form["secret"] = "on"
    return form


def _saved_message(saved: env.Saved, app: str, removed: bool = False) -> str:
    done = saved.done.app.label if saved.done is not None else ""
    if saved.secret:
        what = "Removed" if removed else ("Replaced" if saved.replaced else "Saved")
        return (
            f"{what} the secret {saved.name} of {app}. It applies from the app's next start: "
            "restart or reload it when you are ready."
        )
    what = "Removed" if removed else "Set"
    if saved.applied is None:
        return (
            f"{what} the variable {saved.name} of {app}. It applies from the app's next start: "
            "restart or reload it when you are ready."
        )
    how = "reloaded without downtime" if saved.applied == "reload" else "restarted"
    return f"{what} the variable {saved.name} of {app} and {how}: {done}."


# --- the page ------------------------------------------------------------------------------


@registry.page(PAGE, need=MANAGE)
def app_env_page(ctx: Ctx) -> Response:
    """The app's environment: plain variables to edit, secrets shown masked."""
    return _render(ctx)


@registry.page(PAGE, need=MANAGE, methods=("POST",))
def app_env_save(ctx: Ctx) -> Response:
    """Add or change a variable or a secret (form; 303 back to the tab)."""
    data = ctx.data()
    try:
        saved = env.set_variable(ctx, _app(ctx), data, data.get("name", ""))
    except FieldErrors as exc:
        return _render(ctx, 422, form=_kept(data), errors=exc.errors)
    except ActionFailed as exc:
        if exc.status == 404:
            raise HttpError(404, exc.message) from None
        return _render(ctx, exc.status, form=_kept(data), flash=exc.message, flash_kind="bad")
    back = _page_url(ctx) + ("?pending=1" if saved.applied is None else "")
    return set_flash(ctx, ctx.redirect(back), _saved_message(saved, _app(ctx)))


@registry.page(f"{PAGE}/remove", need=MANAGE, methods=("POST",))
def app_env_remove(ctx: Ctx) -> Response:
    """Remove a variable or a secret (form; 303 back to the tab)."""
    data = ctx.data()
    kind = str(data.get("kind", "")) or None
    try:
        saved = env.remove_variable(ctx, _app(ctx), data.get("name", ""), kind, data.get("apply"))
    except (FieldErrors, ActionFailed) as exc:
        if isinstance(exc, ActionFailed) and exc.status == 404:
            raise HttpError(404, exc.message) from None
        message = "; ".join(exc.errors.values()) if isinstance(exc, FieldErrors) else exc.message
        return set_flash(ctx, ctx.redirect(_page_url(ctx)), message, "bad")
    back = _page_url(ctx) + ("?pending=1" if saved.applied is None else "")
    return set_flash(ctx, ctx.redirect(back), _saved_message(saved, _app(ctx), removed=True))


# --- the API -------------------------------------------------------------------------------


@registry.api(API, need=MANAGE)
@describe(response=ENV_SCHEMA)
def api_app_env(ctx: Ctx) -> Response:
    """The app's plain variables with values, and its secrets by name (never values)."""
    return JSONResponse(env.read_env(ctx, _app(ctx)).to_json())


@registry.api(f"{API}/{{var}}", need=MANAGE, methods=("PUT",))
@describe(body=PUT_BODY, response=SAVED_SCHEMA)
def api_app_env_put(ctx: Ctx) -> Response:
    """Set one variable, plain or secret.

    A secret is stored encrypted by the tenant's daemon and applies from the app's next
    start: nothing is restarted (`pending` is true). A plain variable changes the app's
    config: with `apply` later (the default) it is stored and restarts nothing either
    (`pending` is true); restart or reload apply it at once. A name that is already the
    other kind is a 409: remove it first."""
    try:
        saved = env.set_variable(ctx, _app(ctx), ctx.data(), ctx.params["var"])
    except (ActionFailed, FieldErrors) as exc:
        return _json_error(exc)
    return JSONResponse(saved.to_json())


@registry.api(f"{API}/{{var}}", need=MANAGE, methods=("DELETE",))
@describe(query=DELETE_QUERY, response=REMOVED_SCHEMA)
def api_app_env_delete(ctx: Ctx) -> Response:
    """Remove one variable or secret.

    A secret's removal applies from the app's next start; a plain variable's too with
    `apply` later (the default), or at once with restart or reload."""
    query = ctx.request.query_params
    data = ctx.data()
    kind = query.get("kind") or data.get("kind") or None
    mode = query.get("apply") or data.get("apply")
    try:
        saved = env.remove_variable(ctx, _app(ctx), ctx.params["var"], kind, mode)
    except (ActionFailed, FieldErrors) as exc:
        return _json_error(exc)
    removed = "secret" if saved.secret else "variable"
    return JSONResponse({"removed": removed} | saved.to_json())
