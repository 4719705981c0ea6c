"""A small blocking client for the control protocol (used by the CLI and by tests)."""

from __future__ import annotations

import itertools
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from corral.protocol.wire import (
    MAX_MESSAGE_BYTES,
    ErrorCode,
    ProtocolError,
    decode_message,
    encode_message,
)


class ControlClient:
    """One connection to a daemon. `call` sends a request and returns its result."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._file = sock.makefile("rb")
        self._ids = itertools.count(1)

    @classmethod
    def connect(cls, path: Path, timeout: float | None = None) -> ControlClient:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(timeout)
            sock.connect(str(path))
        except OSError:
            sock.close()
            raise
        return cls(sock)

    def close(self) -> None:
        self._file.close()
        self._sock.close()

    def __enter__(self) -> ControlClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def set_timeout(self, timeout: float | None) -> None:
        self._sock.settimeout(timeout)

    def send(self, cmd: str, **args: Any) -> int:
        request_id = next(self._ids)
        self._sock.sendall(encode_message({"id": request_id, "cmd": cmd, "args": args}))
        return request_id

    def read(self) -> dict[str, Any]:
        line = self._file.readline(MAX_MESSAGE_BYTES + 1)
        if not line:
            raise ConnectionError("the daemon closed the connection")
        return decode_message(line)

    def call(self, cmd: str, **args: Any) -> Any:
        request_id = self.send(cmd, **args)
        reply = self.read()
        if reply.get("id") != request_id:
            raise ProtocolError(ErrorCode.INTERNAL, "reply does not match the request")
        if not reply.get("ok"):
            error = reply.get("error") or {}
            code = error.get("code", ErrorCode.INTERNAL)
            try:
                code = ErrorCode(code)
            except ValueError:
                code = ErrorCode.INTERNAL
            raise ProtocolError(code, str(error.get("message", "unknown error")))
        return reply.get("result")

    def stream(self, cmd: str, **args: Any) -> Iterator[dict[str, Any]]:
        """Start a streaming command and yield its events until the connection ends."""
        self.call(cmd, **args)
        while True:
            try:
                message = self.read()
            except ConnectionError:
                return
            event = message.get("event")
            if isinstance(event, dict):
                yield event
