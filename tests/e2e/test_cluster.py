"""Cluster mode (SPEC 1.6): daemon-bound sockets at fd 3, readiness, zero-downtime reload."""

from __future__ import annotations

import http.client
import shutil
import socket
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from corral.config.model import AppConfig
from corral.protocol.wire import ProtocolError

from ..conftest import Corral, alive, wait_for
from ..support.load import Load
from ..support.tls import https_server, make_pki

APPS = Path(__file__).resolve().parents[1] / "support" / "apps"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def get(port: int, path: str = "/", timeout: float = 10) -> str:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.read().decode()
    finally:
        conn.close()


def start_cluster(
    corral: Corral,
    name: str,
    port: int,
    *,
    instances: int = 2,
    env: dict[str, str] | None = None,
    script: Path = APPS / "fd_http.py",
    interpreter: str = sys.executable,
    **config: Any,
) -> list[dict[str, Any]]:
    config.setdefault("wait_ready", True)
    config.setdefault("listen_timeout", 10.0)
    cfg = AppConfig(
        name=name,
        script=str(script),
        interpreter=interpreter,
        cwd=str(script.parent),
        instances=instances,
        listen=[f"127.0.0.1:{port}"],
        env={"WAIT_READY": "1", **(env or {})},
        **config,
    )
    return list(corral.call("start", apps=[cfg.to_dict()], cli_env={"PATH": corral.env["PATH"]}))


def pids(corral: Corral, name: str) -> set[int]:
    return {r["pid"] for r in corral.jlist() if r["name"] == name}


@pytest.mark.slow
def test_instances_share_the_daemon_bound_socket_with_systemd_variables(daemon: Corral) -> None:
    port = free_port()
    records = start_cluster(daemon, "web", port, instances=2)
    assert [r["status"] for r in records] == ["online", "online"]
    assert get(port, "/env/LISTEN_FDS") == "1"
    assert get(port, "/env/LISTEN_FDNAMES").startswith("tcp")
    # LISTEN_PID is each child's own pid (fd_http refuses to start otherwise).
    seen = {get(port).split()[0] for _ in range(40)}
    assert seen <= {f"pid={p}" for p in pids(daemon, "web")}


@pytest.mark.slow
def test_reload_under_load_fails_no_request_and_replaces_every_pid(daemon: Corral) -> None:
    port = free_port()
    start_cluster(daemon, "web", port, instances=4, kill_timeout=5.0)
    before = pids(daemon, "web")
    url = f"http://127.0.0.1:{port}/"
    with Load(url, concurrency=8, max_requests=200_000, max_seconds=60) as load:
        assert load.wait_for(ok=200, timeout=20)
        result = daemon.cli("reload", "web")
        served_during = load.ok
        time.sleep(0.5)
    assert result.code == 0, result.err
    after = pids(daemon, "web")
    assert not before & after and len(after) == 4
    assert load.failed == 0, load.errors[:5]
    assert load.ok > served_during > 200
    assert {r["status"] for r in daemon.jlist()} == {"online"}
    for pid in before:
        assert not alive(pid)
    print(f"reload under load: {load.ok} requests served, {load.failed} failed")


@pytest.mark.slow
@pytest.mark.parametrize("failure", ["FAIL_AT_START", "NEVER_READY"])
def test_a_failed_reload_keeps_the_old_instances_serving(daemon: Corral, failure: str) -> None:
    port = free_port()
    start_cluster(daemon, "web", port, instances=2, listen_timeout=2.0)
    before = pids(daemon, "web")
    # The new code is broken: the next launch of the app fails (or never says READY=1).
    broken = AppConfig(
        name="web",
        script=str(APPS / "fd_http.py"),
        interpreter=sys.executable,
        cwd=str(APPS),
        instances=2,
        listen=[f"127.0.0.1:{port}"],
        wait_ready=True,
        listen_timeout=2.0,
        env={"WAIT_READY": "1", failure: "1"},
    )
    url = f"http://127.0.0.1:{port}/"
    with Load(url, concurrency=4, max_requests=100_000, max_seconds=60) as load:
        assert load.wait_for(ok=50, timeout=20)
        with pytest.raises(ProtocolError) as failed:
            daemon.call("reload", apps=[broken.to_dict()])
        message = failed.value.message
    assert "reload of 'web' failed" in message and "old instances keep serving" in message
    assert pids(daemon, "web") == before
    assert load.failed == 0, load.errors[:5]
    assert get(port).startswith("pid=")


@pytest.mark.slow
def test_reload_cli_exits_non_zero_and_says_why(daemon: Corral) -> None:
    port = free_port()
    config = daemon.write(
        "cluster.yaml",
        f"""
apps:
  - name: web
    script: {APPS / "fd_http.py"}
    interpreter: {sys.executable}
    instances: 2
    listen: ["127.0.0.1:{port}"]
    wait_ready: true
    listen_timeout: 2s
    env: {{WAIT_READY: "1"}}
""",
    )
    daemon.ok("start", str(config))
    before = pids(daemon, "web")
    broken = config.read_text().replace('WAIT_READY: "1"', 'WAIT_READY: "1", NEVER_READY: "1"')
    config.write_text(broken)
    result = daemon.cli("reload", str(config))
    assert result.code != 0
    assert "not ready within listen_timeout" in result.err
    assert pids(daemon, "web") == before


