"""The process lifecycle: one explicit state machine per instance (SPEC 1.2, 1.4).

    stopped ──start──> launching ──spawned──> online ──stop──> stopping ──exit──> stopped
                           │                    │
                           │ spawn failed       │ exit (crash)
                           v                    v
                        errored <──too many── waiting-restart ──delay──> launching
                                   unstable

Every change of state is reported to `emit` as a `Transition`; the supervisor turns
them into events for subscribers and persists them. The machine never touches the OS
itself: spawning, signals, timers and the clock go through `OsApi`, so tests drive it
with a fake in milliseconds.
"""

from __future__ import annotations

import signal
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum

from corral.config.model import AppConfig
from corral.core.osapi import Child, ExitStatus, LaunchSpec, OsApi, OutputSink, Timer

BACKOFF_FACTOR = 1.5
BACKOFF_CAP = 15.0
BACKOFF_RESET_UPTIME = 30.0


class State(StrEnum):
    STOPPED = "stopped"
    LAUNCHING = "launching"
    ONLINE = "online"
    STOPPING = "stopping"
    WAITING_RESTART = "waiting-restart"
    ERRORED = "errored"


RUNNING_STATES = frozenset({State.LAUNCHING, State.ONLINE, State.WAITING_RESTART})


@dataclass(frozen=True)
class Transition:
    app: str
    instance: int
    old: State
    new: State
    reason: str
    pid: int | None
    at: float
    """Wall-clock time of the change."""
    origin: Instance | None = field(default=None, compare=False, repr=False)
    """The instance that changed (two may share a number during a reload)."""


Launcher = Callable[["Instance"], tuple[LaunchSpec, OutputSink]]
"""Builds the exec spec and output sink for a (re)launch; may raise ValueError/OSError."""


