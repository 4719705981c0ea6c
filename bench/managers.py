"""One adapter per manager: write its config for N apps, start, list, pids, stop, kill."""

from __future__ import annotations

import contextlib
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


# The interpreter every manager runs the apps with: the system's Python where there is
# one, else the real interpreter behind this one (not a pyenv shim). See _app_python.
def _app_python() -> str:
    """A plain interpreter whose start-up costs only its own: a Python whose site-packages
    imports things at every start (a .pth file; this machine's pyenv one imports certifi,
    80 ms of CPU per start against 18 ms) would make workload 1 measure that rather than
    the managers. The system's /usr/bin/python3 is what a server's apps most often run."""
    system = "/usr/bin/python3"
    if os.access(system, os.X_OK):
        return os.path.realpath(system)
    if not Path(sys.prefix, "pyvenv.cfg").exists():
        return os.path.realpath(sys.executable)
    return os.path.realpath(os.path.join(sys.base_prefix, "bin", "python3"))


PYTHON = _app_python()


@dataclass
class App:
    name: str
    script: Path
    args: list[str] = field(default_factory=list)
    crash: bool = False  # restart at once, forever (crash-to-respawn workload)
    out_file: Path | None = None  # stdout to this file, never rotated (log workload)

    def argv(self) -> list[str]:
        return [PYTHON, str(self.script), *self.args]


@dataclass
class Cluster:
    """The reload workload's HTTP app: `instances` processes serving 127.0.0.1:`port`."""

    apps_dir: Path  # where http_app.py and http_app.js were copied
    port: int
    instances: int = 4
    name: str = "web"


