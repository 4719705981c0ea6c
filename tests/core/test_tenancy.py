"""Tenant mode (SPEC 2.2): the daemon's confinement read from its environment, and the
modes Home.ensure keeps or tightens."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from corral.core.tenancy import MAX_ID, TenancyError, TenantMode, parse_limit
from corral.paths import Home


def test_absent_means_as_before_and_unlimited() -> None:
    mode = TenantMode.from_env({})
    assert mode == TenantMode(panel_uid=None, panel_gid=None, app_limit=-1)


def test_good_values() -> None:
    env = {"CORRAL_PANEL_UID": "1001", "CORRAL_PANEL_GID": "1002", "CORRAL_APP_LIMIT": "3"}
    assert TenantMode.from_env(env) == TenantMode(panel_uid=1001, panel_gid=1002, app_limit=3)
    for raw, limit in (("-1", -1), ("0", 0), ("250", 250)):
        assert TenantMode.from_env({"CORRAL_APP_LIMIT": raw}).app_limit == limit
    assert TenantMode.from_env({"CORRAL_PANEL_UID": "0"}).panel_uid == 0
    assert TenantMode.from_env({"CORRAL_PANEL_GID": str(MAX_ID)}).panel_gid == MAX_ID


@pytest.mark.parametrize(
    ("env", "words"),
    [
        ({"CORRAL_APP_LIMIT": "three"}, ["CORRAL_APP_LIMIT='three'", "not a whole number"]),
        ({"CORRAL_APP_LIMIT": "1.5"}, ["CORRAL_APP_LIMIT='1.5'", "not a whole number"]),
        ({"CORRAL_APP_LIMIT": ""}, ["CORRAL_APP_LIMIT=''", "not a whole number"]),
        ({"CORRAL_APP_LIMIT": " 3"}, ["CORRAL_APP_LIMIT=' 3'", "not a whole number"]),
        ({"CORRAL_APP_LIMIT": "-2"}, ["CORRAL_APP_LIMIT", ">= -1", "-2"]),
        ({"CORRAL_PANEL_UID": "-5"}, ["CORRAL_PANEL_UID=-5", "not a valid id"]),
        ({"CORRAL_PANEL_UID": "panel"}, ["CORRAL_PANEL_UID='panel'", "not a whole number"]),
        ({"CORRAL_PANEL_GID": "-1"}, ["CORRAL_PANEL_GID=-1", "not a valid id"]),
        ({"CORRAL_PANEL_GID": str(2**32 - 1)}, ["CORRAL_PANEL_GID=4294967295", "valid id"]),
        ({"CORRAL_PANEL_GID": "9" * 40}, ["CORRAL_PANEL_GID=", "not a whole number"]),
    ],
)
def test_bad_values_name_the_variable_and_the_problem(
    env: dict[str, str], words: list[str]
) -> None:
    with pytest.raises(TenancyError) as caught:
        TenantMode.from_env(env)
    message = str(caught.value)
    assert "\n" not in message
    for word in words:
        assert word in message


def test_parse_limit_refuses_bools_strings_and_too_small() -> None:
    assert parse_limit(-1, "'limit'") == -1
    assert parse_limit(7, "'limit'") == 7
    for bad in (True, "3", 2.0, None, -2):
        with pytest.raises(TenancyError, match="'limit' must be a whole number >= -1"):
            parse_limit(bad, "'limit'")


def test_who_may_connect_and_who_may_set_the_limit() -> None:
    plain = TenantMode()
    assert plain.may_connect(1234, own_uid=1234) and plain.may_connect(0, own_uid=1234)
    assert not plain.may_connect(4321, own_uid=1234)
    tenant = TenantMode(panel_uid=999, panel_gid=999, app_limit=2)
    assert tenant.may_connect(999, own_uid=1234) and tenant.may_connect(1234, own_uid=1234)
    assert not tenant.may_connect(4321, own_uid=1234)
    assert tenant.may_set_limit(0) and tenant.may_set_limit(999)
    assert not tenant.may_set_limit(1234) and not tenant.may_set_limit(None)
    assert not plain.may_set_limit(1234)  # no panel: root only


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_ensure_keeps_group_rx_and_setgid_of_the_panels_group(tmp_path: Path) -> None:
    home = Home(tmp_path / ".corral")
    home.root.mkdir()
    os.chmod(home.root, 0o2750)
    home.ensure(panel_gid=home.root.stat().st_gid)
    assert _mode(home.root) == 0o2750
    assert _mode(home.logs) == 0o700


@pytest.mark.parametrize(("before", "after"), [(0o2770, 0o2750), (0o757, 0o750), (0o2777, 0o2750)])
def test_ensure_removes_group_write_and_other_bits_even_for_the_panel(
    tmp_path: Path, before: int, after: int
) -> None:
    home = Home(tmp_path / ".corral")
    home.root.mkdir()
    os.chmod(home.root, before)
    home.ensure(panel_gid=home.root.stat().st_gid)
    assert _mode(home.root) == after


def test_ensure_tightens_a_home_of_another_group_to_0700(tmp_path: Path) -> None:
    home = Home(tmp_path / ".corral")
    home.root.mkdir()
    os.chmod(home.root, 0o2750)
    home.ensure(panel_gid=home.root.stat().st_gid + 1)
    assert _mode(home.root) == 0o700
    os.chmod(home.root, 0o750)
    home.ensure()  # no tenant mode: as before
    assert _mode(home.root) == 0o700


def test_ensure_tightens_an_open_logs_folder(tmp_path: Path) -> None:
    home = Home(tmp_path / ".corral")
    home.logs.mkdir(parents=True)
    os.chmod(home.root, 0o700)
    os.chmod(home.logs, 0o755)
    home.ensure(panel_gid=home.root.stat().st_gid)
    assert _mode(home.logs) == 0o700
    assert _mode(home.root) == 0o700  # nothing is ever opened up
