"""The link: one outbound WebSocket from the daemon to the hub, kept up for the daemon's
life on its event loop.

One connection: TLS (the CA file given at `corral link`, else the system's trust store,
which honours SSL_CERT_FILE), then the protocol's handshake (`AgentHandshake`: the hub
must prove it knows the bucket's keys before anything is sent), the `hello`, then the
queued `metrics` pushes and the hub's `action` frames, one protocol message per WebSocket
text message. Any protocol error closes the connection (1008); every failure waits
`backoff.delay(attempt)` before the next try (1 s .. 60 s, full jitter). Sampling goes on
while the hub is away: pushes wait in a bounded queue (`PushQueue`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import ssl
import time
from collections.abc import Awaitable, Callable
from typing import Any, Final

from corral import __version__
from corral.agent import backoff
from corral.agent.actions import ActionRunner, Result
from corral.agent.collect import hostname
from corral.agent.pushqueue import DEFAULT_LIMIT, PushQueue
from corral.agent.state import LinkState
from corral.protocol.hub.errors import HandshakeFailed, HubProtocolError, MessageInvalid
from corral.protocol.hub.frames import MAX_FRAME_CHARS, Session
from corral.protocol.hub.handshake import AgentHandshake
from corral.protocol.hub.messages import MessageType

log = logging.getLogger("corral.agent")

HANDSHAKE_TIMEOUT: Final = 15.0
POLICY_VIOLATION: Final = 1008
STEADY_AFTER: Final = 10.0
"""A connection up this long resets the backoff to its first step."""

Sampler = Callable[[], Awaitable[dict[str, Any]]]


def ssl_context(ca_file: str | None) -> ssl.SSLContext:
    """Verifying TLS: only `ca_file`'s CAs when given, else the system's (SSL_CERT_FILE
    and SSL_CERT_DIR are honoured by OpenSSL's defaults). Blocking: reads files."""
    return ssl.create_default_context(cafile=ca_file) if ca_file else ssl.create_default_context()


def describe(exc: BaseException) -> str:
    """One line for `link --info` and the log: what failed, never a key."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return (
            f"TLS: the hub's certificate is not trusted ({exc.verify_message});"
            " give its CA with --ca-file or SSL_CERT_FILE"
        )
    if isinstance(exc, ssl.SSLError):
        return f"TLS: {exc.reason or exc}"
    if isinstance(exc, TimeoutError):
        return "the hub did not answer in time"
    if isinstance(exc, OSError):
        return f"cannot reach the hub: {exc.strerror or exc}"
    if isinstance(exc, HandshakeFailed):
        return str(exc)
    if isinstance(exc, HubProtocolError):
        return f"protocol error: {exc}"
    return f"{type(exc).__name__}: {exc}"[:300]


class HubLink:
    def __init__(
        self,
        state: LinkState,
        runner: ActionRunner,
        sample: Sampler,
        interval: Callable[[], float],
        queue_limit: Callable[[], int] = lambda: DEFAULT_LIMIT,
        *,
        rng: random.Random | None = None,
    ) -> None:
        self.state = state
        self.runner = runner
        self._sample = sample
        self._interval = interval
        self._queue_limit = queue_limit
        self.queue = PushQueue(queue_limit())
        self._rng = rng or random.SystemRandom()
        self.connected = False
        self.last_push: float | None = None
        self.last_error: str | None = None
        self.connections = 0
        """Sessions established so far (handshake done)."""
        self._tasks: list[asyncio.Task[None]] = []
        self._actions: set[asyncio.Task[None]] = set()
        self._first = asyncio.get_running_loop().create_future()
        self._send_lock = asyncio.Lock()

    # ------------------------------------------------------------ life

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._sample_loop(), name="agent-sample"),
            loop.create_task(self._connect_loop(), name="agent-link"),
        ]

    async def close(self) -> None:
        """Stop sampling and the connection. Actions already running are not cut short:
        they finish and are logged (their result can no longer be sent)."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        self.connected = False

    async def first_attempt(self, timeout: float) -> None:
        """Until the first connection attempt has succeeded or failed (or `timeout`)."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(self._first), timeout)

    def _settle_first(self) -> None:
        if not self._first.done():
            self._first.set_result(None)

    # ------------------------------------------------------------ sampling

    async def _sample_loop(self) -> None:
        while True:
            try:
                body = await self._sample()
                self.queue.limit = int(self._queue_limit())
                self.queue.put(body)
            except Exception:  # a bug in sampling must not end the link
                log.exception("hub link: sampling failed")
            await asyncio.sleep(max(1.0, float(self._interval())))

    # ------------------------------------------------------------ connecting

    async def _connect_loop(self) -> None:
        attempt = 0
        while True:
            error: str | None = None
            lasted = 0.0
            try:
                lasted = await self._connection()
            except asyncio.CancelledError:
                raise
            except HandshakeFailed as exc:
                # Wrong keys or a hub that cannot prove it knows them: do not hammer it.
                error = describe(exc)
                attempt = max(attempt, backoff.REFUSED_ATTEMPT)
            except Exception as exc:
                error = describe(exc)
            finally:
                self.connected = False
            if lasted >= STEADY_AFTER:
                attempt = 0  # a hub that drops every new connection still backs off
            if error is not None:
                if error != self.last_error:
                    log.warning("hub link to %s: %s", self.state.hub, error)
                self.last_error = error
            self._settle_first()
            wait = backoff.delay(attempt, self._rng)
            attempt += 1
            await asyncio.sleep(wait)

    async def _connection(self) -> float:
        """One connection, until it ends; how long it was up after its handshake."""
        from websockets.asyncio.client import connect

        context = None
        if self.state.hub.startswith("wss:"):
            context = await asyncio.to_thread(ssl_context, self.state.ca_file)
        async with connect(
            self.state.hub,
            ssl=context,
            proxy=None,
            compression=None,
            open_timeout=HANDSHAKE_TIMEOUT,
            max_size=MAX_FRAME_CHARS,
            user_agent_header=f"corral-agent/{__version__}",
        ) as ws:
            handshake = AgentHandshake(self.state.keys)
            challenge = await asyncio.wait_for(ws.recv(), HANDSHAKE_TIMEOUT)
            await ws.send(handshake.answer(challenge))
            reply = await asyncio.wait_for(ws.recv(), HANDSHAKE_TIMEOUT)
            session = handshake.finish(reply)
            announced = self._announced()
            await ws.send(session.seal(MessageType.HELLO, self._hello(announced)))
            up_since = time.monotonic()
            self.connections += 1
            self.connected = True
            self.last_error = None
            self._settle_first()
            log.info("hub link: connected to %s (bucket %s)", self.state.hub, session.public_id)
            try:
                await self._serve(ws, session, announced)
            except HubProtocolError as exc:
                log.warning("hub link: %s; closing the connection", describe(exc))
                await ws.close(POLICY_VIOLATION, "protocol error")
                self.last_error = describe(exc)
            log.info("hub link: disconnected from %s", self.state.hub)
        return time.monotonic() - up_since

    def _announced(self) -> tuple[bool, dict[str, Any] | None]:
        """What the hello tells the hub about actions: a change reconnects, so the hub's
        view of this server is never stale."""
        verifier = self.runner.verifier()
        return self.runner.remote_actions(), verifier.params.to_json() if verifier else None

    def _hello(self, announced: tuple[bool, dict[str, Any] | None]) -> dict[str, Any]:
        return {
            "agent_version": __version__[:64],
            "server_id": self.state.server_id,
            "hostname": hostname(),
            "remote_actions": announced[0],
            "password": announced[1],
        }

    async def _serve(self, ws: Any, session: Session, announced: Any) -> None:
        receiver = asyncio.create_task(self._receive(ws, session))
        sender = asyncio.create_task(self._send_pushes(ws, session, announced))
        try:
            done, _ = await asyncio.wait({receiver, sender}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (receiver, sender):
                task.cancel()
            await asyncio.gather(receiver, sender, return_exceptions=True)
        for task in done:
            exc = task.exception()
            if isinstance(exc, HubProtocolError):
                raise exc

    # ------------------------------------------------------------ frames

    async def _send_pushes(self, ws: Any, session: Session, announced: Any) -> None:
        from websockets.exceptions import ConnectionClosed

        while True:
            await self.queue.wait()
            if self._announced() != announced:
                log.info("hub link: remote action settings changed; reconnecting")
                await ws.close(1000, "settings changed")
                return
            body = self.queue.peek()
            if body is None:
                continue
            try:
                async with self._send_lock:
                    frame = session.seal(MessageType.METRICS, body)
                    await ws.send(frame)
            except MessageInvalid as exc:
                log.error("hub link: a push was left out: %s", exc)
            except ConnectionClosed:
                return
            else:
                self.last_push = time.time()
            self.queue.pop()

    async def _receive(self, ws: Any, session: Session) -> None:
        async for text in ws:
            received = session.open(text)  # HubProtocolError: the connection is dropped
            if received.type is MessageType.ACTION:
                self._on_action(ws, session, received.seq, received.body)

    def _on_action(self, ws: Any, session: Session, seq: int, action: dict[str, Any]) -> None:
        refused = self.runner.decide(session, seq, action)
        task = asyncio.get_running_loop().create_task(self._act(ws, session, action, refused))
        self._actions.add(task)
        task.add_done_callback(self._actions.discard)

    async def _act(
        self, ws: Any, session: Session, action: dict[str, Any], refused: Result | None
    ) -> None:
        from websockets.exceptions import ConnectionClosed

        result = refused if refused is not None else await self.runner.run(action)
        if result.ok:
            outcome = "ok"
        else:
            outcome = f"{'refused' if refused is not None else 'failed'} ({result.code})"
        log.info(
            "remote action %s: %s %s requested by %s: %s%s",
            action["id"],
            action["verb"],
            action["target"],
            action["requested_by"],
            outcome,
            f": {result.message}" if result.message else "",
        )
        try:
            async with self._send_lock:
                frame = session.seal(MessageType.ACTION_RESULT, result.body(action["id"]))
                await ws.send(frame)
        except (ConnectionClosed, HubProtocolError) as exc:
            log.warning("remote action %s: the result could not be sent: %s", action["id"], exc)
