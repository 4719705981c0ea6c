"""One adapter per manager: write its config for N apps, start, list, pids, stop, kill."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from . import peers

REPO = peers.BENCH.parent
# The real interpreter (not a pyenv shim): every manager runs the apps with it.
PYTHON = (
    os.path.realpath(sys.executable)
    if not Path(sys.prefix, "pyvenv.cfg").exists()
    else os.path.realpath(os.path.join(sys.base_prefix, "bin", "python3"))
)


@dataclass
class App:
    name: str
    script: Path
    args: list[str] = field(default_factory=list)
    crash: bool = False  # restart at once, forever (crash-to-respawn workload)

    def argv(self) -> list[str]:
        return [PYTHON, str(self.script), *self.args]


def run(cmd: list[str], env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(
        cmd, env=env, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
    )


class Manager:
    name = "?"
    notes: dict[str, str] = {}  # workload -> what this manager does differently

    def __init__(self, root: Path):
        self.root = root  # this manager's own temp home; everything lives below it
        self.root.mkdir(parents=True, exist_ok=True)
        self.env = dict(os.environ)

    # -- to implement --
    def start(self, apps: list[App]) -> None: ...
    def running(self) -> set[str]: ...
    def list_cmd(self) -> list[str]: ...
    def daemon_pid(self) -> int | None: ...
    def _shutdown_cmds(self) -> list[list[str]]: ...

    # -- shared --
    def wait_running(self, names: set[str], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            got = self.running()
            if names <= got:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"{self.name}: {len(names - got)} of {len(names)} apps not running "
                    f"after {timeout:.0f}s"
                )
            time.sleep(0.02)

    def list_once(self) -> None:
        p = run(self.list_cmd(), self.env)
        if p.returncode not in (0, 3):  # supervisorctl status exits 3 when one is not RUNNING
            raise RuntimeError(
                f"{self.name}: {' '.join(self.list_cmd())} exited {p.returncode}: {p.stderr[-300:]}"
            )

    def own_processes(self) -> list[psutil.Process]:
        """The manager's own processes: its daemon and its descendants that are not apps."""
        pid = self.daemon_pid()
        if pid is None:
            raise RuntimeError(f"{self.name}: daemon pid not found")
        root = psutil.Process(pid)
        out = [root]
        apps_dir = str(self.root / "apps")
        for c in root.children(recursive=True):
            try:
                if any(apps_dir in a for a in c.cmdline()):
                    continue
                if any(apps_dir in a for p in c.parents() if p.pid != pid for a in p.cmdline()):
                    continue
            except psutil.Error:
                continue
            out.append(c)
        return out

    def shutdown(self) -> None:
        """Stop the apps and the daemon; then end by pid whatever of ours is left."""
        for cmd in self._shutdown_cmds():
            try:
                run(cmd, self.env, timeout=30)
            except (OSError, subprocess.TimeoutExpired):
                pass
        time.sleep(0.3)
        pid = None
        try:
            pid = self.daemon_pid()
        except Exception:
            pass
        root = str(self.root)
        leftovers = []
        for p in psutil.process_iter(["pid", "cmdline"]):
            try:
                if p.pid == pid or any(root in a for a in (p.info["cmdline"] or [])):
                    leftovers.append(p)
            except psutil.Error:
                pass
        for p in leftovers:
            try:
                p.send_signal(signal.SIGKILL)
            except psutil.Error:
                pass
        psutil.wait_procs(leftovers, timeout=5)

    def _read_pid(self, path: Path) -> int | None:
        try:
            pid = int(path.read_text().strip())
        except (OSError, ValueError):
            return None
        return pid if psutil.pid_exists(pid) else None


class Corral(Manager):
    name = "corral"

    def __init__(self, root: Path):
        super().__init__(root)
        self.home = root / "home"
        self.env["CORRAL_HOME"] = str(self.home)
        self.bin = str(REPO / ".venv" / "bin" / "corral")

    def start(self, apps: list[App]) -> None:
        lines = ["apps:"]
        for a in apps:
            lines += [
                f"  - name: {a.name}",
                f"    script: {a.script}",
                f"    interpreter: {PYTHON}",
            ]
            if a.args:
                lines.append(f"    args: {json.dumps(a.args)}")
            if a.crash:
                lines += [
                    "    autorestart: true",
                    "    restart_delay: 0s",
                    "    max_restarts: 1000000",
                    "    min_uptime: 0s",
                ]
        cfg = self.root / "corral.yaml"
        cfg.write_text("\n".join(lines) + "\n")
        p = run([self.bin, "start", str(cfg)], self.env, timeout=120)
        if p.returncode != 0:
            raise RuntimeError(f"corral start: {p.stderr[-300:]}")

    def running(self) -> set[str]:
        p = run([self.bin, "jlist"], self.env)
        return {x["name"] for x in json.loads(p.stdout) if x["status"] == "online"}

    def list_cmd(self) -> list[str]:
        return [self.bin, "ls"]

    def daemon_pid(self) -> int | None:
        return self._read_pid(self.home / "daemon.pid")

    def _shutdown_cmds(self) -> list[list[str]]:
        return [[self.bin, "kill"]]


