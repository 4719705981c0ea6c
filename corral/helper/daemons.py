"""Tenant daemons: started as the tenant's uid with a fixed environment, stopped through
their socket, reaped by the helper that started them.

The helper never reads `daemon.pid` (the tenant can write anything there): the daemon's
pid comes from the kernel (SO_PEERCRED of its socket), and stopping means sending `kill`
on that socket and waiting on a pidfd, which only ever waits, never signals.

A daemon the tenant started itself (its own `corral ls` autostarts one without the
panel's ids) answers on the socket but locks the panel out: `start` stops it the same way
and starts a proper one, which restores the apps that were meant to run from state.json.
What that daemon says about itself is the tenant's word: it only ever decides whether the
tenant's own daemon is restarted.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import stat
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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
REPLACE_ROUNDS = 3
"""How many daemons the tenant started itself one start replaces before giving up (the
tenant's CLI may autostart another between the stop and the start)."""
_PATH_FLAGS = os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC


@dataclass
class Started:
    """What `Daemons.start` did: its answer to the panel, and one line per daemon it
    stopped because the panel could not use it (for the audit log)."""

    result: StartResult
    replaced: list[str] = field(default_factory=list)


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

    def start(self, tenant: TenantRecord, app_limit: int) -> Started:
        """Start the tenant's daemon unless a proper one answers (then only pass the limit
        on); a daemon that answers but that the panel cannot use is stopped and replaced."""
        sock = str(reach.socket_path(tenant.home))
        done = Started({"pid": 0, "socket": sock, "started": False})
        for _ in range(REPLACE_ROUNDS):
            peer = reach.connect(tenant.home, tenant.uid, CALL_TIMEOUT)
            info = None if peer is None else _ping(peer)
            if peer is None or info is None:
                proc = self._spawn(tenant, app_limit)
                peer, info = self._wait_answer(tenant, proc)
                if peer.pid == proc.pid:
                    peer.client.close()
                    log.info("started the daemon of %s (pid %d)", tenant.name, proc.pid)
                    done.result["pid"] = proc.pid
                    done.result["started"] = True
                    return done
                # another daemon won the home's lock meanwhile: checked like any other
            why = self.locks_out(tenant, info)
            if why is None:
                self._set_limit(tenant, peer, app_limit)
                done.result["pid"] = peer.pid
                return done
            log.warning(
                "replacing the daemon of %s (pid %d) that it started itself: %s",
                tenant.name,
                peer.pid,
                why,
            )
            self._stop_peer(tenant, peer)
            done.replaced.append(f"pid {peer.pid}: {why}")
        raise ProtocolError(
            ErrorCode.CONFLICT,
            f"the tenant {tenant.name} keeps starting its own daemon, which the panel cannot "
            f"use; stopped {REPLACE_ROUNDS} of them (last: {done.replaced[-1]})",
        )

    def locks_out(self, tenant: TenantRecord, ping: dict[str, Any]) -> str | None:
        """Why the panel cannot use the daemon that answered `ping` on the tenant's socket
        (its socket not open to the panel's group, or it admits another panel uid), or
        None when it can. A daemon too old to tell its panel uid is judged by its socket."""
        st = _socket_stat(tenant.home)
        if st is None:
            return "its socket is gone"
        mode = stat.S_IMODE(st.st_mode)
        if st.st_gid != self.panel_gid or mode & 0o060 != 0o060:
            return (
                f"its socket is {mode:04o} with group {st.st_gid}, not 0660 with the "
                f"panel's group {self.panel_gid}"
            )
        if "panel_uid" in ping and ping["panel_uid"] != self.panel_uid:
            return f"it admits panel uid {ping['panel_uid']!r}, not {self.panel_uid}"
        return None

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

    def _wait_answer(
        self, tenant: TenantRecord, proc: subprocess.Popen[bytes]
    ) -> tuple[reach.Peer, dict[str, Any]]:
        """Poll the socket until a daemon of the tenant answers `ping` (that peer, its
        answer); fail fast if ours crashed. Exit status 0 means another daemon holds the
        lock: keep trying."""
        deadline = time.monotonic() + START_TIMEOUT
        delay = _POLL_FIRST
        log_file = tenant.home / reach.CORRAL_DIR / "corral.log"
        while True:
            peer = reach.connect(tenant.home, tenant.uid, CALL_TIMEOUT)
            info = None if peer is None else _ping(peer)
            if peer is not None and info is not None:
                return peer, info
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
        self._stop_peer(tenant, peer)
        return {"stopped": True}

    def _stop_peer(self, tenant: TenantRecord, peer: reach.Peer) -> None:
        """Send `kill` to `peer` (the daemon saves its state and stops its apps) and wait
        until it has exited; the connection is closed."""
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


def _ping(peer: reach.Peer) -> dict[str, Any] | None:
    """The peer's answer to `ping` (None: it does not answer like a daemon, and the
    connection is closed); the connection stays open for another request."""
    try:
        info = peer.client.call("ping")
    except (OSError, ValueError, ProtocolError):
        peer.client.close()
        return None
    if not isinstance(info, dict):
        peer.client.close()
        return None
    return info


def _socket_stat(home: Path) -> os.stat_result | None:
    """The tenant's socket file as it is now, found without following any symlink."""
    fds: list[int] = []
    try:
        fds.append(os.open(home, _PATH_FLAGS | os.O_DIRECTORY))
        fds.append(os.open(reach.CORRAL_DIR, _PATH_FLAGS | os.O_DIRECTORY, dir_fd=fds[-1]))
        fds.append(os.open(reach.SOCKET_NAME, _PATH_FLAGS, dir_fd=fds[-1]))
        return os.fstat(fds[-1])
    except OSError:
        return None
    finally:
        for fd in fds:
            with contextlib.suppress(OSError):
                os.close(fd)
