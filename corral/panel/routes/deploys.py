"""An app's git deploys (SPEC 4): the Deploy tab, one deploy's output (live over a
WebSocket), and their JSON API twins. Reading needs `access`; changing the git source,
deploying, rolling back and making a deploy key need `manage`. The logic is in
corral/panel/deploy_service.py; the daemon does the work.

The deploy WebSocket sends JSON messages:

    {"output": "...", "deploy": record}   the whole output so far (first message, and again
                                          if the kept output was cut at its start)
    {"append": "..."}                     output written since
    {"deploy": record}                    the deploy's record when its status changed
    {"error": "..."}                      the stream ends; the socket closes right after

The socket closes normally (1000) once the deploy has finished and all of its output
has been sent. Output is read from the daemon's kept copy each time lines arrive (the
deploy events say when), so what the page shows is exactly the kept output: nothing is
lost or shown twice between the page's first read and its subscription.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from starlette.responses import JSONResponse, Response
from starlette.websockets import WebSocket, WebSocketDisconnect

from corral.panel import deploy_service as dsvc
from corral.panel.apps_service import ActionFailed
from corral.panel.gateway import DaemonDown, GatewayError, NotFound, TenantDaemon
from corral.panel.openapi import QueryParam, describe
from corral.panel.permissions import Right, tenant
from corral.panel.routes.tenants import render_with_flash, set_flash
from corral.panel.routing import Ctx, HttpError, WsCtx, registry
from corral.panel.validation import FieldErrors

TA = "/t/{tenant}/apps/{app}"
APIA = "/api/v1/tenants/{tenant}/apps/{app}"
CLOSE_NOT_FOUND = 4404
CLOSE_DAEMON_GONE = 1011
REREAD_SECONDS = 0.25
"""The output is read again at most this often while lines keep coming."""
IDLE_SECONDS = 5.0
"""With no event for this long, the output and status are read anyway (a missed event
never leaves the page behind)."""

# --- OpenAPI shapes ------------------------------------------------------------------------

_TEXT: dict[str, Any] = {"type": "string"}
_NUM_OR_NULL: dict[str, Any] = {"type": ["number", "null"]}
_TEXT_OR_NULL: dict[str, Any] = {"type": ["string", "null"]}
RECORD_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "One deploy or rollback, as the daemon's history keeps it.",
    "properties": {
        "id": _TEXT,
        "app": _TEXT,
        "kind": {"enum": ["deploy", "rollback"]},
        "status": {"enum": ["queued", "running", "succeeded", "failed"]},
        "trigger": {"type": "string", "description": "'panel: alice', 'webhook: github'..."},
        "ref": _TEXT_OR_NULL,
        "commit": _TEXT_OR_NULL,
        "release": _TEXT_OR_NULL,
        "previous": _TEXT_OR_NULL,
        "step": _TEXT_OR_NULL,
        "error": _TEXT_OR_NULL,
        "queued": {"type": "number"},
        "started": _NUM_OR_NULL,
        "ended": _NUM_OR_NULL,
        "duration": _NUM_OR_NULL,
    },
}
RELEASE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "id": _TEXT,
        "commit": _TEXT,
        "ref": _TEXT,
        "created": {"type": "number"},
        "current": {"type": "boolean"},
    },
}
SOURCE_SCHEMA: dict[str, Any] = {
    "type": ["object", "null"],
    "description": "The app's git source; the repository URL with any credentials redacted.",
    "properties": {
        "repo": _TEXT,
        "branch": _TEXT,
        "keep": {"type": "integer"},
        "install": {"type": "boolean"},
        "steps": {"type": "array", "items": {"type": "array", "items": _TEXT}},
        "timeout": {"type": "number", "description": "Seconds per command."},
    },
}
SOURCE_BODY: dict[str, Any] = {
    "type": "object",
    "required": ["repo", "script"],
    "properties": {
        "script": {"type": "string", "description": "The file to run, inside the release."},
        "cwd": {"type": ["string", "null"], "description": "Inside the release (default: it)."},
        "repo": {
            "type": "string",
            "description": "https://host/path, ssh://[user@]host[:port]/path or user@host:path.",
        },
        "branch": {"type": "string", "default": "main"},
        "keep": {"type": "integer", "minimum": 1, "maximum": 100, "default": 5},
        "install": {"type": "boolean", "default": True},
        "steps": {
            "type": ["array", "string"],
            "description": "Argv lists, or commands one per line (split like a shell "
            "would; never run by one).",
            "items": {"type": ["array", "string"], "items": _TEXT},
        },
        "timeout": {"type": "string", "description": "Per command: 10m, 90s...", "default": "10m"},
    },
}
DEPLOY_VIEW_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "app": _TEXT,
        "source": SOURCE_SCHEMA,
        "script": _TEXT,
        "cwd": _TEXT_OR_NULL,
        "public_key": _TEXT_OR_NULL,
        "history": {"type": "array", "items": RECORD_SCHEMA},
        "releases": {"type": "array", "items": RELEASE_SCHEMA},
    },
}
QUEUED_SCHEMA: dict[str, Any] = {"type": "object", "properties": {"deploy": RECORD_SCHEMA}}
OUTPUT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"deploy": RECORD_SCHEMA, "output": _TEXT},
}

# --- helpers -------------------------------------------------------------------------------


def _base(ctx: Ctx) -> str:
    assert ctx.tenant is not None  # every route here has {tenant}
    return f"/t/{ctx.tenant.name}/apps/{ctx.params['app']}"


def _json_error(exc: ActionFailed | FieldErrors) -> Response:
    if isinstance(exc, FieldErrors):
        first = next(iter(exc.errors.items()))
        error = f"{first[0]}: {first[1]}" if len(exc.errors) == 1 else "invalid input"
        return JSONResponse({"error": error, "errors": exc.errors}, status_code=422)
    return JSONResponse({"error": exc.message}, status_code=exc.status)


def _webhook(ctx: Ctx, app: str) -> dict[str, Any] | None:
    """The webhook section's values (engineer C1's service), when it exists."""
    from corral.panel.webhooks.service import webhook_view

    assert ctx.tenant is not None
    if not ctx.user.may(ctx.tenant.id, Right.MANAGE):
        return None  # its forms need manage; the section says nothing to others
    return webhook_view(ctx.panel, ctx.tenant, app)


def _page(ctx: Ctx, status: int = 200, **context: Any) -> Response:
    app = ctx.params["app"]
    shown = dsvc.view(ctx, app)
    source = shown.source
    form = context.pop("form", None)
    if form is None:
        form = {
            "repo": source.repo if source else "",
            "branch": source.branch if source else "main",
            "keep": str(source.keep) if source else "5",
            "install": source.install if source else True,
            "steps": source.steps_text if source else "",
            "timeout": source.timeout_text if source else "10m",
            "script": shown.script,
            "cwd": shown.cwd,
        }
    return render_with_flash(
        ctx,
        "app_deploy.html",
        status=status,
        app_name=app,
        active_tab="deploy",
        view=shown,
        form=form,
        errors=context.pop("errors", {}),
        webhook=_webhook(ctx, app),
        **context,
    )


def _kept_form(data: dict[str, Any]) -> dict[str, Any]:
    """What the user typed, shown again with the errors (never the stored URL)."""
    keys = (*dsvc.SOURCE_FIELDS, *dsvc.APP_FIELDS)
    form: dict[str, Any] = {k: str(data.get(k, "")) for k in keys}
    form["install"] = dsvc._flag(data.get("install", "")) is True
    return form


# --- pages ---------------------------------------------------------------------------------


@registry.page(TA + "/deploy", need=tenant(Right.ACCESS), name="app_deploy")
def app_deploy(ctx: Ctx) -> Response:
    """The app's git source, deploy key, deploy history and releases."""
    return _page(ctx)