@pytest.mark.slow
def test_scale_up_and_down_with_a_shared_socket(daemon: Corral) -> None:
    port = free_port()
    start_cluster(daemon, "web", port, instances=2)
    daemon.ok("scale", "web", "4")
    assert [r["instance"] for r in daemon.jlist()] == [0, 1, 2, 3]
    daemon.ok("scale", "web", "-3")
    assert [r["instance"] for r in daemon.jlist()] == [0]
    daemon.ok("scale", "web", "+1")
    assert [r["instance"] for r in daemon.jlist()] == [0, 1]
    assert get(port).startswith("pid=")


@pytest.mark.slow
def test_watchdog_restarts_a_hung_instance(daemon: Corral) -> None:
    port = free_port()
    start_cluster(
        daemon,
        "web",
        port,
        instances=1,
        watchdog=1.0,
        kill_timeout=0.5,
        env={"WATCHDOG": "1", "HANG_AFTER": "1.5"},
    )
    first = pids(daemon, "web")
    wait_for(lambda: daemon.proc("web")["restarts"] >= 1, timeout=20)
    wait_for(lambda: daemon.proc("web")["status"] == "online" and pids(daemon, "web") != first)


@pytest.mark.slow
def test_health_check_decides_readiness(daemon: Corral) -> None:
    port = free_port()
    records = start_cluster(
        daemon,
        "web",
        port,
        instances=1,
        wait_ready=False,
        health_check=f"http://127.0.0.1:{port}/",
        env={"WAIT_READY": "0"},
    )
    assert records[0]["status"] == "online"


@pytest.mark.slow
def test_private_ca_env_reaches_cluster_instances(daemon: Corral, tmp_path: Path) -> None:
    pki = make_pki(tmp_path / "pki")
    port = free_port()
    with https_server(pki) as tls_port:
        fetch = daemon.write(
            "fetch_then_serve.py",
            f"""
import os, runpy, sys, urllib.request
try:
    body = urllib.request.urlopen("https://localhost:{tls_port}/", timeout=10).read().decode()
    os.environ["FETCH_RESULT"] = "ok " + body
except Exception as exc:
    os.environ["FETCH_RESULT"] = "fail " + str(exc)
sys.argv = ["fd_http.py"]
runpy.run_path("{APPS / "fd_http.py"}", run_name="__main__")
""",
        )
        start_cluster(
            daemon, "web", port, instances=2, script=fetch, env={"SSL_CERT_FILE": str(pki.ca_cert)}
        )
        results = {get(port, "/env/FETCH_RESULT") for _ in range(20)}
    assert results == {"ok private-ca-ok"}


@pytest.mark.slow
def test_uvicorn_and_gunicorn_take_the_socket(daemon: Corral) -> None:
    pytest.importorskip("uvicorn")
    pytest.importorskip("gunicorn")
    uvi, guni = free_port(), free_port()
    for name, port, args in (
        ("uvi", uvi, ["-m", "uvicorn", "--fd", "3", "asgi_app:app"]),
        ("guni", guni, ["-m", "gunicorn", "--workers", "1", "wsgi_app:app"]),
    ):
        cfg = AppConfig(
            name=name,
            script=sys.executable,
            interpreter="none",
            args=args,
            cwd=str(APPS),
            instances=2,
            listen=[f"127.0.0.1:{port}"],
            health_check=f"http://127.0.0.1:{port}/",
            listen_timeout=20.0,
        )
        records = daemon.call("start", apps=[cfg.to_dict()], cli_env={"PATH": daemon.env["PATH"]})
        assert {r["status"] for r in records} == {"online"}, records
        assert get(port).startswith("pid=")
    result = daemon.cli("reload", "uvi")
    assert result.code == 0, result.err


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
def test_node_listens_on_fd_3(daemon: Corral) -> None:
    port = free_port()
    records = start_cluster(
        daemon,
        "nodeweb",
        port,
        instances=2,
        script=APPS / "node_fd_http.js",
        interpreter="node",
        wait_ready=False,
        health_check=f"http://127.0.0.1:{port}/",
    )
    assert {r["status"] for r in records} == {"online"}
    assert get(port).startswith("pid=")


SLEEPER = "import time\nprint('up', flush=True)\ntime.sleep(600)\n"


@pytest.mark.slow
def test_reload_without_listen_starts_the_new_before_stopping_the_old(daemon: Corral) -> None:
    daemon.start_app("worker", SLEEPER, instances=2, min_uptime=0.3)
    before = pids(daemon, "worker")
    events: list[dict[str, Any]] = []
    with daemon.client() as watcher:
        watcher.call("subscribe", events=True)
        daemon.ok("reload", "worker")
        watcher.set_timeout(5)
        while len([e for e in events if e.get("to") == "stopped"]) < 2:
            message = watcher.read()
            if isinstance(message.get("event"), dict):
                events.append(message["event"])
    after = pids(daemon, "worker")
    assert not before & after and len(after) == 2
    # For each instance the replacement was online before the old one began to stop.
    order = [(e["instance"], e["to"]) for e in events if e["to"] in ("online", "stopping")]
    for number in (0, 1):
        mine = [to for n, to in order if n == number]
        assert mine.index("online") < mine.index("stopping"), order


@pytest.mark.slow
def test_reload_mode_restart_stops_then_starts(daemon: Corral) -> None:
    daemon.start_app("worker", SLEEPER, reload_mode="restart")
    before = pids(daemon, "worker")
    daemon.ok("reload", "worker")
    assert pids(daemon, "worker") != before
    assert daemon.proc("worker")["restarts"] == 1
