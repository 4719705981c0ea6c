"""An app's logs (SPEC 2.5, right `logs`): the page, its live stream, download, clear, API.

Every read goes through the tenant's daemon (`tail`, `flush`, `subscribe`), never to the
log files: under tenant isolation they belong to another user. The daemon's `tail` gives
at most `TAIL_MAX_LINES` lines per file and keeps its answer under 3 MiB, so a download is
the end of the current file, not all of it (rotated files are not included).

The WebSocket sends JSON messages:

    {"lines": [{"instance": 0, "stream": "out", "line": "..."}, ...]}
    {"skipped": n}   lines left out because the page could not keep up with the app
    {"dropped": n}   events the daemon dropped for this (slow) subscriber
    {"error": "..."} the stream ends; the socket closes right after
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import re
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any

from starlette.responses import JSONResponse, Response
from starlette.websockets import WebSocket, WebSocketDisconnect

from corral.panel.gateway import TAIL_MAX_LINES, DaemonDown, GatewayError, NotFound, Stream
from corral.panel.openapi import QueryParam, describe
from corral.panel.permissions import Right, tenant
from corral.panel.routing import Ctx, HttpError, WsCtx, registry

PAGE_LINES = 200
"""Lines per file the page starts with."""
API_DEFAULT_LINES = 100
DOWNLOAD_LINES = TAIL_MAX_LINES
"""A download is the last this-many lines of the current file (the daemon's own cap)."""
STREAMS: tuple[Stream, ...] = ("out", "err", "both")
KEEP_LINES = 5000
"""The page keeps at most this many lines; the server never holds more for one socket."""
BATCH_LINES = 200
BATCH_SECONDS = 0.15
"""A batch goes out when BATCH_LINES are waiting or BATCH_SECONDS after its first line:
a flood becomes a few messages a second, not one per line."""
MESSAGE_LINES = 1000
"""At most this many lines per message."""

# WebSocket close codes (4000-4999 are the application's): the page does not reconnect.
CLOSE_NOT_FOUND = 4404
CLOSE_BAD_REQUEST = 4422
CLOSE_DAEMON_GONE = 1011  # the page reconnects after a while

_UNSAFE_FILENAME = re.compile(r"[^A-Za-z0-9._-]+")

LINE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["instance", "stream", "line"],
    "properties": {
        "instance": {"type": "integer"},
        "stream": {"type": "string", "enum": ["out", "err"]},
        "line": {"type": "string", "description": "Without its line end."},
    },
}


class ParamError(ValueError):
    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


def parse_stream(
    query: Mapping[str, str], allowed: tuple[Stream, ...] = STREAMS, default: Stream = "both"
) -> Stream:
    raw = query.get("stream")
    if raw is None:
        return default
    for stream in allowed:
        if raw == stream:
            return stream
    raise ParamError("stream", f"expected {' or '.join(allowed)}, not {raw!r}")


def parse_lines(query: Mapping[str, str], default: int) -> int:
    raw = query.get("lines")
    if raw is None:
        return default
    if not raw.isascii() or not raw.isdigit():
        raise ParamError(
            "lines", f"expected a whole number from 1 to {TAIL_MAX_LINES}, not {raw!r}"
        )
    lines = int(raw)
    if not 1 <= lines <= TAIL_MAX_LINES:
        raise ParamError("lines", f"expected a whole number from 1 to {TAIL_MAX_LINES}, not {raw}")
    return lines


def _invalid(exc: ParamError) -> JSONResponse:
    return JSONResponse({"error": str(exc), "errors": {exc.field: exc.message}}, status_code=422)


def _lines(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The daemon's tail records as the API shows them (the app's name is in the URL)."""
    return [
        {
            "instance": record.get("instance", 0),
            "stream": record.get("stream"),
            "line": record.get("line", ""),
        }
        for record in records
    ]


def _clear(ctx: Ctx, app: str) -> int:
    """Empty the app's log files, audited either way; the number of files emptied."""
    assert ctx.tenant is not None
    try:
        flushed = ctx.panel.daemon(ctx.tenant).flush(app)
    except GatewayError as exc:
        ctx.audit("logs.clear", "failed", app=app, detail=str(exc))
        raise
    ctx.audit("logs.clear", app=app, detail=f"{len(flushed)} file(s) emptied")
    return len(flushed)