@registry.page(
    TA + "/deploy/source", need=tenant(Right.MANAGE), methods=("POST",), name="app_deploy_source"
)
def app_deploy_source(ctx: Ctx) -> Response:
    """Set or change the app's git source (the page again, with errors, if it is wrong)."""
    app = ctx.params["app"]
    data = dict(ctx.data())
    try:
        dsvc.save_source(ctx, app, data, form=True)
    except FieldErrors as exc:
        return _page(ctx, 422, form=_kept_form(data), errors=exc.errors)
    except ActionFailed as exc:
        if exc.status == 404:
            raise HttpError(404, exc.message) from None
        return _page(ctx, exc.status, form=_kept_form(data), flash=exc.message, flash_kind="bad")
    message = f"Saved the git source of {app}. Deploy it when you are ready."
    return set_flash(ctx, ctx.redirect(_base(ctx) + "/deploy"), message)


@registry.page(
    TA + "/deploy/key", need=tenant(Right.MANAGE), methods=("POST",), name="app_deploy_key"
)
def app_deploy_key(ctx: Ctx) -> Response:
    """Make the app's SSH deploy key (if it has none) and show its public half."""
    app = ctx.params["app"]
    back = ctx.redirect(_base(ctx) + "/deploy#deploy-key")
    try:
        dsvc.make_key(ctx, app)
    except ActionFailed as exc:
        if exc.status == 404:
            raise HttpError(404, exc.message) from None
        return set_flash(ctx, back, exc.message, "bad")
    return set_flash(ctx, back, f"The deploy key of {app} is ready: add its public half below.")


