"""The results tables (stdout) and docs/BENCHMARKS.md."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import platform
import statistics
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from corral.core import supervisor as sup

from . import peers as peers_mod
from .managers import PYTHON
from .workloads import Settings, Workload, _workloads

DOC = peers_mod.BENCH.parent / "docs" / "BENCHMARKS.md"
BASELINE_NAMES = {
    "crash": "`sh` loop",
    "crash_app": "`sh` loop",
    "logs": "`cat`",
}


@dataclass
class Run:
    command: str
    workloads: list[Workload]
    managers: list[str]
    results: dict[str, dict[str, list[float]]]
    notes: dict[str, dict[str, str]]
    baselines: dict[str, list[float]]
    extras: dict[str, dict[str, list[dict[str, Any]]]]
    baseline_extras: dict[str, list[dict[str, Any]]]
    peers: dict[str, peers_mod.Peer]
    settings: Settings
    repeat: int
    scale_repeat: int
    seconds: float
    load_before: str
    load_after: str
    adapters: dict[str, Any]
    finished: str = ""
    """When the run ended (UTC); set by the run, kept by save/load."""
    start_repeat: int = 0
    """Runs of workload 1 (start); more than `repeat`: the extra ones time the start only."""

    def median(self, key: str, manager: str) -> float | None:
        vals = self.results.get(key, {}).get(manager, [])
        return statistics.median(vals) if vals else None

    def has(self, key: str) -> bool:
        return any(w.key == key for w in self.workloads)


def save(run: Run, path: Path) -> None:
    """The raw results, so that the doc can be written again without a new run."""
    data = {
        k: getattr(run, k)
        for k in (
            "command",
            "managers",
            "results",
            "notes",
            "baselines",
            "extras",
            "baseline_extras",
            "repeat",
            "scale_repeat",
            "start_repeat",
            "seconds",
            "load_before",
            "load_after",
        )
    }
    data["workloads"] = [w.key for w in run.workloads]
    data["peers"] = {k: dataclasses.asdict(p) for k, p in run.peers.items()}
    data["settings"] = dataclasses.asdict(run.settings)
    data["finished"] = run.finished
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1))


def load(path: Path, adapters: dict[str, Any]) -> Run:
    data = json.loads(path.read_text())
    settings = Settings(**data.pop("settings"))
    keys = data.pop("workloads")
    workloads = [w for w in _workloads(settings) if w.key in keys]
    peers = {k: peers_mod.Peer(**p) for k, p in data.pop("peers").items()}
    return Run(workloads=workloads, peers=peers, settings=settings, adapters=adapters, **data)


def _fmt(v: float) -> str:
    if v == 0:
        return "0"
    return f"{v:.3g}" if abs(v) < 1000 else f"{v:.0f}"


def _cell(vals: list[float]) -> str:
    med = statistics.median(vals)
    if len(vals) == 1:
        return _fmt(med)
    return f"{_fmt(med)} ({_fmt(min(vals))}-{_fmt(max(vals))})"


def machine() -> list[tuple[str, str]]:
    cpu = "?"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        node = subprocess.run(["node", "--version"], capture_output=True, text=True).stdout.strip()
    except OSError:
        node = "not found"
    return [
        ("CPU", cpu),
        ("cores", str(os.cpu_count())),
        ("memory", f"{psutil.virtual_memory().total / 2**30:.1f} GiB"),
        ("kernel", f"{platform.system()} {platform.release()}"),
        ("Python", platform.python_version()),
        ("node", node or "?"),
    ]


def main_table(run: Run) -> tuple[str, list[str]]:
    """A Markdown table; cells are "median (min-max)"; footnotes say what a cell lacks."""
    managers = run.managers
    peers = [m for m in managers if m != "corral"]
    ratio_cols = [f"corral/{p}" for p in peers] if "corral" in managers else []
    head = ["workload", "unit", *managers, "baseline (no manager)", *ratio_cols]
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    foot: list[str] = []

    def note(text: str) -> str:
        if text not in foot:
            foot.append(text)
        return f"[{foot.index(text) + 1}]"

    for w in run.workloads:
        cells = [w.title, w.unit]
        med: dict[str, float] = {}
        for m in managers:
            vals = run.results.get(w.key, {}).get(m, [])
            n = run.notes.get(w.key, {}).get(m, "")
            if vals:
                med[m] = statistics.median(vals)
                c = _cell(vals)
                if w.key == "reload":
                    c += " " + note(f"{m}, reload: {run.adapters[m].reload_how}")
                if n:
                    c += " " + note(f"{m}, {w.key}: {n}")
            else:
                c = "n/a " + note(f"{m}, {w.key}: {n or 'no result'}")
            cells.append(c)
        base = run.baselines.get(w.key)
        cells.append(f"{BASELINE_NAMES.get(w.key, '')}: {_cell(base)}" if base else "-")
        for p in peers if ratio_cols else []:
            if "corral" in med and p in med and med[p] > 0:
                cells.append(f"{med['corral'] / med[p]:.2f}x")
            else:
                cells.append("-")
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows), [f"[{i + 1}] {t}" for i, t in enumerate(foot)]


def _med(extras: list[dict[str, Any]], key: str) -> float | None:
    vals = [e[key] for e in extras if e.get(key) is not None]
    return statistics.median(vals) if vals else None


def breakdown_table(run: Run) -> str:
    """Where the crash-to-respawn time goes, from the kernel's process events."""
    cols = ["exit_fork", "fork_exec", "exit_exec", "exec_line", "exit_line"]
    rows = [
        "| respawner | exit -> fork | fork -> exec | exit -> exec (5) | exec -> first line "
        "| exit -> first line (5b) |",
        "|---|---|---|---|---|---|",
    ]
    sources = [(m, run.extras.get("crash", {}).get(m, [])) for m in run.managers]
    sources.append(("`sh` loop (baseline)", run.baseline_extras.get("crash", [])))
    for name, extras in sources:
        parts = [e["breakdown"] for e in extras if "breakdown" in e]
        if parts:
            meds = [_med(parts, col) for col in cols]
            cells = " | ".join("-" if v is None else f"{v:.2f}" for v in meds)
            rows.append(f"| {name} | {cells} |")
    return "\n".join(rows)


