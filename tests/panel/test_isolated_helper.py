"""The panel in isolated mode against a real `corral helper` (issue 9), as root only.

A real helper runs as root for a real panel user (a temporary system user); the panel
itself runs as that user, in child processes (the world-readable Python of
tests/support/otheruid.py): the helper refuses every other uid, root included. Through
the panel's own API the test creates a tenant (a real system user made by the helper),
imports apps into it (its daemon started by the helper, as the tenant), lowers its app
limit (pushed to the running daemon by the panel's uid), and removes it (user, home and
processes gone). Every user a test creates is removed at the end, even on failure.
"""

from __future__ import annotations

import json
import os
import pwd
import select
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from corral.panel.helper_client import HelperClient, HelperError
from corral.protocol.wire import ErrorCode
from tests.conftest import read_text, wait_for
from tests.support.isolation import Isolated, daemon_call, isolated_panel, run_as
from tests.support.otheruid import (
    can_switch_users,
)

SLEEPER = "import time\nwhile True:\n    time.sleep(1)\n"


@pytest.fixture
def iso() -> Iterator[Isolated]:
    why = can_switch_users()
    if why is not None:
        pytest.skip(why)
    with isolated_panel() as running:
        yield running


def daemon_ping(home: Path) -> dict[str, Any]:
    """The tenant's daemon, asked by root (which it admits)."""
    result: dict[str, Any] = daemon_call(home, "ping")
    return result


def test_root_is_refused_by_the_helper(iso: Isolated) -> None:
    """The helper serves the panel's uid only: the panel must run as its own user."""
    with pytest.raises(HelperError) as refused:
        HelperClient(iso.socket).ping()
    assert refused.value.code is ErrorCode.PERMISSION_DENIED
    assert f"uid {iso.panel.pw_uid}" in refused.value.message


def test_a_tenant_lives_and_dies_through_the_panel_and_the_helper(iso: Isolated) -> None:
    name = iso.name()
    page, made, with_home, taken = iso.requests(
        {"method": "GET", "path": "/admin/tenants"},
        {"method": "POST", "path": "/api/v1/admin/tenants", "json": {"name": name, "app_limit": 2}},
        {"method": "POST", "path": "/api/v1/admin/tenants", "json": {"name": "x", "home": "/srv"}},
        {"method": "POST", "path": "/api/v1/admin/tenants", "json": {"name": iso.panel.pw_name}},
    )
    assert "Isolated mode" in page["body"] and "Development mode" not in page["body"]
    assert f"answers at {iso.socket}" in page["body"]
    assert made["status"] == 201, made
    tenant = made["body"]
    home = iso.tenants_dir / name
    assert (tenant["system_user"], tenant["home"], tenant["app_limit"]) == (name, str(home), 2)
    assert with_home["status"] == 422 and set(with_home["body"]["errors"]) == {"home"}
    # an existing system user (here: the panel's own) is never made a tenant
    assert taken["status"] == 422, taken
    assert "the helper refused create_tenant" in taken["body"]["errors"]["name"]

    user = pwd.getpwnam(name)
    st = home.stat()
    assert (st.st_uid, st.st_gid, st.st_mode & 0o7777) == (user.pw_uid, iso.panel.pw_gid, 0o750)
    script = home / "server.py"
    script.write_text(SLEEPER)
    os.chown(script, user.pw_uid, user.pw_gid)
    script.chmod(0o640)

    two = "apps:\n  - name: web\n    script: server.py\n  - name: worker\n    script: server.py\n"
    imported, over, listed = iso.requests(
        {"method": "POST", "path": f"/api/v1/tenants/{name}/apps/import", "json": {"text": two}},
        {
            "method": "POST",
            "path": f"/api/v1/tenants/{name}/apps",
            "json": {"name": "third", "script": "server.py"},
        },
        {"method": "GET", "path": f"/api/v1/tenants/{name}/apps"},
    )
    assert imported["status"] == 201, imported
    assert over["status"] == 409 and "2 of 2" in over["body"]["error"]
    pids = [m["pid"] for app in listed["body"]["apps"] for m in app["members"]]
    assert len(pids) == 2 and all(pids)
    apps = [psutil.Process(pid) for pid in pids]
    assert {p.uids().real for p in apps} == {user.pw_uid}  # the tenant's apps, its uid
    ping = daemon_ping(home)
    daemon = psutil.Process(ping["pid"])
    assert daemon.uids().real == user.pw_uid and ping["app_limit"] == 2
    environ = daemon.environ()
    assert environ["CORRAL_APP_LIMIT"] == "2"
    assert environ["CORRAL_PANEL_UID"] == str(iso.panel.pw_uid)

    lowered = iso.request("PATCH", f"/api/v1/admin/tenants/{tenant['id']}", {"app_limit": 1})
    assert lowered["status"] == 200 and "warning" not in lowered["body"], lowered
    assert daemon_ping(home)["app_limit"] == 1  # pushed by the panel's uid

    removed = iso.request("DELETE", f"/api/v1/admin/tenants/{tenant['id']}?delete_files=true")
    assert removed["status"] == 200, removed
    assert removed["body"] == {"deleted": name, "note": ""}
    with pytest.raises(KeyError):
        pwd.getpwnam(name)
    assert not home.exists()
    wait_for(lambda: not any(p.is_running() for p in (daemon, *apps)))
    listing = iso.request("GET", "/api/v1/admin/tenants")
    assert listing["body"]["tenants"] == []


