"""The messages carried inside hub frames, and their schemas.

Every body is a JSON object checked on sealing and again on opening
(`validate_body`): closed objects (an unknown field is refused, every field is present,
null where it has no value), bounded strings, lists and numbers. Refusing unknown fields
is deliberate: a field this side does not know is one it would neither store nor obey
(an ignored ``"force": true`` in an action would change its meaning silently). A new
field comes with a new protocol version, which the key labels keep apart.

agent -> hub: ``hello`` (first frame), ``metrics`` (every few seconds),
``action_result``. hub -> agent: ``action``.
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Any, Final

from corral.protocol.hub.keys import AGENT_TO_HUB, HUB_TO_AGENT
from corral.protocol.hub.schema import (
    Bool,
    Int,
    ListOf,
    MapOf,
    Nullable,
    Num,
    Obj,
    OneOf,
    Spec,
    Str,
    fail,
)


class MessageType(StrEnum):
    HELLO = "hello"
    METRICS = "metrics"
    ACTION = "action"
    ACTION_RESULT = "action_result"


DIRECTION_TYPES: Final[dict[str, frozenset[MessageType]]] = {
    AGENT_TO_HUB: frozenset({MessageType.HELLO, MessageType.METRICS, MessageType.ACTION_RESULT}),
    HUB_TO_AGENT: frozenset({MessageType.ACTION}),
}


class Verb(StrEnum):
    """The fixed allowlist of remote actions; the agent knows nothing else."""

    RESTART = "restart"
    RELOAD = "reload"
    RESET = "reset"
    STOP = "stop"
    DELETE = "delete"
    SCALE = "scale"
    ENV = "env"
    DEPLOY = "deploy"


SENSITIVE_VERBS: Final = frozenset({Verb.STOP, Verb.DELETE, Verb.SCALE, Verb.ENV, Verb.DEPLOY})
"""Verbs that also need the agent password's proof (SPEC 5)."""


class Outcome(StrEnum):
    """Why an action did not run (`action_result.code`; null when it ran)."""

    REMOTE_ACTIONS_OFF = "remote_actions_off"
    PASSWORD_REQUIRED = "password_required"
    NO_PASSWORD_SET = "no_password_set"
    BAD_PROOF = "bad_proof"
    UNKNOWN_TARGET = "unknown_target"
    INVALID = "invalid"
    FAILED = "failed"


APP_NAME_RE: Final = re.compile(r"[A-Za-z0-9._:-]{1,80}")
"""An app's name as in jlist; also matches ids and ``all``. No ``/regex/`` targets
remotely: an action names what it touches."""
ACTION_ID_RE: Final = re.compile(r"[A-Za-z0-9_-]{1,64}")
ENV_NAME_RE: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")
SCALE_COUNT_RE: Final = re.compile(r"[+-]?[0-9]{1,4}")
GIT_REF_RE: Final = re.compile(r"[A-Za-z0-9._/-]{1,255}")
GIT_REVISION_RE: Final = re.compile(r"[0-9a-f]{7,64}")
B64_RE: Final = re.compile(r"[A-Za-z0-9+/]*={0,2}")

UNIX_TIME: Final = Num(0.0, 1e11)
STATUSES: Final = ("launching", "online", "stopping", "stopped", "waiting-restart", "errored")

PASSWORD_PARAMS: Final = Obj(
    {
        "salt": Str(24, 24, B64_RE),  # 16 bytes
        "time_cost": Int(1, 10),
        "memory_cost": Int(8 * 1024, 256 * 1024),  # KiB: the hub pays this per action
        "parallelism": Int(1, 16),
    }
)

SERVER_ID_RE: Final = re.compile(r"[0-9a-f]{32}")
"""A server's own id, 128 random bits in hex, kept by its agent: a renamed host stays one
server in its bucket."""

HELLO: Final = Obj(
    {
        "agent_version": Str(64, 1),
        "server_id": Str(32, 32, SERVER_ID_RE),
        "hostname": Str(253, 1),
        "remote_actions": Bool(),
        "password": Nullable(PASSWORD_PARAMS),
    }
)

SERVER: Final = Obj(
    {
        "hostname": Str(253, 1),
        "addresses": ListOf(Str(64, 1), 64),
        "load": ListOf(Num(0, 1e6), 3, 3),
        "memory": Obj({"total": Int(), "available": Int(), "swap_used": Int()}),
        "cpu": Obj({"count": Int(1, 65536), "percent": Num(0, 100)}),
    }
)