@registry.page(TA + "/deploys", need=tenant(Right.MANAGE), methods=("POST",), name="app_deploy_now")
def app_deploy_now(ctx: Ctx) -> Response:
    """Deploy now (at an optional ref); on to the deploy's page, where its output streams."""
    app = ctx.params["app"]
    try:
        record = dsvc.deploy(ctx, app, ctx.data().get("ref"))
    except FieldErrors as exc:
        return set_flash(ctx, ctx.redirect(_base(ctx) + "/deploy"), exc.errors["ref"], "bad")
    except ActionFailed as exc:
        if exc.status == 404:
            raise HttpError(404, exc.message) from None
        return set_flash(ctx, ctx.redirect(_base(ctx) + "/deploy"), exc.message, "bad")
    return ctx.redirect(f"{_base(ctx)}/deploys/{record['id']}")


@registry.page(TA + "/rollback", need=tenant(Right.MANAGE), methods=("POST",), name="app_rollback")
def app_rollback(ctx: Ctx) -> Response:
    """Roll back to a release (after confirmation); on to the rollback's page."""
    app = ctx.params["app"]
    try:
        record = dsvc.rollback(ctx, app, ctx.data().get("release"))
    except FieldErrors as exc:
        message = "; ".join(exc.errors.values())
        return set_flash(ctx, ctx.redirect(_base(ctx) + "/deploy"), message, "bad")
    except ActionFailed as exc:
        if exc.status == 404:
            raise HttpError(404, exc.message) from None
        return set_flash(ctx, ctx.redirect(_base(ctx) + "/deploy"), exc.message, "bad")
    return ctx.redirect(f"{_base(ctx)}/deploys/{record['id']}")


@registry.page(TA + "/deploys/{deploy_id}", need=tenant(Right.ACCESS), name="app_deploy_run")
def app_deploy_run(ctx: Ctx) -> Response:
    """One deploy: its status and output (followed live while it runs)."""
    app = ctx.params["app"]
    answer = dsvc.output(ctx, app, ctx.params["deploy_id"])
    record = answer["deploy"]
    return render_with_flash(
        ctx,
        "deploy_run.html",
        app_name=app,
        active_tab="deploy",
        record=record,
        output=answer["output"],
        final=record.get("status") in dsvc.FINAL,
    )


# --- API -----------------------------------------------------------------------------------


@registry.api(APIA + "/deploy", need=tenant(Right.ACCESS), name="api_deploy")
@describe(response=DEPLOY_VIEW_SCHEMA)
def api_deploy(ctx: Ctx) -> Response:
    """The app's git source (URL redacted), deploy key, deploy history and releases."""
    shown = dsvc.view(ctx, ctx.params["app"])
    if shown.problem:
        raise HttpError(502, shown.problem)
    return JSONResponse(shown.to_json())


