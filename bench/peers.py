"""Install the peers into bench/.cache (idempotent); say clearly when one is unavailable."""

from __future__ import annotations

import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

BENCH = Path(__file__).resolve().parent
CACHE = BENCH / ".cache"
NPM_PREFIX = CACHE / "npm"
PEERS_VENV = CACHE / "peers-venv"
PM2_BIN = NPM_PREFIX / "node_modules" / "pm2" / "bin" / "pm2"


@dataclass
class Peer:
    name: str
    ok: bool
    why: str = ""  # why it is unavailable
    version: str = ""


def _run(cmd: list[str], timeout: float = 600) -> tuple[int, str]:
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as e:
        return 1, str(e)
    return p.returncode, (p.stdout + p.stderr).strip()


def venv_bin(name: str) -> Path:
    return PEERS_VENV / "bin" / name


def install_pm2() -> Peer:
    node = shutil.which("node")
    if node is None or shutil.which("npm") is None:
        return Peer("pm2", False, "node/npm not found on PATH")
    if not PM2_BIN.exists():
        print(
            "bench: installing pm2 from the npm registry into bench/.cache/npm ...", file=sys.stderr
        )
        rc, out = _run(["npm", "install", "--ignore-scripts", "--prefix", str(NPM_PREFIX), "pm2"])
        if rc != 0 or not PM2_BIN.exists():
            return Peer("pm2", False, f"npm install pm2 failed: {out[-300:]}")
    _, nodev = _run([node, "--version"])
    rc, ver = _run(
        [
            node,
            "-e",
            f"console.log(require({str(PM2_BIN.parent.parent / 'package.json')!r}).version)",
        ]
    )
    return Peer("pm2", True, version=f"{ver if rc == 0 else '?'} (node {nodev})")


def _ensure_venv() -> str | None:
    if not venv_bin("python").exists():
        print("bench: creating bench/.cache/peers-venv ...", file=sys.stderr)
        rc, out = _run([sys.executable, "-m", "venv", str(PEERS_VENV)])
        if rc != 0:
            return f"cannot create the peers venv: {out[-300:]}"
    return None


def _install_pip(pkg: str, probe: str) -> Peer:
    err = _ensure_venv()
    if err:
        return Peer(pkg, False, err)
    if not venv_bin(probe).exists():
        print(
            f"bench: installing {pkg} from PyPI into bench/.cache/peers-venv ...", file=sys.stderr
        )
        rc, out = _run([str(venv_bin("pip")), "install", "-q", pkg])
        if rc != 0 or not venv_bin(probe).exists():
            return Peer(pkg, False, f"pip install {pkg} failed: {out[-300:]}")
    rc, ver = _run(
        [
            str(venv_bin("python")),
            "-c",
            f"import importlib.metadata as m; print(m.version({pkg!r}))",
        ]
    )
    return Peer(pkg, True, version=ver if rc == 0 else "?")


def _compile_corral() -> None:
    """Write corral's bytecode, as installing a wheel does (and did for Supervisor and
    Circus in their venv). The checkout is an editable install, and with
    PYTHONDONTWRITEBYTECODE set (the test script sets it) every daemon and CLI start would
    compile ~30 modules from source: ~40 ms each time, measured in workload 1."""
    import compileall

    compileall.compile_dir(str(BENCH.parent / "corral"), quiet=1)


def install(names: list[str]) -> dict[str, Peer]:
    """Every requested peer, installed if possible (corral is always there)."""
    from importlib.metadata import version

    out: dict[str, Peer] = {}
    for n in names:
        if n == "corral":
            _compile_corral()
            out[n] = Peer("corral", True, version=version("corral"))
        elif n == "pm2":
            out[n] = install_pm2()
        elif n == "supervisor":
            out[n] = _install_pip("supervisor", "supervisord")
        elif n == "circus":
            out[n] = _install_pip("circus", "circusd")
        else:
            out[n] = Peer(n, False, "unknown manager")
        if not out[n].ok:
            print(f"bench: {n} is unavailable: {out[n].why}", file=sys.stderr)
    return out
