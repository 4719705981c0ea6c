"""`corral startup` / `unstartup`: the systemd unit, written only under tmp_path."""

from __future__ import annotations

import getpass
import shutil
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from corral.cli import startup
from corral.cli.startup import (
    StartupError,
    install_unit,
    remove_unit,
    render_unit,
    unit_path,
)

DAEMON = ["/usr/bin/python3", "-m", "corral.core.daemon"]


def lines(text: str) -> list[str]:
    return text.splitlines()


def test_user_unit() -> None:
    text = render_unit(
        corral_argv=DAEMON, home=Path("/home/alice/.corral"), user="alice", system=False
    )
    assert "ExecStart=/usr/bin/python3 -m corral.core.daemon" in lines(text)
    assert "Environment=CORRAL_HOME=/home/alice/.corral" in lines(text)
    assert "WantedBy=default.target" in lines(text)
    assert "KillMode=mixed" in lines(text)
    assert "Restart=on-failure" in lines(text)
    assert "TimeoutStopSec=30" in lines(text)
    assert not any(line.startswith("User=") for line in lines(text))
    # Only CORRAL_HOME: the CLI's environment never ends up in a world-readable unit.
    assert [line for line in lines(text) if line.startswith("Environment")] == [
        "Environment=CORRAL_HOME=/home/alice/.corral"
    ]
    assert not any(line.startswith("ExecStop") for line in lines(text))


def test_system_unit() -> None:
    text = render_unit(
        corral_argv=DAEMON, home=Path("/srv/bob/.corral"), user="bob", system=True, stop_timeout=90
    )
    assert "User=bob" in lines(text)
    assert "Environment=CORRAL_HOME=/srv/bob/.corral" in lines(text)
    assert "WantedBy=multi-user.target" in lines(text)
    assert "TimeoutStopSec=90" in lines(text)
    assert "After=network-online.target" in lines(text)


def test_quoting_for_systemd() -> None:
    text = render_unit(
        corral_argv=[
            "/opt/my venv/bin/python",
            "-m",
            "corral.core.daemon",
            "100%",
            "$HOME",
            'a"b\\',
        ],
        home=Path("/home/al ice/50%/.corral"),
        user="alice",
        system=False,
    )
    assert (
        'ExecStart="/opt/my venv/bin/python" -m corral.core.daemon 100%% $$HOME "a\\"b\\\\"'
        in lines(text)
    )
    assert 'Environment="CORRAL_HOME=/home/al ice/50%%/.corral"' in lines(text)


def test_newline_in_path_cannot_inject_a_setting() -> None:
    text = render_unit(
        corral_argv=DAEMON,
        home=Path("/tmp/x\nExecStartPre=/bin/evil"),
        user="alice",
        system=False,
    )
    assert not any(line.startswith("ExecStartPre") for line in lines(text))
    assert 'Environment="CORRAL_HOME=/tmp/x\\x0aExecStartPre=/bin/evil"' in lines(text)


@pytest.mark.parametrize("argv", [[], ["python3", "-m", "corral.core.daemon"]])
def test_daemon_command_must_be_absolute(argv: list[str]) -> None:
    with pytest.raises(StartupError, match="absolute path"):
        render_unit(corral_argv=argv, home=Path("/h"), user="alice", system=False)


@pytest.mark.parametrize("user", ["", "a b", "x\ny", "../etc", "al@ice"])
def test_odd_user_names_are_refused(user: str) -> None:
    with pytest.raises(StartupError, match="user name"):
        render_unit(corral_argv=DAEMON, home=Path("/h"), user=user, system=True)


def test_unit_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "cfg"))
    assert unit_path(system=False, user="alice", unit_dir=None) == (
        tmp_path / "cfg" / "systemd" / "user" / "corral.service"
    )
    monkeypatch.setenv("XDG_CONFIG_HOME", "relative/ignored")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert unit_path(system=False, user="alice", unit_dir=None) == (
        tmp_path / "home" / ".config" / "systemd" / "user" / "corral.service"
    )
    assert unit_path(system=True, user="bob", unit_dir=None) == Path(
        "/etc/systemd/system/corral-bob.service"
    )
    assert unit_path(system=True, user="bob", unit_dir=tmp_path) == tmp_path / "corral-bob.service"
    assert unit_path(system=False, user="bob", unit_dir=tmp_path) == tmp_path / "corral.service"