def reload_table(run: Run) -> str:
    rows = [
        "| manager | requests answered (median) | failed (each run) | reload command took (s) |",
        "|---|---|---|---|",
    ]
    for m in run.managers:
        extras = run.extras.get("reload", {}).get(m, [])
        if not extras:
            continue
        ok = statistics.median(e["ok"] for e in extras)
        failed = ", ".join(str(e["failed"]) for e in extras)
        took = statistics.median(e["seconds"] for e in extras)
        errors = sorted({err.split(":")[0] for e in extras for err in e["errors"]})
        why = f" ({', '.join(errors)})" if errors else ""
        rows.append(f"| {m} | {ok:.0f} | {failed}{why} | {took:.1f} |")
    return "\n".join(rows)


def goals(run: Run) -> list[str]:
    """The goals of issue 6, checked against this run's medians."""
    out: list[str] = []

    def verdict(ok: bool | None) -> str:
        return "n/a" if ok is None else ("**met**" if ok else "**not met**")

    def ratio(key: str, peer: str) -> float | None:
        c, p = run.median(key, "corral"), run.median(key, peer)
        return None if c is None or p is None or p == 0 else c / p

    for key, what in (("start", "start 100 apps"), ("rss", "manager RSS"), ("list", "list")):
        if run.has(key):
            r = ratio(key, "pm2")
            out.append(
                f"- {what}: corral at most half of PM2's: "
                + (f"{r:.2f}x, {verdict(r <= 0.5)}" if r is not None else verdict(None))
            )
    if run.has("cpu"):
        c, sup = run.median("cpu", "corral"), run.median("cpu", "supervisor")
        ok = None if c is None or sup is None else (c <= sup and c < 1.0)
        out.append(
            "- idle CPU with 100 apps: at most Supervisor's and under 1 % of a core: "
            + (
                f"corral {c:.3g} %, Supervisor {sup:.3g} %, {verdict(ok)}"
                if c is not None and sup is not None
                else verdict(None)
            )
        )
    if run.has("crash"):
        c = run.median("crash", "corral")
        app = run.median("crash_app", "corral")
        out.append(
            "- crash-to-respawn under 10 ms median: "
            + (f"exit to exec {c:.2f} ms, {verdict(c < 10)}" if c is not None else verdict(None))
            + (
                f"; to the Python app's first line {app:.1f} ms, {verdict(app < 10)}"
                " (the interpreter's start-up alone is more than 10 ms)"
                if app is not None
                else ""
            )
        )
    if run.has("logs"):
        c, p = run.median("logs", "corral"), run.median("logs", "pm2")
        cat = statistics.median(run.baselines["logs"]) if run.baselines.get("logs") else None
        parts = []
        if c is not None and p:
            parts.append(f"{c / p:.2f}x PM2's, {verdict(c >= 2 * p)}")
        if c is not None and cat:
            parts.append(f"{c / cat:.2f}x cat's, {verdict(c >= cat / 2)}")
        out.append("- log throughput at least 2x PM2's and half of cat's: " + "; ".join(parts))
    if run.has("reload"):
        vals = run.results.get("reload", {}).get("corral", [])
        out.append(
            "- reload under load, zero failed requests: "
            + (
                f"{', '.join(_fmt(v) for v in vals)} failed in {len(vals)} run(s), "
                f"{verdict(all(v == 0 for v in vals))}"
                if vals
                else verdict(None)
            )
        )
    return out


