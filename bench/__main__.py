"""`python -m bench`: run the workloads for corral and its peers, print and save the table."""

from __future__ import annotations

import argparse
import datetime
import shlex
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path

from . import peers as peers_mod
from . import report
from .managers import ADAPTERS, Manager
from .workloads import (
    GROUPS,
    Result,
    Settings,
    _workloads,
    baseline_crash,
    baseline_logs,
    run_crash,
    run_idle,
    run_logs,
    run_reload,
)

RUNS: dict[str, Callable[[Manager, Settings, set[str]], Result]] = {
    "idle": lambda m, s, keys: run_idle(m, s, keys),
    "crash": lambda m, s, keys: run_crash(m, s),
    "logs": lambda m, s, keys: run_logs(m, s),
    "reload": lambda m, s, keys: run_reload(m, s),
    "scale": lambda m, s, keys: run_idle(m, s, keys, scale=True),
}
LAST_RUN = peers_mod.CACHE / "last-run.json"
BASELINES: dict[str, Callable[[Path, Settings], Result]] = {
    "crash": baseline_crash,
    "logs": baseline_logs,
}


def machine_load() -> str:
    try:
        out = subprocess.run(["uptime"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.TimeoutExpired):
        out = ""
    return out.strip() or "?"


def main(argv: list[str] | None = None) -> int:
    keys = [w.key for w in _workloads(Settings())]
    ap = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    ap.add_argument(
        "--repeat", type=int, default=None, help="runs per workload (default 3, 1 with --quick)"
    )
    ap.add_argument(
        "--scale-repeat",
        type=int,
        default=None,
        help="runs of the 1000-app workload (default 1: it is the slow one)",
    )
    ap.add_argument(
        "--start-repeat",
        type=int,
        default=None,
        help="runs of workload 1, start (default 7, or --repeat if more); those beyond "
        "--repeat time the start alone",
    )
    ap.add_argument("--quick", action="store_true", help="a short smoke run")
    ap.add_argument(
        "--only",
        action="append",
        choices=list(dict.fromkeys(keys + GROUPS)),
        help="run only this workload or group of workloads (repeatable)",
    )
    ap.add_argument(
        "--managers",
        default="corral,pm2,supervisor,circus",
        help="comma-separated: corral,pm2,supervisor,circus",
    )
    ap.add_argument("--no-doc", action="store_true", help="do not rewrite docs/BENCHMARKS.md")
    ap.add_argument(
        "--render",
        metavar="JSON",
        help="write docs/BENCHMARKS.md again from a saved run (bench/.cache/last-run.json)",
    )
    a = ap.parse_args(argv)
    if a.render:
        run = report.load(Path(a.render), ADAPTERS)
        print(report.results_markdown(run))
        report.write_doc(run)
        print(f"bench: wrote {report.DOC}", file=sys.stderr)
        return 0

    managers = [m.strip() for m in a.managers.split(",") if m.strip()]
    for m in managers:
        if m not in ADAPTERS:
            ap.error(f"unknown manager {m!r}")
    repeat = a.repeat or (1 if a.quick else 3)
    scale_repeat = min(repeat, a.scale_repeat or 1)
    start_repeat = max(repeat, a.start_repeat or (1 if a.quick else 7))
    s = Settings()
    if a.quick:
        s.cpu_seconds, s.list_calls, s.crashes, s.crash_timeout = 10.0, 10, 20, 30.0
        s.log_bytes, s.scale_apps, s.scale_cpu_seconds = 100_000_000, 200, 10.0
    workloads = _workloads(s)
    group_of = {w.key: w.group for w in workloads}
    chosen = a.only or keys
    only = [k for k in keys if k in chosen or group_of[k] in chosen]
    groups = [g for g in GROUPS if any(group_of[k] == g for k in only)]
    args = argv if argv is not None else sys.argv[1:]
    command = " ".join([".venv/bin/python -m bench", *([shlex.join(args)] if args else [])])

    began = time.monotonic()
    load_before = machine_load()
    peers = peers_mod.install(managers)
    results: dict[str, dict[str, list[float]]] = {k: {} for k in only}
    notes: dict[str, dict[str, str]] = {k: {} for k in only}
    extras: dict[str, dict[str, list[dict]]] = {g: {} for g in groups}
    baselines: dict[str, list[float]] = {}
    baseline_extras: dict[str, list[dict]] = {}
    for m in managers:
        if not peers[m].ok:
            for k in only:
                notes[k][m] = f"unavailable here ({peers[m].why})"

    def keep(res: Result, m: str, group: str) -> None:
        for k, v in res.values.items():
            if k in results:
                results[k].setdefault(m, []).append(v)
        for k, n in res.notes.items():
            if k in notes:
                notes[k][m] = n
        if res.extra:
            extras[group].setdefault(m, []).append(res.extra)

    def run_one(m: str, group: str, keys: set[str], label: str) -> None:
        """One run of `group` (measuring `keys`) for manager `m`, in a home of its own."""
        t0 = time.monotonic()
        print(f"bench: run {label} {m} {group} ...", file=sys.stderr, flush=True)
        with tempfile.TemporaryDirectory(prefix=f"bench-{m}-") as tmp:
            mgr = ADAPTERS[m](Path(tmp))
            try:
                keep(RUNS[group](mgr, s, keys), m, group)
            except Exception as e:  # a manager failing is a result, not a crash
                traceback.print_exc(file=sys.stderr)
                for k in keys:
                    notes[k][m] = f"failed: {type(e).__name__}: {str(e)[:200]}"
            finally:
                mgr.shutdown()
        took = time.monotonic() - t0
        print(f"bench:   {m} {group} took {took:.0f}s", file=sys.stderr, flush=True)

    for r in range(repeat):
        for group in groups:
            if group in BASELINES:
                print(f"bench: run {r + 1}/{repeat} baseline {group} ...", file=sys.stderr)
                with tempfile.TemporaryDirectory(prefix=f"bench-base-{group}-") as tmp:
                    try:
                        res = BASELINES[group](Path(tmp), s)
                    except Exception:
                        traceback.print_exc(file=sys.stderr)
                    else:
                        for k, v in res.values.items():
                            if k in results:
                                baselines.setdefault(k, []).append(v)
                        if res.extra:
                            baseline_extras.setdefault(group, []).append(res.extra)
            for m in managers:
                if not peers[m].ok or (group == "scale" and r >= scale_repeat):
                    continue
                group_keys = {k for k in only if group_of[k] == group}
                run_one(m, group, group_keys, f"{r + 1}/{repeat}")

    # Workload 1's figure swings most from run to run (a 0.8 s burst of 100 spawns on two
    # cores): more runs of it alone, interleaved across the managers like the others.
    if "start" in only:
        for r in range(repeat, start_repeat):
            for m in managers:
                if peers[m].ok:
                    run_one(m, "idle", {"start"}, f"{r + 1}/{start_repeat}")

    load_after = machine_load()
    run = report.Run(
        command=command,
        workloads=[w for w in workloads if w.key in only],
        managers=managers,
        results=results,
        notes=notes,
        baselines=baselines,
        extras=extras,
        baseline_extras=baseline_extras,
        peers=peers,
        settings=s,
        repeat=repeat,
        scale_repeat=scale_repeat,
        start_repeat=start_repeat,
        seconds=time.monotonic() - began,
        load_before=load_before,
        load_after=load_after,
        adapters=ADAPTERS,
        finished=datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
    )
    report.save(run, LAST_RUN)
    print(f"bench: raw results in {LAST_RUN}", file=sys.stderr)
    print(report.results_markdown(run))
    if not a.no_doc:
        report.write_doc(run)
        print(f"bench: wrote {report.DOC}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
