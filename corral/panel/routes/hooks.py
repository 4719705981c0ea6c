"""Managing an app's deploy webhook (SPEC 4): enable, rotate, disable, as page forms and
as the JSON API under /api/v1/tenants/{tenant}/apps/{app}/webhook. All need `manage`.

Enable and rotate answer with the new token, once: the page shows it right away (200,
not a redirect, so it is never in a URL or a cookie), the API returns it in the JSON.
The public endpoint the token is for is corral/panel/webhooks/endpoint.py; the logic
both share is corral/panel/webhooks/service.py.
"""

from __future__ import annotations

from typing import Any

from starlette.responses import JSONResponse, Response

from corral.panel.openapi import describe
from corral.panel.permissions import Right, tenant
from corral.panel.routes.tenants import set_flash
from corral.panel.routing import Ctx, registry
from corral.panel.services import TenantRef
from corral.panel.webhooks import logs, service
from corral.panel.webhooks.service import HookError, Issued

PAGE = "/t/{tenant}/apps/{app}/webhook"
API = "/api/v1/tenants/{tenant}/apps/{app}/webhook"
MANAGE = tenant(Right.MANAGE)

logs.install()  # the public endpoint's URLs never reach the access log with a query string

_NULLABLE_TIME = {"type": ["number", "null"]}
WEBHOOK_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "tenant": {"type": "string"},
        "app": {"type": "string"},
        "enabled": {"type": "boolean"},
        "public_id": {"type": "string", "description": "The hook's id in its URL."},
        "path": {"type": ["string", "null"], "description": "/hooks/deploy/<public_id>"},
        "url": {
            "type": ["string", "null"],
            "description": "The full URL, when the panel knows its public origin.",
        },
        "token": {
            "type": ["string", "null"],
            "description": "Only in the answer to enable and rotate; never again.",
        },
        "created_at": _NULLABLE_TIME,
        "created_by": {"type": ["string", "null"]},
        "rotated_at": _NULLABLE_TIME,
        "last_used_at": _NULLABLE_TIME,
    },
}
ANSWER = {"type": "object", "properties": {"webhook": WEBHOOK_SCHEMA}}


def _tenant(ctx: Ctx) -> TenantRef:
    assert ctx.tenant is not None  # every route here has {tenant}
    return ctx.tenant


def _app(ctx: Ctx) -> str:
    return ctx.params["app"]


def _back(ctx: Ctx) -> str:
    return f"/t/{_tenant(ctx).name}/apps/{_app(ctx)}/deploy"


def _existing_app(ctx: Ctx) -> str:
    """The app's name, once its daemon says it exists (404 otherwise, via NotFound)."""
    name = _app(ctx)
    ctx.panel.daemon(_tenant(ctx), start=True).describe(name)
    return name


def _enable(ctx: Ctx) -> Issued:
    name = _existing_app(ctx)
    try:
        issued = service.enable(ctx.panel, _tenant(ctx), name, ctx.user.username)
    except HookError as exc:
        ctx.audit("webhook:enable", "failed", app=name, detail=exc.message)
        raise
    ctx.audit("webhook:enable", app=name, detail=f"hook {issued.public_id}")
    return issued


def _rotate(ctx: Ctx) -> Issued:
    name = _app(ctx)
    try:
        issued = service.rotate(ctx.panel, _tenant(ctx), name)
    except HookError as exc:
        ctx.audit("webhook:rotate", "failed", app=name, detail=exc.message)
        raise
    ctx.audit("webhook:rotate", app=name, detail=f"hook {issued.public_id}")
    return issued


def _disable(ctx: Ctx) -> str:
    name = _app(ctx)
    try:
        public_id = service.disable(ctx.panel, _tenant(ctx), name)
    except HookError as exc:
        ctx.audit("webhook:disable", "failed", app=name, detail=exc.message)
        raise
    ctx.audit("webhook:disable", app=name, detail=f"hook {public_id}")
    return public_id


def _shown(ctx: Ctx, issued: Issued) -> Response:
    webhook = service.webhook_view(ctx.panel, _tenant(ctx), _app(ctx), issued)
    return ctx.render("app_webhook.html", app_name=_app(ctx), webhook=webhook)


def _page_error(ctx: Ctx, exc: HookError) -> Response:
    return set_flash(ctx, ctx.redirect(_back(ctx)), exc.message, "bad")


def _api(ctx: Ctx, status: int = 200, issued: Issued | None = None) -> Response:
    view = service.webhook_view(ctx.panel, _tenant(ctx), _app(ctx), issued)
    return JSONResponse({"webhook": service.public_view(view)}, status_code=status)


def _api_error(exc: HookError) -> Response:
    return JSONResponse({"error": exc.message}, status_code=exc.status)


# --- pages ---------------------------------------------------------------------------------


@registry.page(f"{PAGE}/enable", need=MANAGE, methods=("POST",))
def webhook_enable(ctx: Ctx) -> Response:
    """Enable the app's deploy webhook and show its token once."""
    try:
        return _shown(ctx, _enable(ctx))
    except HookError as exc:
        return _page_error(ctx, exc)


@registry.page(f"{PAGE}/rotate", need=MANAGE, methods=("POST",))
def webhook_rotate(ctx: Ctx) -> Response:
    """Give the webhook a new token (shown once); the old one stops working."""
    try:
        return _shown(ctx, _rotate(ctx))
    except HookError as exc:
        return _page_error(ctx, exc)


@registry.page(f"{PAGE}/disable", need=MANAGE, methods=("POST",))
def webhook_disable(ctx: Ctx) -> Response:
    """Disable the webhook (303 back to the deploy page)."""
    try:
        _disable(ctx)
    except HookError as exc:
        return _page_error(ctx, exc)
    return set_flash(ctx, ctx.redirect(_back(ctx)), f"Disabled the webhook of {_app(ctx)}.")


# --- API -----------------------------------------------------------------------------------


@registry.api(API, need=MANAGE)
@describe(response=ANSWER)
def api_webhook(ctx: Ctx) -> Response:
    """The app's webhook: enabled or not, its URL and times (never the token)."""
    return _api(ctx)


@registry.api(f"{API}/enable", need=MANAGE, methods=("POST",))
@describe(response=ANSWER)
def api_webhook_enable(ctx: Ctx) -> Response:
    """Enable the deploy webhook; the answer holds its token, which is never shown again."""
    try:
        return _api(ctx, 201, _enable(ctx))
    except HookError as exc:
        return _api_error(exc)


@registry.api(f"{API}/rotate", need=MANAGE, methods=("POST",))
@describe(response=ANSWER)
def api_webhook_rotate(ctx: Ctx) -> Response:
    """A new token for the webhook (in the answer, once); the old one stops working."""
    try:
        return _api(ctx, 200, _rotate(ctx))
    except HookError as exc:
        return _api_error(exc)


@registry.api(f"{API}/disable", need=MANAGE, methods=("POST",))
@describe(response=ANSWER)
def api_webhook_disable(ctx: Ctx) -> Response:
    """Disable the webhook: its URL and token stop working."""
    try:
        _disable(ctx)
    except HookError as exc:
        return _api_error(exc)
    return _api(ctx)
