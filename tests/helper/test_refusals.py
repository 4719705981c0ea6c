"""A real helper refuses what it must, with the right error code, changes nothing, audits
the refusal and goes on serving (as root; skipped otherwise). One helper serves the whole
module: every test here leaves it as it found it."""

from __future__ import annotations

import json
import os
import pwd
import socket
from collections.abc import Iterator
from typing import Any

import pytest

from corral.protocol.wire import ErrorCode
from tests.support.otheruid import temp_user

from .conftest import HelperFactory, HelperProcess, connect_as
from .test_protocol import BAD_NAMES

pytestmark = [pytest.mark.root, pytest.mark.slow]


@pytest.fixture
def helper(shared: tuple[HelperProcess, HelperFactory]) -> Iterator[HelperProcess]:
    """The module's helper; after each test it must still serve and hold no tenant."""
    helper = shared[0]
    before = helper.snapshot()
    yield helper
    helper.assert_serving()
    assert helper.snapshot() == before


def last_audit(helper: HelperProcess) -> dict[str, Any]:
    return helper.audit()[-1]


def assert_no_user(name: str) -> None:
    """No user `name`, nor the name a C string would make of it (cut at a NUL)."""
    for candidate in {name.split("\x00")[0], name} - {""}:
        with pytest.raises((KeyError, ValueError)):
            pwd.getpwnam(candidate)


# --- framing -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "line",
    [
        b"not json",
        b"{",
        b'{"id": 1, "cmd": "ping",}',
        b"[1, 2]",
        b'"ping"',
        b"42",
        b"null",
        b"{}",
        b'{"id": 1}',
        b'{"id": 1, "cmd": 7}',
        b'{"id": 1, "cmd": "ping", "args": []}',
        b'{"id": 1, "cmd": "ping", "args": {}, "shell": "id"}',
        b"\xff\xfe{}",
        b'{"id": 1, "cmd": "ping\x00"}',
    ],
)
def test_malformed_lines_are_bad_requests_and_the_connection_goes_on(
    helper: HelperProcess, line: bytes
) -> None:
    pong = helper.call("ping")
    ping = b'{"id": 2, "cmd": "ping", "args": {}}\n'
    replies = helper.exchange(line + b"\n" + ping)
    assert replies[0]["ok"] is False and replies[0]["error"]["code"] == "bad_request"
    assert replies[1] == {"id": 2, "ok": True, "result": pong}  # the same connection goes on
    refusal = helper.audit()[-2]
    assert (refusal["result"], refusal["peer_uid"]) == ("refused", helper.panel.pw_uid)
    assert refusal["detail"].startswith("bad_request: ")


def test_a_line_of_4096_bytes_is_read_and_one_byte_more_closes_the_connection(
    helper: HelperProcess,
) -> None:
    def padded(size: int) -> bytes:
        head = b'{"id": 1, "cmd": "ping", "args": {}'
        return head + b" " * (size - len(head) - 2) + b"}\n"

    assert len(padded(4096)) == 4096
    assert helper.exchange(padded(4096))[0]["ok"] is True

    after = b'{"id": 2, "cmd": "ping", "args": {}}\n'
    replies = helper.exchange(padded(4097) + after)
    assert len(replies) == 1  # nothing after the refusal: the connection was closed
    assert replies[0]["error"]["code"] == "bad_request"
    assert "4096" in replies[0]["error"]["message"]
    huge = b'{"id": 1, "cmd": "create_tenant", "args": {"tenant": "' + b"a" * 100_000 + b'"}}\n'
    assert helper.exchange(huge)[0]["error"]["code"] == "bad_request"
    assert last_audit(helper)["result"] == "refused"


def test_a_peer_that_sends_half_a_line_and_leaves_does_not_hurt_the_helper(
    helper: HelperProcess,
) -> None:
    replies = helper.exchange(b'{"id": 1, "cmd": "create_tenant", "args": {"tenant": "ct')
    assert [r["error"]["code"] for r in replies] == ["bad_request"]


# --- verbs and arguments --------------------------------------------------------------


@pytest.mark.parametrize(
    "cmd", ["useradd", "groupadd", "userdel", "shell", "exec", "sh", "kill", "PING", "ping "]
)
def test_unknown_verbs_are_refused(helper: HelperProcess, cmd: str) -> None:
    error = helper.refused(cmd, tenant="root")
    assert error.code is ErrorCode.UNKNOWN_COMMAND
    entry = last_audit(helper)
    assert (entry["verb"], entry["tenant"], entry["result"]) == (cmd, "root", "refused")
    assert entry["detail"].startswith("unknown_command: ")


