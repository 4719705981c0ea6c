"""The workloads: the same code drives every manager through its adapter."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import statistics
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from .load import Load
from .managers import PYTHON, App, Cluster, Manager
from .procevents import Event, ProcEvents

APPS_SRC = Path(__file__).resolve().parent / "apps"

IDLE = "import time; time.sleep(10**6)\n"

# Writes its start time, then (until `limit` starts were written) its exit time, and exits
# 1. Times are time.monotonic(), the clock of the kernel's process events.
CRASH = """import os, sys, time
t = time.monotonic()
path, limit = sys.argv[1], int(sys.argv[2])
with open(path, "a") as f:
    f.write(f"start {os.getpid()} {t!r}\\n")
with open(path) as f:
    n = sum(1 for line in f if line.startswith("start"))
if n > limit:
    time.sleep(10**6)
with open(path, "a") as f:
    f.write(f"exit {os.getpid()} {time.monotonic()!r}\\n")
os._exit(1)
"""

# Writes `total` bytes of 100-byte lines to stdout as fast as the pipe takes them, after
# writing its start time (time.monotonic()) to `mark`; then idles.
FLOOD = """import os, sys, time
total, mark = int(sys.argv[1]), sys.argv[2]
block = (b"x" * 99 + b"\\n") * 640
with open(mark, "w") as f:
    f.write(f"{time.monotonic()!r}\\n")
left = total
while left:
    data = memoryview(block)[: min(len(block), left)]
    while data:
        n = os.write(1, data)
        data, left = data[n:], left - n
