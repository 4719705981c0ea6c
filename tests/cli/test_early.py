"""corral.cli.early: which command lines spawn the daemon before argparse, and which
homes may get a daemon before their config file is known to be good."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from corral.cli.early import holds_saved_apps, starts_config_file
from corral.paths import Home


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
    assert not holds_saved_apps(_home(tmp_path))


def test_a_state_file_without_apps(tmp_path: Path) -> None:
    home = _home(tmp_path)
    home.state.write_text(json.dumps({"apps": [], "next_id": 3}))
    assert not holds_saved_apps(home)


def test_a_state_file_with_apps(tmp_path: Path) -> None:
    home = _home(tmp_path)
    home.state.write_text(json.dumps({"apps": [{"name": "api"}]}))
    assert holds_saved_apps(home)


def test_a_large_state_file_is_not_read_and_counts_as_holding_apps(tmp_path: Path) -> None:
    home = _home(tmp_path)
    home.state.write_text(json.dumps({"apps": [], "pad": "x" * 2000}))
    assert holds_saved_apps(home)


@pytest.mark.parametrize("text", ["{not json", "[1, 2]", ""])
def test_an_unreadable_state_file_counts_as_holding_apps(tmp_path: Path, text: str) -> None:
    """Better to wait for a good config than to restore something by mistake."""
    home = _home(tmp_path)
    home.state.write_text(text)
    assert holds_saved_apps(home)
