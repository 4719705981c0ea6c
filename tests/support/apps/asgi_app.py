"""A bare ASGI test app (no framework) for uvicorn, on the socket at fd 3:

    python -m uvicorn asgi_app:app --fd 3      (from this folder, or with --app-dir)

uvicorn uses the fd it is given and ignores LISTEN_FDS / LISTEN_PID / LISTEN_FDNAMES; it
sends no sd_notify READY=1, so under corral it is ready by min_uptime or a health check.

    GET /        pid=<pid>
    GET /slow    the same after 0.3 s (/slow?seconds=S for another delay)

Signals, as uvicorn 0.54 handles them (uvicorn/server.py, checked by hand): SIGINT and
SIGTERM are both a graceful stop: it stops accepting, asks each connection to close after its
current response, waits for the requests in flight (--timeout-graceful-shutdown, default: no
limit), runs the lifespan shutdown, then RE-RAISES the signal it got with the previous
handler back in place. After SIGINT that is a KeyboardInterrupt that uvicorn's CLI swallows:
exit 0. After SIGTERM the process ends killed by SIGTERM (status -15, not 0). A second SIGINT
during the stop forces it (requests in flight are cut off).
Not quite lossless: a connection it has accepted whose request has not been read yet counts
as idle and is closed at once (h11_impl.py `shutdown`), so under load a reload resets a few
requests (about 1 per reload at 8 concurrent clients, measured here); the stdlib test app,
gunicorn with SIGTERM and Node lose none.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qs

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "http":
        return
    status, body = 200, f"pid={os.getpid()}\n".encode()
    if scope["path"] == "/slow":
        query = parse_qs(scope.get("query_string", b"").decode())
        await asyncio.sleep(float(query.get("seconds", ["0.3"])[0]))
    elif scope["path"] != "/":
        status, body = 404, b"not found\n"
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"text/plain; charset=utf-8"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
