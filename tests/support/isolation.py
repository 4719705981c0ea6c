"""A real `corral helper` (root) and the panel in isolated mode, run as a temporary panel
user, for tests that need two real tenants (issue 9). Root only: callers skip with
`tests.support.otheruid.can_switch_users()`.

The panel runs in a child process as the panel user (the world-readable Python of
tests/support/otheruid.py) and is driven there through Starlette's TestClient by
`DRIVER`: each step names the panel user it is sent as (created on first use; "boss" is
an admin), and may open a WebSocket instead of an HTTP request.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import secrets
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from corral.protocol.client import ControlClient
from tests.conftest import read_text, wait_for
from tests.support.otheruid import remove_user, temp_user, world_dir, world_python

ADMIN = "boss"

DRIVER = r"""
import json, sys
from pathlib import Path
from sqlalchemy import select
from corral.panel.db.models import User
from tests.support.panel import ORIGIN, client_with, make_app, open_session, quick_user, ws_try

home, sock, admin = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
steps = json.load(sys.stdin)
app, panel = make_app(home, helper_socket=sock, allowed_hosts=("testserver",))
cookies = {}
for name in sorted({step.get("user", admin) for step in steps}):
    with panel.database.session() as db:
        uid = db.scalar(select(User.id).where(User.username == name))
    if uid is None:
        uid = quick_user(panel, name, admin=name == admin)
    cookies[name] = open_session(panel, uid)
out = []
clients = {}
try:
    for name, cookie in cookies.items():
        clients[name] = client_with(app, cookie).__enter__()
    for step in steps:
        name = step.get("user", admin)
        http, cookie = clients[name], cookies[name]
        if step.get("ws"):
            out.append({"status": None, "ws": ws_try(http, step["path"], first_message=True)})
            continue
        headers = {"Origin": ORIGIN, "X-CSRF-Token": cookie.csrf}
        response = http.request(
            step["method"], step["path"], json=step.get("json"), headers=headers
        )
        try:
            body = response.json()
        except ValueError:
            body = response.text
        out.append({"status": response.status_code, "body": body, "text": response.text})
finally:
    for http in clients.values():
        http.__exit__(None, None, None)
    panel.database.close()
print(json.dumps(out))
"""


@dataclass
class Isolated:
    """A running helper, its panel user, and the panel's home (owned by that user)."""

    panel: pwd.struct_passwd
    helper: subprocess.Popen[bytes]
    socket: Path
    tenants_dir: Path
    panel_home: Path
    log: Path
    names: list[str] = field(default_factory=list)

    def name(self) -> str:
        """A fresh tenant name; its user is removed at the end whatever happens."""
        name = f"ct{secrets.token_hex(3)}"
        self.names.append(name)
        return name

    def as_panel(self, args: list[str], stdin: str = "") -> subprocess.CompletedProcess[str]:
        """Run the world Python with `args` as the panel's user (no other groups)."""
        return run_as(self.panel, args, stdin, home=self.panel_home)

    def requests(self, *steps: dict[str, Any]) -> list[dict[str, Any]]:
        """Send requests to the panel (as each step's "user", default the admin), in a
        child process run by the panel's user."""
        result = self.as_panel(
            ["-c", DRIVER, str(self.panel_home), str(self.socket), ADMIN],
            json.dumps(list(steps)),
        )
        assert result.returncode == 0, result.stderr + read_text(self.log)
        answers: list[dict[str, Any]] = json.loads(result.stdout)
        return answers

    def request(
        self, method: str, path: str, body: Any = None, user: str = ADMIN
    ) -> dict[str, Any]:
        return self.requests({"method": method, "path": path, "json": body, "user": user})[0]


def run_as(
    user: pwd.struct_passwd, args: list[str], stdin: str = "", home: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the world Python with `args` as `user` (its own group only, cwd /)."""
    return subprocess.run(
        [str(world_python()), *args],
        user=user.pw_uid,
        group=user.pw_gid,
        extra_groups=[],
        cwd="/",
        env={
            "PATH": "/usr/local/bin:/usr/bin:/bin",
            "LANG": "C.UTF-8",
            "HOME": str(home or user.pw_dir),
            "PYTHONDONTWRITEBYTECODE": "1",
        },
        input=stdin,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


@contextlib.contextmanager
def isolated_panel() -> Iterator[Isolated]:
    """A real helper for a new panel user; every tenant named through `Isolated.name()`
    is removed (processes, user, group, home) on exit, even on failure."""
    base = world_dir("ctiso")
    try:
        with temp_user("ctp") as panel_user:
            panel_home = base / "panel"
            panel_home.mkdir(mode=0o700)
            os.chown(panel_home, panel_user.pw_uid, panel_user.pw_gid)
            log = base / "helper.log"
            command = [sys.executable, "-m", "corral", "helper", "--panel-user"]
            command += [panel_user.pw_name, "--socket", str(base / "h.sock")]
            command += ["--tenants-dir", str(base / "t"), "--state-dir", str(base / "state")]
            command += ["--python", str(world_python())]
            with log.open("wb") as out:
                helper = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=out, stderr=out)
            iso = Isolated(panel_user, helper, base / "h.sock", base / "t", panel_home, log)
            try:

                def listening() -> bool:
                    assert helper.poll() is None, read_text(log)
                    return "listening on" in read_text(log)

                wait_for(listening, timeout=60)
                yield iso
            finally:
                for name in iso.names:
                    remove_user(name)  # its processes killed, user and home removed
                    subprocess.run(["groupdel", name], capture_output=True)
                if helper.poll() is None:
                    helper.send_signal(signal.SIGTERM)
                    try:
                        helper.wait(60)
                    except subprocess.TimeoutExpired:
                        helper.kill()
                        helper.wait()
    finally:
        subprocess.run(["rm", "-rf", "--one-file-system", str(base)], check=False)


def daemon_call(home: Path, command: str, **args: Any) -> Any:
    """A call to the tenant's daemon, made by root (which it admits)."""
    with ControlClient.connect(home / ".corral" / "corral.sock", timeout=30) as client:
        return client.call(command, **args)
