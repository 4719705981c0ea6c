"""Turn an app's configuration into the exact argv/env/cwd of one instance."""

from __future__ import annotations

import dataclasses
import grp
import os
import pwd
from collections.abc import Mapping
from pathlib import Path

from corral.config.model import AppConfig
from corral.config.schema import EXTENSION_INTERPRETERS
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


def release_dir(deploys_root: Path, name: str) -> str | None:
    """The real folder of a git app's current release, or None when it has none yet.

    Resolved at each launch: an instance started after a deploy runs the new release, and
    one started before keeps its own folder (its cwd, sys.path and venv) to the end."""
    try:
        path = os.path.realpath(deploys_root / name / "current", strict=True)
    except OSError:
        return None
    return path if os.path.isdir(path) else None


def no_release_message(name: str) -> str:
    return f"{name} has no release yet: run `corral deploy {name}`"


def in_release(config: AppConfig, release: str) -> tuple[AppConfig, str | None]:
    """A git app's config with cwd, script and interpreter inside `release`, and the
    release's venv if it has one. A bare program name (no '/', no such file in the
    release) stays a name: exec finds it on PATH, the venv's bin first."""
    cwd = os.path.normpath(os.path.join(release, config.cwd or ""))
    script = config.script
    if not os.path.isabs(script) and ("/" in script or os.path.exists(os.path.join(cwd, script))):
        script = os.path.join(cwd, script)
    venv = os.path.join(release, ".venv")
    venv_python = os.path.join(venv, "bin", "python")
    has_venv = os.access(venv_python, os.X_OK)
    interpreter = config.interpreter
    if interpreter is None:
        ext = os.path.splitext(script)[1].lower()
        if ext == ".py" and has_venv:
            interpreter = venv_python
        else:
            interpreter = EXTENSION_INTERPRETERS.get(ext, "none")
    elif interpreter != "none" and "/" in interpreter and not os.path.isabs(interpreter):
        interpreter = os.path.join(cwd, interpreter)
    changed = dataclasses.replace(config, cwd=cwd, script=script, interpreter=interpreter)
    return changed, venv if has_venv else None


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
    release: str | None = None,
) -> LaunchSpec:
    """`release`: the resolved current release of a git app (`release_dir`)."""
    check_identity(config)
    venv = None
    if config.git is not None:
        if release is None:
            raise ValueError(no_release_message(config.name))
        config, venv = in_release(config, release)
    env = build_environment(
        config, instance=instance, cli_env=cli_env, env_name=env_name, secrets=secrets, venv=venv
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
