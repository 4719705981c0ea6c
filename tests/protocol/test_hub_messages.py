"""Message schemas: every valid body round-trips through a sealed frame unchanged, and
invalid ones are refused on both sides, naming the field."""

from __future__ import annotations

import base64
import copy
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from corral.protocol.hub import MessageInvalid, MessageType, Verb
from corral.protocol.hub.messages import (
    ACTION_ID_RE,
    APP_NAME_RE,
    CUSTOM_KINDS,
    ENV_NAME_RE,
    GIT_REF_RE,
    GIT_REVISION_RE,
    METRIC_NAME_RE,
    SCALE_COUNT_RE,
    STATUSES,
    Outcome,
    validate_body,
)
from tests.protocol.hubkit import (
    FAST_PARAMS,
    action_body,
    connect,
    hello_body,
    metrics_body,
    new_bucket,
    result_body,
    say_hello,
)

CONN = say_hello(connect(new_bucket().keys))  # one long connection for the round trips


def finite(lo: float, hi: float) -> st.SearchStrategy[float]:
    return st.floats(lo, hi, allow_nan=False, allow_infinity=False)


def number(lo: float, hi: float) -> st.SearchStrategy[float | int]:
    return finite(lo, hi) | st.integers(int(lo), int(hi))


def any_text(min_size: int = 0, max_size: int = 40) -> st.SearchStrategy[str]:
    """Any str, lone surrogates included (what surrogateescape makes of non-UTF-8)."""
    return st.text(st.characters(exclude_categories=()), min_size=min_size, max_size=max_size)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


app_names = st.from_regex(APP_NAME_RE, fullmatch=True)

custom_metrics = st.sampled_from(list(CUSTOM_KINDS)).flatmap(
    lambda kind: st.fixed_dictionaries(
        {
            "kind": st.just(kind),
            **{f: number(-1e300, 1e300) for f in CUSTOM_KINDS[kind].fields if f != "kind"},
        }
    )
)

apps = st.fixed_dictionaries(
    {
        "name": app_names,
        "id": st.integers(0, 2**31 - 1),
        "instance": st.integers(0, 65535),
        "status": st.sampled_from(STATUSES),
        "cpu": st.none() | number(0, 1e7),
        "memory": st.none() | st.integers(0, 2**63 - 1),
        "restarts": st.integers(0, 2**40),
        "unstable_restarts": st.integers(0, 2**40),
        "exec_mode": st.sampled_from(["fork", "cluster"]),
        "git_revision": st.none() | st.from_regex(GIT_REVISION_RE, fullmatch=True),
        "custom": st.dictionaries(
            st.from_regex(METRIC_NAME_RE, fullmatch=True), custom_metrics, max_size=3
        ),
    }
)

metrics = st.fixed_dictionaries(
    {
        "sampled_at": number(0, 1e11),
        "server": st.fixed_dictionaries(
            {
                "hostname": any_text(min_size=1, max_size=40),
                "addresses": st.lists(any_text(min_size=1, max_size=40), max_size=3),
                "load": st.lists(number(0, 1e6), min_size=3, max_size=3),
                "memory": st.fixed_dictionaries(
                    {k: st.integers(0, 2**63 - 1) for k in ("total", "available", "swap_used")}
                ),
                "cpu": st.fixed_dictionaries(
                    {"count": st.integers(1, 65536), "percent": number(0, 100)}
                ),
            }
        ),
        "apps": st.lists(apps, max_size=3),
    }
)

env_names = st.from_regex(ENV_NAME_RE, fullmatch=True)
verb_args: dict[Verb, st.SearchStrategy[dict[str, Any]]] = {
    Verb.RESTART: st.just({}),
    Verb.RELOAD: st.just({}),
    Verb.RESET: st.just({}),
    Verb.STOP: st.just({}),
    Verb.DELETE: st.just({}),
    Verb.SCALE: st.fixed_dictionaries({"count": st.from_regex(SCALE_COUNT_RE, fullmatch=True)}),
    Verb.ENV: st.fixed_dictionaries(
        {
            "set": st.dictionaries(env_names, any_text(max_size=100), max_size=4),
            "unset": st.lists(env_names, max_size=4),
        }
    ),
    Verb.DEPLOY: st.fixed_dictionaries(
        {"ref": st.none() | st.from_regex(GIT_REF_RE, fullmatch=True)}
    ),
}

actions = st.sampled_from(list(Verb)).flatmap(
    lambda verb: st.fixed_dictionaries(
        {
            "id": st.from_regex(ACTION_ID_RE, fullmatch=True),
            "verb": st.just(verb.value),
            "target": app_names,
            "args": verb_args[verb],
            "requested_by": any_text(min_size=1, max_size=254),
            "proof": st.none() | st.binary(min_size=64, max_size=64).map(_b64),
        }
    )
)


results = st.sampled_from([None, *Outcome]).flatmap(
    lambda code: st.fixed_dictionaries(
        {
            "id": st.from_regex(ACTION_ID_RE, fullmatch=True),
            "ok": st.just(code is None),
            "code": st.just(None if code is None else code.value),
            "message": any_text(max_size=200),
            "finished_at": number(0, 1e11),
        }
    )
)

hellos = st.fixed_dictionaries(
    {
        "agent_version": any_text(min_size=1, max_size=64),
        "server_id": st.text(alphabet="0123456789abcdef", min_size=32, max_size=32),
        "hostname": any_text(min_size=1, max_size=253),
        "remote_actions": st.booleans(),
        "password": st.none() | st.just(FAST_PARAMS.to_json()),
    }
)