def run(cmd: list[str], env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(
        cmd, env=env, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
    )


class Manager:
    name = "?"
    reload_how = "?"
    """What the reload workload runs for this manager, and what that does (the table's
    footnote: the managers do not all offer the same thing)."""

    def __init__(self, root: Path):
        self.root = root  # this manager's own temp home; everything lives below it
        self.root.mkdir(parents=True, exist_ok=True)
        self.env = dict(os.environ)

    # -- to implement --
    def start(self, apps: list[App], timeout: float = 120) -> None: ...
    def running(self) -> set[str]: ...
    def list_cmd(self) -> list[str]: ...
    def daemon_pid(self) -> int | None: ...
    def _shutdown_cmds(self) -> list[list[str]]: ...
    def start_cluster(self, c: Cluster) -> set[str]:
        """Start the cluster; return the names `running()` reports for its processes."""
        ...

    def reload_cluster(self, c: Cluster) -> None: ...

    def stdout_log(self, app: App) -> Path:
        """The file the manager writes `app`'s stdout to (it may add to the name)."""
        assert app.out_file is not None
        return app.out_file

    # -- shared --
    def wait_running(self, names: set[str], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        got: set[str] = set()
        slow = 0  # list calls that did not answer within their own 60 s
        while True:
            try:
                got = self.running()
            except subprocess.TimeoutExpired:
                slow += 1  # a manager busy starting its apps: ask again until the deadline
            if names <= got:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"timed out: {len(names - got)} of {len(names)} apps not reported running "
                    f"after {timeout:.0f}s"
                    + (f" ({slow} list calls took over 60 s)" if slow else "")
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
        """Stop the apps and the daemon; then SIGKILL whatever of this run is left.

        Only processes that are provably this run's are signalled: their command line or
        environment names this run's temporary root, and psutil checks the process's
        start time before signalling, so a pid reused meanwhile is never hit.
        """
        daemon = None
        with contextlib.suppress(Exception):
            pid = self.daemon_pid()
            if pid is not None and self._ours(candidate := psutil.Process(pid)):
                daemon = candidate
        for cmd in self._shutdown_cmds():
            with contextlib.suppress(OSError, subprocess.TimeoutExpired):
                run(cmd, self.env, timeout=180)
        time.sleep(0.3)
        leftovers = [daemon] if daemon is not None else []
        for p in psutil.process_iter():
            if p.pid != os.getpid() and p not in leftovers and self._ours(p):
                leftovers.append(p)
        for p in leftovers:
            with contextlib.suppress(psutil.Error):
                if p.is_running():
                    p.send_signal(signal.SIGKILL)
        psutil.wait_procs(leftovers, timeout=5)

    def _ours(self, p: psutil.Process) -> bool:
        root = str(self.root)
        try:
            return any(root in a for a in p.cmdline()) or any(
                root in v for v in p.environ().values()
            )
        except psutil.Error:
            return False

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

    reload_how = (
        "`corral reload web`: a 4-instance app with `listen: 127.0.0.1:PORT` (corral binds "
        "the socket once and passes it as fd 3), `wait_ready: true`; one instance at a time, "
        "each replacement is ready (READY=1) before its old instance is stopped (SIGINT, "
        "graceful)"
    )

    def start(self, apps: list[App], timeout: float = 120) -> None:
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
            if a.out_file:
                lines += [f"    out_file: {a.out_file}", "    log_max_size: 0"]
        self._start_config("\n".join(lines) + "\n", timeout)

    def _start_config(self, text: str, timeout: float) -> None:
        cfg = self.root / "corral.yaml"
        cfg.write_text(text)
        p = run([self.bin, "start", str(cfg)], self.env, timeout=timeout)
        if p.returncode != 0:
            raise RuntimeError(f"corral start: {p.stderr[-300:]}")

    def start_cluster(self, c: Cluster) -> set[str]:
        self._start_config(
            f"""apps:
  - name: {c.name}
    script: {c.apps_dir / "http_app.py"}
    interpreter: {PYTHON}
    instances: {c.instances}
    listen: ["127.0.0.1:{c.port}"]
    wait_ready: true
    listen_timeout: 20s
    kill_timeout: 10s
""",
            120,
        )
        return {c.name}

    def reload_cluster(self, c: Cluster) -> None:
        p = run([self.bin, "reload", c.name], self.env, timeout=120)
        if p.returncode != 0:
            raise RuntimeError(f"corral reload: {p.stderr[-300:]}")

    def running_counts(self) -> dict[str, int]:
        p = run([self.bin, "jlist"], self.env)
        out: dict[str, int] = {}
        for x in json.loads(p.stdout):
            if x["status"] == "online":
                out[x["name"]] = out.get(x["name"], 0) + 1
        return out

    def running(self) -> set[str]:
        return set(self.running_counts())

    def stdout_log(self, app: App) -> Path:
        p = run([self.bin, "jlist"], self.env)
        return Path(next(x["out_log"] for x in json.loads(p.stdout) if x["name"] == app.name))

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

    reload_how = (
        "`pm2 reload web`: a 4-instance Node app in cluster mode (Node's cluster module "
        "shares the port; PM2's daemon is the cluster primary), `wait_ready: true`; PM2 "
        "replaces one instance at a time, the new one ready before the old gets SIGINT"
    )

    def start(self, apps: list[App], timeout: float = 180) -> None:
        cfg: dict[str, list[dict[str, object]]] = {"apps": []}
        for a in apps:
            d: dict[str, object] = {
                "name": a.name,
                "script": str(a.script),
                "interpreter": PYTHON,
                "args": a.args,
                "autorestart": True,
            }
            if a.crash:
                d.update(restart_delay=0, max_restarts=1000000, min_uptime=0)
            if a.out_file:
                d.update(out_file=str(a.out_file), error_file=str(a.out_file) + ".err")
            cfg["apps"].append(d)
        self._start_config(cfg, timeout)

    def _start_config(self, cfg: dict[str, list[dict[str, object]]], timeout: float) -> None:
        path = self.root / "ecosystem.json"
        path.write_text(json.dumps(cfg))
        p = run([*self.bin, "start", str(path)], self.env, timeout=timeout)
        if p.returncode != 0:
            raise RuntimeError(f"pm2 start: {p.stderr[-300:]}")

    def start_cluster(self, c: Cluster) -> set[str]:
        app: dict[str, object] = {
            "name": c.name,
            "script": str(c.apps_dir / "http_app.js"),
            "exec_mode": "cluster",
            "instances": c.instances,
            "env": {"PORT": str(c.port)},
            "wait_ready": True,
            "listen_timeout": 20000,
            "kill_timeout": 10000,
        }
        self._start_config({"apps": [app]}, 120)
        return {c.name}

    def reload_cluster(self, c: Cluster) -> None:
        p = run([*self.bin, "reload", c.name], self.env, timeout=120)
        if p.returncode != 0:
            raise RuntimeError(f"pm2 reload: {p.stderr[-300:]}")

    def running(self) -> set[str]:
        p = run([*self.bin, "jlist"], self.env)
        s = p.stdout
        data = json.loads(s[s.index("[") :]) if "[" in s else []
        return {x["name"] for x in data if x.get("pm2_env", {}).get("status") == "online"}

    def list_cmd(self) -> list[str]:
        return [*self.bin, "ls"]

    def stdout_log(self, app: App) -> Path:
        p = run([*self.bin, "jlist"], self.env)
        data = json.loads(p.stdout[p.stdout.index("[") :])
        env = next(x["pm2_env"] for x in data if x["name"] == app.name)
        return Path(env["pm_out_log_path"])

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

    reload_how = (
        "`supervisorctl restart web:*`: 4 processes of one program (`numprocs=4`), each "
        "binding the port itself with SO_REUSEPORT (Supervisor cannot share a socket); "
        "the restart stops all of them (SIGTERM, graceful), then starts them again"
    )

    def start(self, apps: list[App], timeout: float = 120) -> None:
        text = ""
        for a in apps:
            # startsecs=0: RUNNING as soon as it is spawned, as the other managers report it
            text += (
                f"\n[program:{a.name}]\ncommand={' '.join(a.argv())}\nautostart=true\n"
                f"autorestart=true\nstartsecs=0\nstartretries=1000000\n"
            )
            if a.out_file:
                text += f"stdout_logfile={a.out_file}\nstdout_logfile_maxbytes=0\n"
        self._start_config(text, timeout)

    def start_cluster(self, c: Cluster) -> set[str]:
        self._start_config(
            f"""
[program:{c.name}]
command={PYTHON} {c.apps_dir / "http_app.py"} --reuseport {c.port}
process_name=%(program_name)s_%(process_num)02d
numprocs={c.instances}
autostart=true
autorestart=true
startsecs=1
stopsignal=TERM
stopwaitsecs=10
""",
            120,
        )
        return {f"{c.name}:{c.name}_{i:02d}" for i in range(c.instances)}

    def reload_cluster(self, c: Cluster) -> None:
        p = run([*self.ctl, "restart", f"{c.name}:*"], self.env, timeout=120)
        if p.returncode != 0:
            raise RuntimeError(f"supervisorctl restart: {p.stdout[-300:]} {p.stderr[-300:]}")

    def _start_config(self, programs: str, timeout: float) -> None:
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
        self.conf.write_text(text + programs)
        p = run([str(peers.venv_bin("supervisord")), "-c", str(self.conf)], self.env, timeout)
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

    reload_how = (
        "`circusctl reload web`: circus binds the socket (`[socket:web]`, `use_sockets = "
        "True`) and passes it to 4 processes (`--fd $(circus.sockets.web)`); a graceful "
        "reload starts 4 new processes, then stops the 4 old ones (SIGTERM); circus has no "
        "readiness signal, a new process counts as up once spawned"
    )

    def start(self, apps: list[App], timeout: float = 120) -> None:
        text = ""
        for a in apps:
            text += (
                f"\n[watcher:{a.name}]\ncmd = {' '.join(a.argv())}\nnumprocesses = 1\n"
                f"respawn = True\nmax_retry = -1\nwarmup_delay = 0\n"
            )
            if a.out_file:
                text += (
                    "stdout_stream.class = FileStream\n"
                    f"stdout_stream.filename = {a.out_file}\n"
                    "stdout_stream.max_bytes = 0\n"
                )
        self._start_config(text, timeout)

    def start_cluster(self, c: Cluster) -> set[str]:
        self._start_config(
            f"""
[socket:{c.name}]
host = 127.0.0.1
port = {c.port}

[watcher:{c.name}]
cmd = {PYTHON} {c.apps_dir / "http_app.py"} --fd $(circus.sockets.{c.name})
use_sockets = True
numprocesses = {c.instances}
warmup_delay = 0
stop_signal = TERM
graceful_timeout = 10
""",
            120,
        )
        return {c.name}

    def reload_cluster(self, c: Cluster) -> None:
        p = run([*self.ctl, "reload", c.name], self.env, timeout=120)
        if p.returncode != 0:
            raise RuntimeError(f"circusctl reload: {p.stdout[-300:]} {p.stderr[-300:]}")

    def _start_config(self, watchers: str, timeout: float) -> None:
        text = f"""[circus]
endpoint = {self.endpoint}
pubsub_endpoint = ipc://{self.root}/pubsub.sock
statsd = false
pidfile = {self.pidfile}
logoutput = {self.root}/circusd.log
"""
        self.ini.write_text(text + watchers)
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
            timeout,
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
