"""Framing and message shapes of the control protocol (see the package docstring)."""

from __future__ import annotations

import json
from enum import StrEnum
from typing import Any

MAX_MESSAGE_BYTES = 4 * 1024 * 1024


class ErrorCode(StrEnum):
    BAD_REQUEST = "bad_request"
    """The message is not valid JSON, not an object, or lacks `cmd`."""
    UNKNOWN_COMMAND = "unknown_command"
    INVALID_ARGUMENT = "invalid_argument"
    UNKNOWN_TARGET = "unknown_target"
    ALREADY_RUNNING = "already_running"
    NOT_FOUND = "not_found"
    """A file the request names does not exist (a script, a dump)."""
    CONFLICT = "conflict"
    PERMISSION_DENIED = "permission_denied"
    """The peer's uid may not do this (a tenant asking what only the panel or root may)."""
    LIMIT_REACHED = "limit_reached"
    """The request would create more apps than the tenant's app limit allows."""
    INTERNAL = "internal"


class ProtocolError(Exception):
    """An error that is reported to the peer as `{"ok": false, "error": ...}`."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    def to_dict(self) -> dict[str, str]:
        return {"code": str(self.code), "message": self.message}


def encode_message(message: dict[str, Any]) -> bytes:
    data = json.dumps(message, separators=(",", ":"), ensure_ascii=False).encode() + b"\n"
    if len(data) > MAX_MESSAGE_BYTES:
        raise ProtocolError(ErrorCode.BAD_REQUEST, f"message of {len(data)} bytes is too large")
    return data


def decode_message(line: bytes) -> dict[str, Any]:
    """Parse one framed line; raise ProtocolError(BAD_REQUEST) for anything malformed."""
    if len(line) > MAX_MESSAGE_BYTES:
        raise ProtocolError(ErrorCode.BAD_REQUEST, "message too large")
    try:
        value = json.loads(line)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ProtocolError(ErrorCode.BAD_REQUEST, f"not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise ProtocolError(ErrorCode.BAD_REQUEST, "a message must be a JSON object")
    return value


def ok_reply(request_id: Any, result: Any) -> dict[str, Any]:
    return {"id": request_id, "ok": True, "result": result}


def error_reply(request_id: Any, error: ProtocolError) -> dict[str, Any]:
    return {"id": request_id, "ok": False, "error": error.to_dict()}


def json_type(value: object) -> str:
    """What kind of JSON value this is, for error messages ("must be a string, not an
    integer"); shared by the helper's and the hub's schemas."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"
