"""`corral helper` start-up: every unusable setting is one line on stderr and exit status 2,
before the socket exists; SIGTERM ends it cleanly (as root; skipped otherwise)."""

from __future__ import annotations

import os
import pwd
import signal
import socket
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import read_text
from tests.support.otheruid import temp_user, world_python

from .conftest import CORRAL, HelperFactory, HelperProcess, exited, helper_command, pidfd_of

pytestmark = [pytest.mark.root, pytest.mark.slow]


class Dirs:
    def __init__(self, helpers: HelperFactory) -> None:
        self.sock = helpers.dir() / "h.sock"
        self.tenants = helpers.dir()
        self.state = helpers.dir() / "state"
        self.panel = helpers.panel.pw_name

    def command(self, **changes: object) -> list[str]:
        values = {
            "panel": self.panel,
            "sock": self.sock,
            "tenants_dir": self.tenants,
            "state_dir": self.state,
            "python": world_python(),
            **changes,
        }
        return helper_command(**values)  # type: ignore[arg-type]


@pytest.fixture
def dirs(helpers: HelperFactory) -> Dirs:
    return Dirs(helpers)


def refused_start(argv: list[str], user: pwd.struct_passwd | None = None) -> str:
    """Run the helper expecting a refusal: exit 2 and one line on stderr, returned."""
    result = subprocess.run(
        argv,
        capture_output=True,
        text=True,
        timeout=120,
        user=user.pw_uid if user else None,
        group=user.pw_gid if user else None,
        extra_groups=[] if user else None,
        cwd="/",
        check=False,
    )
    assert result.returncode == 2, (result.returncode, result.stderr)
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("corral helper: "), result.stderr
    return lines[0]


def test_it_refuses_to_run_as_anyone_but_root(dirs: Dirs) -> None:
    with temp_user("ctx") as user:
        argv = [str(world_python()), "-m", "corral", *dirs.command()[1:]]
        assert "must run as root" in refused_start(argv, user)
    assert not dirs.sock.exists()


def test_help_works_for_anyone() -> None:
    result = subprocess.run(
        [str(CORRAL), "helper", "--help"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0 and "--panel-user" in result.stdout


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda d: {"panel": "ctnosuchuser"}, "no such user 'ctnosuchuser'"),
        (lambda d: {"panel": "root"}, "must not be root"),
        (lambda d: {"tenants_dir": Path("relative")}, "--tenants-dir"),
        (lambda d: {"tenants_dir": d.tenants / ("x" * 60)}, "too long"),
        (lambda d: {"sock": d.tenants / ("s" * 120)}, "longer than 107 bytes"),
        (lambda d: {"sock": Path("/tmp/ctsock.sock")}, "--socket: /tmp must be owned by root"),
        (lambda d: {"python": d.tenants / "nopython"}, "--python"),
    ],
)
def test_bad_settings_are_one_line_and_exit_2(
    dirs: Dirs, change: Callable[[Dirs], dict[str, object]], expected: str
) -> None:
    assert expected in refused_start(dirs.command(**change(dirs)))
    assert not dirs.sock.exists()


def test_the_repos_own_interpreter_is_refused_when_tenants_cannot_run_it(dirs: Dirs) -> None:
    # The venv's python lives under /root (0700) here: a tenant daemon could never start.
    venv_python = Path(CORRAL).parent / "python"
    line = refused_start(dirs.command(python=venv_python))
    assert "--python" in line and "tenants cannot run" in line


def test_folders_others_can_write_are_refused(dirs: Dirs) -> None:
    dirs.tenants.chmod(0o777)
    assert "--tenants-dir" in refused_start(dirs.command())
    dirs.tenants.chmod(0o755)
    dirs.state.mkdir()
    os.chown(dirs.state, 1, -1)
    assert "--state-dir" in refused_start(dirs.command())
    dirs.state.rmdir()
    dirs.sock.parent.chmod(0o775)
    assert "--socket" in refused_start(dirs.command())
    dirs.sock.parent.chmod(0o755)


def test_a_state_dir_that_is_a_file_or_a_symlink_is_refused(dirs: Dirs) -> None:
    dirs.state.write_text("")
    assert "not a directory" in refused_start(dirs.command())
    dirs.state.unlink()
    dirs.state.symlink_to(dirs.tenants)
    assert "symbolic link" in refused_start(dirs.command())


def test_a_corrupt_registry_is_refused(dirs: Dirs) -> None:
    dirs.state.mkdir(mode=0o700)
    (dirs.state / "tenants.json").write_text('{"version": 1, "tenants": [{"tenant": "../x"}]}')
    assert "tenants.json" in refused_start(dirs.command())


def test_a_socket_path_that_is_a_file_or_a_live_helper_is_refused(
    dirs: Dirs, helper: HelperProcess
) -> None:
    dirs.sock.write_text("not a socket")
    assert "not a socket" in refused_start(dirs.command())
    line = refused_start(dirs.command(sock=helper.socket))
    assert "already listening" in line
    helper.assert_serving()


def test_a_panel_whose_group_is_shared_is_refused(dirs: Dirs, helpers: HelperFactory) -> None:
    with temp_user("ctx") as other:
        group = helpers.panel.pw_gid
        subprocess.run(
            ["usermod", "-a", "-G", str(group), other.pw_name], check=True, capture_output=True
        )
        line = refused_start(dirs.command())
        assert "shared with" in line and other.pw_name in line


def test_sigterm_removes_the_socket_and_exits_0_and_a_stale_socket_is_replaced(
    helpers: HelperFactory, new_name: Callable[[], str]
) -> None:
    helper = helpers.start()
    assert "listening on" in read_text(helper.log)
    name = new_name()
    helper.call("create_tenant", tenant=name)
    started = helper.call("start_daemon", tenant=name, app_limit=-1)
    daemon_fd = pidfd_of(started["pid"], pwd.getpwnam(name).pw_uid)
    try:
        assert helper.stop() == 0
        assert not helper.socket.exists()
        assert not exited(daemon_fd)
    finally:
        os.close(daemon_fd)

    # A helper killed outright leaves its socket: the next one replaces it.
    again = helpers.start(state_dir=helper.state_dir, tenants_dir=helper.tenants_dir)
    again.proc.send_signal(signal.SIGKILL)
    again.proc.wait()
    assert again.socket.exists()
    with socket.socket(socket.AF_UNIX) as probe, pytest.raises(ConnectionRefusedError):
        probe.connect(str(again.socket))
    third = helpers.start(
        state_dir=helper.state_dir, tenants_dir=helper.tenants_dir, sock=again.socket
    )
    assert third.call("stop_daemon", tenant=name) == {"stopped": True}
