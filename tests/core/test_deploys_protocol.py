"""The deploy commands on a real daemon: arguments checked before anything is touched,
deploy events only to subscribers that ask for them, failures recorded."""

from __future__ import annotations

import time
from typing import Any

import pytest

from corral.config.model import AppConfig
from corral.protocol.client import ControlClient
from corral.protocol.wire import ErrorCode, ProtocolError

from ..conftest import Corral, wait_for

# Nothing listens on port 1: a fetch fails at once, without any network.
UNREACHABLE = {"repo": "https://127.0.0.1:1/team/app.git", "branch": "main"}


def add_git_app(daemon: Corral, name: str) -> None:
    cfg = AppConfig(name=name, script="app.py", git=dict(UNREACHABLE))
    daemon.call("start", apps=[cfg.to_dict()], cli_env={"PATH": daemon.env["PATH"]})


def refused(daemon: Corral, cmd: str, **args: Any) -> ProtocolError:
    with pytest.raises(ProtocolError) as caught:
        daemon.call(cmd, **args)
    return caught.value


def test_bad_arguments_are_refused_before_anything_is_touched(daemon: Corral) -> None:
    add_git_app(daemon, "api")
    cases: list[tuple[str, dict[str, Any], str]] = [
        ("deploy", {"app": "api", "ref": "-x"}, "'ref'"),
        ("deploy", {"app": "api", "ref": "--upload-pack=touch /tmp/x"}, "'ref'"),
        ("deploy", {"app": "api", "ref": "a..b"}, "'ref'"),
        ("deploy", {"app": "api", "ref": 12}, "'ref'"),
        ("deploy", {"app": "/.*/"}, "'app'"),
        ("deploy", {"app": "api", "trigger": "panel\nforged: line"}, "'trigger'"),
        ("deploy", {"app": "api", "trigger": "x" * 201}, "'trigger'"),
        ("rollback", {"app": "api", "release": "../../../etc"}, "'release'"),
        ("deploy_history", {"app": "api", "limit": 0}, "'limit'"),
        ("deploy_history", {"app": "api", "limit": 201}, "'limit'"),
        ("deploy_history", {"app": "api", "limit": True}, "'limit'"),
        ("deploy_output", {"app": "api", "id": "../history"}, "not a deploy id"),
        ("deploy_output", {"app": "api", "id": None}, "'id'"),
        ("deploy_key", {"app": "api", "create": "yes"}, "'create'"),
        ("releases", {"app": ""}, "'app'"),
    ]
    for cmd, args, words in cases:
        error = refused(daemon, cmd, **args)
        assert error.code == ErrorCode.INVALID_ARGUMENT, (cmd, args, error)
        assert words in error.message, (cmd, args, error.message)
    assert not (daemon.home.root / "deploys").exists()
    assert refused(daemon, "deploy", app="nope").code == ErrorCode.UNKNOWN_TARGET
    assert daemon.call("deploy_history", app="api") == []
    assert daemon.call("releases", app="api") == []
    assert daemon.call("deploy_key", app="api", create=False) == {"public_key": None}
    assert not (daemon.home.root / "deploys").exists()


def read_deploy_events(client: ControlClient, until_id: str) -> list[dict[str, Any]]:
    events = []
    while True:
        event = client.read().get("event")
        if isinstance(event, dict):
            events.append(event)
            if event.get("id") == until_id and event.get("status") in ("succeeded", "failed"):
                return events


