"""The lifecycle state machine, driven by a fake OS: every rule of SPEC 1.2 and 1.4."""

from __future__ import annotations

import signal

import pytest

from corral.config.model import AppConfig
from corral.core.lifecycle import BACKOFF_CAP, Instance, State, Transition
from corral.core.osapi import ExitStatus, LaunchSpec

from .fakeos import FakeOs, NullOutput


def make(os_api: FakeOs, **overrides: object) -> tuple[Instance, list[Transition]]:
    config = AppConfig(name="api", script="/bin/true", **overrides)  # type: ignore[arg-type]
    events: list[Transition] = []

    def launcher(inst: Instance) -> tuple[LaunchSpec, NullOutput]:
        return LaunchSpec(argv=[config.script], env={}, cwd="/"), NullOutput()

    return Instance("api", 0, config, os_api, launcher, events.append), events


def states(events: list[Transition]) -> list[str]:
    return [str(e.new) for e in events]


def test_start_goes_launching_then_online() -> None:
    fos = FakeOs()
    inst, events = make(fos)
    inst.start()
    assert inst.state is State.LAUNCHING
    child = fos.complete_spawn()
    assert inst.state is State.ONLINE and inst.pid == child.pid
    assert states(events) == ["launching", "online"]


def test_stop_sends_stop_signal_to_group_then_sigkill_after_kill_timeout() -> None:
    fos = FakeOs()
    inst, events = make(fos, kill_timeout=2.0, kill_signal="SIGTERM")
    inst.start()
    fos.complete_spawn()
    inst.stop()
    assert inst.state is State.STOPPING
    assert fos.last.signals == [signal.SIGTERM]
    fos.advance(1.9)
    assert fos.last.signals == [signal.SIGTERM]
    fos.advance(0.2)
    assert fos.last.signals == [signal.SIGTERM, signal.SIGKILL]
    fos.exit(signal=signal.SIGKILL)
    assert inst.state is State.STOPPED
    assert states(events)[-2:] == ["stopping", "stopped"]


def test_stopped_only_after_group_leftovers_are_gone() -> None:
    fos = FakeOs()
    inst, _ = make(fos)
    inst.start()
    fos.complete_spawn()
    fos.last.group_leftovers = True
    inst.stop()
    fos.exit(0)
    assert inst.state is State.STOPPING  # a grandchild is still in the group
    fos.pending_clears.pop()()
    assert inst.state is State.STOPPED


def test_crash_restarts_after_restart_delay_and_counts() -> None:
    fos = FakeOs()
    inst, _ = make(fos, restart_delay=3.0, min_uptime=1.0)
    inst.start()
    fos.complete_spawn()
    fos.advance(10)
    fos.exit(1)
    assert inst.state is State.WAITING_RESTART
    assert inst.unstable_restarts == 0  # it ran longer than min_uptime
    fos.advance(2.9)
    assert len(fos.processes) == 1
    fos.advance(0.2)
    assert len(fos.processes) == 2 and inst.state is State.LAUNCHING
    assert inst.restarts == 1
    assert inst.last_exit is not None and inst.last_exit.code == 1


def test_unstable_restarts_end_in_errored_after_max_restarts() -> None:
    fos = FakeOs()
    inst, _ = make(fos, max_restarts=3, min_uptime=1.0)
    inst.start()
    for _ in range(3):
        fos.complete_spawn()
        fos.advance(0.1)
        fos.exit(1)
        assert inst.state is State.LAUNCHING  # restart_delay 0: relaunched at once
    fos.complete_spawn()
    fos.advance(0.1)
    fos.exit(1)
    assert inst.state is State.ERRORED
    assert inst.unstable_restarts == 4
    assert inst.restarts == 3
    assert "unstable" in (inst.error or "")
    assert len(fos.processes) == 4  # no fifth launch: a crash loop stops


def test_stable_run_resets_the_consecutive_unstable_count() -> None:
    fos = FakeOs()
    inst, _ = make(fos, max_restarts=1, min_uptime=1.0)
    inst.start()
    fos.complete_spawn()
    fos.advance(0.1)
    fos.exit(1)  # unstable #1: allowed
    fos.advance(0)
    fos.complete_spawn()
    fos.advance(5)
    fos.exit(1)  # stable: resets the run
    fos.advance(0)
    fos.complete_spawn()
    fos.advance(0.1)
    fos.exit(1)  # unstable #1 again: still allowed
    assert inst.state is State.LAUNCHING


def test_max_restarts_zero_errors_at_first_unstable_exit() -> None:
    fos = FakeOs()
    inst, _ = make(fos, max_restarts=0)
    inst.start()
    fos.complete_spawn()
    fos.exit(1)
    assert inst.state is State.ERRORED


