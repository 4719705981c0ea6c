"""A test hub: the protocol's `HubHandshake` and `Session` on a real websockets server on
loopback (wss with a CA the test makes, or ws), run in its own thread with its own loop.

It keeps every text it received (to look for leaks), the opened `hello` and `metrics`
bodies, and sends `action` frames (with a proof made from the agent password when given)
and waits for their `action_result`.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import ssl
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from websockets.asyncio.server import Server, ServerConnection, serve

from corral.protocol.hub import (
    BucketKeys,
    HandshakeFailed,
    HubHandshake,
    HubProtocolError,
    MessageType,
    PasswordParams,
    Session,
    derive_proof_key,
    seal_action,
)

from ..support.tls import Pki


@dataclass
class Conn:
    ws: ServerConnection
    session: Session
    hello: dict[str, Any] | None = None
    at: float = field(default_factory=time.time)


class TestHub:
    __test__ = False  # not a pytest class

    def __init__(self, keys: list[BucketKeys], pki: Pki | None = None) -> None:
        self.keys = {k.public_id: k for k in keys}
        self.pki = pki
        self.port = 0
        self.texts: list[str] = []
        """Every WebSocket message received, as sent."""
        self.hellos: list[dict[str, Any]] = []
        self.metrics: list[tuple[float, dict[str, Any]]] = []
        """(time received, body) of each push."""
        self.results: dict[str, dict[str, Any]] = {}
        self.denied = 0
        self.errors: list[str] = []
        self.close_codes: list[int | None] = []
        """How each authenticated connection ended (1008: the agent refused a frame)."""
        self.sent: list[str] = []
        self.conn: Conn | None = None
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self._server: Server | None = None
        self._lock = threading.Lock()
        self._ids = itertools.count(1)

    # ------------------------------------------------------------ life

    @property
    def url(self) -> str:
        return f"{'wss' if self.pki else 'ws'}://127.0.0.1:{self.port}"

    def _call(self, coro: Any, timeout: float = 30) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def start(self) -> None:
        self._call(self._start())

    async def _start(self) -> None:
        context = None
        if self.pki is not None:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(self.pki.server_cert, self.pki.server_key)
        self._server = await serve(self._handle, "127.0.0.1", self.port, ssl=context)
        self.port = self._server.sockets[0].getsockname()[1]

    def stop(self) -> None:
        """Close the server and every connection (the agent sees the hub go away)."""
        self._call(self._stop())

    async def _stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        self.conn = None

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.stop()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    # ------------------------------------------------------------ one agent

    async def _handle(self, ws: ServerConnection) -> None:
        handshake = HubHandshake()
        await ws.send(handshake.challenge())
        try:
            response = await ws.recv()
            self.texts.append(str(response))
            public_id = handshake.read_response(response)
            confirm, session = handshake.accept(self.keys.get(public_id))
        except HandshakeFailed as exc:
            self.denied += 1
            if exc.reply:
                await ws.send(exc.reply)
            await ws.close(1008)
            return
        await ws.send(confirm)
        conn = Conn(ws, session)
        try:
            async for text in ws:
                self.texts.append(str(text))
                received = session.open(text)
                if received.type is MessageType.HELLO:
                    conn.hello = received.body
                    self.hellos.append(received.body)
                    self.conn = conn
                elif received.type is MessageType.METRICS:
                    self.metrics.append((time.time(), received.body))
                elif received.type is MessageType.ACTION_RESULT:
                    self.results[received.body["id"]] = received.body
        except HubProtocolError as exc:
            self.errors.append(str(exc))
            await ws.close(1008)
        finally:
            self.close_codes.append(ws.close_code)
            if self.conn is conn:
                self.conn = None

    # ------------------------------------------------------------ helpers for tests

    def wait_connected(self, after: int = 0, timeout: float = 60) -> Conn:
        """The connection whose hello is number `after` + 1 or later."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            conn = self.conn
            if conn is not None and len(self.hellos) > after:
                return conn
            time.sleep(0.05)
        raise AssertionError(f"no agent connected (errors: {self.errors}, denied {self.denied})")

    def wait_metrics(self, count: int = 1, timeout: float = 60) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while len(self.metrics) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"only {len(self.metrics)} pushes arrived")
            time.sleep(0.05)
        return [body for _, body in self.metrics]

    def action(
        self,
        verb: str,
        target: str,
        args: dict[str, Any] | None = None,
        *,
        password: str | None = None,
        requested_by: str = "alice@example.org",
        proof_from: dict[str, Any] | None = None,
        timeout: float = 60,
    ) -> dict[str, Any]:
        """Send one action on the current connection; its action_result."""
        conn = self.wait_connected()
        action_id = f"a{next(self._ids)}"
        action = {
            "id": action_id,
            "verb": verb,
            "target": target,
            "args": args if args is not None else {},
            "requested_by": requested_by,
            "proof": None,
        }
        key = None
        if password is not None:
            params = proof_from or (conn.hello or {}).get("password")
            assert params is not None, "the agent announced no password"
            key = derive_proof_key(password, PasswordParams.from_json(params))

        async def send() -> None:
            frame = seal_action(conn.session, action, key)
            self.sent.append(frame)
            await conn.ws.send(frame)

        self._call(send())
        deadline = time.monotonic() + timeout
        while action_id not in self.results:
            if time.monotonic() > deadline:
                raise AssertionError(f"no result for action {action_id} ({verb} {target})")
            time.sleep(0.05)
        return self.results[action_id]

    def send_raw(self, text: str) -> None:
        """Send `text` as is on the current connection (a replayed or altered frame)."""
        conn = self.wait_connected()
        self._call(conn.ws.send(text))


@contextlib.contextmanager
def running_hub(keys: list[BucketKeys], pki: Pki | None = None) -> Iterator[TestHub]:
    hub = TestHub(keys, pki)
    try:
        hub.start()
        yield hub
    finally:
        hub.close()
