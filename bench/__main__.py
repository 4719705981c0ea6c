"""`python -m bench`: run the workloads for corral and its peers, print and save the table."""

from __future__ import annotations

import argparse
import shlex
import sys
import tempfile
import time
import traceback
from pathlib import Path

from . import peers as peers_mod
from . import report
from .managers import ADAPTERS
from .workloads import BY_KEY, WORKLOADS, Settings, baseline_python_startup, run_crash, run_idle


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    ap.add_argument(
        "--repeat", type=int, default=None, help="runs per workload (default 3, 1 with --quick)"
    )
    ap.add_argument("--quick", action="store_true", help="a short smoke run")
    ap.add_argument(
        "--only",
        action="append",
        choices=[w.key for w in WORKLOADS],
        help="run only this workload (repeatable)",
    )
    ap.add_argument(
        "--managers",
        default="corral,pm2,supervisor,circus",
        help="comma-separated: corral,pm2,supervisor,circus",
    )
    ap.add_argument("--no-doc", action="store_true", help="do not rewrite docs/BENCHMARKS.md")
    a = ap.parse_args(argv)

    managers = [m.strip() for m in a.managers.split(",") if m.strip()]
    for m in managers:
        if m not in ADAPTERS:
            ap.error(f"unknown manager {m!r}")
    only = a.only or [w.key for w in WORKLOADS]
    repeat = a.repeat or (1 if a.quick else 3)
    s = Settings()
    if a.quick:
        s.cpu_seconds, s.list_calls, s.crashes, s.crash_timeout = 10.0, 10, 20, 30.0
    args = argv if argv is not None else sys.argv[1:]
    command = " ".join([".venv/bin/python -m bench", *([shlex.join(args)] if args else [])])

    began = time.monotonic()
    peers = peers_mod.install(managers)
    results: dict[str, dict[str, list[float]]] = {w: {} for w in only}
    notes: dict[str, dict[str, str]] = {w: {} for w in only}
    for m in managers:
        if not peers[m].ok:
            for w in only:
                notes[w][m] = f"unavailable here ({peers[m].why})"
    idle = [w for w in only if BY_KEY[w].group == "idle"]

    for r in range(repeat):
        for m in managers:
            if not peers[m].ok:
                continue
            for group in ("idle", "crash"):
                keys = idle if group == "idle" else [w for w in only if w == "crash"]
                if not keys:
                    continue
                print(f"bench: run {r + 1}/{repeat} {m} {group} ...", file=sys.stderr, flush=True)
                with tempfile.TemporaryDirectory(prefix=f"bench-{m}-") as tmp:
                    mgr = ADAPTERS[m](Path(tmp))
                    try:
                        if group == "idle":
                            for k, v in run_idle(mgr, s, set(keys)).items():
                                if k in keys:
                                    results[k].setdefault(m, []).append(v)
                        else:
                            v, note = run_crash(mgr, s)
                            results["crash"].setdefault(m, []).append(v)
                            if note:
                                notes["crash"][m] = note
                    except Exception as e:  # a manager failing is a result, not a crash
                        traceback.print_exc(file=sys.stderr)
                        for k in keys:
                            notes[k].setdefault(m, f"failed: {type(e).__name__}: {str(e)[:200]}")
                    finally:
                        mgr.shutdown()

    baseline = baseline_python_startup() if "crash" in only else None
    tab, foot = report.table(results, notes, managers, only)
    print(tab)
    for f in foot:
        print(f)
    if baseline is not None:
        print(f"(python start-up of the crash script alone: {baseline:.1f} ms)")
    if not a.no_doc:
        report.write_doc(command, tab, foot, peers, s, repeat, baseline, time.monotonic() - began)
        print(f"bench: wrote {report.DOC}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