def test_the_command_line_adds_tenants_through_the_helper(iso: Isolated) -> None:
    name = iso.name()
    base = ["-m", "corral", "panel", "--home", str(iso.panel_home)]
    base += ["--helper-socket", str(iso.socket)]
    refused = iso.as_panel([*base, "add-tenant", name, "--dir", "/tmp"])
    assert refused.returncode == 1
    assert refused.stderr.startswith("corral panel: --dir: in isolated mode the helper makes")
    with pytest.raises(KeyError):
        pwd.getpwnam(name)

    added = iso.as_panel([*base, "add-tenant", name, "--app-limit", "3"])
    assert added.returncode == 0, added.stderr
    home = iso.tenants_dir / name
    assert added.stdout.strip() == (
        f"created tenant {name!r} with home {home} as the system user {name}"
    )
    assert pwd.getpwnam(name).pw_dir == str(home)
    again = iso.as_panel([*base, "add-tenant", name, "--exist-ok"])
    assert again.returncode == 0

    [listing] = iso.requests({"method": "GET", "path": "/api/v1/admin/tenants"})
    [tenant] = listing["body"]["tenants"]
    assert (tenant["name"], tenant["system_user"], tenant["app_limit"]) == (name, name, 3)
    kept = iso.request("DELETE", f"/api/v1/admin/tenants/{tenant['id']}")
    assert kept["status"] == 200 and kept["body"]["note"] == ""
    with pytest.raises(KeyError):
        pwd.getpwnam(name)
    assert home.is_dir()  # the files were kept, as asked


def private_app(iso: Isolated) -> tuple[str, pwd.struct_passwd]:
    """A tenant whose app/ (0700) holds server.py, and a symlink `elsewhere` from its home
    to the panel's own home."""
    name = iso.name()
    made = iso.request("POST", "/api/v1/admin/tenants", {"name": name, "app_limit": 3})
    assert made["status"] == 201, made
    user = pwd.getpwnam(name)
    home = iso.tenants_dir / name
    private = home / "app"
    private.mkdir(mode=0o700)
    os.chown(private, user.pw_uid, user.pw_gid)
    private.chmod(0o700)
    script = private / "server.py"
    script.write_text(SLEEPER)
    os.chown(script, user.pw_uid, user.pw_gid)
    script.chmod(0o600)
    link = home / "elsewhere"
    link.symlink_to(iso.panel_home)
    os.lchown(link, user.pw_uid, user.pw_gid)
    seen = iso.as_panel(["-c", f"import os; print(os.path.exists({str(script)!r}))"])
    assert seen.stdout.strip() == "False"  # the panel's uid cannot see it
    return name, user


def test_the_tenants_daemon_checks_paths_the_panel_cannot_see(iso: Isolated) -> None:
    """In isolated mode the form's paths are resolved by the tenant's daemon: a log file
    through a symlink to the panel's own home is refused, the private script is not."""
    name, _ = private_app(iso)
    outside = iso.request(
        "POST",
        f"/api/v1/tenants/{name}/apps",
        {"name": "out", "cwd": "app", "script": "server.py", "out_file": "../elsewhere/x.log"},
    )
    assert outside["status"] == 422, outside
    assert set(outside["body"]["errors"]) == {"out_file"}, outside
    assert "outside your home" in outside["body"]["errors"]["out_file"]
    assert not (iso.panel_home / "x.log").exists()


def test_an_app_in_a_private_folder_of_the_tenant_is_created_and_runs(iso: Isolated) -> None:
    name, user = private_app(iso)
    created, listed = iso.requests(
        {
            "method": "POST",
            "path": f"/api/v1/tenants/{name}/apps",
            "json": {"name": "web", "cwd": "app", "script": "server.py"},
        },
        {"method": "GET", "path": f"/api/v1/tenants/{name}/apps"},
    )
    assert created["status"] == 201, created
    (web,) = listed["body"]["apps"]
    pids = [m["pid"] for m in web["members"]]
    assert pids and all(pids)
    assert {psutil.Process(pid).uids().real for pid in pids} == {user.pw_uid}