time.sleep(10**6)
"""


@dataclass
class Settings:
    apps: int = 100
    cpu_seconds: float = 30.0
    list_calls: int = 20
    crashes: int = 50
    start_timeout: float = 180.0
    crash_timeout: float = 60.0
    log_bytes: int = 500_000_000
    log_timeout: float = 180.0
    reload_instances: int = 4
    reload_threads: int = 4
    reload_warmup: float = 2.0
    reload_after: float = 2.0
    scale_apps: int = 1000
    scale_timeout: float = 300.0
    scale_cpu_seconds: float = 30.0


@dataclass
class Workload:
    key: str
    title: str
    unit: str
    group: str  # workloads of one group share one manager session
    higher_is_better: bool = False


def _workloads(s: Settings) -> list[Workload]:
    n, k = s.apps, s.scale_apps
    return [
        Workload("start", f"1. start {n} idle apps until all are running", "s", "idle"),
        Workload("rss", f"2. manager's own RSS with {n} apps running", "MiB", "idle"),
        Workload("cpu", f"3. manager's own CPU while {n} apps idle", "% of a core", "idle"),
        Workload("list", "4. list command wall time (median of the calls)", "ms", "idle"),
        Workload(
            "crash",
            "5. crash-to-respawn: app's exit to its replacement's exec (median)",
            "ms",
            "crash",
        ),
        Workload(
            "crash_app",
            "5b. crash to the replacement's first line of Python (median)",
            "ms",
            "crash",
        ),
        Workload(
            "logs",
            f"6. log throughput, {s.log_bytes / 1e6:.0f} MB from stdout into the log file "
            "(higher is better)",
            "MB/s",
            "logs",
            higher_is_better=True,
        ),
        Workload(
            "reload",
            f"7. failed requests during a reload of {s.reload_instances} instances under load",
            "requests",
            "reload",
        ),
        Workload("scale_start", f"8. start {k} idle apps until all are running", "s", "scale"),
        Workload("scale_rss", f"8. manager's own RSS with {k} apps running", "MiB", "scale"),
        Workload("scale_cpu", f"8. manager's own CPU while {k} apps idle", "% of a core", "scale"),
    ]


WORKLOADS = _workloads(Settings())
BY_KEY = {w.key: w for w in WORKLOADS}
GROUPS = ["idle", "crash", "logs", "reload", "scale"]


@dataclass
class Result:
    values: dict[str, float] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)


def _apps_dir(m: Manager) -> Path:
    apps_dir = m.root / "apps"
    apps_dir.mkdir(exist_ok=True)
    return apps_dir


def _cpu_seconds(procs: list[psutil.Process]) -> dict[int, float]:
    out = {}
    for p in procs:
        try:
            t = p.cpu_times()
        except psutil.Error:
            continue
        out[p.pid] = t.user + t.system
    return out


def _rss(procs: list[psutil.Process]) -> int:
    total = 0
    for p in procs:
        with contextlib.suppress(psutil.Error):
            total += p.memory_info().rss
    return total


def run_idle(m: Manager, s: Settings, want: set[str], *, scale: bool = False) -> Result:
    """Workloads 1-4 (or 8 with scale=True) in one session: start, RSS, CPU, list."""
    script = _apps_dir(m) / "idle.py"
    script.write_text(IDLE)
    count = s.scale_apps if scale else s.apps
    timeout = s.scale_timeout if scale else s.start_timeout
    prefix = "scale_" if scale else ""
    apps = [App(f"idle{i}", script) for i in range(count)]
    names = {a.name for a in apps}
    res = Result()

    t0 = time.perf_counter()
    m.start(apps, timeout=timeout)
    m.wait_running(names, timeout - (time.perf_counter() - t0))
    res.values[prefix + "start"] = time.perf_counter() - t0

    if not want - {prefix + "start"}:
        return res  # a start-only run (--start-repeat)
    time.sleep(2.0)  # let the start-up settle
    procs = m.own_processes()
    if prefix + "rss" in want:
        res.values[prefix + "rss"] = _rss(procs) / 2**20
    if prefix + "cpu" in want:
        seconds = s.scale_cpu_seconds if scale else s.cpu_seconds
        c0, w0 = _cpu_seconds(procs), time.perf_counter()
        time.sleep(seconds)
        procs2 = m.own_processes()
        c1, w1 = _cpu_seconds(procs2), time.perf_counter()
        used = sum(c1[pid] - c0.get(pid, 0.0) for pid in c1)
        res.values[prefix + "cpu"] = 100.0 * used / (w1 - w0)
    if not scale and "list" in want:
        times = []
        for _ in range(s.list_calls):
            t = time.perf_counter()
            m.list_once()
            times.append(time.perf_counter() - t)
        res.values["list"] = 1000 * statistics.median(times)
    return res


# ---------------------------------------------------------------------------- crash


@dataclass
class Respawn:
    """One crash and its respawn, in CLOCK_MONOTONIC seconds."""

    exit_written: float  # the app wrote its exit time, then called _exit
    first_line: float  # the replacement wrote its start time (its first line of Python)
    exit: float | None = None  # the kernel: the old process exited
    fork: float | None = None  # the kernel: the replacement was forked
    exec: float | None = None  # the kernel: the replacement exec'd (the last exec before
    # its first line, so a wrapper shell counts as the manager's part)


def _respawns(log: Path, events: list[Event] | None) -> list[Respawn]:
    lines = [ln.split() for ln in log.read_text().splitlines()] if log.exists() else []
    by_pid: dict[int, list[Event]] = {}
    for e in events or []:
        by_pid.setdefault(e.pid, []).append(e)
    out: list[Respawn] = []
    last: tuple[int, float] | None = None  # (pid, exit time written) of the last exit
    for kind, pid_text, t_text in lines:
        pid, t = int(pid_text), float(t_text)
        if kind == "exit":
            last = (pid, t)
            continue
        if last is None:
            continue
        r = Respawn(exit_written=last[1], first_line=t)
        old = by_pid.get(last[0], [])
        new = by_pid.get(pid, [])
        exits = [e.ns / 1e9 for e in old if e.kind == "exit" and e.ns / 1e9 >= last[1]]
        execs = [e.ns / 1e9 for e in new if e.kind == "exec" and e.ns / 1e9 <= t]
        if exits and execs:
            r.exit, r.exec = exits[0], execs[-1]
            forks = [e.ns / 1e9 for e in new if e.kind == "fork" and e.ns / 1e9 <= r.exec]
            r.fork = forks[-1] if forks else None
        out.append(r)
        last = None
    return out


def _crash_result(respawns: list[Respawn], s: Settings, timed: bool, lost: bool) -> Result:
    res = Result()
    if not respawns:
        raise RuntimeError(f"no respawn seen in {s.crash_timeout:.0f}s")
    kernel = [r for r in respawns if r.exit is not None and r.exec is not None]
    if len(respawns) < s.crashes:
        note = f"only {len(respawns)} of {s.crashes} respawns in {s.crash_timeout:.0f}s"
        res.notes["crash"] = res.notes["crash_app"] = note
    if kernel:
        spans = [(r.exit, r.fork, r.exec, r.first_line) for r in kernel]
        res.values["crash"] = 1000 * statistics.median(ex - gone for gone, _f, ex, _l in spans)
        res.values["crash_app"] = 1000 * statistics.median(ln - gone for gone, _f, _e, ln in spans)
        forked = [(gone, f, ex) for gone, f, ex, _l in spans if f is not None]
        res.extra["breakdown"] = {
            "exit_fork": 1000 * statistics.median(f - gone for gone, f, _e in forked)
            if forked
            else None,
            "fork_exec": 1000 * statistics.median(ex - f for _g, f, ex in forked)
            if forked
            else None,
            "exit_exec": res.values["crash"],
            "exec_line": 1000 * statistics.median(ln - ex for _g, _f, ex, ln in spans),
            "exit_line": res.values["crash_app"],
            "n": len(kernel),
        }
        if len(kernel) < len(respawns):
            res.notes.setdefault(
                "crash", f"kernel events matched {len(kernel)} of {len(respawns)} respawns"
            )
    else:
        why = "lost events" if lost else ("not subscribed" if not timed else "no match")
        res.notes["crash"] = f"no kernel process events ({why}): exit to exec not measured"
        res.values["crash_app"] = 1000 * statistics.median(
            r.first_line - r.exit_written for r in respawns
        )
        res.notes["crash_app"] = "from the exit time the app wrote (no kernel events)"
    if lost:
        res.notes.setdefault("crash", "the kernel dropped some process events (busy machine)")
    return res


def _wait_starts(log: Path, want: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            starts = sum(1 for ln in log.read_text().splitlines() if ln.startswith("start"))
        except OSError:
            starts = 0
        if starts > want:
            return
        time.sleep(0.05)


def run_crash(m: Manager, s: Settings) -> Result:
    """Workload 5: one app that exits at once, restarted with no delay, `crashes` times."""
    apps_dir = _apps_dir(m)
    script = apps_dir / "crash.py"
    script.write_text(CRASH)
    log = apps_dir / "crash.log"
    events = ProcEvents.open()
    try:
        m.start([App("crash", script, [str(log), str(s.crashes)], crash=True)])
        _wait_starts(log, s.crashes, s.crash_timeout)
    finally:
        if events is not None:
            events.close()
    return _crash_result(
        _respawns(log, events.events() if events else None),
        s,
        events is not None,
        bool(events and events.lost),
    )


def baseline_crash(tmp: Path, s: Settings) -> Result:
    """The same crash script respawned by `sh -c 'while :; do python crash.py; done'`:
    the simplest possible respawner, measured the same way."""
    script = tmp / "crash.py"
    script.write_text(CRASH)
    log = tmp / "crash.log"
    events = ProcEvents.open()
    loop = subprocess.Popen(
        ["sh", "-c", 'while :; do "$0" "$@"; done', PYTHON, str(script), str(log), str(s.crashes)],
        start_new_session=True,
        stdin=subprocess.DEVNULL,
    )
    try:
        _wait_starts(log, s.crashes, s.crash_timeout)
    finally:
        os.killpg(loop.pid, signal.SIGKILL)  # not reaped yet: the group id is still ours
        loop.wait()
        if events is not None:
            events.close()
    return _crash_result(
        _respawns(log, events.events() if events else None),
        s,
        events is not None,
        bool(events and events.lost),
    )


# ----------------------------------------------------------------------------- logs


def _wait_file(path: Path, mark: Path, total: int, timeout: float) -> float:
    """MB/s from the app's start mark until `path` holds `total` bytes."""
    deadline = time.monotonic() + timeout
    while not mark.exists() or not mark.read_text().strip():
        if time.monotonic() > deadline:
            raise TimeoutError("the flood app did not start")
        time.sleep(0.01)
    began = float(mark.read_text().split()[0])
    size, grew = 0, time.monotonic()
    while True:
        try:
            now_size = path.stat().st_size
        except FileNotFoundError:
            now_size = 0
        now = time.monotonic()
        if now_size >= total:
            return total / 1e6 / (now - began)
        if now_size != size:
            size, grew = now_size, now
        if now > deadline or now - grew > 30:
            raise RuntimeError(
                f"the log file holds {size} of {total} bytes after {now - began:.0f}s"
            )
        time.sleep(0.005)


