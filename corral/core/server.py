"""The control socket: a unix stream socket, peers checked with SO_PEERCRED.

Mode 0600; a tenant daemon's socket is 0660 when its group is the panel's (the setgid
`.corral` directory gives it that group), so that the panel's user can reach it through
the file modes too, and no other tenant can.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from pathlib import Path
from typing import Any

from corral.core.events import Event, Subscription
from corral.core.handlers import Handlers
from corral.core.supervisor import Supervisor
from corral.core.targets import resolve_many
from corral.core.tenancy import TenantMode
from corral.core.tenancy import peer_uid as current_peer_uid
from corral.protocol.commands import Command
from corral.protocol.peer import peer_cred
from corral.protocol.wire import (
    MAX_MESSAGE_BYTES,
    ErrorCode,
    ProtocolError,
    decode_message,
    encode_message,
    error_reply,
    ok_reply,
)

log = logging.getLogger("corral.server")


def peer_allowed(uid: int, tenant: TenantMode | None = None) -> bool:
    """Only the daemon's own user, root, or the panel's user (tenant mode) may control it."""
    return (tenant or TenantMode()).may_connect(uid, os.getuid())


class ControlServer:
    def __init__(
        self,
        path: Path,
        handlers: Handlers,
        supervisor: Supervisor,
        tenant: TenantMode | None = None,
    ) -> None:
        self.path = path
        self.handlers = handlers
        self.sup = supervisor
        self.tenant = tenant or TenantMode()
        self._server: asyncio.AbstractServer | None = None
        self._clients: set[asyncio.Task[Any]] = set()

    async def start(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        old_umask = os.umask(0o177)  # the socket is born 0600: no window where it is open
        try:
            self._server = await asyncio.start_unix_server(
                self._serve, path=str(self.path), limit=MAX_MESSAGE_BYTES + 1
            )
        finally:
            os.umask(old_umask)
        os.chmod(self.path, self._socket_mode())

    def _socket_mode(self) -> int:
        """0660 when the socket's group is the panel's, else 0600."""
        gid = self.tenant.panel_gid
        if gid is None:
            return 0o600
        group = os.stat(self.path).st_gid
        if group == gid:
            return 0o660
        log.warning(
            "the control socket's group is %d, not the panel's (%d): it stays 0600 and the"
            " panel cannot reach it (is %s setgid with the panel's group?)",
            group,
            gid,
            self.path.parent,
        )
        return 0o600

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._clients):
            task.cancel()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._clients.add(task)
        try:
            sock = writer.get_extra_info("socket")
            _pid, uid, _gid = peer_cred(sock)
            if not peer_allowed(uid, self.tenant):
                log.warning("refused a control connection from uid %d", uid)
                refusal = ProtocolError(ErrorCode.PERMISSION_DENIED, "permission denied")
                writer.write(encode_message(error_reply(None, refusal)))
                await writer.drain()
                # Swallow what the peer already sent, so that closing does not reset the
                # connection before it has read the refusal.
                with contextlib.suppress(TimeoutError, ValueError, asyncio.LimitOverrunError):
                    await asyncio.wait_for(reader.read(MAX_MESSAGE_BYTES), 0.2)
                return
            current_peer_uid.set(uid)  # this task's context: seen by the handlers it awaits
            await self._conversation(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        except asyncio.CancelledError:
            # close() ends the conversation at shutdown. Ending normally: Python 3.11's
            # stream callback calls task.exception() on a cancelled task, which logs a
            # traceback as an ERROR in the daemon's log at every `corral kill`.
            return
        finally:
            if task is not None:
                self._clients.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _conversation(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        while True:
            try:
                line = await reader.readline()
            except (ValueError, asyncio.LimitOverrunError):
                error = ProtocolError(ErrorCode.BAD_REQUEST, "message too large")
                writer.write(encode_message(error_reply(None, error)))
                await writer.drain()
                return  # the stream is out of frame now: close it
            if not line:
                return
            if not line.strip():
                continue
            request_id: Any = None
            try:
                message = decode_message(line)
                request_id = message.get("id")
                cmd = message.get("cmd")
                args = message.get("args") or {}
                if not isinstance(cmd, str):
                    raise ProtocolError(ErrorCode.BAD_REQUEST, "'cmd' must be a string")
                if not isinstance(args, dict):
                    raise ProtocolError(ErrorCode.BAD_REQUEST, "'args' must be an object")
                if cmd == Command.SUBSCRIBE:
                    await self._subscribe(request_id, args, reader, writer)
                    return
                handler = self.handlers.table.get(cmd)
                if handler is None:
                    raise ProtocolError(ErrorCode.UNKNOWN_COMMAND, f"unknown command {cmd!r}")
                result = await handler(args)
                await self.sup.persisted()
                reply = ok_reply(request_id, result)
            except ProtocolError as exc:
                reply = error_reply(request_id, exc)
            except Exception as exc:  # a bug must not take the daemon down
                log.exception("command failed")
                reply = error_reply(request_id, ProtocolError(ErrorCode.INTERNAL, str(exc)))
            writer.write(encode_message(reply))
            await writer.drain()

    async def _subscribe(
        self,
        request_id: Any,
        args: dict[str, Any],
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        want_events = args.get("events", True) is not False
        logs = args.get("logs", False)
        names: set[str] | None = None
        if isinstance(logs, str) and logs:
            names = {app.name for app in resolve_many([logs], self.sup.apps.values())}
        want_logs = bool(logs) or (logs is None and "logs" in args)
        # "deploys": a target, or null for every app; deploy events only go to those who
        # ask (their output lines would flood the process-table followers).
        deploys = args.get("deploys", False)
        deploy_names: set[str] | None = None
        if isinstance(deploys, str) and deploys:
            deploy_names = {app.name for app in resolve_many([deploys], self.sup.apps.values())}
        want_deploys = bool(deploys) or (deploys is None and "deploys" in args)

        def accept(event: Event) -> bool:
            kind = event.get("type")
            if kind == "log":
                return want_logs and (names is None or event.get("name") in names)
            if kind == "deploy":
                return want_deploys and (deploy_names is None or event.get("app") in deploy_names)
            return want_events or kind == "dropped"

        sub: Subscription = self.sup.events.subscribe(accept)
        if want_logs:
            self.sup.subscribe_logs(+1)
        try:
            writer.write(encode_message(ok_reply(request_id, {"subscribed": True})))
            await writer.drain()
            closed = asyncio.ensure_future(reader.read())  # EOF: the client went away
            while not closed.done():
                getter = asyncio.ensure_future(sub.queue.get())
                done, _ = await asyncio.wait({getter, closed}, return_when=asyncio.FIRST_COMPLETED)
                if getter not in done:
                    getter.cancel()
                    break
                writer.write(encode_message({"id": request_id, "event": getter.result()}))
                await writer.drain()
            closed.cancel()
        finally:
            self.sup.events.unsubscribe(sub)
            if want_logs:
                self.sup.subscribe_logs(-1)