def test_exponential_backoff_grows_by_1_5_caps_at_15s_and_resets_after_30s() -> None:
    fos = FakeOs()
    inst, _ = make(fos, exp_backoff_restart_delay=0.1, max_restarts=1000, min_uptime=0.0)
    inst.start()
    delays = []
    for _ in range(14):
        fos.complete_spawn()
        fos.exit(1)
        before = len(fos.processes)
        waited = 0.0
        while len(fos.processes) == before:
            fos.advance(0.01)
            waited += 0.01
        delays.append(round(waited, 2))
    assert delays[0] == pytest.approx(0.1, abs=0.011)
    assert delays[1] == pytest.approx(0.15, abs=0.011)
    assert delays[2] == pytest.approx(0.225, abs=0.011)
    assert max(delays) <= BACKOFF_CAP + 0.011
    assert delays[-1] == pytest.approx(BACKOFF_CAP, abs=0.011)
    fos.complete_spawn()
    fos.advance(31)
    fos.exit(1)
    before = len(fos.processes)
    fos.advance(0.11)
    assert len(fos.processes) == before + 1  # back to the initial delay


def test_autorestart_off_and_stop_exit_codes_stop_instead_of_restarting() -> None:
    fos = FakeOs()
    inst, _ = make(fos, autorestart=False)
    inst.start()
    fos.complete_spawn()
    fos.exit(1)
    assert inst.state is State.STOPPED
    fos.advance(100)
    assert len(fos.processes) == 1

    fos2 = FakeOs()
    inst2, _ = make(fos2, stop_exit_codes=[0, 3])
    inst2.start()
    fos2.complete_spawn()
    fos2.exit(3)
    assert inst2.state is State.STOPPED
    inst2.start()
    fos2.complete_spawn()
    fos2.exit(4)
    assert inst2.state is State.LAUNCHING and len(fos2.processes) == 3


def test_restart_of_running_instance_stops_then_starts() -> None:
    fos = FakeOs()
    inst, events = make(fos)
    inst.start()
    fos.complete_spawn()
    inst.restart()
    assert inst.state is State.STOPPING
    fos.exit(0)
    assert inst.state is State.LAUNCHING and len(fos.processes) == 2
    fos.complete_spawn()
    assert inst.state is State.ONLINE and inst.restarts == 1
    assert states(events) == ["launching", "online", "stopping", "stopped", "launching", "online"]


def test_stop_while_spawn_in_flight_stops_right_after_spawn() -> None:
    fos = FakeOs()
    inst, _ = make(fos)
    inst.start()
    inst.stop()
    assert inst.state is State.LAUNCHING
    fos.complete_spawn()
    assert inst.state is State.STOPPING
    assert fos.last.signals == [signal.SIGINT]
    fos.exit(0)
    assert inst.state is State.STOPPED


def test_stop_during_waiting_restart_cancels_the_restart() -> None:
    fos = FakeOs()
    inst, _ = make(fos, restart_delay=5.0)
    inst.start()
    fos.complete_spawn()
    fos.advance(2)
    fos.exit(1)
    inst.stop()
    assert inst.state is State.STOPPED
    fos.advance(10)
    assert len(fos.processes) == 1


def test_spawn_failure_is_errored_with_the_reason() -> None:
    fos = FakeOs()
    inst, _ = make(fos)
    inst.start()
    fos.fail_spawn("python9: no such file or directory")
    assert inst.state is State.ERRORED
    assert "no such file" in (inst.error or "")
    inst.start()  # a new start from errored tries again
    assert inst.state is State.LAUNCHING


def test_launcher_error_is_errored_not_raised() -> None:
    fos = FakeOs()
    config = AppConfig(name="api", script="/bin/true")

    def launcher(inst: Instance) -> tuple[LaunchSpec, NullOutput]:
        raise ValueError("increment_var PORT='x' is not an integer")

    inst = Instance("api", 0, config, fos, launcher, lambda t: None)
    inst.start()
    assert inst.state is State.ERRORED and "increment_var" in (inst.error or "")


def test_late_exit_of_an_earlier_process_is_ignored() -> None:
    fos = FakeOs()
    inst, _ = make(fos)
    inst.start()
    fos.complete_spawn()
    first = fos.last
    inst.restart()
    fos.exit(0, proc=first)
    fos.complete_spawn()
    first.on_exit(ExitStatus(code=1, signal=None))  # stale: a second report of the old one
    assert inst.state is State.ONLINE