def _check_size(path: Path, total: int, res: Result) -> None:
    time.sleep(0.5)
    size = path.stat().st_size
    if size != total:
        res.notes["logs"] = f"the log file has {size} bytes, {total} were written"


def run_logs(m: Manager, s: Settings) -> Result:
    """Workload 6: one app writes `log_bytes` to stdout; MB/s until all are in its file."""
    apps_dir = _apps_dir(m)
    script = apps_dir / "flood.py"
    script.write_text(FLOOD)
    mark = apps_dir / "flood.mark"
    out = m.root / "logs" / "flood.out.log"
    out.parent.mkdir(exist_ok=True)
    app = App("flood", script, [str(s.log_bytes), str(mark)], out_file=out)
    m.start([app])
    out = m.stdout_log(app)
    res = Result()
    res.values["logs"] = _wait_file(out, mark, s.log_bytes, s.log_timeout)
    _check_size(out, s.log_bytes, res)
    return res


def baseline_logs(tmp: Path, s: Settings) -> Result:
    """The same app piped into `cat > file`."""
    script = tmp / "flood.py"
    script.write_text(FLOOD)
    mark = tmp / "flood.mark"
    out = tmp / "cat.out"
    res = Result()
    with open(out, "wb") as sink:
        cat = subprocess.Popen(["cat"], stdin=subprocess.PIPE, stdout=sink)
        assert cat.stdin is not None
        flood = subprocess.Popen(
            [PYTHON, str(script), str(s.log_bytes), str(mark)],
            stdout=cat.stdin,
            stdin=subprocess.DEVNULL,
        )
        cat.stdin.close()
        try:
            res.values["logs"] = _wait_file(out, mark, s.log_bytes, s.log_timeout)
            _check_size(out, s.log_bytes, res)
        finally:
            flood.kill()  # not reaped yet: the pid is still ours
            flood.wait()
            cat.wait(timeout=30)
    out.unlink()
    return res