@registry.api(
    APIA + "/deploy/source", need=tenant(Right.MANAGE), methods=("PUT",), name="api_deploy_source"
)
@describe(body=SOURCE_BODY, response=SOURCE_SCHEMA)
def api_deploy_source(ctx: Ctx) -> Response:
    """Set or change the app's git source; nothing is restarted (the next deploy uses it)."""
    try:
        shown = dsvc.save_source(ctx, ctx.params["app"], ctx.data(), form=False)
    except (ActionFailed, FieldErrors) as exc:
        return _json_error(exc)
    return JSONResponse(shown.to_json())


@registry.api(
    APIA + "/deploy/key", need=tenant(Right.MANAGE), methods=("POST",), name="api_deploy_key"
)
@describe(response={"type": "object", "properties": {"public_key": _TEXT}})
def api_deploy_key(ctx: Ctx) -> Response:
    """Make the app's SSH deploy key (ed25519) if it has none; its public half."""
    try:
        key = dsvc.make_key(ctx, ctx.params["app"])
    except ActionFailed as exc:
        return _json_error(exc)
    return JSONResponse({"public_key": key})


@registry.api(APIA + "/deploys", need=tenant(Right.ACCESS), name="api_deploys")
@describe(
    query=(
        QueryParam(
            "limit",
            {"type": "integer", "minimum": 1, "maximum": 200},
            "At most this many records (default 50).",
        ),
    ),
    response={"type": "array", "items": RECORD_SCHEMA},
)
def api_deploys(ctx: Ctx) -> Response:
    """The app's deploy history, newest first."""
    raw = ctx.request.query_params.get("limit", "50")
    if not raw.isascii() or not raw.isdigit() or not 1 <= int(raw) <= 200:
        return _json_error(FieldErrors({"limit": f"expected 1 to 200, not {raw[:20]!r}"}))
    assert ctx.tenant is not None
    history = ctx.panel.daemon(ctx.tenant).deploy_history(ctx.params["app"], int(raw))
    return JSONResponse(history)


@registry.api(
    APIA + "/deploys", need=tenant(Right.MANAGE), methods=("POST",), name="api_deploy_now"
)
@describe(
    body={
        "type": "object",
        "properties": {"ref": {"type": ["string", "null"], "description": "Branch, tag, commit."}},
    },
    response=QUEUED_SCHEMA,
)
def api_deploy_now(ctx: Ctx) -> Response:
    """Queue a deploy (202); follow it with GET .../deploys/{deploy_id}."""
    try:
        record = dsvc.deploy(ctx, ctx.params["app"], ctx.data().get("ref"))
    except (ActionFailed, FieldErrors) as exc:
        return _json_error(exc)
    return JSONResponse({"deploy": record}, status_code=202)


@registry.api(APIA + "/deploys/{deploy_id}", need=tenant(Right.ACCESS), name="api_deploy_output")
@describe(response=OUTPUT_SCHEMA)
def api_deploy_output(ctx: Ctx) -> Response:
    """One deploy's record and its kept output (at most 1 MiB, its start cut first)."""
    return JSONResponse(dsvc.output(ctx, ctx.params["app"], ctx.params["deploy_id"]))


@registry.api(APIA + "/releases", need=tenant(Right.ACCESS), name="api_releases")
@describe(response={"type": "array", "items": RELEASE_SCHEMA})
def api_releases(ctx: Ctx) -> Response:
    """The app's releases, newest first; `current` marks the one serving."""
    assert ctx.tenant is not None
    return JSONResponse(ctx.panel.daemon(ctx.tenant).releases(ctx.params["app"]))


@registry.api(APIA + "/rollback", need=tenant(Right.MANAGE), methods=("POST",), name="api_rollback")
@describe(
    body={
        "type": "object",
        "properties": {
            "release": {"type": ["string", "null"], "description": "Default: the previous one."}
        },
    },
    response=QUEUED_SCHEMA,
)
def api_rollback(ctx: Ctx) -> Response:
    """Queue a rollback to a release (202); reported like a deploy."""
    try:
        record = dsvc.rollback(ctx, ctx.params["app"], ctx.data().get("release"))
    except (ActionFailed, FieldErrors) as exc:
        return _json_error(exc)
    return JSONResponse({"deploy": record}, status_code=202)


