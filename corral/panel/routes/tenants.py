"""A tenant's process table: the page (GET /t/{tenant}) and the WebSocket that keeps it
live (/t/{tenant}/ws/processes), plus the one-shot flash messages of the no-JS forms."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any
from urllib.parse import quote, unquote

from starlette.concurrency import run_in_threadpool
from starlette.responses import Response
from starlette.websockets import WebSocketDisconnect

from corral.panel.apps_service import BLANK, list_apps, snapshot
from corral.panel.gateway import DaemonDown, GatewayError
from corral.panel.permissions import Right, tenant
from corral.panel.routing import Ctx, WsCtx, registry
from corral.panel.services import Panel, TenantRef

PUSH_EVERY = 2.0
"""The table is pushed at least this often (uptime and CPU move on their own)."""
SETTLE = 0.15
"""After a daemon event, wait this long so that a burst (a restart of every instance)
becomes one push."""
RETRY_EVENTS = 2.0
FLASH_COOKIE = "corral_flash"


# --- flash messages: a result shown once on the page a form redirects to -----------------


def set_flash(ctx: Ctx, response: Response, message: str, kind: str = "ok") -> Response:
    """Remember `message` for the next page of this tenant (303 after a form POST)."""
    assert ctx.tenant is not None
    response.set_cookie(
        FLASH_COOKIE,
        quote(f"{'bad' if kind == 'bad' else 'ok'}:{message[:500]}", safe=""),
        max_age=60,
        path=f"/t/{ctx.tenant.name}",
        httponly=True,
        samesite="strict",
        secure=ctx.panel.config.tls,
    )
    return response


def render_with_flash(ctx: Ctx, template: str, status: int = 200, **context: Any) -> Response:
    """Render a page showing (and forgetting) the flash message left by a redirect."""
    raw = ctx.request.cookies.get(FLASH_COOKIE)
    if raw and "flash" not in context:
        kind, _, message = unquote(raw).partition(":")
        context["flash"], context["flash_kind"] = message, "bad" if kind == "bad" else "ok"
    response = ctx.render(template, status=status, **context)
    if raw and ctx.tenant is not None:
        response.delete_cookie(FLASH_COOKIE, path=f"/t/{ctx.tenant.name}")
    return response


# --- the page ----------------------------------------------------------------------------


@registry.page("/t/{tenant}", need=tenant(Right.ACCESS))
def tenant_page(ctx: Ctx) -> Response:
    """The tenant's process table (kept live by processes.js)."""
    assert ctx.tenant is not None
    apps = []
    daemon_error = ""
    try:
        apps = list_apps(ctx.panel, ctx.tenant)
    except DaemonDown:
        daemon_error = (
            "This tenant's daemon is not running; it starts when an app is created or started."
        )
    except GatewayError as exc:
        daemon_error = exc.message
    return render_with_flash(
        ctx,
        "tenant.html",
        apps=apps,
        count=len(apps),
        limit=ctx.tenant.app_limit,
        daemon_error=daemon_error,
        blank=BLANK,
    )


# --- the stream --------------------------------------------------------------------------


async def _watch_events(
    panel: Panel, ref: TenantRef, wake: Callable[[dict[str, Any] | None], None]
) -> None:
    """Call `wake(event)` for every daemon event, `wake(None)` when the subscription
    fails or ends (the daemon went away); resubscribe after a pause, forever."""
    while True:
        try:
            async for event in panel.daemon(ref).aiter_follow(None, events=True, logs=False):
                wake(event)
        except GatewayError:
            pass  # down or restarting: the pushes say so; try again shortly
        wake(None)
        await asyncio.sleep(RETRY_EVENTS)


async def _until_disconnect(ws: WsCtx) -> None:
    """Read (and ignore) what the browser sends, until it goes away."""
    with contextlib.suppress(WebSocketDisconnect):
        while True:
            message = await ws.websocket.receive()
            if message["type"] == "websocket.disconnect":
                return


def _current(panel: Panel, ref: TenantRef) -> dict[str, Any]:
    try:
        return snapshot(panel, ref)
    except DaemonDown as exc:
        # Not started yet (or stopped): nothing runs. Said as a notice, not a stream error:
        # the stream itself is live and shows the apps as soon as the daemon starts.
        notice = f"{exc.message}; it starts when an app is created or started"
        return {"tenant": ref.name, "apps": [], "count": 0, "limit": ref.app_limit,
                "notice": notice}  # fmt: skip
    except GatewayError as exc:
        return {"tenant": ref.name, "error": exc.message, "apps": [], "limit": ref.app_limit}


@registry.websocket("/t/{tenant}/ws/processes", need=tenant(Right.ACCESS))
async def processes_stream(ws: WsCtx) -> None:
    """The tenant's process list, pushed on every daemon event and at least every 2 s."""
    assert ws.tenant is not None
    ref = ws.tenant
    changed = asyncio.Event()
    watcher = asyncio.ensure_future(_watch_events(ws.panel, ref, lambda _event: changed.set()))
    gone = asyncio.ensure_future(_until_disconnect(ws))
    try:
        while not gone.done():
            changed.clear()  # events from here on cause another push
            body = await run_in_threadpool(_current, ws.panel, ref)
            if gone.done():
                return
            await ws.websocket.send_json(body)
            woken = asyncio.ensure_future(changed.wait())
            await asyncio.wait({woken, gone}, timeout=PUSH_EVERY, return_when="FIRST_COMPLETED")
            woken.cancel()
            if changed.is_set() and not gone.done():
                await asyncio.sleep(SETTLE)
    except (WebSocketDisconnect, RuntimeError):
        return  # the browser went away while we were sending
    finally:
        for task in (watcher, gone):
            task.cancel()
        await asyncio.gather(watcher, gone, return_exceptions=True)
