"""corral/protocol/helper.py: what a helper request may hold (no root needed).

The same refusals are sent to a real helper in test_refusals.py; here every shape is
checked against `validate_request` alone, exhaustively and fast.
"""

from __future__ import annotations

from typing import Any

import pytest

from corral.protocol.helper import (
    ARG_SCHEMAS,
    TENANT_NAME_RE,
    HelperVerb,
    validate_request,
)
from corral.protocol.wire import ErrorCode, ProtocolError

BAD_NAMES = [
    "",
    "../x",
    "x/..",
    "a/b",
    "a b",
    " a",
    "a ",
    "-rf",
    "-",
    "Root",
    "ROOT",
    "a;id",
    "$(id)",
    "`id`",
    "a|b",
    "a&b",
    "a>b",
    "a*",
    "a.b",
    "a:b",
    "a\\b",
    "'a'",
    '"a"',
    "a\nb",
    "a\n",
    "a\x00b",
    "a\x00",
    "a\t",
    "0abc",
    "9",
    "a" * 32,
    "a" * 33,
    "\u0430dmin",  # Cyrillic a
    "r\u043eot",  # Cyrillic o
    "\uff52\uff4f\uff4f\uff54",  # fullwidth root
    "ro\u200bot",  # zero-width space
    "caf\u00e9",
    "\u0131d",  # dotless i
    "a\u0301",  # combining accent
]
GOOD_NAMES = ["a", "_", "_x", "a-b_9", "ct1234", "x" * 31, "a-"]


def request(cmd: Any, **args: Any) -> dict[str, Any]:
    return {"id": 1, "cmd": cmd, "args": args}


def refusal(message: dict[str, Any]) -> ProtocolError:
    with pytest.raises(ProtocolError) as caught:
        validate_request(message)
    return caught.value


def good_args(verb: HelperVerb) -> dict[str, Any]:
    samples = {"tenant": "acme", "app_limit": 3, "delete_home": True}
    return {key: samples[key] for key in ARG_SCHEMAS[verb]}


def test_the_verbs_are_exactly_the_five_of_the_foundation() -> None:
    assert [v.value for v in HelperVerb] == [
        "ping",
        "create_tenant",
        "start_daemon",
        "stop_daemon",
        "remove_tenant",
    ]
    assert {
        HelperVerb.PING: {},
        HelperVerb.CREATE_TENANT: {"tenant": str},
        HelperVerb.START_DAEMON: {"tenant": str, "app_limit": int},
        HelperVerb.STOP_DAEMON: {"tenant": str},
        HelperVerb.REMOVE_TENANT: {"tenant": str, "delete_home": bool},
    } == ARG_SCHEMAS


@pytest.mark.parametrize("verb", list(HelperVerb))
def test_a_well_formed_request_is_accepted(verb: HelperVerb) -> None:
    args = good_args(verb)
    assert validate_request(request(verb.value, **args)) == (verb, args)


def test_id_and_args_may_be_left_out_of_ping() -> None:
    assert validate_request({"cmd": "ping"}) == (HelperVerb.PING, {})


@pytest.mark.parametrize(
    "message",
    [
        {},
        {"id": 1},
        {"id": 1, "cmd": None},
        {"id": 1, "cmd": 5},
        {"id": 1, "cmd": ["ping"]},
        {"id": 1, "cmd": "ping", "args": []},
        {"id": 1, "cmd": "ping", "args": "x"},
        {"id": 1, "cmd": "ping", "args": None},
        {"id": "1", "cmd": "ping", "args": {}},
        {"id": True, "cmd": "ping", "args": {}},
        {"id": 1.5, "cmd": "ping", "args": {}},
        {"id": 1, "cmd": "ping", "args": {}, "sudo": True},
    ],
)
def test_a_malformed_envelope_is_a_bad_request(message: dict[str, Any]) -> None:
    assert refusal(message).code is ErrorCode.BAD_REQUEST


@pytest.mark.parametrize(
    "cmd",
    [
        "useradd",
        "groupadd",
        "userdel",
        "shell",
        "exec",
        "sh",
        "run",
        "kill",
        "PING",
        "Ping",
        "ping ",
        " ping",
        "ping\n",
        "",
        "create-tenant",
        "__class__",
        "x" * 5000,
    ],
)
def test_an_unknown_verb_is_refused(cmd: str) -> None:
    error = refusal(request(cmd))
    assert error.code is ErrorCode.UNKNOWN_COMMAND
    assert len(error.message) < 200  # a long verb is not echoed whole


