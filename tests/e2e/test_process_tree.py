"""Every instance is a process group; stopping it leaves nothing behind (SPEC 1.2)."""

from __future__ import annotations

import os

import pytest

from ..conftest import Corral, alive, read_text, wait_for

FORKER = """
import os, signal, sys, time
child = os.fork()
if child == 0:
    signal.signal(signal.SIGINT, signal.SIG_IGN)   # a stubborn grandchild
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    time.sleep(600)
    os._exit(0)
print(f"grandchild {child}", flush=True)
time.sleep(600)
"""


def grandchild_pid(corral: Corral, name: str) -> int:
    out = corral.proc(name)["out_log"]
    line = wait_for(lambda: "grandchild" in read_text(out) and read_text(out))
    return int(line.split()[1])


@pytest.mark.slow
def test_stop_kills_the_grandchild_too(daemon: Corral) -> None:
    record = daemon.start_app("forker", FORKER, kill_timeout=0.5)[0]
    grandchild = grandchild_pid(daemon, "forker")
    assert os.getpgid(grandchild) == record["pid"]  # same group as the instance
    daemon.call("stop", target="forker")
    assert not alive(grandchild)
    assert not alive(record["pid"])


@pytest.mark.slow
def test_crash_of_the_main_process_does_not_orphan_the_grandchild(daemon: Corral) -> None:
    daemon.start_app("forker", FORKER, kill_timeout=0.5, autorestart=False)
    grandchild = grandchild_pid(daemon, "forker")
    main = daemon.proc("forker")["pid"]
    os.kill(main, 9)
    wait_for(lambda: not alive(grandchild))
    assert daemon.proc("forker")["status"] == "stopped"
