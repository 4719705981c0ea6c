"""The privileged helper's protocol (SPEC 2.2): the panel asks, the helper (root) acts.

Same framing as the control protocol (`corral.protocol.wire`): one JSON object per line,
``{"id": n, "cmd": VERB, "args": {...}}``, answered by ``{"id": n, "ok": true, "result":
...}`` or ``{"id": n, "ok": false, "error": {"code", "message"}}``. Lines are at most
`MAX_MESSAGE_BYTES` long. The helper knows the verbs of `HelperVerb` and nothing else;
each takes exactly the arguments of its schema, with these JSON types (a bool is not an
integer). `validate_request` is the one place that decides what a request may hold.
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Any, Final, TypedDict

from corral.protocol.wire import ErrorCode, ProtocolError, json_type

MAX_MESSAGE_BYTES: Final = 4096
"""The longest line (newline included) the helper reads; a longer one closes the
connection."""

TENANT_NAME_RE: Final = re.compile(r"[a-z_][a-z0-9_-]{0,30}")
"""A tenant's name, which is also its system user's and group's name (use fullmatch):
lowercase ASCII, never starting with '-' (no option injection), at most 31 characters."""

APP_LIMIT_MAX: Final = 1_000_000
"""The largest app limit accepted (-1 is unlimited)."""


class HelperVerb(StrEnum):
    PING = "ping"
    """{} -> PingResult"""
    CREATE_TENANT = "create_tenant"
    """{"tenant": str} -> TenantInfo"""
    START_DAEMON = "start_daemon"
    """{"tenant": str, "app_limit": int} -> StartResult"""
    STOP_DAEMON = "stop_daemon"
    """{"tenant": str} -> StopResult"""
    REMOVE_TENANT = "remove_tenant"
    """{"tenant": str, "delete_home": bool} -> RemoveResult"""


class PingResult(TypedDict):
    version: str
    panel_uid: int
    tenants_dir: str


class TenantInfo(TypedDict):
    tenant: str
    user: str
    uid: int
    gid: int
    home: str


class StartResult(TypedDict):
    pid: int
    socket: str
    started: bool


class StopResult(TypedDict):
    stopped: bool


class RemoveResult(TypedDict):
    removed: bool
    home_deleted: bool


ARG_SCHEMAS: Final[dict[HelperVerb, dict[str, type]]] = {
    HelperVerb.PING: {},
    HelperVerb.CREATE_TENANT: {"tenant": str},
    HelperVerb.START_DAEMON: {"tenant": str, "app_limit": int},
    HelperVerb.STOP_DAEMON: {"tenant": str},
    HelperVerb.REMOVE_TENANT: {"tenant": str, "delete_home": bool},
}

_REQUEST_KEYS: Final = ("id", "cmd", "args")
_TYPE_NAMES: Final = {str: "a string", int: "an integer", bool: "true or false"}


def shown(value: object, limit: int = 40) -> str:
    """A short, printable form of something a peer sent (for error messages and logs)."""
    text = repr(value) if isinstance(value, str) else json_type(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def check_tenant_name(name: str, where: str = "argument 'tenant'") -> str:
    """`name` if it is a valid tenant name, else INVALID_ARGUMENT saying why."""
    if not TENANT_NAME_RE.fullmatch(name):
        raise ProtocolError(
            ErrorCode.INVALID_ARGUMENT,
            f"{where}: {shown(name)} is not a valid tenant name (lowercase letters, digits,"
            " '_' and '-', starting with a letter or '_', at most 31 characters)",
        )
    return name


def _has_type(value: object, wanted: type) -> bool:
    if wanted is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, wanted)


def validate_request(message: dict[str, Any]) -> tuple[HelperVerb, dict[str, Any]]:
    """The verb and arguments of a decoded request, or ProtocolError saying what is wrong:
    BAD_REQUEST for the envelope, UNKNOWN_COMMAND, INVALID_ARGUMENT naming the argument."""
    for key in message:
        if key not in _REQUEST_KEYS:
            raise ProtocolError(
                ErrorCode.BAD_REQUEST,
                f"unknown key {shown(key)} in the request (expected id, cmd, args)",
            )
    request_id = message.get("id")
    if request_id is not None and not _has_type(request_id, int):
        raise ProtocolError(ErrorCode.BAD_REQUEST, "'id' must be an integer")
    cmd = message.get("cmd")
    if not isinstance(cmd, str):
        raise ProtocolError(ErrorCode.BAD_REQUEST, "'cmd' must be a string")
    try:
        verb = HelperVerb(cmd)
    except ValueError:
        known = ", ".join(v.value for v in HelperVerb)
        raise ProtocolError(
            ErrorCode.UNKNOWN_COMMAND, f"unknown command {shown(cmd)} (the helper knows {known})"
        ) from None
    args = message.get("args", {})
    if not isinstance(args, dict):
        raise ProtocolError(ErrorCode.BAD_REQUEST, f"{verb}: 'args' must be an object")
    schema = ARG_SCHEMAS[verb]
    for key in args:
        if key not in schema:
            raise ProtocolError(
                ErrorCode.INVALID_ARGUMENT, f"{verb}: unknown argument {shown(key)}"
            )
    for key, wanted in schema.items():
        if key not in args:
            raise ProtocolError(ErrorCode.INVALID_ARGUMENT, f"{verb}: missing argument {key!r}")
        if not _has_type(args[key], wanted):
            raise ProtocolError(
                ErrorCode.INVALID_ARGUMENT,
                f"{verb}: argument {key!r} must be {_TYPE_NAMES[wanted]},"
                f" not {json_type(args[key])}",
            )
    if "tenant" in schema:
        check_tenant_name(args["tenant"], f"{verb}: argument 'tenant'")
    if "app_limit" in schema and not -1 <= args["app_limit"] <= APP_LIMIT_MAX:
        raise ProtocolError(
            ErrorCode.INVALID_ARGUMENT,
            f"{verb}: argument 'app_limit' must be -1 (unlimited), 0 (none) or a count up to"
            f" {APP_LIMIT_MAX}, not {args['app_limit']}",
        )
    return verb, dict(args)
