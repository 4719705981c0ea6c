"""The workloads: the same code drives every manager through its adapter."""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

from .managers import App, Manager

IDLE = "import time; time.sleep(10**6)\n"

# Writes its start time, then (until `limit` starts were written) its exit time, and exits 1.
CRASH = """import os, sys, time
t = time.time()
path, limit = sys.argv[1], int(sys.argv[2])
with open(path, "a") as f:
    f.write(f"start {os.getpid()} {t!r}\\n")
with open(path) as f:
    n = sum(1 for line in f if line.startswith("start"))
if n > limit:
    time.sleep(10**6)
with open(path, "a") as f:
    f.write(f"exit {os.getpid()} {time.time()!r}\\n")
os._exit(1)
"""


@dataclass
class Settings:
    apps: int = 100
    cpu_seconds: float = 30.0
    list_calls: int = 20
    crashes: int = 50
    start_timeout: float = 180.0
    crash_timeout: float = 60.0


@dataclass
class Workload:
    key: str
    title: str
    unit: str
    group: str  # workloads of one group share one manager session


WORKLOADS = [
    Workload("start", "start 100 idle apps until all are running", "s", "idle"),
    Workload("rss", "manager's own RSS with 100 apps running", "MiB", "idle"),
    Workload("cpu", "manager's own CPU while 100 apps idle", "% of a core", "idle"),
    Workload("list", "list command wall time (median of the calls)", "ms", "idle"),
    Workload("crash", "crash-to-respawn latency (median of the crashes)", "ms", "crash"),
]
BY_KEY = {w.key: w for w in WORKLOADS}


def _cpu_seconds(procs: list[psutil.Process]) -> dict[int, float]:
    out = {}
    for p in procs:
        try:
            t = p.cpu_times()
            out[p.pid] = t.user + t.system
        except psutil.Error:
            pass
    return out


def run_idle(m: Manager, s: Settings, want: set[str]) -> dict[str, float]:
    """Workloads 1-4 in one session: start, RSS, CPU, list. Returns {key: value}."""
    apps_dir = m.root / "apps"
    apps_dir.mkdir(exist_ok=True)
    script = apps_dir / "idle.py"
    script.write_text(IDLE)
    apps = [App(f"idle{i}", script) for i in range(s.apps)]
    names = {a.name for a in apps}
    res: dict[str, float] = {}

    t0 = time.perf_counter()
    m.start(apps)
    m.wait_running(names, s.start_timeout)
    res["start"] = time.perf_counter() - t0

    time.sleep(2.0)  # let the start-up settle
    procs = m.own_processes()
    if "rss" in want:
        rss = 0
        for p in procs:
            try:
                rss += p.memory_info().rss
            except psutil.Error:
                pass
        res["rss"] = rss / 2**20
    if "cpu" in want:
        c0, w0 = _cpu_seconds(procs), time.perf_counter()
        time.sleep(s.cpu_seconds)
        procs2 = m.own_processes()
        c1, w1 = _cpu_seconds(procs2), time.perf_counter()
        used = sum(c1[pid] - c0.get(pid, 0.0) for pid in c1)
        res["cpu"] = 100.0 * used / (w1 - w0)
    if "list" in want:
        times = []
        for _ in range(s.list_calls):
            t = time.perf_counter()
            m.list_once()
            times.append(time.perf_counter() - t)
        res["list"] = 1000 * statistics.median(times)
    return res


def run_crash(m: Manager, s: Settings) -> tuple[float, str]:
    """Workload 5: one app that exits at once; time from its exit to the next one's start."""
    apps_dir = m.root / "apps"
    apps_dir.mkdir(exist_ok=True)
    script = apps_dir / "crash.py"
    script.write_text(CRASH)
    log = apps_dir / "crash.log"
    m.start([App("crash", script, [str(log), str(s.crashes)], crash=True)])
    deadline = time.monotonic() + s.crash_timeout
    starts = 0
    while time.monotonic() < deadline:
        try:
            starts = sum(1 for ln in log.read_text().splitlines() if ln.startswith("start"))
        except OSError:
            starts = 0
        if starts > s.crashes:
            break
        time.sleep(0.05)
    lines = [ln.split() for ln in log.read_text().splitlines()] if log.exists() else []
    lat = []
    last_exit = None
    for kind, _pid, t in lines:
        if kind == "exit":
            last_exit = float(t)
        elif last_exit is not None:
            lat.append(1000 * (float(t) - last_exit))
            last_exit = None
    if not lat:
        raise RuntimeError(f"{m.name}: no respawn seen in {s.crash_timeout:.0f}s")
    note = (
        ""
        if len(lat) >= s.crashes
        else f"only {len(lat)} of {s.crashes} respawns in {s.crash_timeout:.0f}s"
    )
    return statistics.median(lat), note


def baseline_python_startup(n: int = 10) -> float:
    """ms from spawning the crash script's interpreter to its first line (part of every respawn)."""
    import subprocess
    import tempfile

    from .managers import PYTHON

    vals = []
    with tempfile.TemporaryDirectory() as d:
        script = Path(d, "crash.py")
        script.write_text(CRASH)
        log = Path(d, "log")
        for _ in range(n):
            log.unlink(missing_ok=True)
            t = time.time()
            subprocess.run([PYTHON, str(script), str(log), "100"])
            first = float(log.read_text().split()[2])
            vals.append(1000 * (first - t))
    return statistics.median(vals)
