"""`corral helper`: the privileged tenant helper, in the foreground (a systemd service).

Root only. Every setting is checked before the socket opens; a mistake is one line on
stderr and exit status 2. SIGTERM or SIGINT: stop accepting, let the requests in progress
finish, remove the socket, exit 0. Tenant daemons keep running (own sessions).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from pathlib import Path

from corral.helper.accounts import Tools
from corral.helper.audit import AuditLog
from corral.helper.config import (
    ConfigError,
    HelperConfig,
    check_python,
    check_tenants_dir,
    panel_account,
    prepare_dir,
)
from corral.helper.daemons import STOP_TIMEOUT, Daemons
from corral.helper.registry import Registry, RegistryError
from corral.helper.server import HelperServer
from corral.helper.service import Helper

log = logging.getLogger("corral.helper")

DEFAULT_SOCKET = Path("/run/corral/helper.sock")
DEFAULT_TENANTS_DIR = Path("/srv/corral")
DEFAULT_STATE_DIR = Path("/var/lib/corral/helper")
_DRAIN_TIMEOUT = STOP_TIMEOUT * 2
"""How long a stop waits for the requests in progress (a remove may stop a daemon)."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="corral helper",
        description="The privileged helper of corral's multi-tenant panel (runs as root): "
        "creates tenants (system users), starts and stops their daemons, removes them, "
        "for the panel's user only.",
    )
    parser.add_argument(
        "--panel-user", required=True, help="the user the panel runs as (the only client)"
    )
    parser.add_argument("--socket", type=Path, default=DEFAULT_SOCKET, help="%(default)s")
    parser.add_argument(
        "--tenants-dir",
        type=Path,
        default=DEFAULT_TENANTS_DIR,
        help="where tenant homes are made (default %(default)s)",
    )
    parser.add_argument(
        "--state-dir",
        type=Path,
        default=DEFAULT_STATE_DIR,
        help="the tenant registry and audit log (default %(default)s)",
    )
    parser.add_argument(
        "--python",
        type=Path,
        default=Path(sys.executable),
        help="the interpreter tenant daemons run with; tenants must be able to run it "
        "(default: this one)",
    )
    parser.add_argument(
        "--python-path",
        type=Path,
        action="append",
        default=[],
        metavar="DIR",
        help="PYTHONPATH entry for tenant daemons (repeatable)",
    )
    return parser


def _config(ns: argparse.Namespace) -> HelperConfig:
    panel = panel_account(ns.panel_user)
    tenants_dir = prepare_dir(ns.tenants_dir, 0o755, "--tenants-dir")
    check_tenants_dir(tenants_dir)
    state_dir = prepare_dir(ns.state_dir, 0o700, "--state-dir")
    python_path = tuple(ns.python_path)
    check_python(ns.python, python_path)
    return HelperConfig(
        panel_user=panel.pw_name,
        panel_uid=panel.pw_uid,
        panel_gid=panel.pw_gid,
        socket=ns.socket,
        tenants_dir=tenants_dir,
        state_dir=state_dir,
        python=ns.python,
        python_path=python_path,
    )


def main(argv: list[str]) -> int:
    try:
        ns = _parser().parse_args(argv)
    except SystemExit as exc:  # --help, usage errors
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
    if os.geteuid() != 0:
        return _fail(
            "must run as root (it creates system users and starts daemons as them); "
            "the panel itself runs unprivileged"
        )
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="corral helper: %(message)s")
    os.umask(0o022)
    try:
        config = _config(ns)
        registry = Registry.load(config.registry_path)
        tools = Tools.find()
    except (ConfigError, RegistryError) as exc:
        return _fail(str(exc))
    daemons = Daemons(config.python, config.python_path, config.panel_uid, config.panel_gid)
    helper = Helper(config, registry, daemons, tools)
    server = HelperServer(config, helper, AuditLog(config.audit_path))
    try:
        server.bind()
    except (ConfigError, OSError) as exc:
        return _fail(str(exc))
    return _run(server, config, daemons)


def _run(server: HelperServer, config: HelperConfig, daemons: Daemons) -> int:
    stop_requested = False

    def request_stop(signum: int, frame: object) -> None:
        nonlocal stop_requested
        stop_requested = True

    wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    signal.set_wakeup_fd(wake_w, warn_on_full_buffer=False)
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, request_stop)
    daemons.start_reaper()
    log.info(
        "listening on %s for %s (uid %d); tenants in %s",
        config.socket,
        config.panel_user,
        config.panel_uid,
        config.tenants_dir,
    )
    try:
        server.serve(wake_r, lambda: stop_requested)
    finally:
        server.close()
        if not server.wait_idle(_DRAIN_TIMEOUT):
            log.error("requests still running after %g s; exiting anyway", _DRAIN_TIMEOUT)
        signal.set_wakeup_fd(-1)
        os.close(wake_r)
        os.close(wake_w)
    log.info("stopped")
    return 0


def _fail(message: str) -> int:
    sys.stderr.write(f"corral helper: {message}\n")
    return 2
