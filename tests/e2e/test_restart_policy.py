"""The restart policy with real processes (the rules themselves: tests/core/test_lifecycle.py)."""

from __future__ import annotations

import time

import pytest

from ..conftest import Corral, read_text, wait_for

CRASH = "import sys; sys.exit(3)\n"
SLEEP = "import time; print('up', flush=True); time.sleep(600)\n"


@pytest.mark.slow
def test_crash_loop_ends_errored_without_spinning(daemon: Corral) -> None:
    daemon.start_app("crasher", CRASH, max_restarts=3, min_uptime=5.0)
    record = wait_for(lambda: (r := daemon.proc("crasher"))["status"] == "errored" and r)
    assert record["restarts"] == 3
    assert record["unstable_restarts"] == 4
    assert record["exit_code"] == 3
    assert "unstable" in record["error"]
    time.sleep(0.5)
    assert daemon.proc("crasher")["restarts"] == 3  # it stays down


@pytest.mark.slow
def test_stop_exit_codes_and_autorestart_off(daemon: Corral) -> None:
    daemon.start_app("clean-exit", CRASH, stop_exit_codes=[3])
    wait_for(lambda: daemon.proc("clean-exit")["status"] == "stopped")
    daemon.start_app("no-restart", "import sys; sys.exit(1)\n", autorestart=False)
    wait_for(lambda: daemon.proc("no-restart")["status"] == "stopped")
    assert daemon.proc("clean-exit")["restarts"] == 0
    assert daemon.proc("no-restart")["restarts"] == 0


@pytest.mark.slow
def test_restart_delay_is_honoured(daemon: Corral) -> None:
    daemon.start_app("delayed", CRASH, restart_delay=60.0, min_uptime=0.0)
    record = wait_for(lambda: (r := daemon.proc("delayed"))["status"] == "waiting-restart" and r)
    assert record["restarts"] == 0 and record["pid"] is None


HOG = """
import time
print('up', flush=True)
block = bytearray(200 * 1024 * 1024)
for i in range(0, len(block), 4096):
    block[i] = 1
time.sleep(600)
"""


@pytest.mark.slow
def test_max_memory_restart_on_the_tree_rss(daemon: Corral) -> None:
    daemon.start_app("hog", HOG, max_memory_restart=100 * 1024 * 1024)
    wait_for(lambda: daemon.proc("hog")["restarts"] >= 1, timeout=30)


@pytest.mark.slow
def test_cron_restart(daemon: Corral) -> None:
    # croniter's optional sixth field is seconds: every second.
    daemon.start_app("cronned", SLEEP, cron_restart="* * * * * *")
    wait_for(lambda: daemon.proc("cronned")["restarts"] >= 1, timeout=10)


@pytest.mark.slow
def test_watch_restarts_on_change_but_not_for_ignored_files(daemon: Corral) -> None:
    watched = daemon.workdir / "src"
    watched.mkdir()
    daemon.start_app(
        "watched", SLEEP, watch=[str(watched)], ignore_watch=["*.log"], watch_delay=0.2
    )
    out = daemon.proc("watched")["out_log"]
    wait_for(lambda: "up" in read_text(out))
    time.sleep(0.5)  # let the watcher settle
    (watched / "noise.log").write_text("ignored")
    time.sleep(1.0)
    assert daemon.proc("watched")["restarts"] == 0
    (watched / "code.py").write_text("changed")
    wait_for(lambda: daemon.proc("watched")["restarts"] == 1)
