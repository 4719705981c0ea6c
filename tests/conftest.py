"""Shared fixtures: a real daemon in a temporary home, and the real `corral` CLI against it.

Every process a test starts is stopped by the fixture, even when the test fails: the
daemon is asked to quit, then its whole process tree is killed if anything is left.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import pytest

from corral.paths import Home
from corral.protocol.client import ControlClient

REPO = Path(__file__).resolve().parent.parent


def wait_for(predicate: Callable[[], Any], timeout: float = 15.0, interval: float = 0.02) -> Any:
    """Poll `predicate` until it returns something truthy; fail the test on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {predicate}")
        time.sleep(interval)


def read_text(path: str | Path) -> str:
    """The file's text, or "" while it does not exist yet."""
    try:
        return Path(path).read_text(errors="replace")
    except FileNotFoundError:
        return ""


def system_python() -> str:
    """A Python any user can execute (the venv's may live under a private home)."""
    for candidate in ("/usr/bin/python3", "/usr/local/bin/python3"):
        if os.access(candidate, os.X_OK):
            return candidate
    pytest.skip("no system-wide python3 for another uid")


def alive(pid: int) -> bool:
    """True while the process exists and is not a zombie."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


@dataclass
class CliResult:
    code: int
    out: str
    err: str


@dataclass
class Corral:
    """A corral home with helpers to run the CLI and talk to the daemon directly."""

    home: Home
    env: dict[str, str]
    workdir: Path
    started: list[psutil.Process] = field(default_factory=list)
    """Daemons seen, as psutil objects: they remember the start time, so a pid reused by
    another process later is never signalled (pids wrap at 32768 here)."""
    _daemon_popen: subprocess.Popen[bytes] | None = None

    def cli(
        self,
        *args: str,
        env: dict[str, str] | None = None,
        input: str | None = None,
        cwd: Path | None = None,
        timeout: float = 60,
    ) -> CliResult:
        proc = subprocess.run(
            [sys.executable, "-m", "corral", *args],
            env=env if env is not None else self.env,
            cwd=cwd or self.workdir,
            capture_output=True,
            text=True,
            input=input,
            timeout=timeout,
        )
        self._remember_daemon()
        return CliResult(proc.returncode, proc.stdout, proc.stderr)

    def ok(self, *args: str, **kwargs: Any) -> CliResult:
        result = self.cli(*args, **kwargs)
        assert result.code == 0, f"corral {' '.join(args)} failed: {result.err}{result.out}"
        return result

    def client(self) -> ControlClient:
        return ControlClient.connect(self.home.socket, timeout=30)

    def call(self, cmd: str, **args: Any) -> Any:
        with self.client() as client:
            return client.call(cmd, **args)

    def jlist(self) -> list[dict[str, Any]]:
        return list(self.call("list"))

    def proc(self, name: str, instance: int = 0) -> dict[str, Any]:
        for record in self.jlist():
            if record["name"] == name and record["instance"] == instance:
                return record
        raise AssertionError(f"no process {name}:{instance}")

    def daemon_pid(self) -> int | None:
        try:
            return int(self.home.pid_file.read_text())
        except (OSError, ValueError):
            return None

    def start_daemon(self) -> None:
        self._daemon_popen = subprocess.Popen(
            [sys.executable, "-m", "corral.core.daemon"],
            env=self.env,
            cwd="/",
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        wait_for(self._connectable)
        self._remember_daemon()

    def _connectable(self) -> bool:
        try:
            with self.client() as client:
                client.call("ping")
            return True
        except OSError:
            return False

    def _remember_daemon(self) -> None:
        pid = self.daemon_pid()
        if pid and pid not in {p.pid for p in self.started}:
            with contextlib.suppress(psutil.Error):
                self.started.append(psutil.Process(pid))

    def write(self, relative: str, text: str, mode: int = 0o644) -> Path:
        path = self.workdir / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        path.chmod(mode)
        return path

    def start_app(
        self,
        name: str,
        code: str,
        *,
        cli_env: dict[str, str] | None = None,
        env_name: str | None = None,
        **config: Any,
    ) -> list[dict[str, Any]]:
        """Write `code` as <name>.py and start it through the control protocol."""
        from corral.config.model import AppConfig

        script = self.write(f"{name}.py", code)
        config.setdefault("interpreter", sys.executable)
        config.setdefault("cwd", str(self.workdir))
        cfg = AppConfig(name=name, script=str(script), **config)
        env = cli_env if cli_env is not None else {"PATH": self.env["PATH"]}
        return list(self.call("start", apps=[cfg.to_dict()], cli_env=env, env_name=env_name))

    def shutdown(self) -> None:
        daemons = [p for p in self.started if p.is_running() and alive(p.pid)]
        tree: list[psutil.Process] = []
        for daemon in daemons:
            with contextlib.suppress(psutil.Error):
                tree.extend(daemon.children(recursive=True))
        for daemon in daemons:
            with contextlib.suppress(psutil.Error):
                daemon.terminate()  # psutil checks it is still the same process
        gone_deadline = time.monotonic() + 10
        while any(alive(p.pid) for p in daemons) and time.monotonic() < gone_deadline:
            time.sleep(0.05)
        for proc in daemons + tree:
            with contextlib.suppress(psutil.Error):
                proc.kill()
        psutil.wait_procs(daemons + tree, timeout=5)
        if self._daemon_popen is not None:
            self._daemon_popen.wait(timeout=5)  # reap it: the test process is its parent


@pytest.fixture
def corral() -> Iterator[Corral]:
    # A short path: unix socket paths are limited to 108 bytes.
    base = Path(tempfile.mkdtemp(prefix="crl-"))
    home = Home(base / "home")
    workdir = base / "work"
    workdir.mkdir()
    env = {
        "PATH": os.environ.get("PATH", os.defpath),
        "LANG": "C.UTF-8",
        "CORRAL_HOME": str(home.root),
        "HOME": str(base),
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    instance = Corral(home=home, env=env, workdir=workdir)
    try:
        yield instance
    finally:
        instance.shutdown()
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def daemon(corral: Corral) -> Corral:
    """A corral home whose daemon is already running."""
    corral.start_daemon()
    return corral
