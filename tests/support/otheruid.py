"""Running corral as other system users in tests: temporary users, and a Python they can run.

The repo's venv interpreter is a symlink into a 0700 home (pyenv under /root here), so a
process running as another uid cannot execute it. `world_python()` makes a tiny venv from
the system's /usr/bin/python3 in a world-readable temp dir, with a .pth file that adds the
repo and the main venv's site-packages: any uid can then `import corral` and its
dependencies (same CPython minor version, so the compiled extensions load).

`temp_user()` creates a real system user named `ct` + random hex and removes it (its
processes killed, its home deleted) on exit, even when the test failed.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import pwd
import secrets
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

from corral.helper.procs import kill_uid

REPO = Path(__file__).resolve().parents[2]
SYSTEM_PYTHON = Path("/usr/bin/python3")
_lock = threading.Lock()
_made: dict[str, Path] = {}


def can_switch_users() -> str | None:
    """Why tests that create users cannot run here, or None when they can."""
    if os.geteuid() != 0:
        return "needs root (creates system users and runs processes as them)"
    for tool in ("useradd", "userdel"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    if not SYSTEM_PYTHON.exists():
        return f"{SYSTEM_PYTHON} is missing (other users cannot run the repo's interpreter)"
    return None


def world_dir(prefix: str = "ct") -> Path:
    """A fresh temp dir under /tmp that every user may traverse (0755)."""
    path = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    path.chmod(0o755)
    return path


def world_python() -> Path:
    """An interpreter any uid can run, with corral and its dependencies importable."""
    with _lock:
        if "python" in _made and _made["python"].exists():
            return _made["python"]
        root = world_dir("ctpy")
        atexit.register(shutil.rmtree, root, True)
        venv = root / "py"
        subprocess.run(
            [str(SYSTEM_PYTHON), "-m", "venv", "--without-pip", str(venv)],
            check=True,
            capture_output=True,
        )
        version = f"python{sys.version_info.major}.{sys.version_info.minor}"
        site = venv / "lib" / version / "site-packages"
        purelib = sysconfig.get_paths()["purelib"]  # the main venv's site-packages
        (site / "corral-tests.pth").write_text(f"{REPO}\n{purelib}\n")
        for path in (root, *root.rglob("*")):
            if not path.is_symlink():
                path.chmod(0o755 if path.is_dir() else 0o644)
        python = venv / "bin" / "python3"
        probe = subprocess.run(
            [str(python), "-c", "import corral, psutil, yaml, cryptography"],
            capture_output=True,
            text=True,
        )
        if probe.returncode != 0:
            raise RuntimeError(f"the world-readable python cannot import corral: {probe.stderr}")
        _made["python"] = python
        return python


def kill_user_processes(uid: int) -> None:
    """SIGKILL every process of `uid`, through pidfds with the uid re-checked (the
    helper's own `kill_uid`); a clean-up never fails the test for it."""
    with contextlib.suppress(OSError):
        kill_uid(uid)


def remove_user(name: str) -> None:
    """Kill the user's processes, delete the user, its group and its home (if any)."""
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        return
    kill_user_processes(entry.pw_uid)
    subprocess.run(["userdel", name], capture_output=True)
    subprocess.run(["groupdel", name], capture_output=True)
    home = Path(entry.pw_dir)
    if home.is_dir() and home.name == name and str(home).startswith("/tmp/"):
        shutil.rmtree(home, ignore_errors=True)


@contextlib.contextmanager
def temp_user(prefix: str = "ct", home: Path | None = None) -> Iterator[pwd.struct_passwd]:
    """A new system user (own group, no login shell); removed on exit even on failure.

    `home`: its home directory, created 0750 and owned by the user (under a world_dir, so
    it is deleted with the user); None: no home.
    """
    name = f"{prefix}{secrets.token_hex(3)}"
    cmd = ["useradd", "--system", "--user-group", "--shell", "/usr/sbin/nologin"]
    cmd += ["--home-dir", str(home) if home is not None else "/nonexistent", "--no-create-home"]
    subprocess.run([*cmd, name], check=True, capture_output=True)
    try:
        entry = pwd.getpwnam(name)
        if home is not None:
            home.mkdir(mode=0o750, parents=True, exist_ok=True)
            os.chown(home, entry.pw_uid, entry.pw_gid)
            home.chmod(0o750)
        yield entry
    finally:
        remove_user(name)
