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


def test_secrets_come_after_the_profile_and_before_corral_s_own() -> None:
    cfg = AppConfig(
        name="api",
        script="/srv/app.py",
        env={"A": "env", "B": "env", "C": "env"},
        env_profiles={"prod": {"B": "prod", "C": "prod"}},
        port=8000,
    )
    env = build_environment(
        cfg,
        instance=2,
        cli_env={"A": "cli", "D": "cli"},
        env_name="prod",
        secrets={"C": "secret", "D": "secret", "CORRAL_INSTANCE": "x", "PORT": "1"},
    )
    assert (env["A"], env["B"], env["C"], env["D"]) == ("env", "prod", "secret", "secret")
    # corral's own variables are set last: a secret cannot fake them.
    assert (env["CORRAL_INSTANCE"], env["PORT"]) == ("2", "8000")


def test_no_secrets_changes_nothing() -> None:
    cfg = AppConfig(name="api", script="/srv/app.py", env={"A": "1"})
    plain = build_environment(cfg, instance=0, cli_env={}, env_name=None)
    assert build_environment(cfg, instance=0, cli_env={}, env_name=None, secrets={}) == plain


def test_increment_var_may_count_from_a_secret() -> None:
    cfg = AppConfig(name="api", script="/srv/app.py", increment_var="BASE")
    env = build_environment(cfg, instance=3, cli_env={}, env_name=None, secrets={"BASE": "10"})
    assert env["BASE"] == "13"