def results_markdown(run: Run) -> str:
    tab, foot = main_table(run)
    parts = [tab, "", *foot]
    if run.has("crash"):
        parts += [
            "",
            "Crash-to-respawn, where the time goes (ms, from the kernel's process events; "
            "each column is a median of its own, so they need not add up):",
            "",
            breakdown_table(run),
        ]
    if run.has("reload"):
        parts += ["", "Reload under load, details:", "", reload_table(run)]
    parts += ["", "Goals (issue 6), from this run:", "", *goals(run)]
    return "\n".join(parts)


def write_doc(run: Run) -> None:
    s = run.settings
    now = run.finished or dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    mach = "\n".join(f"- {k}: {v}" for k, v in machine())
    vers = "\n".join(
        f"- {p.name}: {p.version if p.ok else 'unavailable: ' + p.why}" for p in run.peers.values()
    )
    scale_runs = (
        f"; the {s.scale_apps}-app workload (8) {run.scale_repeat} run(s) only, to keep the "
        "whole run near 35 minutes"
        if run.scale_repeat != run.repeat
        else ""
    )
    if run.start_repeat > run.repeat:
        scale_runs += (
            f"; workload 1 (start {s.apps} apps) {run.start_repeat} runs, the extra ones "
            "timing the start alone (its figure swings most from run to run)"
        )
    text = f"""# Benchmarks

Run them (from the repository root; not part of the test suite):

```sh
.venv/bin/python -m bench                 # every workload, every manager, 3 runs each
.venv/bin/python -m bench --quick         # a short smoke run (1 run, smaller sizes)
.venv/bin/python -m bench --repeat 5 --only crash --managers corral,pm2
.venv/bin/python -m bench --only reload --only logs --no-doc
```

`--only` takes a workload (`start`, `rss`, `cpu`, `list`, `crash`, `crash_app`, `logs`,
`reload`, `scale_start`, `scale_rss`, `scale_cpu`) or a group (`idle`, `crash`, `logs`,
`reload`, `scale`); `--scale-repeat N` runs the 1000-app workload N times (default 1);
`--start-repeat N` times the start of 100 apps N times (default 7; the runs beyond
`--repeat` start the apps, time it and shut down, measuring nothing else), interleaved
across the managers like every other run.
The first run installs the peers into `bench/.cache` (git-ignored): PM2 from the npm
registry (`npm install --ignore-scripts --prefix bench/.cache/npm pm2`), Supervisor and
Circus from PyPI into `bench/.cache/peers-venv`. A peer that cannot be installed or run is
reported in the table, not fatal. corral's own bytecode is written before the runs, as
installing a wheel does (the checkout is an editable install, and with
`PYTHONDONTWRITEBYTECODE` set every start would compile its modules again). Every manager
runs with its own home in a temporary directory (`CORRAL_HOME`, `PM2_HOME`, a temporary
supervisord config, a temporary circus ini) and is shut down (`corral kill`, `pm2 kill`,
`supervisorctl shutdown`, `circusctl quit`, then SIGKILL by pid for anything of that run
left) even when a workload fails. Everything runs on loopback; every wait is bounded.

## Results

Command: `{run.command}` ({run.repeat} run(s) per workload and manager{scale_runs};
{run.seconds / 60:.1f} min in all), finished {now}.

Machine load (`uptime`; other engineers' test suites were running on this 2-core machine
at the same time, so every figure carries that noise):

- at the start: `{run.load_before}`
- at the end: `{run.load_after}`

Each cell is the median over the runs, with the spread (min-max) in parentheses. Lower is
better except for log throughput (MB/s); `corral/X` is corral's median divided by X's
(for MB/s above 1 means corral is faster, elsewhere below 1 means corral is better).

{results_markdown(run)}

### Notes on the goals

- **Crash-to-respawn** (goal: under 10 ms median) is about the manager's part, row 5: from
  the kernel's exit of the old process to the exec of its replacement. In corral that is
  the pidfd becoming readable, the reap, the restart policy, and (with `restart_delay:
  0s`) in the same turn of the event loop the launch: environment, notify socket, log
  pipes, then vfork+exec on the loop. Row 5b adds the app's own start-up: for a Python
  app the interpreter alone (the `exec -> first line` column, the same whatever
  respawns it, the `sh` loop included) takes several times 10 ms on this machine, so no
  manager can bring a Python app back to its first line in 10 ms.
- **Start 100 apps** (goal: at most half of PM2's): every manager reports an app running
  once it has spawned it, so the figure is the CLI and daemon start-up, 100 spawns and the
  list calls of the polling, while the 100 interpreters just started compete for the 2
  cores. That competition sets a floor: the apps' interpreters alone need ~9 ms of CPU
  each (0.9 s for 100, ~0.45 s of the 2 cores), and a bare Python loop spawning them takes
  ~0.47-0.5 s here, whether it waits for each exec (subprocess, posix_spawn) or not
  (fork); two spawning threads are no faster; with the children at `nice 19` the same
  loop takes 0.16 s, so the time is the scheduler sharing the cores among the new
  interpreters (corral does not renice apps, or move them to a cgroup of their own, to
  win a benchmark). corral's 100 spawns take ~0.49 s of its 0.71-0.82 s; the rest is the
  daemon's start-up (~0.11 s: `corral start FILE` spawns it with posix_spawn before
  importing anything the interpreter had not loaded; it imports no psutil, runs with the
  collector off until it listens, and overlaps the CLI loading the config file), the
  request (~0.03 s, including the state file's last write, which the reply waits for) and
  the `jlist` poll (~0.05 s). Workload 1 has more runs than the others (`--start-repeat`):
  it swings most from run to run.
- **Log throughput** (goal: at least 2x PM2's and half of `cat`'s): corral reads the pipe
  on its event loop (up to 1 MiB a read, `core/logcapture.py`) and hands each chunk to a
  writer thread (`core/logwriter.py`) that writes the file; `cat` is one read/write loop in
  C. The log path was not changed in this work.
- **Idle CPU** (goal: at most Supervisor's, under 1 % of a core) is corral's sampling: see
  workload 3 for its pace. Supervisor's figure is its once-a-second main loop.
- **Reload** (goal: zero failed requests): see the footnotes of row 7 for what each
  manager's reload is.
- **Scale** (no goal): corral's idle CPU grows with what it samples, one small /proc
  read per app process per pass and a scan of the host's processes every
  {sup.IDLE_RESCAN_INTERVAL:g} s; with {s.scale_apps} apps that is of the order of PM2's,
  which measures nothing until asked.

### The machine

{mach}

### Versions

{vers}

## What each workload measures

Every app is a small Python script run by the same interpreter for every manager
(`{PYTHON}`), except the Node app of workload 7 under PM2. Each workload group (1-4, 5, 6,
7, 8) runs in a fresh session of the manager, with a fresh home.

1. **start**: {s.apps} idle apps (`import time; time.sleep(10**6)`), from a cold start
   (no daemon running) to the first moment the manager's list command reports all of them
   running (`corral jlist` status `online`, `pm2 jlist` status `online`, `supervisorctl
   status` `RUNNING`, `circusctl status` `active`). The command that starts them is the
   manager's usual one: `corral start corral.yaml`, `pm2 start ecosystem.json`,
   `supervisord -c supervisord.conf` (autostart), `circusd --daemon circus.ini`. The
   polling goes through each manager's CLI, so the figure includes one CLI call's time at
   most. Supervisor runs with `startsecs=0` (an app is RUNNING once spawned, as in the
   others); circus reports a watcher, not a process, as `active`.
2. **rss**: 2 s after all are running, the sum of the RSS of the manager's own processes
   (its daemon and any child that is not an app: PM2's God daemon, supervisord, circusd,
   the corral daemon), apps excluded.
3. **cpu**: the CPU time (user+system, psutil) of the same processes over a
   {s.cpu_seconds:.0f} s window that starts 2 s after the start workload's last list call,
   as % of one core. psutil's CPU times tick in 10 ms steps: over {s.cpu_seconds:.0f} s
   one tick is {1.0 / s.cpu_seconds:.3f} %. What each manager does meanwhile differs:
   corral samples every app's process tree (CPU, memory, threads; fds and new tree
   members at most every {sup.RESCAN_INTERVAL:g} s, {sup.IDLE_RESCAN_INTERVAL:g} s when
   nobody looks) every {sup.SAMPLE_INTERVAL:g} s while a client has asked for figures in
   the last {sup.WATCH_WINDOW:g} s (the start workload's `jlist` polling did, so the
   window may begin at that pace) and every {sup.IDLE_SAMPLE_INTERVAL:g} s otherwise; apps
   with `max_memory_restart` every {sup.SAMPLE_INTERVAL:g} s always; a figure older than
   {sup.STALE_AFTER:g} s is read again when a client asks, so `ls` stays current. PM2
   measures its apps only when a client asks (`pm2 ls`, `pm2 monit`); supervisord and
   circusd do not measure them at all. That is a difference in what they do, not only in
   cost.
4. **list**: wall time of the human list command (`corral ls`, `pm2 ls`, `supervisorctl
   status`, `circusctl status`) with the {s.apps} apps running, median of
   {s.list_calls} calls per run. This is mostly each CLI's start-up time (Python vs
   node) plus one round trip.
5. **crash**: one app that writes its start time (`time.monotonic()`, its first line of
   Python), then its exit time, and exits 1 at once; the manager restarts it with no
   delay (corral `restart_delay: 0s`, `min_uptime: 0s`, huge `max_restarts`; PM2
   `restart_delay: 0`, `min_uptime: 0`; supervisor `autorestart=true`, `startsecs=0`;
   circus `respawn = True`, `max_retry = -1`), {s.crashes} times per run, or as many as
   happen within {s.crash_timeout:.0f} s (a footnote says so). The times come from the
   kernel, the same way for every manager: the harness subscribes to the netlink process
   connector (`PROC_EVENT_FORK`/`EXEC`/`EXIT`, CLOCK_MONOTONIC nanoseconds; it needs
   root) and matches the events to the pids the app wrote.
   - **5, crash-to-respawn** is from the kernel's exit of the crashed process to the
     kernel's exec of its replacement: the manager noticing the exit, deciding, and
     fork+exec. That is the manager's whole part, and the figure the goal applies to.
   - **5b** is from the same exit to the replacement's first line of Python: 5 plus
     the interpreter's start-up, the same for every manager (the breakdown table shows
     it), and what an app's users wait for.
   - The baseline is the same script respawned by `sh -c 'while :; do python crash.py;
     done'`: the simplest respawner there is (dash's waitpid, fork, exec).
6. **logs**: one app writes {s.log_bytes / 1e6:.0f} MB to stdout (100-byte lines, 64 KB
   writes, as fast as the pipe takes them). The figure is {s.log_bytes / 1e6:.0f} MB
   divided by the time from the app's first write (the time it wrote to a side file just
   before) to the moment the harness (polling `stat` every 5 ms) sees the whole
   {s.log_bytes / 1e6:.0f} MB in the manager's log file for that app. Every manager
   writes the bytes unchanged (no timestamp or prefix); rotation is off for all (corral
   `log_max_size: 0`, its default is 10 MB; supervisor `stdout_logfile_maxbytes=0`, its
   default is 50 MB; PM2 and circus do not rotate by default); circus needs its
   `FileStream` handler configured (`stdout_stream.class = FileStream`), PM2 and
   Supervisor get `out_file` / `stdout_logfile`. The files are on the same disk as the
   baseline's: the app piped into `cat > file`, measured the same way. A footnote says
   when a file does not end up with exactly the bytes written.
7. **reload**: a {s.reload_instances}-instance HTTP app on 127.0.0.1 (`bench/apps/
   http_app.py`, standard library; `bench/apps/http_app.js` for PM2) answering every
   request with its pid and closing the connection; on SIGTERM/SIGINT it stops accepting,
   answers what it has accepted, and exits. A load of {s.reload_threads} client threads
   in the harness sends GET requests, each on a new connection (no keep-alive), for
   {s.reload_warmup:.0f} s, then during the manager's reload command, then for
   {s.reload_after:.0f} s after it returned. A request fails when the connection is
   refused or reset, nothing comes within 5 s, or the answer is not 200. The figure is
   the number of failed requests in that whole window. What each manager's reload is
   differs, and the footnotes of that row say it: corral and PM2 replace instances one
   at a time and wait for each replacement to be ready; circus starts new processes on
   the socket it holds, then stops the old ones; supervisor can only stop and start its
   processes, which bind the port themselves (SO_REUSEPORT). The details table gives the
   requests answered, so the load is known.
8. **scale**: workloads 1-3 with {s.scale_apps} idle apps (the same script) and a
   {s.scale_cpu_seconds:.0f} s CPU window, for every manager, given
   {s.scale_timeout:.0f} s to report all of them running ("timed out" otherwise).

## How the peers behave (with their defaults)

- **PM2** runs a node "God daemon"; it is the largest in memory, and its CLI (node) is the
  slowest to start, which dominates `pm2 ls`. It respawns a crashed app as soon as it sees
  the exit when `restart_delay` is 0 (its default `min_uptime`/`max_restarts` would mark a
  crash loop `errored` after 16 fast restarts: the benchmark lifts them, as for corral).
  In cluster mode its daemon is Node's cluster primary and hands connections to workers.
- **Supervisor**'s main loop wakes up once a second: a crashed program is restarted on the
  next tick, so respawn takes about 1 s. `startsecs` (default 1 s) would also delay
  RUNNING in the start workload; it is set to 0 there. It has no socket sharing and no
  rolling reload.
- **Circus** checks its watchers every `check_delay`, 5 s by default when read from an ini
  file (1 s in its Python API): a crashed process is respawned on that tick, so the crash
  workload sees about 5 s and only a few respawns within the time limit. `circusctl status`
  reports watchers, not processes. It can hold a socket and pass it to its processes.
- **corral** reacts to an exit through a pidfd on its event loop and, with
  `restart_delay: 0s`, relaunches in the same turn of the loop: a plain app is spawned
  with vfork+exec on the loop (no thread hop; apps with `rlimits`, `user`/`group` or
  listen sockets take a real fork in a worker thread). Its idle CPU is its sampling of
  every app's process tree, read from /proc directly, at the pace described in 3.
"""
    DOC.write_text(text)