def test_install_and_remove_with_unit_dir(tmp_path: Path) -> None:
    unit_dir = tmp_path / "units"
    result = install_unit(
        corral_argv=DAEMON, home=tmp_path / "home", user="carol", system=True, unit_dir=unit_dir
    )
    assert result.path == unit_dir / "corral-carol.service"
    assert not result.ran
    assert result.commands == [
        ["systemctl", "daemon-reload"],
        ["systemctl", "enable", "corral-carol.service"],
    ]
    assert stat.S_IMODE(result.path.stat().st_mode) == 0o644
    assert "User=carol" in lines(result.path.read_text())
    assert f"Environment=CORRAL_HOME={tmp_path / 'home'}" in lines(result.path.read_text())

    # Installing again rewrites the unit in place.
    install_unit(
        corral_argv=DAEMON, home=tmp_path / "h2", user="carol", system=True, unit_dir=unit_dir
    )
    assert f"Environment=CORRAL_HOME={tmp_path / 'h2'}" in lines(result.path.read_text())
    assert sorted(p.name for p in unit_dir.iterdir()) == ["corral-carol.service"]

    removed = remove_unit(system=True, user="carol", unit_dir=unit_dir)
    assert removed.removed
    assert not removed.ran
    assert removed.commands == [
        ["systemctl", "disable", "corral-carol.service"],
        ["systemctl", "daemon-reload"],
    ]
    assert not result.path.exists()

    again = remove_unit(system=True, user="carol", unit_dir=unit_dir)
    assert not again.removed
    assert again.commands == []


def test_user_unit_suggests_lingering(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(startup, "LINGER_DIR", tmp_path / "linger")
    result = install_unit(
        corral_argv=DAEMON, home=tmp_path / "h", user="dave", system=False, unit_dir=tmp_path
    )
    assert result.commands[1] == ["systemctl", "--user", "enable", "corral.service"]
    assert any("loginctl enable-linger dave" in note for note in result.notes)
    (tmp_path / "linger").mkdir()
    (tmp_path / "linger" / "dave").touch()
    result = install_unit(
        corral_argv=DAEMON, home=tmp_path / "h", user="dave", system=False, unit_dir=tmp_path
    )
    assert result.notes == []


class FakeSystemctl:
    def __init__(self, fail_on: str | None = None) -> None:
        self.calls: list[list[str]] = []
        self.fail_on = fail_on

    def __call__(self, argv: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        assert kwargs["timeout"] > 0
        assert "shell" not in kwargs
        self.calls.append(argv)
        code = 1 if self.fail_on in argv else 0
        return subprocess.CompletedProcess(argv, code, "", "Failed to connect to bus")


@pytest.fixture
def fake_systemd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeSystemctl:
    """systemd "running", the user unit folder under tmp_path, systemctl recorded."""
    (tmp_path / "run-systemd").mkdir()
    monkeypatch.setattr(startup, "SYSTEMD_RUNNING", tmp_path / "run-systemd")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "cfg"))
    fake = FakeSystemctl()
    monkeypatch.setattr(subprocess, "run", fake)
    return fake


def test_enables_when_systemd_runs(tmp_path: Path, fake_systemd: FakeSystemctl) -> None:
    result = install_unit(corral_argv=DAEMON, home=tmp_path / "h", user="erin", system=False)
    assert result.ran
    assert result.path == tmp_path / "cfg" / "systemd" / "user" / "corral.service"
    assert fake_systemd.calls == [
        ["systemctl", "--user", "daemon-reload"],
        ["systemctl", "--user", "enable", "corral.service"],
    ]
    fake_systemd.calls.clear()
    removed = remove_unit(system=False, user="erin")
    assert removed.removed and removed.ran
    assert fake_systemd.calls == [
        ["systemctl", "--user", "disable", "corral.service"],
        ["systemctl", "--user", "daemon-reload"],
    ]
    assert not result.path.exists()


def test_failed_systemctl_is_reported(tmp_path: Path, fake_systemd: FakeSystemctl) -> None:
    fake_systemd.fail_on = "enable"
    with pytest.raises(StartupError, match=r"enable corral\.service` failed: Failed to connect"):
        install_unit(corral_argv=DAEMON, home=tmp_path / "h", user="erin", system=False)
    fake_systemd.fail_on = "disable"
    with pytest.raises(StartupError, match="disable"):
        remove_unit(system=False, user="erin")
    # A failed disable keeps the unit, so that it can be retried.
    assert unit_path(system=False, user="erin", unit_dir=None).exists()


def test_unit_dir_never_runs_systemctl(tmp_path: Path, fake_systemd: FakeSystemctl) -> None:
    result = install_unit(
        corral_argv=DAEMON, home=tmp_path / "h", user="erin", system=False, unit_dir=tmp_path
    )
    assert not result.ran
    assert fake_systemd.calls == []


def test_unwritable_folder(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.touch()
    with pytest.raises(StartupError, match="cannot write"):
        install_unit(
            corral_argv=DAEMON, home=tmp_path, user="erin", system=False, unit_dir=blocker / "x"
        )


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="needs systemd-analyze")
def test_systemd_accepts_the_unit(tmp_path: Path) -> None:
    spaced = tmp_path / "my venv"
    spaced.mkdir()
    (spaced / "python").symlink_to(sys.executable)
    result = install_unit(
        corral_argv=[str(spaced / "python"), "-m", "corral.core.daemon"],
        home=tmp_path / "a home" / "50%",
        user=getpass.getuser(),
        system=True,
        unit_dir=tmp_path / "units",
    )
    done = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", str(result.path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
