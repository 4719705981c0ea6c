"""`corral link`, `corral unlink` and `corral set agent.password` (the CLI side).

The secret is turned into the bucket's derived keys here, in the CLI process: the daemon
only receives those. The agent password is turned into its verifier here too (argon2id):
the daemon never receives the password.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
from typing import TYPE_CHECKING, Any

from corral.agent.state import LinkError, check_hub_url
from corral.protocol.hub.errors import HubProtocolError

if TYPE_CHECKING:
    from corral.cli.commands import Context

PASSWORD_IN_ARGV = (
    "the agent password is never taken from the command line, where `ps` and the shell's "
    "history would show it: run `corral set agent.password` and type it at the prompt, or "
    'give it on stdin; `corral set agent.password ""` removes it'
)


def _error(message: str, status: int = 1) -> Exception:
    from corral.cli.commands import CliError

    return CliError(message, status)


def _read_secret(ctx: Context, what: str) -> str:
    from corral.cli.commands import read_secret_value

    return read_secret_value(ctx.stdin, ctx.ask_hidden, what)


def cmd_link(ctx: Context, ns: argparse.Namespace) -> int:
    if ns.info:
        if ns.public or ns.secret or ns.hub or ns.ca_file:
            raise _error("link --info takes no other argument", 2)
        return _show(ctx, ctx.call("link_info"), as_json=ns.json)
    if not ns.public or not ns.secret or not ns.hub:
        raise _error("usage: corral link PUBLIC SECRET --hub URL [--ca-file FILE]", 2)
    from corral.protocol.hub.keys import check_public_id, check_secret, derive_bucket_keys

    try:
        public_id = check_public_id(ns.public)
        secret = _read_secret(ctx, "the bucket secret") if ns.secret == "-" else ns.secret
        check_secret(secret)
        url = check_hub_url(ns.hub)
    except (HubProtocolError, LinkError) as exc:
        raise _error(str(exc), 2) from None
    ca_file = ns.ca_file
    if ca_file is None and url.startswith("wss:"):
        ca_file = ctx.environ.get("SSL_CERT_FILE") or None
    if ca_file is not None:
        ca_file = os.path.join(ctx.cwd, ca_file)
        if not os.path.isfile(ca_file):
            raise _error(f"the CA file {ca_file} does not exist", 2)
    keys = derive_bucket_keys(public_id, secret)
    del secret
    info = ctx.call("link", hub=url, keys=keys.to_json(), ca_file=ca_file)
    if info.get("connected"):
        ctx.print(f"linked to {info['hub']} (bucket {info['public_id']}): connected")
        return 0
    ctx.print(f"linked to {info['hub']} (bucket {info['public_id']}): not connected yet")
    ctx.warn(
        f"{info.get('last_error') or 'no answer from the hub yet'}; the link is kept and"
        " retries (`corral link --info`, or `corral unlink` to undo)"
    )
    return 1


def cmd_unlink(ctx: Context, ns: argparse.Namespace) -> int:
    if ns.public:
        linked = ctx.call("link_info").get("public_id")
        if linked != ns.public:
            where = f"bucket {linked}" if linked else "no hub"
            raise _error(f"linked to {where}, not to bucket {ns.public}: nothing changed")
    result = ctx.call("unlink")
    if not result.get("unlinked"):
        ctx.print("not linked to a hub")
        return 0
    ctx.print(f"unlinked from {result.get('hub') or 'the hub'}")
    return 0


def cmd_set_password(ctx: Context, ns: argparse.Namespace) -> int:
    """`corral set agent.password`: the verifier is made here; the password goes nowhere."""
    if ns.value == "":
        ctx.call("set", key="agent.password", value="")
        ctx.print("agent.password removed: sensitive remote actions are refused")
        return 0
    if ns.value is not None:
        raise _error(f"set: {PASSWORD_IN_ARGV}", 2)
    from corral.protocol.hub.proof import MAX_PASSWORD_LENGTH, make_verifier

    password = _read_secret(ctx, "agent.password")
    if len(password) > MAX_PASSWORD_LENGTH:
        raise _error(f"the agent password is longer than {MAX_PASSWORD_LENGTH} characters")
    verifier = make_verifier(password)
    del password
    ctx.call("set", key="agent.password", value=verifier.to_text())
    ctx.print("agent.password set (only its argon2id verifier is stored)")
    return 0


def _when(stamp: Any) -> str:
    if not isinstance(stamp, int | float):
        return "never"
    moment = datetime.datetime.fromtimestamp(stamp, datetime.UTC)
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC")


def _show(ctx: Context, info: dict[str, Any], *, as_json: bool) -> int:
    if as_json:
        ctx.print(json.dumps(info))
        return 0
    actions = "on" if info.get("remote_actions") else "off"
    if not info.get("remote_actions_env"):
        actions += " (CORRAL_REMOTE_ACTIONS=off in the daemon's environment)"
    elif not info.get("remote_actions_setting"):
        actions += " (agent.remote_actions off)"
    password = "set" if info.get("password_set") else "not set"
    if not info.get("linked"):
        ctx.print("not linked to a hub (corral link PUBLIC SECRET --hub URL)")
        ctx.print(f"remote actions: {actions}; agent password: {password}")
        return 0
    rows = [
        ("hub", info["hub"]),
        ("bucket", info["public_id"]),
        ("server id", info["server_id"]),
        ("CA file", info.get("ca_file") or "system trust store"),
        ("connected", "yes" if info.get("connected") else "no"),
        ("last push", _when(info.get("last_push"))),
        ("queue", f"{info['queue']} of {info['queue_limit']} pushes, {info['dropped']} dropped"),
        ("interval", f"{info['interval']} s"),
        ("remote actions", actions),
        ("agent password", password),
    ]
    if info.get("last_error"):
        rows.append(("last error", info["last_error"]))
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        ctx.print(f"{name.ljust(width)}  {value}")
    return 0
