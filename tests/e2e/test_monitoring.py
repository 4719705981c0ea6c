"""Monitoring (SPEC 1.9): process-tree metrics, host metrics, app metrics, Prometheus."""

from __future__ import annotations

import socket
import time
import urllib.request
from typing import Any

import psutil
import pytest
from prometheus_client.parser import text_string_to_metric_families

from ..conftest import Corral, read_text, wait_for

BURN = "while True:\n    pass\n"
HOLD = """
import time
block = bytearray(100 * 1024 * 1024)
for i in range(0, len(block), 4096):
    block[i] = 1
print("holding", flush=True)
time.sleep(600)
"""
TREE = """
import os, time
for _ in range(2):
    if os.fork() == 0:
        time.sleep(600)
        os._exit(0)
print("three", flush=True)
time.sleep(600)
"""
PUSHER = """
import time
from corral import client
client.status("warming up")
for i in range(5):
    client.metric("requests", 1, kind="counter")
client.metric("queue_depth", 7, kind="gauge")
for v in (10, 20, 30, 40):
    client.metric("latency_ms", v, kind="histogram")
print("pushed", flush=True)
time.sleep(600)
"""


def sampled(corral: Corral, name: str, key: str) -> dict[str, Any]:
    """The app's record once the daemon has sampled it (every 2 s)."""
    return dict(wait_for(lambda: (r := corral.proc(name))[key] is not None and r, timeout=20))


@pytest.mark.slow
def test_a_burning_child_reads_about_one_core(daemon: Corral) -> None:
    pid = daemon.start_app("burn", BURN)[0]["pid"]
    child = psutil.Process(pid)
    sampled(daemon, "burn", "cpu")
    used, start = sum(child.cpu_times()[:2]), time.monotonic()
    time.sleep(4.5)  # two more sampling periods
    real = 100 * (sum(child.cpu_times()[:2]) - used) / (time.monotonic() - start)
    reading = daemon.proc("burn")["cpu"]
    assert real > 30  # it did burn, even on a busy 2-core machine
    assert abs(reading - real) < 25, (reading, real)


@pytest.mark.slow
def test_a_child_holding_100_mb_reads_that_rss(daemon: Corral) -> None:
    record = daemon.start_app("hold", HOLD)[0]
    wait_for(lambda: "holding" in read_text(record["out_log"]))
    memory = wait_for(lambda: (m := daemon.proc("hold")["memory"]) and m > 90 * 2**20 and m)
    assert memory < 160 * 2**20


@pytest.mark.slow
def test_a_tree_of_three_processes_is_summed(daemon: Corral) -> None:
    record = daemon.start_app("tree", TREE)[0]
    wait_for(lambda: "three" in read_text(record["out_log"]))
    # Children are found by the host-wide rescan (every 10 s while watched, 30 s idle).
    wait_for(lambda: daemon.proc("tree")["processes"] == 3, timeout=40)
    record = daemon.proc("tree")
    assert record["threads"] >= 3 and record["fds"] >= 3
    leader = psutil.Process(record["pid"]).memory_info().rss
    assert record["memory"] > leader


@pytest.mark.slow
def test_pushed_app_metrics_show_in_jlist_describe_and_prometheus(daemon: Corral) -> None:
    record = daemon.start_app("pusher", PUSHER)[0]
    wait_for(lambda: "pushed" in read_text(record["out_log"]))
    metrics = wait_for(lambda: (m := daemon.proc("pusher")["app_metrics"]) and len(m) == 3 and m)
    assert metrics["requests"] == {"kind": "counter", "value": 5.0}
    assert metrics["queue_depth"]["value"] == 7.0
    assert metrics["latency_ms"]["count"] == 4
    assert daemon.proc("pusher")["status_text"] == "warming up"
    described = daemon.ok("describe", "pusher").out
    assert "requests" in described and "warming up" in described

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    daemon.ok("set", "metrics.port", str(port))
    body = wait_for(lambda: _get(f"http://127.0.0.1:{port}/metrics"))
    families = {f.name: f for f in text_string_to_metric_families(body)}
    counter = families["corral_app_requests"]
    assert counter.type == "counter"
    (sample,) = [s for s in counter.samples if s.name.endswith("_total")]
    assert sample.labels == {"app": "pusher", "instance": "0"} and sample.value == 5.0
    assert families["corral_process_up"].samples[0].value == 1.0
    assert families["corral_daemon_rss_bytes"].samples[0].value > 0
    assert "corral_host_load1" in families
    # The same text from the CLI, without the endpoint.
    assert "corral_app_requests_total" in daemon.ok("metrics").out
    daemon.ok("metrics", "--off")
    assert _get(f"http://127.0.0.1:{port}/metrics") is None
    assert f"127.0.0.1:{port}" in daemon.ok("metrics", "--serve", str(port)).out
    assert "corral_process_up" in (wait_for(lambda: _get(f"http://127.0.0.1:{port}/metrics")))


@pytest.mark.slow
def test_metrics_are_served_on_loopback_only(daemon: Corral) -> None:
    refused = daemon.cli("set", "metrics.host", "0.0.0.0")
    assert refused.code != 0 and "loopback" in refused.err


@pytest.mark.slow
def test_host_metrics(daemon: Corral) -> None:
    host = daemon.call("host")
    assert host["cpu_count"] >= 1 and host["mem_total"] > host["mem_available"] > 0


def _get(url: str) -> str | None:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return str(response.read().decode())
    except OSError:
        return None