METRIC_NAME_RE: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
"""As in core/app_metrics.py (what apps push with CORRAL_METRIC=)."""
_VALUE: Final = Num(-1e300, 1e300)
CUSTOM_KINDS: Final[dict[str, Obj]] = {
    "gauge": Obj({"kind": Str(9), "value": _VALUE}),
    "counter": Obj({"kind": Str(9), "value": _VALUE}),
    "meter": Obj({"kind": Str(9), "rate": _VALUE, "count": _VALUE}),
    "histogram": Obj(
        {"kind": Str(9), **{k: _VALUE for k in ("count", "sum", "min", "max", "p50", "p95", "p99")}}
    ),
}


class CustomMetric(Spec):
    """One app metric's snapshot, as `AppMetrics.snapshot` makes it: its fields by kind."""

    def check(self, value: Any, path: str) -> Any:
        kind = value.get("kind") if isinstance(value, dict) else None
        if not isinstance(kind, str) or kind not in CUSTOM_KINDS:
            raise fail(path, f"must be an object whose kind is one of {', '.join(CUSTOM_KINDS)}")
        return CUSTOM_KINDS[kind].check(value, path)


APP: Final = Obj(
    {
        "name": Str(80, 1, APP_NAME_RE),
        "id": Int(0, 2**31 - 1),
        "instance": Int(0, 65535),
        "status": OneOf(STATUSES),
        "cpu": Nullable(Num(0, 1e7)),
        "memory": Nullable(Int()),
        "restarts": Int(),
        "unstable_restarts": Int(),
        "exec_mode": OneOf(("fork", "cluster")),
        "git_revision": Nullable(Str(64, 7, GIT_REVISION_RE)),
        "custom": MapOf(Str(64, 1, METRIC_NAME_RE), CustomMetric(), 100),
    }
)

METRICS: Final = Obj({"sampled_at": UNIX_TIME, "server": SERVER, "apps": ListOf(APP, 4096)})

ENV_ARGS: Final = Obj(
    {
        "set": MapOf(Str(128, 1, ENV_NAME_RE), Str(32768), 256),
        "unset": ListOf(Str(128, 1, ENV_NAME_RE), 256),
    }
)

VERB_ARGS: Final[dict[Verb, Spec]] = {
    Verb.RESTART: Obj({}),
    Verb.RELOAD: Obj({}),
    Verb.RESET: Obj({}),
    Verb.STOP: Obj({}),
    Verb.DELETE: Obj({}),
    Verb.SCALE: Obj({"count": Str(5, 1, SCALE_COUNT_RE)}),
    Verb.ENV: ENV_ARGS,
    Verb.DEPLOY: Obj({"ref": Nullable(Str(255, 1, GIT_REF_RE))}),
}


class _ArgsObject(Spec):
    """Any object here; `_check_action` checks it against the verb's own schema."""

    def check(self, value: Any, path: str) -> Any:
        if not isinstance(value, dict):
            raise fail(path, "must be an object")
        return value


def _check_action(body: dict[str, Any], path: str) -> None:
    body["args"] = VERB_ARGS[Verb(body["verb"])].check(body["args"], f"{path}.args")


ACTION: Final = Obj(
    {
        "id": Str(64, 1, ACTION_ID_RE),
        "verb": OneOf(tuple(v.value for v in Verb)),
        "target": Str(80, 1, APP_NAME_RE),
        "args": _ArgsObject(),
        "requested_by": Str(254, 1),
        "proof": Nullable(Str(88, 88, B64_RE)),  # an Ed25519 signature (64 bytes)
    },
    then=_check_action,
)


def _check_result(body: dict[str, Any], path: str) -> None:
    if body["ok"] != (body["code"] is None):
        raise fail(path, "code must be null exactly when ok is true")


ACTION_RESULT: Final = Obj(
    {
        "id": Str(64, 1, ACTION_ID_RE),
        "ok": Bool(),
        "code": Nullable(OneOf(tuple(o.value for o in Outcome))),
        "message": Str(4096),
        "finished_at": UNIX_TIME,
    },
    then=_check_result,
)

SCHEMAS: Final[dict[MessageType, Spec]] = {
    MessageType.HELLO: HELLO,
    MessageType.METRICS: METRICS,
    MessageType.ACTION: ACTION,
    MessageType.ACTION_RESULT: ACTION_RESULT,
}


def validate_body(message_type: MessageType, body: Any) -> dict[str, Any]:
    """`body` checked against its type's schema (a fresh dict), or MessageInvalid."""
    result: dict[str, Any] = SCHEMAS[message_type].check(body, str(message_type))
    return result
