"""The narrow seam between the process lifecycle and the operating system.

Everything the lifecycle state machine needs from the OS goes through `OsApi`: the clock,
timers, spawning a process, signalling its process group and being told when it exits.
`corral.core.realos` implements it with asyncio, pidfds and fork/exec; tests use a fake
that they drive by hand, so most lifecycle tests run in milliseconds.
"""

from __future__ import annotations

import resource
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

RLIMITS: dict[str, int] = {
    "nofile": resource.RLIMIT_NOFILE,
    "nproc": resource.RLIMIT_NPROC,
    "as": resource.RLIMIT_AS,
    "core": resource.RLIMIT_CORE,
    "fsize": resource.RLIMIT_FSIZE,
    "stack": resource.RLIMIT_STACK,
    "cpu": resource.RLIMIT_CPU,
    "memlock": resource.RLIMIT_MEMLOCK,
}
"""`rlimits` keys of an app's config and the limits they set."""


@dataclass(frozen=True)
class LaunchSpec:
    """Everything needed to exec one instance: computed in full before the fork."""

    argv: list[str]
    env: dict[str, str] = field(repr=False)  # holds decrypted secrets: never in a repr
    cwd: str
    user: str | None = None
    group: str | None = None
    rlimits: dict[str, int] = field(default_factory=dict)
    umask: int | None = None
    listen_fds: tuple[int, ...] = ()
    """Listening sockets the child gets as fds 3.. (LISTEN_FDS, LISTEN_PID: SPEC 1.6)."""
    listen_names: tuple[str, ...] = ()


@dataclass(frozen=True)
class ExitStatus:
    """How a process ended: exactly one of `code` and `signal` is set."""

    code: int | None
    signal: int | None

    @classmethod
    def from_wait_status(cls, status: int) -> ExitStatus:
        import os

        if os.WIFSIGNALED(status):
            return cls(code=None, signal=os.WTERMSIG(status))
        return cls(code=os.waitstatus_to_exitcode(status), signal=None)

    def describe(self) -> str:
        if self.signal is not None:
            import signal as _signal

            try:
                return f"killed by {_signal.Signals(self.signal).name}"
            except ValueError:
                return f"killed by signal {self.signal}"
        return f"exited with code {self.code}"


@dataclass(frozen=True)
class Child:
    """A spawned process. Its process group id equals its pid (it is a group leader)."""

    pid: int
    start_time: float
    """When the process started, in seconds since boot (`orphans.process_start_time`):
    with the pid, the identity that survives a daemon restart and cannot be confused
    with a reused pid."""


class Timer(Protocol):
    def cancel(self) -> None: ...


class OsApi(Protocol):
    def now(self) -> float:
        """Monotonic seconds."""
        ...

    def wall(self) -> float:
        """Seconds since the epoch (for records shown to people)."""
        ...

    def call_later(self, delay: float, callback: Callable[[], None]) -> Timer: ...

    def spawn(
        self,
        spec: LaunchSpec,
        output: OutputSink,
        on_spawned: Callable[[Child], None],
        on_failed: Callable[[str], None],
        on_exit: Callable[[ExitStatus], None],
    ) -> None:
        """Start a process in its own process group, without blocking.

        Exactly one of `on_spawned` / `on_failed` is called later; after `on_spawned`,
        `on_exit` is called once when the kernel reports the process gone.
        """
        ...

    def signal_group(self, child: Child, signum: int) -> None:
        """Send a signal to the child's whole process group (ignored if it is gone)."""
        ...

    def signal_process(self, child: Child, signum: int) -> None:
        """Send a signal to the main process only (for `send-signal`)."""
        ...

    def clear_group(
        self, child: Child, signum: int | None, timeout: float, done: Callable[[], None]
    ) -> None:
        """After the main process exited: end whatever is left in its group.

        Sends `signum` (if given) to the remaining members, SIGKILL after `timeout`,
        and calls `done` once the group is empty (at once if it already is).
        """
        ...


class OutputSink(Protocol):
    """Where a child's stdout and stderr go: the log capture of one instance."""

    def attach(self, stdout_fd: int, stderr_fd: int) -> None:
        """Take ownership of the read ends of the child's pipes."""
        ...