@pytest.mark.parametrize(
    ("cmd", "args"),
    [
        ("ping", {"x": 1}),
        ("create_tenant", {}),
        ("create_tenant", {"tenant": 5}),
        ("create_tenant", {"tenant": True}),
        ("create_tenant", {"tenant": "ctok", "uid": 0}),
        ("start_daemon", {"tenant": "root"}),
        ("start_daemon", {"tenant": "root", "app_limit": True}),
        ("start_daemon", {"tenant": "root", "app_limit": "1"}),
        ("start_daemon", {"tenant": "root", "app_limit": -2}),
        ("start_daemon", {"tenant": "root", "app_limit": 1, "env": {"LD_PRELOAD": "/x"}}),
        ("stop_daemon", {"tenant": 0}),
        ("remove_tenant", {"tenant": "root"}),
        ("remove_tenant", {"tenant": "root", "delete_home": 1}),
        ("remove_tenant", {"tenant": "root", "delete_home": True, "force": True}),
    ],
)
def test_missing_extra_or_mistyped_arguments_are_refused(
    helper: HelperProcess, cmd: str, args: dict[str, Any]
) -> None:
    root_before = pwd.getpwnam("root")
    assert helper.refused(cmd, **args).code is ErrorCode.INVALID_ARGUMENT
    assert pwd.getpwnam("root") == root_before
    assert last_audit(helper)["result"] == "refused"


@pytest.mark.parametrize("name", BAD_NAMES)
def test_odd_user_names_are_refused(helper: HelperProcess, name: str) -> None:
    cases: list[tuple[str, dict[str, Any]]] = [
        ("create_tenant", {"tenant": name}),
        ("start_daemon", {"tenant": name, "app_limit": 1}),
        ("remove_tenant", {"tenant": name, "delete_home": True}),
    ]
    for cmd, args in cases:
        error = helper.refused(cmd, **args)
        assert error.code is ErrorCode.INVALID_ARGUMENT, (cmd, name, error)
        assert last_audit(helper)["verb"] == cmd
    if name:
        assert_no_user(name)


@pytest.mark.parametrize("name", ["root", "postgres", "nobody", "daemon", "bin"])
def test_existing_system_users_cannot_become_tenants(helper: HelperProcess, name: str) -> None:
    try:
        before = pwd.getpwnam(name)
    except KeyError:
        pytest.skip(f"no user {name} on this machine")
    error = helper.refused("create_tenant", tenant=name)
    assert error.code is ErrorCode.CONFLICT
    assert pwd.getpwnam(name) == before
    assert not os.path.lexists(helper.home(name))


@pytest.mark.parametrize("name", ["root", "postgres", "nobody", "panel"])
@pytest.mark.parametrize("cmd", ["start_daemon", "stop_daemon", "remove_tenant"])
def test_users_the_helper_did_not_create_are_never_touched(
    helper: HelperProcess, name: str, cmd: str
) -> None:
    if name == "panel":
        name = helper.panel.pw_name
    args: dict[str, Any] = {"tenant": name}
    if cmd == "start_daemon":
        args["app_limit"] = -1
    if cmd == "remove_tenant":
        args["delete_home"] = True
    before = pwd.getpwall()
    error = helper.refused(cmd, **args)
    assert error.code is ErrorCode.NOT_FOUND
    assert name in error.message
    assert {p.pw_name: p for p in pwd.getpwall()}.get(name) == {p.pw_name: p for p in before}.get(
        name
    )
    entry = last_audit(helper)
    assert (entry["verb"], entry["tenant"], entry["result"]) == (cmd, name, "refused")


def test_the_panel_user_itself_cannot_become_a_tenant(helper: HelperProcess) -> None:
    assert helper.refused("create_tenant", tenant=helper.panel.pw_name).code is (ErrorCode.CONFLICT)


# --- peers --------------------------------------------------------------------------


def test_root_is_refused(helper: HelperProcess) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(30)
        sock.connect(str(helper.socket))
        reply = _first_reply(sock, b'{"id": 1, "cmd": "ping", "args": {}}\n')
    assert reply["error"]["code"] == "permission_denied"
    assert f"uid {helper.panel.pw_uid}" in reply["error"]["message"]
    entry = last_audit(helper)
    assert (entry["peer_uid"], entry["result"], entry["verb"]) == (0, "refused", None)
    assert entry["peer_pid"] == os.getpid()


def test_another_user_is_kept_out_by_the_socket_mode_and_then_by_its_uid(
    helper: HelperProcess,
) -> None:
    with temp_user("ctx") as other:
        with pytest.raises(PermissionError):
            connect_as(other, helper.socket)  # 0600, the panel's: the kernel says no
        os.chmod(helper.socket, 0o666)  # a mistake by hand: the helper still says no
        try:
            sock = connect_as(other, helper.socket)
        finally:
            os.chmod(helper.socket, 0o600)
        with sock:
            sock.settimeout(30)
            reply = _first_reply(sock, b'{"id": 1, "cmd": "create_tenant", "args": {}}\n')
        assert reply["error"]["code"] == "permission_denied"
        entry = last_audit(helper)
        assert (entry["peer_uid"], entry["result"]) == (other.pw_uid, "refused")
        assert entry["peer_pid"] > 0
        assert "connection refused" in entry["detail"]


def _first_reply(sock: socket.socket, request: bytes) -> dict[str, Any]:
    """Send one request, read until the helper closes: exactly one reply comes back."""
    sock.sendall(request)
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    lines = data.splitlines()
    assert len(lines) == 1, lines
    reply: dict[str, Any] = json.loads(lines[0])
    assert reply["ok"] is False and reply["id"] is None
    return reply
