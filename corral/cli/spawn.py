"""Starting a daemon process: `python -P -m corral.core.daemon`, detached.

One way to start a daemon for the CLI and the panel. It imports only modules the
interpreter loads before running any code (os, sys, time), so that `corral start FILE`
can spawn the daemon before importing anything else (corral.cli.early): a cold start
waits for the daemon's own start-up, and every millisecond the spawn happens sooner is
a millisecond off `corral start`.

`os.posix_spawn` (vfork and exec, no Python in between) replaces subprocess.Popen,
which costs ~5 ms to import. What Popen did is done here by other means:
- a session of its own (setsid), no terminal: SIGHUP of the shell does not reach it;
- stdin, stdout and stderr on /dev/null: it logs to its home, and holds no pipe of ours;
- no inherited descriptor beyond those three (each one we could pass on is closed);
- no blocked signal (the daemon sets the dispositions it needs, and its apps get the
  defaults back from the daemon's own spawns);
- `-P`: the daemon never imports modules from the current directory, which it keeps
  (posix_spawn cannot change it); the daemon moves to / itself (corral.core.daemon).
"""

from __future__ import annotations

import os
import sys
import time

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (~10 ms); mypy knows it
if TYPE_CHECKING:
    from collections.abc import Mapping

DAEMON_ARGV = ("-P", "-m", "corral.core.daemon")


class DaemonProcess:
    """A daemon this process spawned: its pid, and its exit status once it has ended."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None

    def __repr__(self) -> str:
        return f"DaemonProcess(pid={self.pid}, returncode={self.returncode})"

    def poll(self) -> int | None:
        """The exit status if it has exited (collected, so no zombie stays), else None."""
        if self.returncode is None:
            try:
                pid, status = os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:  # collected elsewhere (SIGCHLD ignored): it is gone
                self.returncode = 0
            else:
                if pid == self.pid:
                    self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def wait(self, timeout: float) -> int | None:
        """Wait up to `timeout` seconds for it to exit; its status, or None if it runs on."""
        deadline = time.monotonic() + timeout
        while self.poll() is None:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            time.sleep(min(0.01, left))
        return self.returncode


def spawn(root: str, extra_env: Mapping[str, str] | None = None) -> DaemonProcess:
    """Spawn the daemon of the home at `root`, without waiting for it to listen.

    `extra_env` goes on top of this process's environment (the panel's CORRAL_TENANT).
    Raises OSError if it cannot be spawned.
    """
    env = dict(os.environ)
    env["CORRAL_HOME"] = root
    env.update(extra_env or {})
    actions: list[tuple[int, ...] | tuple[int, int, str, int, int]] = [
        (os.POSIX_SPAWN_OPEN, fd, os.devnull, os.O_RDWR, 0) for fd in (0, 1, 2)
    ]
    actions += [(os.POSIX_SPAWN_CLOSE, fd) for fd in _inheritable_fds()]
    pid = os.posix_spawn(
        sys.executable,
        [sys.executable, *DAEMON_ARGV],
        env,
        file_actions=actions,
        setsid=True,
        setsigmask=(),  # nothing blocked
    )
    return DaemonProcess(pid)


def _inheritable_fds() -> list[int]:
    """Descriptors above 2 that exec would pass on (not close-on-exec): whatever the
    caller of the CLI left open. Python opens its own close-on-exec."""
    try:
        names = os.listdir("/proc/self/fd")
    except OSError:
        return []
    fds = []
    for name in names:
        fd = int(name)
        if fd > 2:
            try:
                if os.get_inheritable(fd):
                    fds.append(fd)
            except OSError:  # the descriptor listdir itself used, closed since
                continue
    return fds