class Instance:
    """One process instance of an app, and the rules that move it between states."""

    def __init__(
        self,
        app: str,
        number: int,
        config: AppConfig,
        os_api: OsApi,
        launcher: Launcher,
        emit: Callable[[Transition], None],
    ) -> None:
        self.app = app
        self.number = number
        self.config = config
        self._os = os_api
        self._launcher = launcher
        self._emit = emit

        self.state = State.STOPPED
        self.child: Child | None = None
        self.started_at: float | None = None  # monotonic, while a process runs
        self.started_wall: float | None = None
        self.restarts = 0
        self.unstable_restarts = 0
        self.last_exit: ExitStatus | None = None
        self.error: str | None = None

        self._consecutive_unstable = 0
        self._backoff = 0.0
        self._timer: Timer | None = None
        self._generation = 0  # guards callbacks from an earlier process
        self._stop_requested = False  # stop() arrived while the spawn was in flight
        self._start_after_stop = False
        self._clearing = False  # the group of an exited process is still being ended
        self._launch_after_clear: str | None = None
        self._stop_deadline = 0.0
        self._ready_timer: Timer | None = None
        self._watchdog_timer: Timer | None = None
        self._not_ready: str | None = None  # why a launch is being stopped as a failure
        self.candidate = False
        """A reload's replacement: it must come up on its own; it is never restarted."""
        self.status_text: str | None = None
        """The last STATUS= the process sent over its notify socket."""

    # ----------------------------------------------------------------- queries

    @property
    def pid(self) -> int | None:
        return self.child.pid if self.child else None

    def uptime(self) -> float | None:
        if self.started_at is None or self.state not in (State.ONLINE, State.STOPPING):
            return None
        return max(0.0, self._os.now() - self.started_at)

    @property
    def needs_ready(self) -> bool:
        """Whether the process must say it is ready (READY=1 or a health check) before it
        is online; otherwise it is online as soon as it runs."""
        return self.config.wait_ready or self.config.health_check is not None

    def is_running(self) -> bool:
        return self.state in RUNNING_STATES or self._start_after_stop

    # ---------------------------------------------------------------- commands

    def start(self, reason: str = "start") -> None:
        if self.state in (State.STOPPED, State.ERRORED):
            self._consecutive_unstable = 0
            self._backoff = 0.0
            self.error = None
            self._launch(reason)
        elif self.state is State.WAITING_RESTART:
            self._cancel_timer()
            self._launch(reason)
        elif self.state is State.STOPPING:
            self._start_after_stop = True
        elif self.state is State.LAUNCHING:
            self._stop_requested = False
        # ONLINE: already running.

    def stop(self, reason: str = "stop") -> None:
        self._start_after_stop = False
        self._launch_after_clear = None
        if self.state is State.ONLINE:
            self._begin_stop(reason)
        elif self.state is State.LAUNCHING:
            if self.child is None:
                self._stop_requested = True  # acted on when the spawn completes
            else:
                self._begin_stop(reason)
        elif self.state is State.WAITING_RESTART:
            self._cancel_timer()
            self._set(State.STOPPED, reason)
        elif self.state is State.ERRORED:
            self._set(State.STOPPED, reason)

    def restart(self, reason: str = "restart") -> None:
        """Stop if running, then start again; a restart of a stopped instance starts it."""
        if self.state in (State.ONLINE, State.LAUNCHING):
            self.stop(reason)
            self._start_after_stop = True
        elif self.state is State.STOPPING:
            self._start_after_stop = True
        else:
            self.start(reason)
        if self._start_after_stop:
            self.restarts += 1

    def mark_ready(self) -> None:
        """READY=1 arrived, or the health check answered."""
        if self.state is State.LAUNCHING and self.child is not None and not self._stop_requested:
            self._cancel_ready_timer()
            self._set(State.ONLINE, "ready")
            self._arm_watchdog()

    def watchdog_ping(self) -> None:
        """WATCHDOG=1 arrived: the process is alive for another `watchdog` period."""
        if self.state is State.ONLINE:
            self._arm_watchdog()

    def kill(self) -> None:
        """SIGKILL the whole group now (used at daemon shutdown after the grace period)."""
        if self.child is not None:
            self._os.signal_group(self.child, signal.SIGKILL)

    def send_signal(self, signum: int) -> bool:
        if self.child is None:
            return False
        self._os.signal_process(self.child, signum)
        return True

    def reset_counters(self) -> None:
        self.restarts = 0
        self.unstable_restarts = 0
        self._consecutive_unstable = 0
        self._backoff = 0.0

    # ------------------------------------------------------------- internals

    def _set(self, new: State, reason: str) -> None:
        old = self.state
        self.state = new
        self._report(old, new, reason)

    def _report(self, old: State, new: State, reason: str) -> None:
        if old is not new:
            self._emit(
                Transition(self.app, self.number, old, new, reason, self.pid, self._os.wall(), self)
            )

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _launch(self, reason: str) -> None:
        if self._clearing:  # leftovers of the last process must be gone first
            self._launch_after_clear = reason
            self._set(State.WAITING_RESTART, reason)
            return
        self._generation += 1
        generation = self._generation
        self._stop_requested = False
        self.started_at = None
        self.started_wall = None
        old = self.state
        # The state is LAUNCHING from here on, but the transition is reported once the
        # spawn is under way: subscribers, the log and the state file then do not delay
        # the fork (a crash's respawn is on this path).
        self.state = State.LAUNCHING
        try:
            spec, output = self._launcher(self)
        except (OSError, ValueError, KeyError) as exc:
            self._report(old, State.LAUNCHING, reason)
            self.error = str(exc)
            self._set(State.ERRORED, f"cannot launch: {exc}")
            return
        self._os.spawn(
            spec,
            output,
            on_spawned=lambda child: self._on_spawned(generation, child),
            on_failed=lambda message: self._on_spawn_failed(generation, message),
            on_exit=lambda status: self._on_exit(generation, status),
        )
        self._report(old, State.LAUNCHING, reason)

    def _on_spawned(self, generation: int, child: Child) -> None:
        if generation != self._generation:
            return
        self.child = child
        self.started_at = self._os.now()
        self.started_wall = self._os.wall()
        if self._stop_requested:
            self._begin_stop("stop")
            return
        if self.needs_ready:
            # Still launching until READY=1 / the health check; the supervisor watches
            # (and may find the process already said READY=1, while it was spawning).
            timeout = self.config.listen_timeout
            self._ready_timer = self._os.call_later(timeout, self._ready_timed_out)
            self._emit(
                Transition(
                    self.app,
                    self.number,
                    self.state,
                    self.state,
                    "spawned",
                    self.pid,
                    self._os.wall(),
                    self,
                )
            )
            return
        self._set(State.ONLINE, "spawned")
        self._arm_watchdog()

    def _on_spawn_failed(self, generation: int, message: str) -> None:
        if generation != self._generation:
            return
        self.error = message
        if self._stop_requested:
            self._set(State.STOPPED, "stop")
        else:
            self._set(State.ERRORED, f"cannot launch: {message}")

    def _begin_stop(self, reason: str) -> None:
        assert self.child is not None
        self._cancel_timer()
        self._cancel_ready_timer()
        self._cancel_watchdog()
        self._stop_deadline = self._os.now() + self.config.kill_timeout
        self._set(State.STOPPING, reason)
        self._os.signal_group(self.child, _signum(self.config.kill_signal))
        child = self.child
        self._timer = self._os.call_later(
            self.config.kill_timeout, lambda: self._os.signal_group(child, signal.SIGKILL)
        )

    def _on_exit(self, generation: int, status: ExitStatus) -> None:
        if generation != self._generation:
            return
        self._cancel_timer()
        child = self.child
        uptime = self._os.now() - self.started_at if self.started_at is not None else 0.0
        self.last_exit = status
        self.child = None
        self.started_at = None
        self.started_wall = None
        if child is None:  # exit reported without a spawn: treat as a failed launch
            self._set(State.ERRORED, status.describe())
            return

        self._cancel_ready_timer()
        self._cancel_watchdog()
        if self.state is State.STOPPING and self._not_ready is not None:
            # Stopped because it never became ready: that is a failed launch.
            why, self._not_ready = self._not_ready, None
            self._after_crash(child, status, uptime, why)
            return
        if self.state is State.STOPPING:
            # The stop signal went to the whole group; whatever is left gets SIGKILL
            # when the kill_timeout that started with the stop runs out.
            remaining = max(0.0, self._stop_deadline - self._os.now())
            self._clear(child, None, remaining, after=self._on_stopped)
            return

        self._after_crash(child, status, uptime, status.describe())

    def _on_stopped(self) -> None:
        self._set(State.STOPPED, "stopped")
        if self._start_after_stop:
            self._start_after_stop = False
            self._consecutive_unstable = 0
            self._launch("restart")

    def _after_crash(self, child: Child, status: ExitStatus, uptime: float, why: str) -> None:
        cfg = self.config
        stop_signal = _signum(cfg.kill_signal)
        if self.candidate:
            self.error = why
            self._set(State.ERRORED, f"{why}; a reload's replacement is not restarted")
        elif not cfg.autorestart:
            self._set(State.STOPPED, f"{why}; autorestart is off")
        elif status.code is not None and status.code in cfg.stop_exit_codes:
            self._set(State.STOPPED, f"{why}, a stop exit code")
        else:
            if uptime < cfg.min_uptime:
                self.unstable_restarts += 1
                self._consecutive_unstable += 1
            else:
                self._consecutive_unstable = 0
            # max_restarts unstable restarts are allowed; the next unstable exit errors.
            if self._consecutive_unstable > cfg.max_restarts:
                self.error = (
                    f"{self._consecutive_unstable} unstable restarts in a row "
                    f"(each ran less than min_uptime {cfg.min_uptime:g}s)"
                )
                self._set(State.ERRORED, f"{why}; {self.error}")
            else:
                delay = self._next_delay(uptime)
                self._set(State.WAITING_RESTART, f"{why}; restart in {delay:g}s")
                self._clear(child, stop_signal, cfg.kill_timeout, after=None)
                if delay <= 0 and not self._clearing and self.state is State.WAITING_RESTART:
                    # No delay and nothing of the old process left: relaunch now rather
                    # than on the next turn of the event loop.
                    self._restart_timer_fired()
                else:
                    self._timer = self._os.call_later(delay, self._restart_timer_fired)
                return
        # Not restarting: still make sure nothing of the old process is left behind.
        self._clear(child, stop_signal, cfg.kill_timeout, after=None)

    def _ready_timed_out(self) -> None:
        self._ready_timer = None
        if self.state is State.LAUNCHING and self.child is not None:
            self._not_ready = f"not ready within listen_timeout {self.config.listen_timeout:g}s"
            self.error = self._not_ready
            self._begin_stop(self._not_ready)

    def _cancel_ready_timer(self) -> None:
        if self._ready_timer is not None:
            self._ready_timer.cancel()
            self._ready_timer = None

    def _arm_watchdog(self) -> None:
        self._cancel_watchdog()
        period = self.config.watchdog
        if period:
            self._watchdog_timer = self._os.call_later(period, self._watchdog_expired)

    def _cancel_watchdog(self) -> None:
        if self._watchdog_timer is not None:
            self._watchdog_timer.cancel()
            self._watchdog_timer = None

    def _watchdog_expired(self) -> None:
        self._watchdog_timer = None
        if self.state is State.ONLINE:
            self.restart(f"watchdog: no WATCHDOG=1 within {self.config.watchdog:g}s")

    def _restart_timer_fired(self) -> None:
        self._timer = None
        if self.state is State.WAITING_RESTART:
            self.restarts += 1
            self._launch("autorestart")

    def _next_delay(self, uptime: float) -> float:
        cfg = self.config
        if cfg.exp_backoff_restart_delay is None:
            return cfg.restart_delay
        if uptime >= BACKOFF_RESET_UPTIME or self._backoff == 0.0:
            self._backoff = cfg.exp_backoff_restart_delay
        else:
            self._backoff = min(self._backoff * BACKOFF_FACTOR, BACKOFF_CAP)
        return self._backoff

    def _clear(
        self, child: Child, signum: int | None, timeout: float, after: Callable[[], None] | None
    ) -> None:
        self._clearing = True

        def done() -> None:
            self._clearing = False
            if after is not None:
                after()
            pending, self._launch_after_clear = self._launch_after_clear, None
            if pending is not None and self.state is State.WAITING_RESTART:
                self._launch(pending)

        self._os.clear_group(child, signum, timeout, done)


def _signum(name: str) -> int:
    return int(signal.Signals[name])