def test_crash_with_no_restart_delay_relaunches_at_once_and_reports_every_step() -> None:
    fos = FakeOs()
    inst, events = make(fos, min_uptime=0.0)
    inst.start()
    fos.complete_spawn()
    fos.exit(1)
    # No timer turn in between: the new process is being spawned already...
    assert inst.state is State.LAUNCHING and len(fos.processes) == 2
    assert inst.restarts == 1
    # ...and subscribers still see every transition, in order.
    assert states(events) == ["launching", "online", "waiting-restart", "launching"]
    assert events[-1].old is State.WAITING_RESTART and events[-1].reason == "autorestart"
    fos.complete_spawn()
    assert inst.state is State.ONLINE


def test_launch_reported_after_the_spawn_was_handed_to_the_os() -> None:
    fos = FakeOs()
    seen: list[int] = []

    def emit(change: Transition) -> None:
        seen.append(len(fos.processes))

    config = AppConfig(name="api", script="/bin/true")
    inst = Instance(
        "api",
        0,
        config,
        fos,
        lambda inst: (LaunchSpec(argv=["/bin/true"], env={}, cwd="/"), NullOutput()),
        emit,
    )
    inst.start()
    assert inst.state is State.LAUNCHING and seen == [1]


def test_a_launcher_that_fails_reports_launching_then_errored() -> None:
    fos = FakeOs()
    events: list[Transition] = []

    def launcher(inst: Instance) -> tuple[LaunchSpec, NullOutput]:
        raise ValueError("increment_var PORT='x' is not an integer")

    config = AppConfig(name="api", script="/bin/true")
    inst = Instance("api", 0, config, fos, launcher, events.append)
    inst.start()
    assert inst.state is State.ERRORED and fos.processes == []
    assert states(events) == ["launching", "errored"]
    assert "not an integer" in (inst.error or "")


def test_restart_waits_for_group_leftovers_before_relaunching() -> None:
    fos = FakeOs()
    inst, _ = make(fos)
    inst.start()
    fos.complete_spawn()
    fos.advance(5)
    fos.last.group_leftovers = True
    fos.exit(1)  # crash with a grandchild still alive; restart_delay 0
    fos.advance(0)
    assert inst.state is State.WAITING_RESTART and len(fos.processes) == 1
    fos.pending_clears.pop()()
    assert inst.state is State.LAUNCHING and len(fos.processes) == 2


def test_reset_counters() -> None:
    fos = FakeOs()
    inst, _ = make(fos)
    inst.start()
    fos.complete_spawn()
    fos.exit(1)
    fos.advance(0)
    assert inst.restarts == 1 and inst.unstable_restarts == 1
    inst.reset_counters()
    assert inst.restarts == 0 and inst.unstable_restarts == 0


def test_wait_ready_stays_launching_until_ready() -> None:
    fos = FakeOs()
    inst, events = make(fos, wait_ready=True, listen_timeout=5.0)
    inst.start()
    fos.complete_spawn()
    assert inst.state is State.LAUNCHING
    assert events[-1].reason == "spawned"  # the supervisor starts its readiness checks here
    fos.advance(4)
    inst.mark_ready()
    assert inst.state is State.ONLINE
    fos.advance(10)
    assert inst.state is State.ONLINE  # the readiness timer was cancelled


def test_not_ready_within_listen_timeout_is_a_failed_launch() -> None:
    fos = FakeOs()
    inst, _ = make(fos, wait_ready=True, listen_timeout=2.0, min_uptime=5.0, kill_timeout=1.0)
    inst.start()
    fos.complete_spawn()
    fos.advance(2.01)
    assert inst.state is State.STOPPING
    assert fos.last.signals == [signal.SIGINT]
    fos.exit(signal=signal.SIGINT)
    assert inst.state is State.LAUNCHING  # the restart policy applies (no restart_delay)
    assert len(fos.processes) == 2
    assert inst.unstable_restarts == 1
    assert "listen_timeout" in (inst.error or "")


def test_a_candidate_is_never_restarted() -> None:
    fos = FakeOs()
    inst, _ = make(fos)
    inst.candidate = True
    inst.start()
    fos.complete_spawn()
    fos.exit(1)
    assert inst.state is State.ERRORED
    fos.advance(100)
    assert len(fos.processes) == 1


def test_watchdog_restarts_a_silent_instance_and_pings_keep_it_alive() -> None:
    fos = FakeOs()
    inst, _ = make(fos, watchdog=3.0)
    inst.start()
    fos.complete_spawn()
    for _ in range(5):
        fos.advance(2.5)
        inst.watchdog_ping()
    assert inst.state is State.ONLINE and len(fos.processes) == 1
    fos.advance(3.01)
    assert inst.state is State.STOPPING
    fos.exit(signal=signal.SIGINT)
    assert inst.state is State.LAUNCHING and len(fos.processes) == 2
    assert inst.restarts == 1
