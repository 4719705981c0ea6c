"""Reading a request body with a size limit: the panel's routes, its webhook endpoint and
the hub's routes all stop at their limit before holding more than it in memory."""

from __future__ import annotations

from starlette.requests import Request


class BodyTooLarge(Exception):
    """The body (declared or streamed) is over the limit; the caller answers 413."""


async def read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > limit):
        raise BodyTooLarge
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise BodyTooLarge
    return bytes(body)
