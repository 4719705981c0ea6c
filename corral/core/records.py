"""The JSON shapes the daemon answers with: process records (jlist schema v1), describe."""

from __future__ import annotations

import os
import pwd
import signal
from functools import cache
from pathlib import Path
from typing import Any

from corral.core.app import App
from corral.core.lifecycle import Instance
from corral.core.sampler import TreeSample

JLIST_SCHEMA_VERSION = 1


@cache
def _daemon_user() -> str:
    try:
        return pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        return str(os.getuid())


def process_record(
    app: App,
    inst: Instance,
    sample: TreeSample | None,
    logs_dir: Path,
    log_dropped: int = 0,
    app_metrics: dict[str, Any] | None = None,
) -> dict[str, Any]:
    cfg = app.config
    out_log, err_log = app.log_paths(logs_dir, inst.number)
    last = inst.last_exit
    return {
        "schema": JLIST_SCHEMA_VERSION,
        "id": app.id,
        "name": app.name,
        "instance": inst.number,
        "pid": inst.pid,
        "status": str(inst.state),
        "exec_mode": cfg.exec_mode,
        "instances": cfg.instances,
        "restarts": inst.restarts,
        "unstable_restarts": inst.unstable_restarts,
        "created_at": app.created_at,
        "started_at": inst.started_wall,
        "uptime": inst.uptime(),
        "exit_code": last.code if last else None,
        "exit_signal": _signal_name(last.signal) if last and last.signal else None,
        "error": inst.error if str(inst.state) == "errored" else None,
        "cpu": sample.cpu_percent if sample and inst.pid else None,
        "memory": sample.rss if sample and inst.pid else None,
        "user": cfg.user or _daemon_user(),
        "script": cfg.script,
        "args": list(cfg.args),
        "interpreter": cfg.interpreter or "none",
        "cwd": cfg.cwd or os.path.dirname(cfg.script),
        "autorestart": cfg.autorestart,
        "watch": bool(cfg.watch),
        "out_log": str(out_log),
        "err_log": str(err_log),
        "log_dropped": log_dropped,
        "processes": sample.processes if sample and inst.pid else None,
        "threads": sample.threads if sample and inst.pid else None,
        "fds": sample.fds if sample and inst.pid else None,
        "status_text": inst.status_text,
        "app_metrics": app_metrics or {},
    }


def _signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return str(signum)
