"""`start_daemon` and a daemon the panel cannot use (issue 9), as root (skipped otherwise).

A tenant may start its own daemon: its `corral ls` autostarts one without the panel's
ids, whose socket is 0600 (`.corral` 0700): the panel is locked out. The helper's
`start_daemon` stops such a daemon over its socket (it saves its state and stops its
apps), waits for it on a pidfd, and starts a proper one as the tenant, which restores
the apps meant to run; the audit log says so. A daemon the panel can use is left alone,
whoever started it, and a user the helper did not create is never touched.
"""

from __future__ import annotations

import os
import pwd
import stat
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from corral.protocol.client import ControlClient
from corral.protocol.wire import ErrorCode
from tests.conftest import wait_for
from tests.support.otheruid import temp_user, world_python

from .conftest import (
    HelperFactory,
    HelperProcess,
    connect_as,
    daemon_env,
    exited,
    pidfd_of,
)
from .test_tenants import sleeper

pytestmark = [pytest.mark.root, pytest.mark.slow]


def mode_of(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def root_call(home: Path, command: str, **args: Any) -> Any:
    with ControlClient.connect(home / ".corral" / "corral.sock", timeout=30) as client:
        return client.call(command, **args)


def tenant_cli(user: pwd.struct_passwd, home: Path, *args: str) -> str:
    """`corral <args>` run by the tenant itself, as from its shell (HOME is its home):
    a daemon it needs is autostarted by the CLI, as the tenant, without the panel's ids."""
    result = subprocess.run(
        [str(world_python()), "-m", "corral", *args],
        user=user.pw_uid,
        group=user.pw_gid,
        extra_groups=[],
        cwd=home,
        env={"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": str(home)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


@contextmanager
def own_daemon(
    user: pwd.struct_passwd, home: Path, env: dict[str, str]
) -> Iterator[subprocess.Popen[bytes]]:
    """A daemon the tenant starts by hand with `env`; ours to stop if it still runs."""
    proc = subprocess.Popen(
        [str(world_python()), "-m", "corral.core.daemon"],
        user=user.pw_uid,
        group=user.pw_gid,
        extra_groups=[],
        cwd=home,
        env=env,
        start_new_session=True,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:

        def answers() -> bool:
            assert proc.poll() is None, f"the daemon exited with {proc.returncode}"
            try:
                return bool(root_call(home, "ping")["pid"] == proc.pid)
            except OSError:
                return False

        wait_for(answers, timeout=60)
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()  # our child, not yet reaped: its pid cannot have been reused
        proc.wait()


def new_tenant(helper: HelperProcess, name: str) -> tuple[pwd.struct_passwd, Path]:
    helper.call("create_tenant", tenant=name)
    return pwd.getpwnam(name), helper.home(name)


def test_a_daemon_the_tenant_autostarted_is_replaced_and_its_apps_run_again(
    helper: HelperProcess, new_name: Callable[[], str]
) -> None:
    name = new_name()
    user, home = new_tenant(helper, name)
    first = helper.call("start_daemon", tenant=name, app_limit=4)
    root_call(home, "start", apps=[sleeper(home), sleeper(home, "idle")], cli_env={})
    root_call(home, "stop", target="idle")
    assert helper.call("stop_daemon", tenant=name) == {"stopped": True}

    listed = tenant_cli(user, home, "ls")
    assert "sleeper" in listed and "idle" in listed
    corral, sock = home / ".corral", home / ".corral" / "corral.sock"
    assert (mode_of(corral), mode_of(sock)) == (0o700, 0o600)
    own = root_call(home, "ping")
    assert own["pid"] != first["pid"] and own["panel_uid"] is None
    with pytest.raises(PermissionError):
        connect_as(helper.panel, sock)  # locked out, by the file modes
    own_fd = pidfd_of(own["pid"], user.pw_uid)
    try:
        started = helper.call("start_daemon", tenant=name, app_limit=4)
        assert exited(own_fd)  # stopped (kill over its socket) before the new one started
    finally:
        os.close(own_fd)

    assert started["started"] is True and started["pid"] != own["pid"]
    pid = started["pid"]
    raw_env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")[:-1]
    assert dict(item.decode().split("=", 1) for item in raw_env) == daemon_env(helper, name, 4)
    assert (mode_of(corral), mode_of(sock)) == (0o2750, 0o660)
    assert os.stat(sock).st_gid == helper.panel.pw_gid
    connect_as(helper.panel, sock).close()  # the panel's uid gets in again
    records = {r["name"]: r for r in root_call(home, "list")}
    assert records["sleeper"]["status"] == "online" and records["sleeper"]["pid"]
    assert records["idle"]["status"] == "stopped"  # stopped stays stopped
    assert pwd.getpwuid(os.stat(f"/proc/{records['sleeper']['pid']}").st_uid).pw_name == name

    entry = helper.audit()[-1]
    assert (entry["verb"], entry["tenant"], entry["result"]) == ("start_daemon", name, "ok")
    assert entry["detail"] == (
        f"daemon started (pid {pid}), app limit 4; replaced a daemon the tenant started "
        f"itself (pid {own['pid']}: its socket is 0600 with group {user.pw_gid}, not 0660 "
        f"with the panel's group {helper.panel.pw_gid})"
    )
    # Once proper, a second start leaves it alone.
    again = helper.call("start_daemon", tenant=name, app_limit=4)
    assert again == {**started, "started": False}
    assert "replaced" not in helper.audit()[-1]["detail"]


def test_a_daemon_the_tenant_started_with_the_panels_ids_is_kept(
    helper: HelperProcess, new_name: Callable[[], str]
) -> None:
    """What counts is whether the panel can use it, not who started it: with the panel's
    uid and group it is kept, and only gets the limit."""
    name = new_name()
    user, home = new_tenant(helper, name)
    with own_daemon(user, home, daemon_env(helper, name, -1)) as proc:
        started = helper.call("start_daemon", tenant=name, app_limit=2)
        assert started["started"] is False and started["pid"] == proc.pid
        assert proc.poll() is None
        assert root_call(home, "ping")["app_limit"] == 2
    assert "replaced" not in helper.audit()[-1]["detail"]


def test_a_daemon_that_admits_another_panel_uid_is_replaced(
    helper: HelperProcess, new_name: Callable[[], str]
) -> None:
    """Its socket is open to the panel's group, but it would refuse the panel's uid (and
    admit another): replaced all the same."""
    name = new_name()
    user, home = new_tenant(helper, name)
    other = 65534 if helper.panel.pw_uid != 65534 else 65533
    env = {**daemon_env(helper, name, -1), "CORRAL_PANEL_UID": str(other)}
    with own_daemon(user, home, env) as proc:
        assert mode_of(home / ".corral" / "corral.sock") == 0o660
        started = helper.call("start_daemon", tenant=name, app_limit=2)
        assert proc.wait(timeout=60) == 0  # it was stopped by the helper, and cleanly
    assert started["started"] is True and started["pid"] != proc.pid
    assert root_call(home, "ping")["panel_uid"] == helper.panel.pw_uid
    detail = helper.audit()[-1]["detail"]
    assert detail.endswith(
        f"replaced a daemon the tenant started itself (pid {proc.pid}: it admits panel uid "
        f"{other}, not {helper.panel.pw_uid})"
    )


def test_the_daemon_of_a_user_the_helper_did_not_create_is_never_touched(
    helpers: HelperFactory, helper: HelperProcess
) -> None:
    """A user with a home where a tenant's would be, running its own locked daemon there:
    start_daemon for its name is refused and its daemon and modes stay as they were."""
    name = helpers.name()
    home = helper.tenants_dir / name
    with temp_user("ct", home=home) as user:
        assert user.pw_name != name  # its own random name; the home is where `name`'s is
        tenant_cli(user, home, "ls")
        corral, sock = home / ".corral", home / ".corral" / "corral.sock"
        before = (mode_of(corral), mode_of(sock), os.stat(sock).st_ino)
        own = root_call(home, "ping")
        own_fd = pidfd_of(own["pid"], user.pw_uid)
        try:
            for tenant in (user.pw_name, name):
                error = helper.refused("start_daemon", tenant=tenant, app_limit=-1)
                assert error.code is ErrorCode.NOT_FOUND, error
            assert not exited(own_fd)
        finally:
            os.close(own_fd)
        assert root_call(home, "ping")["pid"] == own["pid"]
        assert (mode_of(corral), mode_of(sock), os.stat(sock).st_ino) == before
        assert before[:2] == (0o700, 0o600)
