"""Live updates: a bucket's page listens on /b/{bucket}/ws and refreshes its live part
whenever an agent of the bucket pushed something (coalesced; at most every second)."""

from __future__ import annotations

import asyncio

from corral.hub.roles import VIEWER
from corral.hub.routing import WsCtx, registry

MIN_GAP = 1.0


@registry.websocket("/b/{bucket}/ws", need=VIEWER)
async def bucket_stream(ctx: WsCtx) -> None:
    assert ctx.bucket is not None
    queue = ctx.hub.notifier.subscribe(ctx.bucket.id)
    try:
        while True:
            await queue.get()
            await ctx.websocket.send_text('{"changed":true}')
            await asyncio.sleep(MIN_GAP)
    finally:
        ctx.hub.notifier.unsubscribe(ctx.bucket.id, queue)
