"""`POST /hooks/deploy/{hook_id}`: the one public, session-less route that changes state.

It sits outside the route table's wrapper on purpose: it has no session, so no CSRF
token or Origin to check; its credential is the hook's token (verify.py). In order:
rate limits (per client address, per hook id), POST only (405), nothing in the query
string (a token there would land in access logs), the body size limit, the credentials
(an unknown hook and a wrong token get the same answer after the same work), GitHub
replays, the event and branch, then the deploy request to the tenant's daemon. Every
refusal is audited (actor "webhook", action "webhook:deploy"); the token never is.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route
from starlette.types import Receive, Scope, Send

from corral.panel.body import BodyTooLarge, read_body
from corral.panel.gateway import DaemonDown, GatewayError, NotFound, Refused
from corral.panel.webhooks import service
from corral.panel.webhooks.verify import (
    BadRequest,
    Credentials,
    branch_ref,
    credentials,
    is_push,
    pushed_ref,
)

if TYPE_CHECKING:
    from corral.panel.services import Panel, TenantRef

PATH = "/hooks/deploy/{hook_id}"
MAX_BODY_BYTES = 1024 * 1024
"""Push payloads are a few KiB to a few hundred; anything bigger is refused (413)."""
ACTION = "webhook:deploy"
DENIED_BODY = {"error": "unknown webhook or wrong credentials"}
"""The one answer for an unknown hook id and for wrong credentials (403)."""
IPV6_PREFIX = 64


def hook_routes(panel: Panel) -> list[BaseRoute]:
    """The public webhook route, for create_app's route list."""

    return [Route(PATH, _HookApp(panel), name="deploy_hook")]


class _HookApp:
    """A plain ASGI app, so that Route passes it every method (a function endpoint would
    be limited to GET): the methods other than POST are answered, and audited, here."""

    def __init__(self, panel: Panel) -> None:
        self.panel = panel

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive)
        response = await receive_hook(self.panel, request)
        await response(scope, receive, send)


@dataclass
class _Delivery:
    panel: Panel
    address: str
    hook_id: str
    tenant: TenantRef | None = None
    app: str | None = None
    format: str = ""

    def audit(self, result: str, reason: str) -> None:
        what = f"hook {self.hook_id[:64]!r}" + (f" ({self.format})" if self.format else "")
        self.panel.audit.record(
            actor="webhook",
            address=self.address,
            tenant=self.tenant.name if self.tenant else None,
            app=self.app,
            action=ACTION,
            result=result,
            detail=f"{what}: {reason}",
        )


class _Stop(Exception):
    def __init__(self, response: Response, result: str, reason: str) -> None:
        super().__init__(reason)
        self.response = response
        self.result = result
        self.reason = reason


