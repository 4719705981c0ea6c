"""The results table (stdout) and docs/BENCHMARKS.md."""

from __future__ import annotations

import datetime as dt
import os
import platform
import statistics
import subprocess

import psutil

from . import peers as peers_mod
from .workloads import WORKLOADS

DOC = peers_mod.BENCH.parent / "docs" / "BENCHMARKS.md"


def _fmt(v: float) -> str:
    return f"{v:.3g}" if abs(v) < 1000 else f"{v:.0f}"


def machine() -> list[tuple[str, str]]:
    cpu = "?"
    try:
        for line in open("/proc/cpuinfo"):
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


def table(results, notes, managers: list[str], only: list[str]) -> tuple[str, list[str]]:
    """A Markdown table; cells are "median (min-max)"; footnotes say what a cell lacks."""
    peers = [m for m in managers if m != "corral"]
    ratio_cols = [f"corral/{p}" for p in peers] if "corral" in managers else []
    head = ["workload", "unit", *managers, *ratio_cols]
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    foot: list[str] = []

    def note(text: str) -> str:
        if text not in foot:
            foot.append(text)
        return f"[{foot.index(text) + 1}]"

    for w in WORKLOADS:
        if w.key not in only:
            continue
        cells = [w.title, w.unit]
        med: dict[str, float] = {}
        for m in managers:
            vals = results.get(w.key, {}).get(m, [])
            n = notes.get(w.key, {}).get(m, "")
            if vals:
                med[m] = statistics.median(vals)
                c = f"{_fmt(med[m])} ({_fmt(min(vals))}-{_fmt(max(vals))})"
                if n:
                    c += " " + note(f"{m}, {w.key}: {n}")
            else:
                c = "n/a " + note(f"{m}, {w.key}: {n or 'no result'}")
            cells.append(c)
        for p in peers if ratio_cols else []:
            if "corral" in med and p in med and med[p] > 0:
                cells.append(f"{med['corral'] / med[p]:.2f}x")
            else:
                cells.append("-")
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows), [f"[{i + 1}] {t}" for i, t in enumerate(foot)]


def write_doc(
    command: str,
    tab: str,
    foot: list[str],
    peers,
    settings,
    repeat: int,
    baseline: float | None,
    runtime: float,
) -> None:
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    mach = "\n".join(f"- {k}: {v}" for k, v in machine())
    vers = "\n".join(
        f"- {p.name}: {p.version if p.ok else 'unavailable: ' + p.why}" for p in peers.values()
    )
    base = (
        ""
        if baseline is None
        else (
            f"\nFor scale: starting the crash script's Python interpreter directly, from `spawn` to its "
            f"first line, takes {baseline:.1f} ms on this machine; every respawn includes that.\n"
        )
    )
    text = f"""# Benchmarks

Run them (from the repository root; not part of the test suite):

```sh
.venv/bin/python -m bench                 # every workload, every manager, 3 runs each
.venv/bin/python -m bench --quick         # a short smoke run (1 run, 10 s CPU window)
.venv/bin/python -m bench --repeat 5 --only start --managers corral,pm2
```

The first run installs the peers into `bench/.cache` (git-ignored): PM2 from the npm
registry (`npm install --ignore-scripts --prefix bench/.cache/npm pm2`), Supervisor and
Circus from PyPI into `bench/.cache/peers-venv`. A peer that cannot be installed or run is
reported in the table, not fatal. Every manager runs with its own home in a temporary
directory (`CORRAL_HOME`, `PM2_HOME`, a temporary supervisord config, a temporary circus
ini) and is shut down (`corral kill`, `pm2 kill`, `supervisorctl shutdown`,
`circusctl quit`, then SIGKILL by pid for anything left) even when a workload fails.

## Results

Command: `{command}` ({repeat} run(s) per workload and manager, {runtime / 60:.1f} min in all),
{now}.

Each cell is the median over the runs, with the spread (min-max) in parentheses. Lower is
better everywhere; `corral/X` is corral's median divided by X's (below 1: corral is better).

{tab}

{chr(10).join(foot) if foot else ""}

### The machine

{mach}

### Versions

{vers}

## What each workload measures

Every app is a small Python script run by the same interpreter for every manager
(`{__import__("bench.managers").managers.PYTHON}`). One session per run and manager covers
workloads 1-4; workload 5 has its own session.

1. **start**: {settings.apps} idle apps (`import time; time.sleep(10**6)`), from a cold start
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
   {settings.cpu_seconds:.0f} s window while the apps idle, as % of one core. Each manager
   runs with its defaults: corral samples every app's process tree (CPU, memory, threads,
   fds) every 2 s so that `ls`/`monit`/metrics are ready; PM2 measures its apps only when a
   client asks (`pm2 ls`, `pm2 monit`); supervisord and circusd do not measure them at all.
   That is a difference in what they do, not only in cost. psutil's CPU times tick in
   10 ms steps: over {settings.cpu_seconds:.0f} s one tick is {1.0 / settings.cpu_seconds:.3f} %.
4. **list**: wall time of the human list command (`corral ls`, `pm2 ls`, `supervisorctl
   status`, `circusctl status`) with the {settings.apps} apps running, median of
   {settings.list_calls} calls per run. This is mostly each CLI's start-up time (Python vs
   node) plus one round trip.
5. **crash**: one app that writes its start time, then its exit time, and exits 1 at once;
   the manager restarts it with no delay (corral `restart_delay: 0s`, `min_uptime: 0s`,
   huge `max_restarts`; PM2 `restart_delay: 0`, `min_uptime: 0`; supervisor
   `autorestart=true`, `startsecs=0`; circus `respawn = True`, `max_retry = -1`). The
   latency is from the exit time written by one process to the start time written by the
   next, median of {settings.crashes} crashes per run, or of those seen within
   {settings.crash_timeout:.0f} s (a footnote says so).
{base}
## How the peers behave (with their defaults)

- **PM2** runs a node "God daemon"; it is the largest in memory, and its CLI (node) is the
  slowest to start, which dominates `pm2 ls`. It respawns a crashed app as soon as it sees
  the exit when `restart_delay` is 0 (its default `min_uptime`/`max_restarts` would mark a
  crash loop `errored` after 16 fast restarts: the benchmark lifts them, as for corral).
- **Supervisor**'s main loop wakes up once a second: a crashed program is restarted on the
  next tick, so respawn takes about 1 s. `startsecs` (default 1 s) would also delay
  RUNNING in the start workload; it is set to 0 there.
- **Circus** checks its watchers every `check_delay`, 5 s by default when read from an ini
  file (1 s in its Python API): a crashed process is respawned on that tick, so the crash
  workload sees about 5 s and only a few respawns within the time limit. `circusctl status`
  reports watchers, not processes.
- **corral** reacts to an exit through a pidfd on its event loop and restarts at once with
  `restart_delay: 0s`; its idle CPU is its 2 s sampling of every app's process tree.
"""
    DOC.write_text(text)