def test_private_apps_import_and_edit_and_the_daemons_refusals_name_the_field(
    iso: Isolated,
) -> None:
    """Import and config edit of apps in a 0700 folder work; what the tenant's daemon
    refuses (a file the tenant cannot read, though the panel's uid can; a missing file; a
    bad interpreter; an unknown key) is named by field, as in development mode."""
    name, user = private_app(iso)
    home = iso.tenants_dir / name
    theirs = home / "theirs.py"  # the panel user's, 0600: the tenant cannot read it
    theirs.write_text(SLEEPER)
    os.chown(theirs, iso.panel.pw_uid, iso.panel.pw_gid)
    theirs.chmod(0o600)
    api = f"/api/v1/tenants/{name}/apps"
    two = (
        "apps:\n  - name: web\n    cwd: app\n    script: server.py\n"
        "  - name: worker\n    script: app/server.py\n"
    )
    bad = (
        "apps:\n  - name: a\n    script: app/nope.py\n  - name: b\n    script: theirs.py\n"
        "  - name: c\n    cwd: app\n    script: server.py\n    interpreter: /nonexistent/py\n"
    )
    edit = "apps:\n  - name: web\n    cwd: app\n    script: server.py\n    env:\n      X: '1'\n"
    typo = "apps:\n  - name: web\n    script: app/server.py\n    restart_dealy: 1s\n"
    imported, unreadable, refused, edited, mistyped, listed = iso.requests(
        {"method": "POST", "path": f"{api}/import", "json": {"text": two}},
        {"method": "POST", "path": api, "json": {"name": "x", "script": "theirs.py"}},
        {"method": "POST", "path": f"{api}/import", "json": {"text": bad}},
        {"method": "PUT", "path": f"{api}/web/config", "json": {"text": edit}},
        {"method": "PUT", "path": f"{api}/web/config", "json": {"text": typo}},
        {"method": "GET", "path": api},
    )
    assert imported["status"] == 201, imported
    assert unreadable["status"] == 422, unreadable
    assert unreadable["body"]["errors"] == {
        "script": f"'{home}/theirs.py' cannot be read by user {name!r} (permission denied)"
    }
    assert refused["status"] == 422, refused
    errors = refused["body"]["errors"]
    assert set(errors) == {"apps[0].script", "apps[1].script", "apps[2].interpreter"}, errors
    assert errors["apps[0].script"].startswith("line 3: app 'a': no such file or program")
    assert "cannot be read" in errors["apps[1].script"]
    assert "'/nonexistent/py' is not an executable file" in errors["apps[2].interpreter"]
    assert edited["status"] == 200, edited
    assert mistyped["status"] == 422, mistyped
    assert list(mistyped["body"]["errors"]) == ["apps[0].restart_dealy"], mistyped
    apps = {app["name"]: app for app in listed["body"]["apps"]}
    assert set(apps) == {"web", "worker"}
    pids = [m["pid"] for app in apps.values() for m in app["members"]]
    assert len(pids) == 2 and all(pids)
    assert {psutil.Process(pid).uids().real for pid in pids} == {user.pw_uid}
    [env] = daemon_call(home, "env", target="web")
    assert env["env"]["X"] == "1"  # the edited config was applied


CONNECT = (
    "import socket, sys\n"
    "s = socket.socket(socket.AF_UNIX)\n"
    "try:\n    s.connect(sys.argv[1]); print('connected')\n"
    "except OSError as exc:\n    print(type(exc).__name__)\n"
)


def pidfd_of(pid: int, uid: int) -> int:
    """A pidfd of `pid`, checked after opening to be a process of `uid` (so waiting on it
    can never be confused by a reused pid)."""
    fd = os.pidfd_open(pid)
    if psutil.Process(pid).uids().real != uid:
        os.close(fd)
        raise AssertionError(f"pid {pid} is not a process of uid {uid}")
    return fd


def exited(pidfd: int) -> bool:
    return bool(select.select([pidfd], [], [], 0)[0])


def helper_audit(iso: Isolated) -> list[dict[str, Any]]:
    text = read_text(iso.log.parent / "state" / "audit.log")
    return [json.loads(line) for line in text.splitlines()]


