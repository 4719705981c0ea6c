"""State survives the daemon (SPEC 1.8): a killed daemon's apps come back, never twice."""

from __future__ import annotations

import json
import os
import signal

import psutil
import pytest

from ..conftest import Corral, alive, read_text, wait_for

SLEEP = "import time; print('up', flush=True); time.sleep(600)\n"


def kill_daemon(corral: Corral, signum: int) -> None:
    pid = corral.daemon_pid()
    assert pid is not None
    os.kill(pid, signum)
    wait_for(lambda: not alive(pid))


@pytest.mark.slow
def test_state_file_is_private_and_current(daemon: Corral) -> None:
    daemon.start_app("api", SLEEP)
    state = json.loads(daemon.home.state.read_text())
    assert [app["config"]["name"] for app in state["apps"]] == ["api"]
    assert state["apps"][0]["instances"][0]["pid"] == daemon.proc("api")["pid"]
    assert daemon.home.state.stat().st_mode & 0o777 == 0o600
    assert daemon.home.root.stat().st_mode & 0o777 == 0o700
    assert daemon.home.socket.stat().st_mode & 0o777 == 0o600


@pytest.mark.slow
def test_sigkilled_daemon_apps_restored_once_and_orphans_stopped(daemon: Corral) -> None:
    daemon.start_app("api", SLEEP, instances=2)
    daemon.start_app("idle", SLEEP)
    daemon.call("stop", target="idle")
    old = {r["instance"]: r["pid"] for r in daemon.jlist() if r["name"] == "api"}
    # Let both print first: an orphan writing to its closed pipe would die of it.
    for record in daemon.jlist():
        if record["name"] == "api":
            wait_for(lambda r=record: "up" in read_text(r["out_log"]))
    kill_daemon(daemon, signal.SIGKILL)
    assert all(alive(pid) for pid in old.values())  # orphans, still running

    daemon.start_daemon()
    for pid in old.values():
        assert not alive(pid), "the old daemon's child still runs: it would run twice"
    api = [r for r in daemon.jlist() if r["name"] == "api"]
    assert [r["status"] for r in api] == ["online", "online"]
    assert not {r["pid"] for r in api} & set(old.values())
    assert daemon.proc("idle")["status"] == "stopped"  # stopped apps stay stopped
    # Exactly one process per instance runs the script.
    scripts = [
        p
        for p in psutil.process_iter(["cmdline"])
        if any(str(daemon.workdir / "api.py") == a for a in (p.info["cmdline"] or []))
    ]
    assert len(scripts) == 2


@pytest.mark.slow
def test_a_reused_pid_is_never_taken_for_an_orphan(daemon: Corral) -> None:
    daemon.start_app("api", SLEEP)
    kill_daemon(daemon, signal.SIGKILL)
    # Pretend the old app's pid now belongs to an innocent process: the test runner.
    state = json.loads(daemon.home.state.read_text())
    old_pid = state["apps"][0]["instances"][0]["pid"]
    os.kill(old_pid, signal.SIGKILL)
    innocent = psutil.Process()
    state["apps"][0]["instances"][0]["pid"] = innocent.pid
    daemon.home.state.write_text(json.dumps(state))
    daemon.start_daemon()
    assert innocent.is_running()
    assert daemon.proc("api")["status"] == "online"


@pytest.mark.slow
def test_sigterm_stops_apps_gracefully_and_keeps_them_for_next_start(daemon: Corral) -> None:
    handler = (
        "import signal, sys, time\n"
        "def bye(*a):\n    print('graceful', flush=True); sys.exit(0)\n"
        "signal.signal(signal.SIGINT, bye)\nprint('up', flush=True)\ntime.sleep(600)\n"
    )
    record = daemon.start_app("api", handler)[0]

    wait_for(lambda: "up" in read_text(record["out_log"]))
    pid = daemon.daemon_pid()
    assert pid is not None
    kill_daemon(daemon, signal.SIGTERM)
    assert not alive(record["pid"])
    assert "graceful" in read_text(record["out_log"])
    daemon.start_daemon()
    assert daemon.proc("api")["status"] == "online"