def download_name(tenant_name: str, app: str, stream: str, now: float) -> str:
    """`<tenant>-<app>-<stream>-<UTC time>.log`, with nothing a header could trip on."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now))
    name = f"{tenant_name}-{app}-{stream}-{stamp}.log"
    return _UNSAFE_FILENAME.sub("_", name).lstrip(".") or "log.txt"


def download_text(records: list[dict[str, Any]]) -> str:
    """The lines, one per line; with several files (instances), each under a header."""
    instances = {record.get("instance", 0) for record in records}
    out: list[str] = []
    current: object = object()
    for record in records:
        instance = record.get("instance", 0)
        if len(instances) > 1 and instance != current:
            out.append(f"==> instance {instance} <==")
            current = instance
        out.append(str(record.get("line", "")))
    return "\n".join(out) + "\n" if out else ""


# --- pages ---------------------------------------------------------------------------


@registry.page("/t/{tenant}/apps/{app}/logs", need=tenant(Right.LOGS), name="app_logs")
def app_logs(ctx: Ctx) -> Response:
    """The app's recent log lines, followed live."""
    assert ctx.tenant is not None
    app = ctx.params["app"]
    try:
        stream = parse_stream(ctx.request.query_params)
    except ParamError as exc:
        raise HttpError(422, str(exc)) from None
    records = ctx.panel.daemon(ctx.tenant).tail(app, PAGE_LINES, stream)
    lines = _lines(records)
    return ctx.render(
        "app_logs.html",
        app_name=app,
        active_tab="logs",
        stream=stream,
        lines=lines,
        multi=len({line["instance"] for line in lines}) > 1,
        keep_lines=KEEP_LINES,
        page_lines=PAGE_LINES,
        download_lines=DOWNLOAD_LINES,
        flash="Logs cleared." if ctx.request.query_params.get("cleared") == "1" else None,
    )


@registry.page(
    "/t/{tenant}/apps/{app}/logs/clear",
    need=tenant(Right.LOGS),
    methods=("POST",),
    name="app_logs_clear",
)
def app_logs_clear(ctx: Ctx) -> Response:
    """Empty the app's log files."""
    assert ctx.tenant is not None
    app = ctx.params["app"]
    _clear(ctx, app)
    return ctx.redirect(f"/t/{ctx.tenant.name}/apps/{app}/logs?cleared=1")


@registry.page(
    "/t/{tenant}/apps/{app}/logs/download", need=tenant(Right.LOGS), name="app_logs_download"
)
def app_logs_download(ctx: Ctx) -> Response:
    """The end of one log stream as a text file (the last DOWNLOAD_LINES lines per file)."""
    assert ctx.tenant is not None
    app = ctx.params["app"]
    try:
        stream = parse_stream(ctx.request.query_params, ("out", "err"), "out")
    except ParamError as exc:
        raise HttpError(422, str(exc)) from None
    records = ctx.panel.daemon(ctx.tenant).tail(app, DOWNLOAD_LINES, stream)
    filename = download_name(ctx.tenant.name, app, stream, time.time())
    return Response(
        download_text(records).encode("utf-8", "replace"),
        media_type="text/plain; charset=utf-8",
        headers={
            "Content-Disposition": f'attachment; filename="{filename}"',
            "Cache-Control": "no-store",
        },
    )


# --- API -----------------------------------------------------------------------------


@registry.api("/api/v1/tenants/{tenant}/apps/{app}/logs", need=tenant(Right.LOGS), name="api_logs")
@describe(
    query=(
        QueryParam(
            "lines",
            {"type": "integer", "minimum": 1, "maximum": TAIL_MAX_LINES},
            f"The last this-many lines of each log file (default {API_DEFAULT_LINES}).",
        ),
        QueryParam(
            "stream",
            {"type": "string", "enum": list(STREAMS)},
            "stdout (`out`), stderr (`err`) or both (default).",
        ),
    ),
    response={"type": "array", "items": LINE_SCHEMA},
)
def api_logs(ctx: Ctx) -> Response:
    """The end of the app's log files.

    For each instance, stdout before stderr, the last `lines` lines of the current file,
    oldest first; a file shared by instances or streams is read once.
    """
    assert ctx.tenant is not None
    try:
        lines = parse_lines(ctx.request.query_params, API_DEFAULT_LINES)
        stream = parse_stream(ctx.request.query_params)
    except ParamError as exc:
        return _invalid(exc)
    records = ctx.panel.daemon(ctx.tenant).tail(ctx.params["app"], lines, stream)
    return JSONResponse(_lines(records))


@registry.api(
    "/api/v1/tenants/{tenant}/apps/{app}/logs/clear",
    need=tenant(Right.LOGS),
    methods=("POST",),
    name="api_logs_clear",
)
@describe(
    response={
        "type": "object",
        "required": ["app", "files"],
        "properties": {
            "app": {"type": "string"},
            "files": {"type": "integer", "description": "Log files emptied."},
        },
    }
)
def api_logs_clear(ctx: Ctx) -> Response:
    """Empty the app's log files (stdout and stderr of every instance)."""
    app = ctx.params["app"]
    return JSONResponse({"app": app, "files": _clear(ctx, app)})


# --- the live stream -----------------------------------------------------------------


