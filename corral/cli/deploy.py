"""`corral deploy APP`: deploys from git (SPEC 4), rollback, history, releases, deploy key.

A deploy follows its output live: the CLI subscribes to the app's deploy events on a
second connection before asking for the deploy, so no line is missed, then prints every
line of its deploy until the final status (exit status 0 succeeded, 1 failed). Ctrl-C
detaches; the deploy goes on in the daemon.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from corral.cli import render
from corral.cli.connect import connect

if TYPE_CHECKING:
    import argparse
    from collections.abc import Iterable, Mapping

    from corral.cli.commands import Context
    from corral.protocol.client import ControlClient

DETACHED = 130


def run(ctx: Context, ns: argparse.Namespace) -> int:
    from corral.cli.commands import CliError

    app: str = ns.app
    if ns.ref is not None and (ns.rollback is not None or _reading(ns)):
        raise CliError("--ref applies to a deploy only", status=2)
    if ns.key:
        key = ctx.call("deploy_key", app=app, create=True).get("public_key")
        ctx.print(str(key))
        return 0
    if ns.history:
        entries = ctx.call("deploy_history", app=app, limit=min(ns.limit, 200))
        if ns.json or entries:
            ctx.print(json.dumps(entries) if ns.json else history_table(entries, ctx.style))
        else:
            ctx.print(f"no deploys of {app} yet")
        return 0
    if ns.releases:
        entries = ctx.call("releases", app=app)
        if ns.json or entries:
            ctx.print(json.dumps(entries) if ns.json else releases_table(entries, ctx.style))
        else:
            ctx.print(f"{app} has no release yet: run `corral deploy {app}`")
        return 0
    if ns.output is not None:
        result = ctx.call("deploy_output", app=app, id=ns.output)
        text = str(result.get("output", ""))
        ctx.stdout.write(text if not text or text.endswith("\n") else text + "\n")
        ctx.print(status_line(result.get("deploy") or {}))
        return 0
    if ns.rollback is not None:
        cmd, args = "rollback", {"release": ns.rollback or None}
    else:
        cmd, args = "deploy", {"ref": ns.ref}
    if ns.no_follow:
        queued = ctx.call(cmd, app=app, **args)["deploy"]
        ctx.print(
            f"{queued['kind']} {queued['id']} of {app} queued; its output: "
            f"corral deploy {app} --output {queued['id']}"
        )
        return 0
    watcher = connect(ctx.home)
    record: Mapping[str, Any] = {}
    try:
        # Subscribed first: every line of the deploy comes after this.
        watcher.call("subscribe", events=False, deploys=app)
        record = ctx.call(cmd, app=app, **args)["deploy"]
        ctx.print(f"{record['kind']} {record['id']} of {app} queued ({record['trigger']})")
        ctx.stdout.flush()
        return follow(ctx, watcher, record)
    except KeyboardInterrupt:
        if record:
            ctx.warn(
                f"detached: {record['kind']} {record['id']} goes on in the daemon "
                f"(corral deploy {app} --output {record['id']})"
            )
        return DETACHED
    finally:
        watcher.close()


def _reading(ns: argparse.Namespace) -> bool:
    return bool(ns.key or ns.history or ns.releases or ns.output is not None)


def follow(ctx: Context, watcher: ControlClient, record: Mapping[str, Any]) -> int:
    """Print the deploy's lines until it ends; 0 succeeded, 1 failed."""
    deploy_id = record["id"]
    while True:
        try:
            message = watcher.read()
        except ConnectionError:
            ctx.warn(
                f"the daemon closed the connection; see corral deploy {record['app']} --history"
            )
            return 1
        event = message.get("event")
        if not isinstance(event, dict):
            continue
        if event.get("type") == "dropped":
            ctx.warn(
                f"{event.get('count', '?')} output lines dropped (output too slow); all of it: "
                f"corral deploy {record['app']} --output {deploy_id}"
            )
            continue
        if event.get("type") != "deploy" or event.get("id") != deploy_id:
            continue
        if "line" in event:
            ctx.print(str(event["line"]))
            ctx.stdout.flush()
            continue
        final = event.get("deploy")
        if event.get("status") in ("succeeded", "failed") and isinstance(final, dict):
            ctx.stdout.flush()
            if final["status"] == "succeeded":
                ctx.print(status_line(final))
                return 0
            ctx.warn(status_line(final))
            return 1


def status_line(record: Mapping[str, Any]) -> str:
    kind = record.get("kind", "deploy")
    head = f"{kind} {record.get('id')} {record.get('status')}"
    took = record.get("duration")
    after = f" after {took:.1f} s" if isinstance(took, int | float) else ""
    if record.get("status") == "succeeded":
        commit = str(record.get("commit") or "")[:12]
        return f"{head}{after}: {record.get('app')} runs release {record.get('release')} ({commit})"
    if record.get("status") == "failed":
        step = f" at step {record['step']}" if record.get("step") else ""
        return f"{head}{step}{after}: {record.get('error')}"
    return head


def _short(commit: object) -> str:
    return str(commit)[:12] if commit else "-"


def history_table(entries: Iterable[Mapping[str, Any]], style: render.Style) -> str:
    colors = {"succeeded": render.GREEN, "failed": render.RED, "running": render.YELLOW}
    rows: list[list[render.Cell]] = []
    for e in entries:
        duration = e.get("duration")
        rows.append(
            [
                str(e.get("id", "?")),
                str(e.get("kind", "?")),
                (str(e.get("status", "?")), colors.get(str(e.get("status")))),
                str(e.get("trigger") or "-"),
                str(e.get("ref") or "-"),
                _short(e.get("commit")),
                str(e.get("release") or "-"),
                f"{duration:.1f}s" if isinstance(duration, int | float) else "-",
                render.format_time(e.get("queued")),
                str(e.get("error") or "")[:60],
            ]
        )
    headers = ["id", "kind", "status", "trigger", "ref", "commit", "release", "took", "queued"]
    return render.table([*headers, "error"], rows, style, right=[7])


def releases_table(entries: Iterable[Mapping[str, Any]], style: render.Style) -> str:
    rows: list[list[render.Cell]] = [
        [
            ("*", render.GREEN) if e.get("current") else "",
            str(e.get("id", "?")),
            str(e.get("ref") or "-"),
            _short(e.get("commit")),
            render.format_time(e.get("created")),
        ]
        for e in entries
    ]
    return render.table(["", "release", "ref", "commit", "created"], rows, style)