def test_deploy_events_reach_only_who_asks_and_a_failed_fetch_is_recorded(
    daemon: Corral,
) -> None:
    add_git_app(daemon, "a")
    add_git_app(daemon, "b")
    # A git app without a release is registered, not launched.
    assert {r["status"] for r in daemon.jlist()} == {"stopped"}
    with daemon.client() as only_a, daemon.client() as everything, daemon.client() as plain:
        only_a.call("subscribe", events=False, deploys="a")
        everything.call("subscribe", events=False, deploys=None)
        plain.call("subscribe", events=True)
        b = daemon.call("deploy", app="b")["deploy"]
        a = daemon.call("deploy", app="a", trigger="panel: alice")["deploy"]
        seen_a = read_deploy_events(only_a, a["id"])
        seen_all = read_deploy_events(everything, a["id"])
        daemon.start_app("plain", "import time\ntime.sleep(60)\n")  # transitions for `plain`
        plain.set_timeout(10)
        first_plain = plain.read()["event"]
    assert {e["app"] for e in seen_a} == {"a"}
    assert {e["type"] for e in seen_a} == {"deploy"}
    assert [e["status"] for e in seen_a if "status" in e] == ["queued", "running", "failed"]
    assert any("line" in e and e["line"].startswith("$ git ") for e in seen_a)
    assert b["id"] in {e["id"] for e in seen_all}
    assert first_plain["type"] != "deploy"  # the process-table stream never carries them

    final = seen_a[-1]["deploy"]
    assert final["id"] == a["id"] and final["trigger"] == "panel: alice"
    assert final["status"] == "failed" and final["error"] and final["release"] is None
    history = daemon.call("deploy_history", app="a")
    assert history == [final]
    output = daemon.call("deploy_output", app="a", id=a["id"])
    assert output["deploy"] == final
    lines = [e["line"] for e in seen_a if "line" in e]
    assert output["output"].splitlines() == lines
    assert [r["status"] for r in daemon.jlist() if r["name"] in ("a", "b")] == ["stopped"] * 2
    missing = refused(daemon, "deploy_output", app="a", id="20261124T031500Z-000000")
    assert missing.code == ErrorCode.NOT_FOUND


def test_a_git_app_without_release_stays_stopped_across_restarts(daemon: Corral) -> None:
    add_git_app(daemon, "api")
    daemon.call("restart", target="api")
    daemon.call("reload", target="api")
    daemon.call("scale", target="api", count=2)
    time.sleep(0.3)  # a launch would have errored by now: nothing must have been tried
    records = daemon.jlist()
    assert [r["status"] for r in records] == ["stopped", "stopped"]
    assert all(r["restarts"] == 0 for r in records)
    wait_for(lambda: daemon.call("describe", target="api")[0]["desired"] == "running")


def test_a_deploy_left_running_by_a_dead_daemon_is_recorded_failed(corral: Corral) -> None:
    from corral.deploy.history import DeployHistory
    from corral.deploy.layout import DeployLayout

    stale = {
        "id": "20261124T031500Z-abcdef",
        "app": "api",
        "kind": "deploy",
        "status": "running",
        "trigger": "cli (uid 0)",
        "queued": 1.0,
        "started": 2.0,
        "ended": None,
    }
    DeployHistory(DeployLayout(corral.home.root, "api")).add(stale)
    corral.start_daemon()
    add_git_app(corral, "api")
    [record] = corral.call("deploy_history", app="api")
    assert record["status"] == "failed" and record["id"] == stale["id"]
    assert record["error"] == "the daemon stopped before the deploy finished"


def test_an_app_user_who_cannot_reach_the_home_is_refused_before_any_command(
    daemon: Corral,
) -> None:
    from tests.support.otheruid import can_switch_users, temp_user

    reason = can_switch_users()
    if reason:
        pytest.skip(reason)
    with temp_user() as user:
        cfg = AppConfig(name="api", script="app.py", git=dict(UNREACHABLE), user=user.pw_name)
        daemon.call("start", apps=[cfg.to_dict()], cli_env={"PATH": daemon.env["PATH"]})
        deploy_id = daemon.call("deploy", app="api")["deploy"]["id"]

        def finished() -> dict[str, Any] | None:
            [record] = daemon.call("deploy_history", app="api")
            return record if record["status"] == "failed" else None

        record = wait_for(finished)
        assert record["id"] == deploy_id and record["step"] == "prepare"
        error = record["error"]
        assert f"runs as {user.pw_name!r}, who cannot traverse /tmp/crl-" in error
        assert "(mode 700)" in error and str(daemon.home.root / "deploys" / "api") in error
        assert not (daemon.home.root / "deploys" / "api" / "repo.git").exists()
        output = daemon.call("deploy_output", app="api", id=deploy_id)["output"]
        assert "$ git" not in output