@pytest.mark.parametrize(
    ("cmd", "args", "named"),
    [
        ("ping", {"x": 1}, "'x'"),
        ("create_tenant", {}, "'tenant'"),
        ("create_tenant", {"tenant": "a", "uid": 0}, "'uid'"),
        ("create_tenant", {"tenant": "a", "home": "/root"}, "'home'"),
        ("create_tenant", {"tenant": 5}, "'tenant'"),
        ("create_tenant", {"tenant": None}, "'tenant'"),
        ("create_tenant", {"tenant": ["a"]}, "'tenant'"),
        ("create_tenant", {"tenant": {"a": 1}}, "'tenant'"),
        ("create_tenant", {"tenant": True}, "'tenant'"),
        ("start_daemon", {"tenant": "a"}, "'app_limit'"),
        ("start_daemon", {"app_limit": 1}, "'tenant'"),
        ("start_daemon", {"tenant": "a", "app_limit": True}, "'app_limit'"),
        ("start_daemon", {"tenant": "a", "app_limit": False}, "'app_limit'"),
        ("start_daemon", {"tenant": "a", "app_limit": "3"}, "'app_limit'"),
        ("start_daemon", {"tenant": "a", "app_limit": 3.0}, "'app_limit'"),
        ("start_daemon", {"tenant": "a", "app_limit": None}, "'app_limit'"),
        ("start_daemon", {"tenant": "a", "app_limit": -2}, "'app_limit'"),
        ("start_daemon", {"tenant": "a", "app_limit": 10**7}, "'app_limit'"),
        ("start_daemon", {"tenant": "a", "app_limit": 1, "python": "/bin/sh"}, "'python'"),
        ("start_daemon", {"tenant": "a", "app_limit": 1, "env": {}}, "'env'"),
        ("stop_daemon", {}, "'tenant'"),
        ("stop_daemon", {"tenant": 1}, "'tenant'"),
        ("stop_daemon", {"tenant": "a", "pid": 1}, "'pid'"),
        ("remove_tenant", {"tenant": "a"}, "'delete_home'"),
        ("remove_tenant", {"tenant": "a", "delete_home": 1}, "'delete_home'"),
        ("remove_tenant", {"tenant": "a", "delete_home": "yes"}, "'delete_home'"),
        ("remove_tenant", {"tenant": "a", "delete_home": None}, "'delete_home'"),
        ("remove_tenant", {"tenant": "a", "delete_home": True, "path": "/"}, "'path'"),
    ],
)
def test_missing_extra_or_mistyped_arguments_are_refused_by_name(
    cmd: str, args: dict[str, Any], named: str
) -> None:
    error = refusal(request(cmd, **args))
    assert error.code is ErrorCode.INVALID_ARGUMENT
    assert named in error.message
    assert error.message.startswith(f"{cmd}: ")


@pytest.mark.parametrize("name", BAD_NAMES)
@pytest.mark.parametrize("verb", [v for v in HelperVerb if "tenant" in ARG_SCHEMAS[v]])
def test_odd_tenant_names_are_refused_by_every_verb(verb: HelperVerb, name: str) -> None:
    args = {**good_args(verb), "tenant": name}
    error = refusal(request(verb.value, **args))
    assert error.code is ErrorCode.INVALID_ARGUMENT
    assert "not a valid tenant name" in error.message
    assert "\x00" not in error.message and "\n" not in error.message


@pytest.mark.parametrize("name", GOOD_NAMES)
def test_plain_names_pass(name: str) -> None:
    assert validate_request(request("create_tenant", tenant=name))[1] == {"tenant": name}


def test_the_name_pattern_is_a_full_match_of_at_most_31_ascii_characters() -> None:
    assert TENANT_NAME_RE.fullmatch("a" * 31)
    assert not TENANT_NAME_RE.fullmatch("a" * 32)
    assert not TENANT_NAME_RE.fullmatch("abc\n")  # no '$' loophole
