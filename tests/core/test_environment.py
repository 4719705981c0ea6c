"""The environment built for execve (SPEC 1.5), without processes."""

from __future__ import annotations

import pytest

from corral.config.model import AppConfig
from corral.core.environment import build_environment


def test_node_apps_get_node_app_instance_and_instance_var_renames_it() -> None:
    node = AppConfig(name="api", script="/srv/app.js", interpreter="node")
    env = build_environment(node, instance=3, cli_env={}, env_name=None)
    assert env["NODE_APP_INSTANCE"] == "3" and env["CORRAL_INSTANCE"] == "3"
    renamed = AppConfig(name="api", script="/srv/app.js", interpreter="node", instance_var="WID")
    env = build_environment(renamed, instance=1, cli_env={}, env_name=None)
    assert env["WID"] == "1" and "NODE_APP_INSTANCE" not in env
    python = AppConfig(name="api", script="/srv/app.py", interpreter="python3")
    assert "NODE_APP_INSTANCE" not in build_environment(
        python, instance=0, cli_env={}, env_name=None
    )


def test_merge_order_cli_then_env_then_profile() -> None:
    cfg = AppConfig(
        name="api",
        script="/srv/app.py",
        env={"A": "env", "B": "env"},
        env_profiles={"prod": {"B": "prod"}},
    )
    env = build_environment(cfg, instance=0, cli_env={"A": "cli", "C": "cli"}, env_name="prod")
    assert (env["A"], env["B"], env["C"]) == ("env", "prod", "cli")


def test_no_cli_env_at_all_with_filter_env() -> None:
    cfg = AppConfig(name="api", script="/srv/app.py")
    env = build_environment(cfg, instance=0, cli_env=None, env_name=None)
    assert set(env) == {"CORRAL_APP", "CORRAL_INSTANCE", "PATH"}


def test_increment_var_must_be_an_integer() -> None:
    cfg = AppConfig(name="api", script="/srv/app.py", env={"PORT": "x"}, increment_var="PORT")
    with pytest.raises(ValueError, match="increment_var"):
        build_environment(cfg, instance=1, cli_env={}, env_name=None)
