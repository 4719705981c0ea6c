"""Per-app SSH deploy keys (ed25519) and the ssh command git uses with them."""

from __future__ import annotations

import os
import shlex

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from corral.deploy.files import write_atomic
from corral.deploy.layout import DeployLayout

SSH_PROGRAM_ENV = "CORRAL_DEPLOY_SSH"


def _clean_comment(comment: str) -> str:
    # one printable line without spaces: it ends the public key line
    cleaned = "".join(ch if ch.isprintable() and not ch.isspace() else "-" for ch in comment)
    return cleaned[:100] or "corral-deploy"


def ensure_key(layout: DeployLayout, comment: str) -> str:
    """The app's public key line, making the key pair first if missing (private half 0600)."""
    existing = public_key(layout)
    if existing is not None and layout.key.is_file():
        return existing
    layout.ensure()
    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    line = f"{public.decode()} {_clean_comment(comment)}"
    # private first: a public half on disk always has its private half
    write_atomic(layout.key, private, 0o600)
    write_atomic(layout.public_key, (line + "\n").encode(), 0o644)
    return line


def public_key(layout: DeployLayout) -> str | None:
    """The public key line, or None when the app has no deploy key."""
    try:
        fd = os.open(layout.public_key, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as handle:
        text = handle.read(4096).decode("ascii", "replace").strip()
    return text or None


def ssh_program() -> str:
    return os.environ.get(SSH_PROGRAM_ENV) or "ssh"


def ssh_command(layout: DeployLayout) -> str | None:
    """GIT_SSH_COMMAND using the app's key, or None when it has none."""
    if not layout.key.is_file():
        return None
    return _command(layout, with_key=True)


def base_ssh_command(layout: DeployLayout) -> str:
    """GIT_SSH_COMMAND for an app without a key: no user config, no agent keys, no prompts."""
    return _command(layout, with_key=False)


def _command(layout: DeployLayout, with_key: bool) -> str:
    argv = [ssh_program(), "-F", "/dev/null"]
    if with_key:
        argv += ["-i", str(layout.key), "-o", "IdentitiesOnly=yes"]
    argv += [
        "-o",
        "BatchMode=yes",
        "-o",
        "StrictHostKeyChecking=accept-new",
        "-o",
        f"UserKnownHostsFile={layout.known_hosts}",
    ]
    return shlex.join(argv)