def test_a_daemon_the_tenant_started_itself_is_replaced_at_the_panels_next_request(
    iso: Isolated,
) -> None:
    """The tenant's own CLI autostarts a daemon without the panel's ids: `.corral` is
    tightened to 0700 and the socket is 0600, so the panel's connect fails (EACCES). A
    page view says so (it never starts or replaces a daemon); the next action asks the
    helper to start the daemon, once: the helper stops the tenant's
    daemon over its socket (state saved, apps stopped), starts a proper one as the tenant,
    which restores the apps that were meant to run, and audits the replacement. The
    tenant's own daemon never got panel access: it is gone, not opened up."""
    name = iso.name()
    made = iso.request("POST", "/api/v1/admin/tenants", {"name": name, "app_limit": 3})
    assert made["status"] == 201, made
    user = pwd.getpwnam(name)
    home = iso.tenants_dir / name
    script = home / "server.py"
    script.write_text(SLEEPER)
    os.chown(script, user.pw_uid, user.pw_gid)
    api = f"/api/v1/tenants/{name}/apps"
    two = "apps:\n  - name: web\n    script: server.py\n  - name: worker\n    script: server.py\n"
    imported, stopped = iso.requests(
        {"method": "POST", "path": f"{api}/import", "json": {"text": two}},
        {"method": "POST", "path": f"{api}/worker/stop", "json": {}},
    )
    assert imported["status"] == 201 and stopped["status"] == 200, (imported, stopped)

    # The daemon stops (a reboot, an admin); the tenant's own `corral ls` starts another.
    first = daemon_ping(home)
    first_fd = pidfd_of(first["pid"], user.pw_uid)
    try:
        daemon_call(home, "kill")
        wait_for(lambda: exited(first_fd), timeout=60)
    finally:
        os.close(first_fd)
    listed = run_as(user, ["-m", "corral", "ls"], home=home)
    assert listed.returncode == 0, listed.stderr
    assert "web" in listed.stdout and "worker" in listed.stdout
    corral, sock = home / ".corral", home / ".corral" / "corral.sock"
    assert (corral.stat().st_mode & 0o7777, sock.stat().st_mode & 0o777) == (0o700, 0o600)
    own = daemon_ping(home)
    assert own["panel_uid"] is None  # not started for any panel
    assert iso.as_panel(["-c", CONNECT, str(sock)]).stdout.strip() == "PermissionError"
    own_pids = {r["pid"] for r in daemon_call(home, "list") if r["name"] == "web"}
    assert own_pids and all(own_pids)  # the tenant's daemon restored web, as its own
    own_fd = pidfd_of(own["pid"], user.pw_uid)
    try:
        # A page view never starts a daemon (GET changes nothing), nor replaces one: it
        # says plainly why it cannot show the apps.
        [locked] = iso.requests({"method": "GET", "path": api})
        assert locked["status"] == 503, locked
        assert locked["body"]["error"] == f"cannot reach the daemon at {sock}: Permission denied"
        assert not exited(own_fd) and daemon_call(home, "ping")["pid"] == own["pid"]
        # The next action asks the helper, which replaces the tenant's daemon.
        again, page, apps = iso.requests(
            {"method": "POST", "path": f"{api}/worker/stop", "json": {}},
            {"method": "GET", "path": f"/t/{name}"},
            {"method": "GET", "path": api},
        )
        assert exited(own_fd), (again, read_text(iso.log))  # stopped, never opened up
    finally:
        os.close(own_fd)
    assert again["status"] == 200, again
    assert page["status"] == 200 and "web" in page["text"], page
    assert apps["status"] == 200, apps
    by_name = {app["name"]: app for app in apps["body"]["apps"]}
    assert set(by_name) == {"web", "worker"}
    pids = [m["pid"] for m in by_name["web"]["members"]]
    assert pids and all(pids) and not set(pids) & own_pids  # meant to run: running again
    assert {psutil.Process(pid).uids().real for pid in pids} == {user.pw_uid}
    assert not any(m["pid"] for m in by_name["worker"]["members"])  # stopped stays stopped

    proper = daemon_ping(home)
    assert proper["pid"] != own["pid"] and proper["panel_uid"] == iso.panel.pw_uid
    assert proper["app_limit"] == 3
    environ = psutil.Process(proper["pid"]).environ()
    assert environ["CORRAL_PANEL_UID"] == str(iso.panel.pw_uid)
    assert (corral.stat().st_mode & 0o7777, sock.stat().st_mode & 0o777) == (0o2750, 0o660)
    [entry] = [
        e
        for e in helper_audit(iso)
        if e["tenant"] == name and "replaced a daemon the tenant started itself" in e["detail"]
    ]
    assert (entry["verb"], entry["result"], entry["peer_uid"]) == (
        "start_daemon",
        "ok",
        iso.panel.pw_uid,
    )
    assert f"(pid {own['pid']}: its socket is 0600 with group {user.pw_gid}" in entry["detail"]
    assert entry["detail"].startswith(f"daemon started (pid {proper['pid']}), app limit 3")