class LineBuffer:
    """Lines waiting to be sent on one socket: at most `limit`, the oldest go first."""

    def __init__(self, limit: int = KEEP_LINES) -> None:
        self._lines: collections.deque[dict[str, Any]] = collections.deque(maxlen=limit)
        self.skipped = 0
        self.dropped = 0
        self._waiting = asyncio.Event()
        self._full = asyncio.Event()

    def __len__(self) -> int:
        return len(self._lines)

    def add(self, line: dict[str, Any]) -> None:
        if len(self._lines) == self._lines.maxlen:
            self.skipped += 1  # the deque drops its oldest line
        self._lines.append(line)
        self._waiting.set()
        if len(self._lines) >= BATCH_LINES:
            self._full.set()

    def add_dropped(self, count: int) -> None:
        self.dropped += count
        self._waiting.set()

    async def next_batch(self) -> list[dict[str, Any]]:
        """Messages for the next batch, once BATCH_LINES wait or BATCH_SECONDS passed."""
        await self._waiting.wait()
        if len(self._lines) < BATCH_LINES:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._full.wait(), BATCH_SECONDS)
        return self.take()

    def take(self) -> list[dict[str, Any]]:
        """Everything waiting (at most MESSAGE_LINES lines per message), now."""
        messages: list[dict[str, Any]] = []
        if self.skipped:
            messages.append({"skipped": self.skipped})
            self.skipped = 0
        if self.dropped:
            messages.append({"dropped": self.dropped})
            self.dropped = 0
        while self._lines:
            count = min(MESSAGE_LINES, len(self._lines))
            messages.append({"lines": [self._lines.popleft() for _ in range(count)]})
        self._waiting.clear()
        self._full.clear()
        return messages


async def _collect(
    source: AsyncIterator[dict[str, Any]], stream: Stream, buffer: LineBuffer
) -> None:
    async for event in source:
        kind = event.get("type")
        if kind == "log" and stream in ("both", event.get("stream")):
            buffer.add(
                {
                    "instance": event.get("instance", 0),
                    "stream": event.get("stream"),
                    "line": event.get("line", ""),
                }
            )
        elif kind == "dropped":
            buffer.add_dropped(int(event.get("count") or 0))


async def _send(websocket: WebSocket, buffer: LineBuffer) -> None:
    while True:
        for message in await buffer.next_batch():
            await websocket.send_json(message)


async def _until_disconnect(websocket: WebSocket) -> None:
    """Return when the browser goes away (what it sends is ignored)."""
    while (await websocket.receive())["type"] != "websocket.disconnect":
        pass


@registry.websocket("/t/{tenant}/apps/{app}/logs/ws", need=tenant(Right.LOGS), name="app_logs_ws")
async def app_logs_ws(ws: WsCtx) -> None:
    """New log lines of the app as they are written, in batches."""
    assert ws.tenant is not None
    websocket = ws.websocket
    try:
        stream = parse_stream(websocket.query_params)
    except ParamError as exc:
        await _close(websocket, str(exc), CLOSE_BAD_REQUEST)
        return
    buffer = LineBuffer()
    source = ws.panel.daemon(ws.tenant).aiter_follow(websocket.path_params["app"], events=False)
    collector = asyncio.ensure_future(_collect(source, stream, buffer))
    sender = asyncio.ensure_future(_send(websocket, buffer))
    listener = asyncio.ensure_future(_until_disconnect(websocket))
    tasks = (collector, sender, listener)
    done: set[asyncio.Future[None]] = set()
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:
        # The server cancels the handler (shutting down, or right after the client closed):
        # nobody is left to tell, so end normally once the subscription is closed below.
        done = set()
    finally:
        # Cancelling the collector closes the subscription (aiter_follow's own cleanup).
        for task in tasks:
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(*tasks, return_exceptions=True)
    if collector not in done or listener in done or sender in done:
        return  # the browser went away (or sending failed): nobody to tell
    failure = collector.exception()
    try:
        for message in buffer.take():  # what the daemon sent before the end
            await websocket.send_json(message)
    except (WebSocketDisconnect, RuntimeError, OSError):
        return
    if isinstance(failure, NotFound):
        await _close(websocket, str(failure), CLOSE_NOT_FOUND)
    elif isinstance(failure, (DaemonDown, GatewayError)):
        await _close(websocket, str(failure), CLOSE_DAEMON_GONE)
    elif failure is not None:
        raise failure
    else:
        await _close(websocket, "the daemon ended the stream", CLOSE_DAEMON_GONE)


async def _close(websocket: WebSocket, message: str, code: int) -> None:
    with contextlib.suppress(WebSocketDisconnect, RuntimeError, OSError):
        await websocket.send_json({"error": message})
        await websocket.close(code=code)
