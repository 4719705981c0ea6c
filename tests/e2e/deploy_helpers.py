"""Shared set-up of the deploy tests: a git repository served over HTTPS on loopback (a CA
made by the test), a cluster app in it that answers with its version, a real daemon.

The app is tests/support/apps/fd_http.py (an HTTP server on the sockets corral hands it,
graceful on SIGINT) whose `/` answers `version=<version.txt> pid=<pid>`.
"""

from __future__ import annotations

import http.client
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from ..conftest import Corral, wait_for
from ..support.gitrepos import GitRepo, git_https_server, make_repo
from ..support.tls import make_pki

APPS = Path(__file__).resolve().parents[1] / "support" / "apps"
FINISHED = ("succeeded", "failed")


def app_source() -> str:
    source = (APPS / "fd_http.py").read_text()
    source = source.replace(
        'INSTANCE = os.environ.get("CORRAL_INSTANCE", "")',
        'INSTANCE = os.environ.get("CORRAL_INSTANCE", "")\n'
        'VERSION = open("version.txt").read().strip()',
    )
    marker = 'self.answer(200, f"pid={PID} instance={INSTANCE}\\n")'
    assert marker in source
    return source.replace(marker, 'self.answer(200, f"version={VERSION} pid={PID}\\n")', 1)


def version_files(version: str) -> dict[str, str | None]:
    return {"app.py": app_source(), "version.txt": f"{version}\n"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def get(port: int, path: str = "/", timeout: float = 10) -> str:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        return conn.getresponse().read().decode()
    finally:
        conn.close()


@dataclass
class DeployWorld:
    corral: Corral
    repo: GitRepo
    url: str
    ca: Path
    port: int

    def app(self, name: str = "web", *, git: dict[str, Any] | None = None, **extra: Any) -> Any:
        """The app's config file entry (cluster mode, 2 instances, READY=1)."""
        entry: dict[str, Any] = {
            "name": name,
            "script": "app.py",
            "exec_mode": "cluster",
            "instances": 2,
            "listen": [f"127.0.0.1:{self.port}"],
            "wait_ready": True,
            "listen_timeout": "10s",
            "kill_timeout": "5s",
            "env": {"WAIT_READY": "1", "GIT_SSL_CAINFO": str(self.ca)},
            "git": {"repo": self.url, **(git or {})},
        }
        entry.update(extra)
        return entry

    def write_config(self, *apps: dict[str, Any], name: str = "corral.yaml") -> Path:
        return self.corral.write(name, yaml.safe_dump({"apps": list(apps)}))

    def start(self, *apps: dict[str, Any]) -> None:
        path = self.write_config(*apps)
        self.corral.ok("start", str(path))

    def deploy(self, app: str = "web", **args: Any) -> dict[str, Any]:
        """Queue a deploy through the protocol; the record."""
        return dict(self.corral.call("deploy", app=app, **args)["deploy"])

    def rollback(self, app: str = "web", release: str | None = None) -> dict[str, Any]:
        return dict(self.corral.call("rollback", app=app, release=release)["deploy"])

    def finished(self, deploy_id: str, app: str = "web", timeout: float = 120) -> dict[str, Any]:
        def done() -> dict[str, Any] | None:
            for record in self.corral.call("deploy_history", app=app, limit=200):
                if record["id"] == deploy_id and record["status"] in FINISHED:
                    return dict(record)
            return None

        return dict(wait_for(done, timeout=timeout, interval=0.1))

    def deployed(self, app: str = "web", **args: Any) -> dict[str, Any]:
        record = self.finished(self.deploy(app, **args)["id"], app)
        assert record["status"] == "succeeded", record
        return record

    def releases(self, app: str = "web") -> list[dict[str, Any]]:
        return list(self.corral.call("releases", app=app))

    def current(self, app: str = "web") -> str | None:
        return next((r["id"] for r in self.releases(app) if r["current"]), None)

    def version(self) -> str:
        return get(self.port).split()[0]

    def pids(self, app: str = "web") -> set[int]:
        return {r["pid"] for r in self.corral.jlist() if r["name"] == app and r["pid"]}


@contextmanager
def deploy_world(corral: Corral, tmp: Path) -> Iterator[DeployWorld]:
    """A repo at version 1 served over HTTPS, and a running daemon."""
    repo = make_repo(tmp / "git", version_files("1"))
    pki = make_pki(tmp / "pki")
    with git_https_server(repo.served, pki) as base:
        corral.start_daemon()
        yield DeployWorld(corral, repo, f"{base}/{repo.path}", pki.ca_cert, free_port())


def wait_version(world: DeployWorld, version: str) -> None:
    wait_for(lambda: world.version() == f"version={version}", timeout=20)