# --------------------------------------------------------------------------- reload


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _answers(port: int, timeout: float) -> None:
    """Wait until the app answers on the port (the manager said running; is it serving?)."""
    deadline = time.monotonic() + timeout
    probe = Load(port, threads=1)
    request = f"GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
    while time.monotonic() < deadline:
        error, _pid = probe._once(request.encode())
        if error is None:
            return
        time.sleep(0.1)
    raise TimeoutError(f"nothing answers on 127.0.0.1:{port}")


def run_reload(m: Manager, s: Settings) -> Result:
    """Workload 7: a 4-instance HTTP app under a loopback load; the manager reloads it."""
    apps_dir = _apps_dir(m)
    for name in ("http_app.py", "http_app.js"):
        shutil.copy(APPS_SRC / name, apps_dir / name)
    cluster = Cluster(apps_dir, _free_port(), s.reload_instances)
    names = m.start_cluster(cluster)
    m.wait_running(names, 60)
    _answers(cluster.port, 30)
    time.sleep(1.0)

    load = Load(cluster.port, threads=s.reload_threads).start()
    try:
        time.sleep(s.reload_warmup)
        ok_before, failed_before = load.snapshot()
        before = set(load.tally.pids)
        t0 = time.monotonic()
        m.reload_cluster(cluster)
        t1 = time.monotonic()
        time.sleep(s.reload_after)
    finally:
        tally = load.stop()
    res = Result()
    res.values["reload"] = float(tally.failed)
    new = set(tally.pids) - before
    stale = {pid for pid in before if tally.pids[pid] > t1 + 0.5}
    res.extra = {
        "ok": tally.ok,
        "failed": tally.failed,
        "failed_before": failed_before,
        "ok_before": ok_before,
        "seconds": t1 - t0,
        "new_pids": len(new),
        "errors": tally.errors[:3],
    }
    problems = []
    if failed_before:
        problems.append(f"{failed_before} failed before the reload began")
    if len(new) < s.reload_instances:
        problems.append(f"only {len(new)} new pids answered after the reload")
    if stale:
        problems.append(f"{len(stale)} old pids still answered after the reload returned")
    if problems:
        res.notes["reload"] = "; ".join(problems)
    return res
