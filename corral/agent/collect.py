"""What the agent pushes: server and app metrics in the protocol's `metrics` shape.

Figures come from the supervisor's own sampler (the pass it makes anyway; asking for them
keeps it at its fast pace while linked). What needs file or system IO (addresses, the
git revision of each app's current release) is read in one worker thread per push.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import math
import socket
from pathlib import Path
from typing import Any, Final

import psutil

from corral.core.app import App
from corral.core.sampler import HostSample
from corral.core.supervisor import Supervisor
from corral.protocol.hub.errors import MessageInvalid
from corral.protocol.hub.messages import APP, GIT_REVISION_RE, SERVER

log = logging.getLogger("corral.agent")

MAX_APPS: Final = 4096
MAX_ADDRESSES: Final = 64


def hostname() -> str:
    name = socket.gethostname() or "localhost"
    return name[:253]


def addresses() -> list[str]:
    """This host's IP addresses but loopback ones (blocking)."""
    found: list[str] = []
    for entries in psutil.net_if_addrs().values():
        for entry in entries:
            if entry.family not in (socket.AF_INET, socket.AF_INET6):
                continue
            address = entry.address
            if address.startswith(("127.", "::1")) or not 0 < len(address) <= 64:
                continue
            if address not in found:
                found.append(address)
    return found[:MAX_ADDRESSES]


def git_revision(home_root: Path, app: str) -> str | None:
    """The commit of the app's current deploy release, None without one (blocking)."""
    from corral.deploy.layout import DeployLayout

    try:
        layout = DeployLayout(home_root, app)
    except ValueError:
        return None
    release = layout.current_release()
    if release is None:
        return None
    meta = layout.read_release(release)
    commit = meta.get("commit") if meta else None
    if isinstance(commit, str) and GIT_REVISION_RE.fullmatch(commit):
        return commit
    return None


def _system(home_root: Path, git_apps: list[str]) -> tuple[list[str], dict[str, str | None]]:
    return addresses(), {name: git_revision(home_root, name) for name in git_apps}


def _number(value: float, high: float) -> float:
    return min(high, max(0.0, value)) if math.isfinite(value) else 0.0


def server_body(host: HostSample, name: str, addrs: list[str]) -> dict[str, Any]:
    return {
        "hostname": name,
        "addresses": addrs,
        "load": [_number(v, 1e6) for v in (host.load1, host.load5, host.load15)],
        "memory": {
            "total": max(0, host.mem_total),
            "available": max(0, host.mem_available),
            "swap_used": max(0, host.swap_used),
        },
        "cpu": {"count": max(1, host.cpu_count), "percent": _number(host.cpu_percent, 100.0)},
    }


def app_bodies(sup: Supervisor, revisions: dict[str, str | None]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for app in sup.ordered():
        for inst in app.sorted_instances():
            if len(out) >= MAX_APPS:
                return out
            out.append(_app_body(sup, app, inst.number, revisions.get(app.name)))
    return out


def _app_body(sup: Supervisor, app: App, number: int, revision: str | None) -> dict[str, Any]:
    inst = app.instances[number]
    sample = sup.sample_of(app, inst) if inst.pid is not None else None
    body: dict[str, Any] = {
        "name": app.name,
        "id": app.id,
        "instance": inst.number,
        "status": str(inst.state),
        "cpu": _number(sample.cpu_percent, 1e7) if sample else None,
        "memory": max(0, sample.rss) if sample else None,
        "restarts": inst.restarts,
        "unstable_restarts": inst.unstable_restarts,
        "exec_mode": app.config.exec_mode,
        "git_revision": revision,
        "custom": sup.metrics_of(app, inst),
    }
    try:
        return dict(APP.check(body, "app"))
    except MessageInvalid as exc:
        # An app's own metric that breaks the schema must not cost the whole push.
        log.debug("%s[%d]: custom metrics left out of the push: %s", app.name, number, exc)
        body["custom"] = {}
        return body


async def metrics_body(sup: Supervisor, home_root: Path, name: str) -> dict[str, Any]:
    """One `metrics` message body, sampled now."""
    git_apps = [app.name for app in sup.ordered() if app.config.git is not None]
    addrs, revisions = await asyncio.to_thread(_system, home_root, git_apps)
    server = server_body(await sup.current_host(), name, addrs)
    SERVER.check(server, "server")
    return {
        "sampled_at": sup.os.wall(),
        "server": server,
        "apps": app_bodies(sup, revisions),
    }


def host_dict(host: HostSample) -> dict[str, Any]:
    return dataclasses.asdict(host)
