"""Hardened git invocations: argv only, no user or system config, https and ssh only.

The URL and branch are checked again here, right before git sees them, so no caller can
skip the checks.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from corral.deploy import keys
from corral.deploy.layout import DeployLayout
from corral.deploy.source import check_branch, check_repo_url

_DROPPED = ("GIT_ASKPASS", "SSH_ASKPASS", "SSH_AUTH_SOCK")
_PROTOCOLS = (
    "-c",
    "protocol.allow=never",
    "-c",
    "protocol.https.allow=always",
    "-c",
    "protocol.ssh.allow=always",
)


def git_env(base: Mapping[str, str], layout: DeployLayout) -> dict[str, str]:
    """The environment of every git command: `base` without GIT_* and askpass helpers."""
    env = {
        key: value
        for key, value in base.items()
        if not key.startswith("GIT_") and key not in _DROPPED
    }
    env.update(
        GIT_TERMINAL_PROMPT="0",
        GIT_CONFIG_NOSYSTEM="1",
        GIT_CONFIG_GLOBAL="/dev/null",
        GIT_ALLOW_PROTOCOL="https:ssh",
        HOME=str(layout.scratch),
        GIT_SSH_COMMAND=keys.ssh_command(layout) or keys.base_ssh_command(layout),
        LC_ALL="C",
    )
    return env


def git_argv(base: Mapping[str, str], *args: str) -> list[str]:
    """["git", <hardening -c options>, *args]; a CA file from the env is passed explicitly."""
    argv = ["git", *_PROTOCOLS]
    argv += ["-c", "credential.helper=", "-c", "core.askPass="]
    ca_file = base.get("GIT_SSL_CAINFO") or base.get("SSL_CERT_FILE")
    if ca_file:
        argv += ["-c", f"http.sslCAInfo={ca_file}"]
    return [*argv, *args]


def fetch_argv(base: Mapping[str, str], cache: Path, url: str, branch: str) -> list[str]:
    """Fetch every branch and tag of `url` into the bare cache (so --ref can name any)."""
    check_repo_url(url)
    check_branch(branch)
    return git_argv(
        base,
        "-C",
        str(cache),
        "fetch",
        "--quiet",
        "--prune",
        "--force",
        "--no-tags",
        "--no-recurse-submodules",
        "--",
        url,
        "+refs/heads/*:refs/heads/*",
        "+refs/tags/*:refs/tags/*",
    )
