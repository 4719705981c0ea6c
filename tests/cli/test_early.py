"""corral.cli.early: which command lines spawn the daemon before argparse, and which
homes may get a daemon before their config file is known to be good (the rest is the
start verb's to deal with, and say)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from corral.cli.early import holds_saved_apps, spawn_before_parsing, starts_config_file
from corral.paths import Home

from ..conftest import Corral, wait_for


@pytest.mark.parametrize(
    "args",
    [
        ["start", "corral.yaml"],
        ["start", "ecosystem.config.js"],
        ["start", "deploy/Procfile"],
        ["start", "/srv/app/apps.json"],
    ],
)
def test_start_of_a_config_file(args: list[str]) -> None:
    assert starts_config_file(args)


@pytest.mark.parametrize(
    "args",
    [
        [],
        ["start"],
        ["start", "app.py"],  # a script: a new app, not a config file
        ["start", "--help"],
        ["start", "-f", "corral.yaml"],  # flags go through argparse first
        ["start", "corral.yaml", "--only", "api"],
        ["restart", "corral.yaml"],
        ["stop", "corral.yaml"],
    ],
)
def test_anything_else_waits_for_argparse(args: list[str]) -> None:
    assert not starts_config_file(args)


def _home(tmp_path: Path) -> Home:
    home = Home(tmp_path / "home")
    home.root.mkdir()
    return home


def test_a_new_home_holds_no_saved_apps(tmp_path: Path) -> None:
    assert not holds_saved_apps(_home(tmp_path).state)


def test_a_state_file_without_apps(tmp_path: Path) -> None:
    home = _home(tmp_path)
    home.state.write_text(json.dumps({"apps": [], "next_id": 3}))
    assert not holds_saved_apps(home.state)


def test_a_state_file_with_apps(tmp_path: Path) -> None:
    home = _home(tmp_path)
    home.state.write_text(json.dumps({"apps": [{"name": "api"}]}))
    assert holds_saved_apps(home.state)


def test_a_large_state_file_is_not_read_and_counts_as_holding_apps(tmp_path: Path) -> None:
    home = _home(tmp_path)
    home.state.write_text(json.dumps({"apps": [], "pad": "x" * 2000}))
    assert holds_saved_apps(home.state)


@pytest.mark.parametrize("text", ["{not json", "[1, 2]", ""])
def test_an_unreadable_state_file_counts_as_holding_apps(tmp_path: Path, text: str) -> None:
    """Better to wait for a good config than to restore something by mistake."""
    home = _home(tmp_path)
    home.state.write_text(text)
    assert holds_saved_apps(home.state)


def test_a_fresh_home_gets_its_daemon_before_parsing(
    corral: Corral, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CORRAL_HOME", str(corral.home.root))
    early = spawn_before_parsing(["start", "corral.yaml"])
    assert early is not None and early.client is None and early.starting is not None
    proc = early.starting
    try:
        wait_for(corral.home.socket.exists)
        corral._remember_daemon()
        assert corral.daemon_pid() == proc.pid
        assert corral.home.root.stat().st_mode & 0o777 == 0o700
    finally:
        corral.shutdown()
        proc.wait(10)


def _never_spawns(args: list[str]) -> None:
    assert spawn_before_parsing(args) is None


def test_only_start_of_a_config_file_spawns_early(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CORRAL_HOME", str(tmp_path / "home"))
    for args in (["start", "app.py"], ["start", "-f", "corral.yaml"], ["ls"]):
        _never_spawns(args)
    assert not (tmp_path / "home").exists()


def test_a_home_that_may_have_a_daemon_is_left_to_the_verb(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A socket file: a daemon may listen there (or one that died left it); the start
    verb connects, or spawns one after the failed connect."""
    home = _home(tmp_path)
    home.socket.write_text("")
    monkeypatch.setenv("CORRAL_HOME", str(home.root))
    _never_spawns(["start", "corral.yaml"])


def test_a_home_with_saved_apps_is_left_to_the_verb(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = _home(tmp_path)
    home.state.write_text(json.dumps({"apps": [{"name": "api"}]}))
    monkeypatch.setenv("CORRAL_HOME", str(home.root))
    _never_spawns(["start", "corral.yaml"])


def test_a_home_with_a_problem_is_left_to_the_verb_which_says_what_it_is(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "file").write_text("")
    monkeypatch.setenv("CORRAL_HOME", str(tmp_path / "file" / "home"))  # cannot be made
    _never_spawns(["start", "corral.yaml"])
    monkeypatch.setenv("CORRAL_HOME", str(tmp_path / ("h" * 100)))  # socket path too long
    _never_spawns(["start", "corral.yaml"])
    assert not (tmp_path / ("h" * 100)).exists()
