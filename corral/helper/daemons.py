"""Tenant daemons: started as the tenant's uid with a fixed environment, stopped through
their socket, reaped by the helper that started them.

The helper never reads `daemon.pid` (the tenant can write anything there): the daemon's
pid comes from the kernel (SO_PEERCRED of its socket), and stopping means sending `kill`
on that socket and waiting on a pidfd, which only ever waits, never signals.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import subprocess
import threading
import time
from pathlib import Path

from corral.helper import procs, reach
from corral.helper.registry import TenantRecord
from corral.protocol.helper import StartResult, StopResult
from corral.protocol.wire import ErrorCode, ProtocolError

log = logging.getLogger("corral.helper")

DAEMON_PATH = "/usr/local/bin:/usr/bin:/bin"
START_TIMEOUT = 10.0
STOP_TIMEOUT = 30.0
CALL_TIMEOUT = 10.0
"""How long one request to a tenant daemon may take before it counts as not answering."""
_POLL_FIRST = 0.005
_POLL_MAX = 0.05
_REAP_INTERVAL = 1.0


class Daemons:
    """Starts and stops tenant daemons; keeps the Popen of each daemon it started and
    reaps it when it exits (a thread, once a second)."""

    def __init__(
        self,
        python: Path,
        python_path: tuple[Path, ...],
        panel_uid: int,
        panel_gid: int,
    ) -> None:
        self.python = python
        self.python_path = python_path
        self.panel_uid = panel_uid
        self.panel_gid = panel_gid
        self._children: list[subprocess.Popen[bytes]] = []
        self._lock = threading.Lock()
        self._reaper: threading.Thread | None = None

    def environment(self, tenant: TenantRecord, app_limit: int) -> dict[str, str]:
        """Exactly what a tenant daemon gets: nothing of the helper's own environment."""
        env = {
            "PATH": DAEMON_PATH,
            "HOME": str(tenant.home),
            "USER": tenant.name,
            "LOGNAME": tenant.name,
            "LANG": "C.UTF-8",
            "CORRAL_HOME": str(tenant.home / reach.CORRAL_DIR),
            "CORRAL_TENANT": tenant.name,
            "CORRAL_PANEL_UID": str(self.panel_uid),
            "CORRAL_PANEL_GID": str(self.panel_gid),
            "CORRAL_APP_LIMIT": str(app_limit),
        }
        if self.python_path:
            env["PYTHONPATH"] = ":".join(str(p) for p in self.python_path)
        return env

    # --- start ----------------------------------------------------------------------

    def start(self, tenant: TenantRecord, app_limit: int) -> StartResult:
        sock = str(reach.socket_path(tenant.home))
        peer = reach.connect(tenant.home, tenant.uid, CALL_TIMEOUT)
        if peer is not None and _answers(peer):
            self._set_limit(tenant, peer, app_limit)
            return {"pid": peer.pid, "socket": sock, "started": False}
        proc = self._spawn(tenant, app_limit)
        peer = self._wait_answer(tenant, proc)
        if peer.pid != proc.pid:  # another daemon won the home's lock meanwhile
            self._set_limit(tenant, peer, app_limit)
            return {"pid": peer.pid, "socket": sock, "started": False}
        peer.client.close()
        log.info("started the daemon of %s (pid %d)", tenant.name, proc.pid)
        return {"pid": proc.pid, "socket": sock, "started": True}

    def _spawn(self, tenant: TenantRecord, app_limit: int) -> subprocess.Popen[bytes]:
        try:
            proc = subprocess.Popen(
                [str(self.python), "-m", "corral.core.daemon"],
                user=tenant.uid,
                group=tenant.gid,
                extra_groups=[],
                env=self.environment(tenant, app_limit),
                cwd=tenant.home,
                umask=0o027,
                start_new_session=True,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                close_fds=True,
            )
        except (OSError, subprocess.SubprocessError) as exc:
            raise ProtocolError(
                ErrorCode.INTERNAL, f"cannot start the daemon of {tenant.name}: {exc}"
            ) from None
        with self._lock:
            self._children.append(proc)
        return proc

    def _wait_answer(self, tenant: TenantRecord, proc: subprocess.Popen[bytes]) -> reach.Peer:
        """Poll the socket until a daemon of the tenant answers `ping`; fail fast if ours
        crashed. Exit status 0 means another daemon holds the lock: keep trying."""
        deadline = time.monotonic() + START_TIMEOUT
        delay = _POLL_FIRST
        log_file = tenant.home / reach.CORRAL_DIR / "corral.log"
        while True:
            peer = reach.connect(tenant.home, tenant.uid, CALL_TIMEOUT)
            if peer is not None and _answers(peer):
                return peer
            status = proc.poll()
            if status is not None and status != 0:
                raise ProtocolError(
                    ErrorCode.INTERNAL,
                    f"the daemon of {tenant.name} exited with status {status} at start; "
                    f"see {log_file}",
                )
            if time.monotonic() >= deadline:
                if proc.poll() is None:
                    proc.kill()  # ours and not reaped yet: its pid cannot have been reused
                    proc.wait()
                raise ProtocolError(
                    ErrorCode.INTERNAL,
                    f"the daemon of {tenant.name} did not answer on "
                    f"{reach.socket_path(tenant.home)} within {START_TIMEOUT:g} s; "
                    f"see {log_file}",
                )
            time.sleep(delay)
            delay = min(delay * 2, _POLL_MAX)

    def _set_limit(self, tenant: TenantRecord, peer: reach.Peer, app_limit: int) -> None:
        try:
            with peer.client:
                peer.client.call("set_app_limit", limit=app_limit)
        except ProtocolError as exc:
            raise ProtocolError(
                ErrorCode.INTERNAL,
                f"the running daemon of {tenant.name} refused the app limit: {exc.message}",
            ) from None
        except (OSError, ValueError) as exc:
            raise ProtocolError(
                ErrorCode.INTERNAL,
                f"lost the daemon of {tenant.name} while setting its app limit: {exc}",
            ) from None

    # --- stop -----------------------------------------------------------------------

    def stop(self, tenant: TenantRecord) -> StopResult:
        """Send `kill` on the tenant's socket and wait until that daemon has exited."""
        peer = reach.connect(tenant.home, tenant.uid, CALL_TIMEOUT)
        if peer is None:
            return {"stopped": False}
        # Opened while we are connected to it, and its uid checked: at worst a process of
        # the same tenant, and we only ever wait on it.
        pidfd = procs.open_checked(peer.pid, tenant.uid)
        try:
            try:
                with peer.client:
                    peer.client.call("kill")
            except ProtocolError as exc:
                raise ProtocolError(
                    ErrorCode.INTERNAL, f"the daemon of {tenant.name} refused kill: {exc.message}"
                ) from None
            except (OSError, ValueError):
                pass  # it closed the connection while stopping: still wait for it below
            if pidfd is not None:
                ready, _, _ = select.select([pidfd], [], [], STOP_TIMEOUT)
                exited = bool(ready)
            else:
                exited = self._wait_silent(tenant)
        finally:
            if pidfd is not None:
                os.close(pidfd)
        self.reap()
        if not exited:
            raise ProtocolError(
                ErrorCode.INTERNAL,
                f"the daemon of {tenant.name} did not stop within {STOP_TIMEOUT:g} s",
            )
        log.info("stopped the daemon of %s (pid %d)", tenant.name, peer.pid)
        return {"stopped": True}

    def _wait_silent(self, tenant: TenantRecord) -> bool:
        deadline = time.monotonic() + STOP_TIMEOUT
        while time.monotonic() < deadline:
            peer = reach.connect(tenant.home, tenant.uid, CALL_TIMEOUT)
            if peer is None:
                return True
            peer.client.close()
            time.sleep(_POLL_MAX)
        return False

    # --- reaping --------------------------------------------------------------------

    def reap(self) -> None:
        with self._lock:
            self._children = [p for p in self._children if p.poll() is None]

    def start_reaper(self) -> None:
        def loop() -> None:
            while True:
                time.sleep(_REAP_INTERVAL)
                with contextlib.suppress(Exception):
                    self.reap()

        self._reaper = threading.Thread(target=loop, name="reaper", daemon=True)
        self._reaper.start()


def _answers(peer: reach.Peer) -> bool:
    """True if the peer answers `ping`; the connection stays open for another request."""
    try:
        peer.client.call("ping")
    except (OSError, ValueError, ProtocolError):
        peer.client.close()
        return False
    return True