class PM2(Manager):
    name = "pm2"

    def __init__(self, root: Path):
        super().__init__(root)
        self.home = root / "pm2home"
        self.env["PM2_HOME"] = str(self.home)
        self.bin = ["node", str(peers.PM2_BIN)]

    def start(self, apps: list[App]) -> None:
        cfg = {"apps": []}
        for a in apps:
            d = {
                "name": a.name,
                "script": str(a.script),
                "interpreter": PYTHON,
                "args": a.args,
                "autorestart": True,
            }
            if a.crash:
                d.update(restart_delay=0, max_restarts=1000000, min_uptime=0)
            cfg["apps"].append(d)
        path = self.root / "ecosystem.json"
        path.write_text(json.dumps(cfg))
        p = run([*self.bin, "start", str(path)], self.env, timeout=180)
        if p.returncode != 0:
            raise RuntimeError(f"pm2 start: {p.stderr[-300:]}")

    def running(self) -> set[str]:
        p = run([*self.bin, "jlist"], self.env)
        s = p.stdout
        data = json.loads(s[s.index("[") :]) if "[" in s else []
        return {x["name"] for x in data if x.get("pm2_env", {}).get("status") == "online"}

    def list_cmd(self) -> list[str]:
        return [*self.bin, "ls"]

    def daemon_pid(self) -> int | None:
        return self._read_pid(self.home / "pm2.pid")

    def _shutdown_cmds(self) -> list[list[str]]:
        return [[*self.bin, "kill"]]


class Supervisor(Manager):
    name = "supervisor"

    def __init__(self, root: Path):
        super().__init__(root)
        self.conf = root / "supervisord.conf"
        self.sock = root / "supervisor.sock"
        self.pidfile = root / "supervisord.pid"
        self.ctl = [str(peers.venv_bin("supervisorctl")), "-c", str(self.conf)]

    def start(self, apps: list[App]) -> None:
        logs = self.root / "logs"
        logs.mkdir(exist_ok=True)
        text = f"""[unix_http_server]
file={self.sock}
chmod=0700

[supervisord]
logfile={self.root}/supervisord.log
pidfile={self.pidfile}
childlogdir={logs}
nodaemon=false

[rpcinterface:supervisor]
supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface

[supervisorctl]
serverurl=unix://{self.sock}
"""
        for a in apps:
            # startsecs=0: RUNNING as soon as it is spawned, as the other managers report it
            text += (
                f"\n[program:{a.name}]\ncommand={' '.join(a.argv())}\nautostart=true\n"
                f"autorestart=true\nstartsecs=0\nstartretries=1000000\n"
            )
        self.conf.write_text(text)
        p = run([str(peers.venv_bin("supervisord")), "-c", str(self.conf)], self.env)
        if p.returncode != 0:
            raise RuntimeError(f"supervisord: {p.stderr[-300:]}")

    def running(self) -> set[str]:
        p = run([*self.ctl, "status"], self.env)
        out = set()
        for line in p.stdout.splitlines():
            parts = line.split()
            if len(parts) >= 2 and parts[1] == "RUNNING":
                out.add(parts[0])
        return out

    def list_cmd(self) -> list[str]:
        return [*self.ctl, "status"]

    def daemon_pid(self) -> int | None:
        return self._read_pid(self.pidfile)

    def _shutdown_cmds(self) -> list[list[str]]:
        return [[*self.ctl, "shutdown"]]


class Circus(Manager):
    name = "circus"

    def __init__(self, root: Path):
        super().__init__(root)
        self.ini = root / "circus.ini"
        self.endpoint = f"ipc://{root}/endpoint.sock"
        self.pidfile = root / "circusd.pid"
        self.ctl = [
            str(peers.venv_bin("circusctl")),
            "--endpoint",
            self.endpoint,
            "--timeout",
            "30",
        ]

    def start(self, apps: list[App]) -> None:
        text = f"""[circus]
endpoint = {self.endpoint}
pubsub_endpoint = ipc://{self.root}/pubsub.sock
statsd = false
pidfile = {self.pidfile}
logoutput = {self.root}/circusd.log
"""
        for a in apps:
            text += (
                f"\n[watcher:{a.name}]\ncmd = {' '.join(a.argv())}\nnumprocesses = 1\n"
                f"respawn = True\nmax_retry = -1\nwarmup_delay = 0\n"
            )
        self.ini.write_text(text)
        p = run(
            [
                str(peers.venv_bin("circusd")),
                "--daemon",
                "--pidfile",
                str(self.pidfile),
                "--log-output",
                str(self.root / "circusd.log"),
                str(self.ini),
            ],
            self.env,
        )
        if p.returncode != 0:
            raise RuntimeError(f"circusd: {p.stderr[-300:]}")

    def running(self) -> set[str]:
        p = run([*self.ctl, "status"], self.env)
        out = set()
        for line in p.stdout.splitlines():
            m = re.match(r"^(\S+):\s+active\s*$", line)
            if m:
                out.add(m.group(1))
        return out

    def list_cmd(self) -> list[str]:
        return [*self.ctl, "status"]

    def daemon_pid(self) -> int | None:
        return self._read_pid(self.pidfile)

    def _shutdown_cmds(self) -> list[list[str]]:
        return [[*self.ctl, "quit"]]


ADAPTERS: dict[str, type[Manager]] = {
    "corral": Corral,
    "pm2": PM2,
    "supervisor": Supervisor,
    "circus": Circus,
}