# --- the live output -----------------------------------------------------------------------


class OutputFollower:
    """Sends one deploy's output to a socket as it grows: reads the daemon's kept copy
    when deploy events say something happened (at most every REREAD_SECONDS) and sends
    what is new, until the deploy has finished."""

    def __init__(self, daemon: TenantDaemon, app: str, deploy_id: str, ws: WebSocket) -> None:
        self.daemon = daemon
        self.app = app
        self.deploy_id = deploy_id
        self.ws = ws
        self.sent = ""
        self.status: str | None = None
        self.wake = asyncio.Event()
        self.subscribed = asyncio.Event()

    async def listen(self) -> None:
        """Wake the sender on each of this deploy's events; return if the stream ends."""
        async for event in self.daemon.aiter_deploys(self.app, self.subscribed):
            if event.get("type") == "deploy" and event.get("id") == self.deploy_id:
                self.wake.set()

    async def send_new(self) -> bool:
        """Send what changed since the last time; True once the deploy has finished."""
        answer = await asyncio.to_thread(dsvc.read_output, self.daemon, self.app, self.deploy_id)
        text, record = answer["output"], answer["deploy"]
        if not self.sent or not text.startswith(self.sent):
            await self.ws.send_json({"output": text, "deploy": record})
        else:
            if len(text) > len(self.sent):
                await self.ws.send_json({"append": text[len(self.sent) :]})
            if record.get("status") != self.status:
                await self.ws.send_json({"deploy": record})
        self.sent, self.status = text, record.get("status")
        return self.status in dsvc.FINAL

    async def run(self) -> None:
        # The first read comes after the subscription: an event after it wakes the sender.
        await self.subscribed.wait()
        while not await self.send_new():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), IDLE_SECONDS)
            self.wake.clear()
            await asyncio.sleep(REREAD_SECONDS)  # lines that come meanwhile: one read


async def _until_disconnect(websocket: WebSocket) -> None:
    while (await websocket.receive())["type"] != "websocket.disconnect":
        pass


@registry.websocket(TA + "/deploys/{deploy_id}/ws", need=tenant(Right.ACCESS), name="app_deploy_ws")
async def app_deploy_ws(ws: WsCtx) -> None:
    """One deploy's output as it is written, and its status, until it finishes."""
    assert ws.tenant is not None
    websocket = ws.websocket
    app, deploy_id = websocket.path_params["app"], websocket.path_params["deploy_id"]
    if not dsvc.DEPLOY_ID_RE.fullmatch(deploy_id):
        await _close(websocket, f"no deploy {deploy_id[:60]!r}", CLOSE_NOT_FOUND)
        return
    follower = OutputFollower(ws.panel.daemon(ws.tenant), app, deploy_id, websocket)
    listener = asyncio.ensure_future(follower.listen())
    sender = asyncio.ensure_future(follower.run())
    gone = asyncio.ensure_future(_until_disconnect(websocket))
    tasks = (listener, sender, gone)
    done: set[asyncio.Future[None]] = set()
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:
        done = set()  # the server cancels the handler: nobody is left to tell
    finally:
        for task in tasks:
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(*tasks, return_exceptions=True)
    if gone in done or not done:
        return
    failure = (sender if sender in done else listener).exception()
    if sender in done and failure is None:
        with contextlib.suppress(WebSocketDisconnect, RuntimeError, OSError):
            await websocket.close()  # finished, everything sent
        return
    if isinstance(failure, (WebSocketDisconnect, OSError)):
        return
    if isinstance(failure, NotFound):
        await _close(websocket, str(failure), CLOSE_NOT_FOUND)
    elif isinstance(failure, (DaemonDown, GatewayError)) or failure is None:
        await _close(websocket, str(failure or "the daemon ended the stream"), CLOSE_DAEMON_GONE)
    else:
        raise failure


async def _close(websocket: WebSocket, message: str, code: int) -> None:
    with contextlib.suppress(WebSocketDisconnect, RuntimeError, OSError):
        await websocket.send_json({"error": message})
        await websocket.close(code=code)
