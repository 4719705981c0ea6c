"""The agents' endpoint, /agent/v1: one WebSocket per agent (docs/HUB_PROTOCOL.md).

Handshake (the bucket's keys looked up in a thread; an unknown bucket gets the same
`denied` after the same work), then sealed frames: the agent's hello, metrics every few
seconds, action results; the hub sends actions through the `AgentLink` registered here.
Any protocol error closes the connection (1008) and the session is forgotten.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from starlette.concurrency import run_in_threadpool
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from corral.hub import ingest
from corral.protocol.hub import HandshakeFailed, HubHandshake, HubProtocolError, Session
from corral.protocol.hub.messages import MessageType
from corral.protocol.hub.proof import ProofKey, seal_action

if TYPE_CHECKING:
    from corral.hub.services import Hub

log = logging.getLogger("corral.hub.agents")
POLICY_VIOLATION = 1008
TRY_AGAIN_LATER = 1013


class AgentGone(Exception):
    """The server's agent is not connected (or its connection just ended)."""


@dataclass(eq=False)
class AgentLink:
    """One live agent connection; `send_action` runs on the event loop."""

    websocket: WebSocket
    session: Session
    bucket_id: int
    server_pk: int
    loop: asyncio.AbstractEventLoop = field(default_factory=asyncio.get_running_loop)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    dropped: bool = False
    """Set when its server or bucket was removed: nothing more it sends is stored."""

    async def send_action(self, action: dict[str, Any], proof_key: ProofKey | None) -> None:
        # Seal and send under one lock: the proof signs the seq of the frame it rides in.
        async with self.lock:
            if self.session.closed or self.websocket.client_state is not WebSocketState.CONNECTED:
                raise AgentGone("the agent is not connected")
            frame = seal_action(self.session, action, proof_key)
            try:
                await self.websocket.send_text(frame)
            except (WebSocketDisconnect, RuntimeError, OSError):
                raise AgentGone("the agent's connection ended") from None


class Links:
    """The live connections by server (a newer one replaces an older one)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._links: dict[int, AgentLink] = {}

    def add(self, link: AgentLink) -> AgentLink | None:
        with self._lock:
            old = self._links.get(link.server_pk)
            self._links[link.server_pk] = link
            return old

    def remove(self, link: AgentLink) -> bool:
        """Forget `link` if it is still the server's current one."""
        with self._lock:
            if self._links.get(link.server_pk) is link:
                del self._links[link.server_pk]
                return True
            return False

    def get(self, bucket_id: int, server_pk: int) -> AgentLink | None:
        with self._lock:
            link = self._links.get(server_pk)
        return link if link is not None and link.bucket_id == bucket_id else None

    def connected(self) -> list[int]:
        with self._lock:
            return list(self._links)

    def drop(self, bucket_id: int, server_pk: int | None = None) -> None:
        """Close the bucket's links (or one server's): called from a worker thread when
        a server or the whole bucket is removed, so its agent stops pushing into it."""
        with self._lock:
            links = [
                link
                for link in self._links.values()
                if link.bucket_id == bucket_id and server_pk in (None, link.server_pk)
            ]
            for link in links:
                link.dropped = True
                del self._links[link.server_pk]
        for link in links:
            future = asyncio.run_coroutine_threadsafe(_close(link.websocket, 1000), link.loop)
            with contextlib.suppress(Exception):
                future.result(5)


async def _receive(websocket: WebSocket, timeout: float | None) -> str | None:
    """The next text message; None when the peer left or sent something else."""
    try:
        message = await asyncio.wait_for(websocket.receive(), timeout)
    except TimeoutError:
        return None
    if message["type"] != "websocket.receive":
        return None
    text = message.get("text")
    return text if isinstance(text, str) else None


async def _close(websocket: WebSocket, code: int = POLICY_VIOLATION, reason: str = "") -> None:
    if websocket.application_state is WebSocketState.CONNECTED:
        with contextlib.suppress(WebSocketDisconnect, RuntimeError, OSError):
            await websocket.close(code=code, reason=reason or None)


async def agent_endpoint(hub: Hub, websocket: WebSocket) -> None:
    await websocket.accept()
    address = websocket.client.host if websocket.client else "?"
    try:
        opened = await _handshake(hub, websocket, address)
        if opened is not None:
            await _serve(hub, websocket, *opened, address=address)
    except HubProtocolError as exc:
        log.warning("agent %s: %s; connection dropped", address, exc)
    except (WebSocketDisconnect, OSError):
        pass
    finally:
        await _close(websocket)


async def _handshake(
    hub: Hub, websocket: WebSocket, address: str
) -> tuple[int, Session, dict[str, Any]] | None:
    timeout = hub.config.handshake_timeout
    handshake = HubHandshake()
    await websocket.send_text(handshake.challenge())
    response = await _receive(websocket, timeout)
    if response is None:
        return None
    public_id = ""
    try:
        public_id = handshake.read_response(response)
        wait = hub.handshakes.retry_after(f"{public_id}@{address}", address)
        if wait > 0:
            log.warning("agent %s: handshake throttled (%d s)", address, wait)
            await _close(websocket, TRY_AGAIN_LATER, f"too many failed handshakes: {wait:.0f} s")
            return None
        found = await run_in_threadpool(hub.bucket_keys, public_id)
        confirm, session = handshake.accept(found[1] if found else None)
    except HandshakeFailed as exc:
        hub.handshakes.record_failure(f"{public_id}@{address}", address)
        if exc.reply is not None:
            with contextlib.suppress(WebSocketDisconnect, RuntimeError, OSError):
                await websocket.send_text(exc.reply)
        log.info("agent %s: handshake refused: %s", address, exc)
        return None
    hub.handshakes.record_success(f"{public_id}@{address}", address)
    assert found is not None  # accept() succeeded, so the bucket is known
    await websocket.send_text(confirm)
    first = await _receive(websocket, timeout)
    if first is None:
        return None
    hello = session.open(first)
    return found[0], session, hello.body


async def _serve(
    hub: Hub,
    websocket: WebSocket,
    bucket_id: int,
    session: Session,
    hello: dict[str, Any],
    *,
    address: str,
) -> None:
    server_pk = await run_in_threadpool(hub.ingest, ingest.record_hello, bucket_id, hello)
    link = AgentLink(websocket, session, bucket_id, server_pk)
    old = hub.links.add(link)
    if old is not None:
        await _close(old.websocket, 1000)
    log.info("agent %s: server %s (%s) connected", address, hello["hostname"], hello["server_id"])
    hub.notify(bucket_id)
    try:
        while True:
            text = await _receive(websocket, None)
            if text is None or link.dropped:
                return
            received = session.open(text)
            if received.type is MessageType.METRICS:
                await run_in_threadpool(hub.ingest, ingest.record_metrics, server_pk, received.body)
                hub.notify(bucket_id)
            elif received.type is MessageType.ACTION_RESULT:
                body = received.body
                await run_in_threadpool(hub.ingest_result, bucket_id, server_pk, body)
                hub.notify(bucket_id)
    finally:
        if hub.links.remove(link):
            await run_in_threadpool(hub.ingest, ingest.record_gone, server_pk)
            hub.notify(bucket_id)
        log.info("agent %s: server %s disconnected", address, hello["hostname"])