def _json(status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> Response:
    return JSONResponse(body, status_code=status, headers=headers)


def _refuse(status: int, message: str, reason: str | None = None) -> _Stop:
    return _Stop(_json(status, {"error": message}), "denied", reason or message)


def _address_key(address: str) -> str:
    """IPv6 clients are limited per /64 (one host usually holds a whole /64)."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, IPV6_PREFIX), strict=False))
    return str(ip)


async def receive_hook(panel: Panel, request: Request) -> Response:
    client = request.client
    delivery = _Delivery(panel, client.host if client else "", request.path_params["hook_id"])
    state = service.state_of(panel)
    for verdict in (
        state.by_address.take(_address_key(delivery.address)),
        state.by_hook.take(delivery.hook_id[:64]),
    ):
        if not verdict.admitted:
            if verdict.first_refusal:  # the ones after it are not: a flood would fill the log
                await run_in_threadpool(
                    delivery.audit, "denied", "rate limited (further refusals not recorded)"
                )
            return _json(
                429,
                {"error": "too many requests: try again later"},
                {"Retry-After": verdict.retry_header},
            )
    try:
        response = await _admitted(delivery, request)
    except _Stop as stop:
        await run_in_threadpool(delivery.audit, stop.result, stop.reason)
        return stop.response
    return response


async def _admitted(delivery: _Delivery, request: Request) -> Response:
    if request.method != "POST":
        raise _Stop(
            _json(405, {"error": "method not allowed: use POST"}, {"Allow": "POST"}),
            "denied",
            f"method {request.method[:16]} refused",
        )
    if request.scope.get("query_string"):
        raise _refuse(
            400,
            "the URL must not have a query string: send the token in a header",
            "query string refused (not recorded: it may hold the token)",
        )
    body = await _read_body(request)
    try:
        creds = credentials(request.headers)
    except BadRequest as exc:
        raise _refuse(401, str(exc)) from None
    delivery.format = creds.format
    return await run_in_threadpool(_deliver, delivery, creds, body, request.headers)


async def _read_body(request: Request) -> bytes:
    try:
        return await read_body(request, MAX_BODY_BYTES)
    except BodyTooLarge:
        raise _refuse(413, f"the body is larger than {MAX_BODY_BYTES} bytes") from None


def _deliver(delivery: _Delivery, creds: Credentials, body: bytes, headers: Any) -> Response:
    """Blocking part (database, daemon): runs in the threadpool."""
    panel = delivery.panel
    checked = service.check_delivery(panel, delivery.hook_id, creds, body)
    delivery.tenant, delivery.app = checked.tenant, checked.app
    if not checked.ok:
        why = "wrong signature" if creds.format == "github" else "wrong token"
        reason = why if checked.tenant is not None else "unknown hook"
        raise _Stop(_json(403, DENIED_BODY), "denied", reason)
    assert checked.tenant is not None and checked.app is not None
    state = service.state_of(panel)
    if creds.format == "github" and not state.deliveries.first_time(
        delivery.hook_id, creds.delivery
    ):
        raise _refuse(409, "this delivery was already received", f"replayed {creds.delivery!r}")
    if creds.format == "github" and creds.event == "ping":
        service.mark_used(panel, delivery.hook_id)
        delivery.audit("ok", "ping answered")
        return _json(200, {"ok": True, "event": "ping"})
    if not is_push(creds):
        delivery.audit("ok", f"event {creds.event[:64]!r} ignored")
        return _json(202, {"ok": True, "ignored": f"not a push event: {creds.event[:64]}"})
    try:
        ref = pushed_ref(body, headers.get("content-type", ""))
    except BadRequest as exc:
        raise _refuse(400, str(exc)) from None
    if ref is None and creds.format != "generic":
        raise _refuse(400, "the push event has no `ref`")
    daemon = panel.daemon(checked.tenant, start=True)
    try:
        # The daemon is the judge of whether the app has a git source (an app without
        # one is its `invalid_argument`); its branch, when it has one, filters pushes.
        branch = _branch_of(daemon.describe(checked.app))
        if branch is not None and ref is not None and ref != branch_ref(branch):
            delivery.audit("ok", f"push to {ref[:200]!r} ignored (the app deploys {branch!r})")
            return _json(
                202, {"ok": True, "ignored": f"the app deploys {branch_ref(branch)}, not {ref}"}
            )
        answer = daemon.call("deploy", app=checked.app, ref=None, trigger=creds.trigger)
    except NotFound:
        raise _Stop(
            _json(409, {"error": f"the app {checked.app} no longer exists"}),
            "failed",
            "the app no longer exists",
        ) from None
    except Refused as exc:
        raise _Stop(_json(409, {"error": str(exc)}), "failed", str(exc)) from None
    except GatewayError as exc:
        status = 503 if isinstance(exc, DaemonDown) else 502
        if creds.format == "github":  # our failure: GitHub's "Redeliver" must work
            state.deliveries.forget(delivery.hook_id, creds.delivery)
        raise _Stop(_json(status, {"error": str(exc)}), "failed", str(exc)) from None
    service.mark_used(panel, delivery.hook_id)
    record = answer.get("deploy", {}) if isinstance(answer, dict) else {}
    deploy_id = record.get("id") if isinstance(record, dict) else None
    delivery.audit("ok", f"deploy {deploy_id} requested ({creds.trigger})")
    return _json(202, {"ok": True, "deploy": deploy_id, "status": record.get("status")})


def _branch_of(app: dict[str, Any]) -> str | None:
    git = (app.get("config") or {}).get("git")
    if not isinstance(git, dict):
        return None
    branch = git.get("branch") or "main"
    return branch if isinstance(branch, str) else None
