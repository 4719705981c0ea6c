"""Turn an app's configuration into the exact argv/env/cwd of one instance."""

from __future__ import annotations

import grp
import os
import pwd
from collections.abc import Mapping

from corral.config.model import AppConfig
from corral.core.environment import build_environment
from corral.core.osapi import LaunchSpec


def build_argv(config: AppConfig) -> list[str]:
    """The interpreter is left as a bare name when not absolute: exec resolves it on the
    child's own PATH (subprocess uses the env it is given for that lookup)."""
    if config.interpreter in (None, "none"):
        return [config.script, *config.args]
    return [config.interpreter, *config.interpreter_args, config.script, *config.args]


def working_directory(config: AppConfig) -> str:
    if config.cwd:
        return config.cwd
    if os.path.isabs(config.script):
        return os.path.dirname(config.script)
    return "/"


def check_identity(config: AppConfig) -> None:
    """Only a root daemon can run an app as another user or group: say so plainly."""
    if os.geteuid() == 0 or (config.user is None and config.group is None):
        return
    me = pwd.getpwuid(os.geteuid()).pw_name
    if config.user not in (None, me) or (
        config.group is not None and grp.getgrnam(config.group).gr_gid not in os.getgroups()
    ):
        raise ValueError("running an app as another user or group needs a daemon run by root")


def build_launch_spec(
    config: AppConfig,
    *,
    instance: int,
    cli_env: Mapping[str, str] | None,
    env_name: str | None,
    extra_env: Mapping[str, str] | None = None,
    secrets: Mapping[str, str] | None = None,
    listen_fds: tuple[int, ...] = (),
    listen_names: tuple[str, ...] = (),
) -> LaunchSpec:
    check_identity(config)
    env = build_environment(
        config, instance=instance, cli_env=cli_env, env_name=env_name, secrets=secrets
    )
    env.update(extra_env or {})  # NOTIFY_SOCKET, WATCHDOG_USEC: corral's own, last
    return LaunchSpec(
        argv=build_argv(config),
        env=env,
        cwd=working_directory(config),
        user=config.user,
        group=config.group,
        rlimits=dict(config.rlimits),
        umask=config.umask,
        listen_fds=listen_fds,
        listen_names=listen_names,
    )
