"""The child's whole environment, computed by the daemon and handed to execve (SPEC 1.5).

Nothing is set inside the child after it started, so variables read at interpreter
start-up (NODE_EXTRA_CA_CERTS, NODE_OPTIONS, SSL_CERT_FILE, PYTHONPATH, ...) work in every
mode. The daemon's own environment is never inherited.
"""

from __future__ import annotations

import os
import pwd
from collections.abc import Mapping

from corral.config.model import AppConfig

NODE_INTERPRETERS = frozenset({"node", "nodejs", "bun", "deno"})


def is_node_app(config: AppConfig) -> bool:
    return os.path.basename(config.interpreter or "") in NODE_INTERPRETERS


def build_environment(
    config: AppConfig,
    *,
    instance: int,
    cli_env: Mapping[str, str] | None,
    env_name: str | None,
    secrets: Mapping[str, str] | None = None,
    venv: str | None = None,
) -> dict[str, str]:
    """Merge, in order: the CLI's environment, `env`, `env_<env_name>`, the app's secrets
    (decrypted by the caller, SPEC 3), then corral's own. `venv` (a git app's release
    venv) sets VIRTUAL_ENV and goes first on PATH.

    Raises ValueError when `increment_var` names a variable that is not an integer.
    """
    env: dict[str, str] = dict(cli_env or {})
    env.update(config.env)
    if env_name is not None:
        env.update(config.env_profiles.get(env_name, {}))
    env.update(secrets or {})

    env["CORRAL_APP"] = config.name
    env["CORRAL_INSTANCE"] = str(instance)
    if is_node_app(config):
        env[config.instance_var] = str(instance)
    if config.port is not None:
        env["PORT"] = str(config.port)
    if config.increment_var:
        _increment(env, config.increment_var, instance)
    if config.user is not None:
        _set_user_vars(env, config.user)
    env.setdefault("PATH", os.defpath)
    if venv is not None:
        env["VIRTUAL_ENV"] = venv
        env["PATH"] = os.path.join(venv, "bin") + os.pathsep + env["PATH"]
    return env


def _increment(env: dict[str, str], name: str, instance: int) -> None:
    raw = env.get(name, "0")
    try:
        base = int(raw)
    except ValueError:
        raise ValueError(f"increment_var {name}={raw!r} is not an integer") from None
    env[name] = str(base + instance)


def _set_user_vars(env: dict[str, str], user: str) -> None:
    try:
        entry = pwd.getpwnam(user)
    except KeyError:
        raise ValueError(f"unknown user {user!r}") from None
    env["HOME"] = entry.pw_dir
    env["USER"] = entry.pw_name
    env["LOGNAME"] = entry.pw_name
