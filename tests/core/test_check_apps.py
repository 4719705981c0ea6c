"""`check_apps`: a daemon validates a tenant's app settings with its own rights, relative to
its tenant home (the parent of CORRAL_HOME), for the panel's isolated mode (SPEC 2.2)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from corral.protocol.wire import ErrorCode, ProtocolError
from tests.e2e.test_tenant_mode import TenantSetup, setup  # noqa: F401 (the fixture)

from ..conftest import Corral


@pytest.fixture
def tree(daemon: Corral) -> tuple[Corral, Path]:
    """The daemon's tenant home with app/run.py and app/tool (executable)."""
    home = daemon.home.root.parent
    (home / "app").mkdir()
    (home / "app" / "run.py").write_text("print('hi')\n")
    tool = home / "app" / "tool"
    tool.write_text("#!/bin/sh\n")
    tool.chmod(0o755)
    return daemon, Path(os.path.realpath(home))


def refusal(corral: Corral, **args: Any) -> str:
    with pytest.raises(ProtocolError) as caught:
        corral.call("check_apps", **args)
    assert caught.value.code == ErrorCode.INVALID_ARGUMENT
    assert "\n" not in caught.value.message
    return caught.value.message


def test_apps_are_validated_from_the_tenant_home(tree: tuple[Corral, Path]) -> None:
    corral, home = tree
    apps = [
        {"name": "web", "script": "app/run.py", "args": "--port 80", "kill_timeout": 2000},
        {"cwd": "app", "cmd": "./tool start"},
    ]
    web, tool = corral.call("check_apps", apps=apps, source="config")
    assert (web["name"], web["script"], web["interpreter"]) == (
        "web",
        str(home / "app" / "run.py"),
        "python3",
    )
    assert web["args"] == ["--port", "80"] and web["kill_timeout"] == 2.0
    assert web["cwd"] == str(home)  # a config file's apps start in its folder: the home
    assert (tool["name"], tool["script"], tool["cwd"]) == (
        "tool",
        str(home / "app/tool"),
        str(home / "app"),
    )
    assert (tool["args"], tool["interpreter"]) == (["start"], "none")
    assert corral.call("check_apps", apps=[]) == []


def test_a_bad_app_is_refused_naming_the_app_and_the_key(tree: tuple[Corral, Path]) -> None:
    corral, _ = tree
    good = {"name": "web", "script": "app/run.py"}
    missing = refusal(corral, apps=[good, {"name": "api", "script": "nope.py"}], source="form")
    assert missing.startswith("form: app 'api': key 'script': no such file or program: 'nope.py'")
    assert "key 'cwd'" in refusal(corral, apps=[{"script": "run.py", "cwd": "nowhere"}])
    unknown = refusal(corral, apps=[{"script": "app/run.py", "restart_dealy": 1}], source="x")
    assert unknown.startswith("x: app 'run': unknown key 'restart_dealy'")
    tool = refusal(corral, apps=[{"script": "app/run.py", "interpreter": "none"}])
    assert "key 'script'" in tool and "not executable" in tool


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ({"apps": [{"script": "x"}] * 65}, "at most 64"),
        ({"apps": "x"}, "'apps' must be a list"),
        ({}, "'apps' must be a list"),
        ({"apps": ["x"]}, "apps[0] must be an object"),
        ({"apps": [], "source": 3}, "'source' must be a non-empty string"),
        ({"apps": [], "source": "a\nb"}, "'source' must be one line"),
        ({"apps": [], "home": "/"}, "unknown argument 'home'"),
    ],
)
def test_malformed_requests_are_refused(daemon: Corral, args: dict[str, Any], message: str) -> None:
    assert message in refusal(daemon, **args)


# --- As root: a daemon running as a tenant user checks with the tenant's rights ---


def test_a_tenant_daemon_accepts_its_private_folder_and_refuses_what_it_cannot_read(
    setup: TenantSetup,  # noqa: F811
) -> None:
    tenant, stranger = setup.tenant, setup.stranger
    private = setup.home_dir / "app"
    private.mkdir(mode=0o700)
    os.chown(private, tenant.pw_uid, tenant.pw_gid)
    private.chmod(0o700)
    (private / "run.py").write_text("print('hi')\n")
    os.chown(private / "run.py", tenant.pw_uid, tenant.pw_gid)
    # A file of another user in the tenant's home, 0600: there, but not readable by it.
    theirs = setup.home_dir / "theirs.py"
    theirs.write_text("print('not yours')\n")
    os.chown(theirs, stranger.pw_uid, stranger.pw_gid)
    theirs.chmod(0o600)
    locked = setup.home_dir / "locked"
    locked.mkdir(mode=0o700)
    os.chown(locked, stranger.pw_uid, stranger.pw_gid)
    setup.start()
    home = os.path.realpath(setup.home_dir)

    answer = setup.call_as(
        setup.panel, "check_apps", apps=[{"name": "web", "cwd": "app", "script": "run.py"}]
    )
    assert answer["reply"]["ok"] is True, answer
    [web] = answer["reply"]["result"]
    assert (web["script"], web["cwd"]) == (f"{home}/app/run.py", f"{home}/app")

    for key in ("script", "cmd"):
        refused = setup.call_as(
            setup.panel, "check_apps", apps=[{"name": "x", key: "theirs.py"}], source="config"
        )["reply"]
        assert refused["ok"] is False, refused
        assert refused["error"]["code"] == "invalid_argument"
        assert refused["error"]["message"] == (
            f"config: app 'x': key {key!r}: '{home}/theirs.py' cannot be read by user "
            f"{tenant.pw_name!r} (permission denied)"
        )
    entered = setup.call_as(
        setup.panel, "check_apps", apps=[{"name": "x", "cwd": "locked", "script": "/bin/true"}]
    )["reply"]
    assert entered["ok"] is False
    assert entered["error"]["message"].startswith(
        f"check_apps: app 'x': key 'cwd': '{home}/locked'"
    )
    assert "cannot be entered" in entered["error"]["message"]