# The machine is shared: generating nested bodies may be slow, which is not a failure.
@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])
@given(body=metrics)
def test_metrics_round_trip(body: dict[str, Any]) -> None:
    assert CONN.hub.open(CONN.agent.seal(MessageType.METRICS, body)).body == body


@settings(max_examples=150)
@given(body=hellos)
def test_hello_round_trip(body: dict[str, Any]) -> None:
    conn = connect(new_bucket().keys)
    assert conn.hub.open(conn.agent.seal(MessageType.HELLO, body)).body == body


@settings(max_examples=150)
@given(body=results)
def test_action_result_round_trip(body: dict[str, Any]) -> None:
    assert CONN.hub.open(CONN.agent.seal(MessageType.ACTION_RESULT, body)).body == body


@settings(max_examples=200)
@given(body=actions)
def test_action_round_trip(body: dict[str, Any]) -> None:
    assert CONN.agent.open(CONN.hub.seal(MessageType.ACTION, body)).body == body


def test_the_sample_bodies_are_valid() -> None:
    validate_body(MessageType.HELLO, hello_body(FAST_PARAMS))
    validate_body(MessageType.METRICS, metrics_body())
    validate_body(MessageType.ACTION, action_body())
    validate_body(MessageType.ACTION_RESULT, result_body())


def _with(body: dict[str, Any], path: tuple[Any, ...], value: Any) -> dict[str, Any]:
    changed = copy.deepcopy(body)
    target: Any = changed
    for key in path[:-1]:
        target = target[key]
    if value is _DROP:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return changed


_DROP = object()


@pytest.mark.parametrize(
    ("message_type", "body", "path", "value", "error"),
    [
        (MessageType.METRICS, metrics_body(), ("apps", 0, "cpu"), "3", r"metrics\.apps\[0\]\.cpu"),
        (MessageType.METRICS, metrics_body(), ("apps", 0, "cpu"), True, "must be a number"),
        (MessageType.METRICS, metrics_body(), ("apps", 0, "cpu"), float("nan"), "between"),
        (MessageType.METRICS, metrics_body(), ("apps", 0, "restarts"), -1, "restarts"),
        (MessageType.METRICS, metrics_body(), ("apps", 0, "status"), "dead", "one of"),
        (MessageType.METRICS, metrics_body(), ("apps", 0, "name"), "a b", "must match"),
        (MessageType.METRICS, metrics_body(), ("apps", 0, "extra"), 1, "unknown field 'extra'"),
        (MessageType.METRICS, metrics_body(), ("server", "load"), [1, 2], "3 to 3 items"),
        (
            MessageType.METRICS,
            metrics_body(),
            ("apps", 0, "custom", "jobs", "kind"),
            "gauge",
            r"custom\.jobs: unknown field 'rate'",
        ),
        (MessageType.METRICS, metrics_body(), ("apps", 0, "custom", "x y"), {}, "key 'x y'"),
        (MessageType.METRICS, metrics_body(), ("apps", 0, "custom", "q"), 1, "kind is one of"),
        (MessageType.METRICS, metrics_body(), ("server", "memory"), _DROP, "missing field"),
        (MessageType.ACTION, action_body(), ("verb",), "exec", "one of restart"),
        (MessageType.ACTION, action_body(), ("target",), "/.*/", "target: must match"),
        (MessageType.ACTION, action_body(), ("args",), {"force": True}, "unknown field 'force'"),
        (MessageType.ACTION, action_body("scale"), ("args",), {"count": "x"}, "args.count"),
        (MessageType.ACTION, action_body("env"), ("args",), {"set": {}}, "missing field 'unset'"),
        (
            MessageType.ACTION,
            action_body("env", args={"set": {"1BAD": "x"}, "unset": []}),
            ("id",),
            "act-1",
            "args.set key",
        ),
        (MessageType.ACTION, action_body(), ("proof",), "short", "proof"),
        (MessageType.ACTION_RESULT, result_body(), ("code",), "failed", "null exactly when"),
        (MessageType.HELLO, hello_body(FAST_PARAMS), ("password", "memory_cost"), 2**30, "memory"),
    ],
)
def test_invalid_bodies_are_refused_naming_the_field(
    message_type: MessageType, body: dict[str, Any], path: tuple[Any, ...], value: Any, error: str
) -> None:
    with pytest.raises(MessageInvalid, match=error):
        validate_body(message_type, _with(body, path, value))


def test_an_invalid_body_is_refused_before_it_is_sealed() -> None:
    conn = connect(new_bucket().keys)
    with pytest.raises(MessageInvalid, match="unknown field"):
        conn.agent.seal(MessageType.HELLO, {**hello_body(), "secret": "x"})
    # Nothing was sent, so the next frame still has seq 0 and opens.
    assert conn.hub.open(conn.agent.seal(MessageType.HELLO, hello_body())).seq == 0


def test_strings_that_are_not_utf8_travel_unchanged() -> None:
    """A path or hostname decoded with surrogateescape holds lone surrogates."""
    conn = say_hello(connect(new_bucket().keys))
    body = result_body(code="failed") | {"message": "no such file: /srv/\udcff\udcfe"}
    assert conn.hub.open(conn.agent.seal(MessageType.ACTION_RESULT, body)).body == body
    action = action_body(requested_by="b\udcffb")
    assert conn.agent.open(conn.hub.seal(MessageType.ACTION, action)).body == action
