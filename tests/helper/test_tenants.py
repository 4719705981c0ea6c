"""The helper's verbs on real system users, as root (skipped otherwise): create, start,
stop and remove tenants through a real `corral helper`, talked to as the panel's uid."""

from __future__ import annotations

import contextlib
import grp
import os
import pwd
import signal
import socket
import stat
import subprocess
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from corral.config.model import AppConfig
from corral.protocol.client import ControlClient
from corral.protocol.wire import ErrorCode, ProtocolError
from tests.conftest import wait_for

from .conftest import (
    HelperFactory,
    HelperProcess,
    daemon_env,
    exited,
    pidfd_of,
    proc_status,
    root_process,
    run_as,
)

pytestmark = [pytest.mark.root, pytest.mark.slow]

TRY_READ = r"""
import json, os, sys
results = {}
for path in sys.argv[1:]:
    try:
        if os.path.isdir(path):
            os.listdir(path)
        else:
            open(path, "rb").close()
        results[path] = "ok"
    except OSError as exc:
        results[path] = type(exc).__name__
print(json.dumps(results))
"""

CONNECT = r"""
import json, socket, sys
sock = socket.socket(socket.AF_UNIX)
try:
    sock.connect(sys.argv[1])
    print(json.dumps("connected"))
except OSError as exc:
    print(json.dumps(type(exc).__name__))
"""


def uid_min() -> int:
    """Where regular accounts start (login.defs' UID_MIN, 1000 if unset)."""
    with contextlib.suppress(OSError):
        for line in Path("/etc/login.defs").read_text().splitlines():
            if line.split()[:1] == ["UID_MIN"]:
                return int(line.split()[1])
    return 1000


def mode_of(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def sleeper(home: Path, name: str = "sleeper") -> dict[str, object]:
    """An app that writes one line to its log, then sleeps."""
    return AppConfig(
        name=name,
        script="/bin/sh",
        args=["-c", "echo hello; exec sleep 600"],
        interpreter="none",
        cwd=str(home),
    ).to_dict()


def test_create_tenant_makes_the_user_its_group_its_home_and_records_it(
    helper: HelperProcess, new_name: Callable[[], str]
) -> None:
    name = new_name()
    info = helper.call("create_tenant", tenant=name)

    user = pwd.getpwnam(name)
    home = helper.home(name)
    assert info == {
        "tenant": name,
        "user": name,
        "uid": user.pw_uid,
        "gid": user.pw_gid,
        "home": str(home),
    }
    assert user.pw_uid >= uid_min() and user.pw_gid != 0  # a regular account
    for subids in (Path("/etc/subuid"), Path("/etc/subgid")):
        if subids.exists():
            assert f"{name}:" not in subids.read_text()  # no user-namespace id ranges
    assert (user.pw_dir, user.pw_shell, user.pw_gecos) == (
        str(home),
        "/usr/sbin/nologin",
        "corral tenant",
    )
    group = grp.getgrnam(name)
    assert group.gr_gid == user.pw_gid and group.gr_mem == []

    panel_gid = helper.panel.pw_gid
    st = os.lstat(home)
    assert stat.S_ISDIR(st.st_mode) and mode_of(home) == 0o750
    assert (st.st_uid, st.st_gid) == (user.pw_uid, panel_gid)
    corral = home / ".corral"
    st = os.lstat(corral)
    assert stat.S_ISDIR(st.st_mode) and mode_of(corral) == 0o2750
    assert (st.st_uid, st.st_gid) == (user.pw_uid, panel_gid)
    assert sorted(os.listdir(home)) == [".corral"]
    # The panel's group may enter (to reach the daemon's socket later).
    assert run_as(helper.panel, TRY_READ, str(home), str(corral)) == {
        str(home): "ok",
        str(corral): "ok",
    }

    registry = helper.state_dir / "tenants.json"
    assert mode_of(registry) == 0o600 and os.stat(registry).st_uid == 0
    entry = helper.registry()[name]
    assert {k: entry[k] for k in ("uid", "gid", "home")} == {
        "uid": user.pw_uid,
        "gid": user.pw_gid,
        "home": str(home),
    }
    audit = helper.state_dir / "audit.log"
    assert mode_of(audit) == 0o600 and os.stat(audit).st_uid == 0
    last = helper.audit()[-1]
    assert {k: last[k] for k in ("verb", "tenant", "result", "peer_uid")} == {
        "verb": "create_tenant",
        "tenant": name,
        "result": "ok",
        "peer_uid": helper.panel.pw_uid,
    }
    assert last["peer_pid"] > 0 and isinstance(last["time"], float)

    # A second create of the same name changes nothing.
    before = helper.snapshot()
    assert helper.refused("create_tenant", tenant=name).code is ErrorCode.CONFLICT
    assert helper.snapshot() == before


def test_one_tenant_cannot_list_or_read_another_tenants_home_or_logs(
    helper: HelperProcess, new_name: Callable[[], str]
) -> None:
    a, b = new_name(), new_name()
    helper.call("create_tenant", tenant=a)
    helper.call("create_tenant", tenant=b)
    started = helper.call("start_daemon", tenant=a, app_limit=-1)
    home_a = helper.home(a)
    with ControlClient.connect(Path(started["socket"]), timeout=30) as root:
        root.call("start", apps=[sleeper(home_a)], cli_env={})
    logs = home_a / ".corral" / "logs"
    wait_for(lambda: any(logs.iterdir()))
    targets = [
        home_a,
        home_a / ".corral",
        logs,
        home_a / ".corral" / "corral.log",
        next(logs.iterdir()),
    ]
    as_b = run_as(pwd.getpwnam(b), TRY_READ, *map(str, targets))
    assert as_b == {str(path): "PermissionError" for path in targets}
    assert run_as(pwd.getpwnam(b), CONNECT, started["socket"]) == "PermissionError"
    # ...while A itself can (the refusals above are B's, not everyone's).
    as_a = run_as(pwd.getpwnam(a), TRY_READ, *map(str, targets))
    assert as_a == {str(path): "ok" for path in targets}


def test_start_daemon_runs_it_as_the_tenant_with_exactly_the_foundation_environment(
    helper: HelperProcess, new_name: Callable[[], str]
) -> None:
    name = new_name()
    helper.call("create_tenant", tenant=name)
    user = pwd.getpwnam(name)
    home = helper.home(name)
    started = helper.call("start_daemon", tenant=name, app_limit=5)
    assert started["started"] is True
    assert started["socket"] == str(home / ".corral" / "corral.sock")
    pid = started["pid"]
    daemon_fd = pidfd_of(pid, user.pw_uid)
    try:
        status = proc_status(pid)
        assert status["Uid"] == [str(user.pw_uid)] * 4
        assert status["Gid"] == [str(user.pw_gid)] * 4
        assert status["Groups"] == []
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[:-1]
        assert cmdline == [os.fsencode(helper.python), b"-m", b"corral.core.daemon"]
        raw_env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")[:-1]
        env = dict(item.decode().split("=", 1) for item in raw_env)
        assert env == daemon_env(helper, name, 5)
        # Spawned in the tenant's home (a folder the tenant owns as the first entry of its
        # module path), and then the daemon moves to /, holding no folder busy.
        assert os.readlink(f"/proc/{pid}/cwd") == "/"
        assert os.getsid(pid) == pid  # its own session

        # An app started through its socket (as root) runs as the tenant too.
        with ControlClient.connect(Path(started["socket"]), timeout=30) as root:
            records = root.call("start", apps=[sleeper(home)], cli_env={})
            assert root.call("ping")["app_limit"] == 5
        app_pid = records[0]["pid"]
        app_fd = pidfd_of(app_pid, user.pw_uid)
        try:
            app = proc_status(app_pid)
            assert app["Uid"] == [str(user.pw_uid)] * 4
            assert app["Gid"] == [str(user.pw_gid)] * 4
            assert app["Groups"] == []

            # A second start finds it running and only passes the new limit on.
            again = helper.call("start_daemon", tenant=name, app_limit=7)
            assert again == {**started, "started": False}
            with ControlClient.connect(Path(started["socket"]), timeout=30) as root:
                assert root.call("ping")["app_limit"] == 7

            assert helper.call("stop_daemon", tenant=name) == {"stopped": True}
            assert exited(daemon_fd)  # stop_daemon returns once the daemon is gone
            wait_for(lambda: exited(app_fd))
        finally:
            os.close(app_fd)
    finally:
        os.close(daemon_fd)
    assert helper.call("stop_daemon", tenant=name) == {"stopped": False}
    verbs = [(e["verb"], e["result"]) for e in helper.audit()]
    assert verbs[-4:] == [
        ("start_daemon", "ok"),
        ("start_daemon", "ok"),
        ("stop_daemon", "ok"),
        ("stop_daemon", "ok"),
    ]


def test_remove_tenant_kills_what_is_left_and_deletes_user_group_and_home(
    helper: HelperProcess, new_name: Callable[[], str], scratch: Path
) -> None:
    name = new_name()
    helper.call("create_tenant", tenant=name)
    user = pwd.getpwnam(name)
    home = helper.home(name)
    started = helper.call("start_daemon", tenant=name, app_limit=-1)
    daemon_fd = pidfd_of(started["pid"], user.pw_uid)
    victim = scratch / "root-file"
    victim.write_text("root's\n")
    # What a tenant leaves: a locked folder, a symlink to a root file, a stray process.
    run_as(
        user,
        "import json, os, sys\n"
        "home = sys.argv[1]\n"
        "os.makedirs(home + '/locked/deep')\n"
        "open(home + '/locked/deep/f', 'w').write('x')\n"
        "os.chmod(home + '/locked/deep', 0o500)\n"
        "os.chmod(home + '/locked', 0o000)\n"
        "os.symlink(sys.argv[2], home + '/link')\n"
        "os.symlink(os.path.dirname(sys.argv[2]), home + '/dirlink')\n"
        "print(json.dumps(None))\n",
        str(home),
        str(victim),
    )
    stray = subprocess.Popen(
        ["/bin/sleep", "600"],
        user=user.pw_uid,
        group=user.pw_gid,
        extra_groups=[],
        start_new_session=True,
    )
    try:
        assert helper.call("remove_tenant", tenant=name, delete_home=True) == {
            "removed": True,
            "home_deleted": True,
        }
        assert stray.wait(timeout=30) == -signal.SIGKILL
        assert exited(daemon_fd)
    finally:
        os.close(daemon_fd)
        if stray.poll() is None:
            stray.kill()
            stray.wait()
    with pytest.raises(KeyError):
        pwd.getpwnam(name)
    with pytest.raises(KeyError):
        grp.getgrnam(name)
    assert not os.path.lexists(home)
    assert victim.read_text() == "root's\n"  # symlinks were not followed
    assert name not in helper.registry()
    assert helper.audit()[-1]["verb"] == "remove_tenant"
    assert helper.audit()[-1]["result"] == "ok"
    # Gone from the registry: nothing more can be done to that name.
    assert helper.refused("start_daemon", tenant=name, app_limit=1).code is ErrorCode.NOT_FOUND


def test_remove_tenant_keeping_the_home_gives_it_to_root(
    helper: HelperProcess, new_name: Callable[[], str]
) -> None:
    name = new_name()
    helper.call("create_tenant", tenant=name)
    home = helper.home(name)
    assert helper.call("remove_tenant", tenant=name, delete_home=False) == {
        "removed": True,
        "home_deleted": False,
    }
    with pytest.raises(KeyError):
        pwd.getpwnam(name)
    st = os.lstat(home)
    assert (st.st_uid, st.st_gid, mode_of(home)) == (0, 0, 0o700)
    assert os.listdir(home) == [".corral"]
    # The kept home blocks a new tenant of that name (nothing is overwritten).
    assert helper.refused("create_tenant", tenant=name).code is ErrorCode.CONFLICT


def test_a_pid_file_rewritten_by_the_tenant_is_never_signalled(
    helper: HelperProcess, new_name: Callable[[], str]
) -> None:
    name = new_name()
    helper.call("create_tenant", tenant=name)
    user = pwd.getpwnam(name)
    pid_file = helper.home(name) / ".corral" / "daemon.pid"
    write_pid = "import json, sys\nopen(sys.argv[1], 'w').write(sys.argv[2])\nprint('null')\n"
    with root_process("/bin/sleep", "600") as victim:
        helper.call("start_daemon", tenant=name, app_limit=-1)
        run_as(user, write_pid, str(pid_file), f"{victim.pid}\n")
        assert helper.call("stop_daemon", tenant=name) == {"stopped": True}
        assert victim.poll() is None

        helper.call("start_daemon", tenant=name, app_limit=-1)
        run_as(user, write_pid, str(pid_file), f"{victim.pid}\n")
        helper.call("remove_tenant", tenant=name, delete_home=True)
        assert victim.poll() is None


def test_a_socket_swapped_for_a_symlink_to_roots_socket_gets_nothing_from_the_helper(
    helper: HelperProcess, new_name: Callable[[], str], scratch: Path
) -> None:
    name = new_name()
    helper.call("create_tenant", tenant=name)
    user = pwd.getpwnam(name)
    started = helper.call("start_daemon", tenant=name, app_limit=-1)
    daemon_fd = pidfd_of(started["pid"], user.pw_uid)
    bait_dir = scratch
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as bait:
        bait.bind(str(bait_dir / "root.sock"))
        bait.listen(8)
        bait.setblocking(False)
        run_as(
            user,
            "import os, sys\nos.unlink(sys.argv[1])\nos.symlink(sys.argv[2], sys.argv[1])\n"
            "print('null')\n",
            started["socket"],
            str(bait_dir / "root.sock"),
        )
        assert helper.call("stop_daemon", tenant=name) == {"stopped": False}
        helper.call("remove_tenant", tenant=name, delete_home=True)  # kills it all the same
        with pytest.raises(BlockingIOError):
            bait.accept()  # the helper never connected to it
    try:
        assert exited(daemon_fd)
    finally:
        os.close(daemon_fd)


def test_a_create_that_fails_midway_leaves_no_user_group_or_home(
    helper: HelperProcess, new_name: Callable[[], str]
) -> None:
    # The registry write comes after useradd and the home: make it fail.
    registry = helper.state_dir / "tenants.json"
    registry.unlink(missing_ok=True)
    registry.mkdir()
    name = new_name()
    error = helper.refused("create_tenant", tenant=name)
    assert error.code is ErrorCode.INTERNAL
    assert "nothing was left behind" in error.message
    with pytest.raises(KeyError):
        pwd.getpwnam(name)
    with pytest.raises(KeyError):
        grp.getgrnam(name)
    assert not os.path.lexists(helper.home(name))
    assert helper.audit()[-1]["result"] == "failed"

    registry.rmdir()
    helper.assert_serving()
    assert helper.call("create_tenant", tenant=name)["tenant"] == name  # nothing in the way


def test_a_group_of_that_name_is_a_conflict_and_nothing_is_made(
    helpers: HelperFactory, helper: HelperProcess
) -> None:
    name = helpers.group()
    gid = grp.getgrnam(name).gr_gid
    before = helper.snapshot()
    error = helper.refused("create_tenant", tenant=name)
    assert error.code is ErrorCode.CONFLICT
    assert "group" in error.message
    with pytest.raises(KeyError):
        pwd.getpwnam(name)
    assert grp.getgrnam(name).gr_gid == gid
    assert helper.snapshot() == before
    helper.assert_serving()


def test_an_existing_home_path_is_a_conflict_and_nothing_is_made(
    helper: HelperProcess, new_name: Callable[[], str]
) -> None:
    name = new_name()
    helper.home(name).mkdir()
    (helper.home(name) / "keep").write_text("mine\n")
    error = helper.refused("create_tenant", tenant=name)
    assert error.code is ErrorCode.CONFLICT
    with pytest.raises(KeyError):
        pwd.getpwnam(name)
    assert (helper.home(name) / "keep").read_text() == "mine\n"


def test_start_daemon_makes_a_deleted_corral_folder_again(
    helper: HelperProcess, new_name: Callable[[], str]
) -> None:
    name = new_name()
    helper.call("create_tenant", tenant=name)
    user = pwd.getpwnam(name)
    corral = helper.home(name) / ".corral"
    run_as(user, "import os, sys\nos.rmdir(sys.argv[1])\nprint('null')\n", str(corral))
    helper.call("start_daemon", tenant=name, app_limit=-1)
    st = os.lstat(corral)
    assert (st.st_uid, st.st_gid) == (user.pw_uid, helper.panel.pw_gid)
    assert st.st_mode & stat.S_ISGID


def test_a_restarted_helper_knows_its_tenants_and_stops_a_daemon_it_did_not_start(
    helpers: HelperFactory, new_name: Callable[[], str]
) -> None:
    first = helpers.start()
    name = new_name()
    first.call("create_tenant", tenant=name)
    user = pwd.getpwnam(name)
    started = first.call("start_daemon", tenant=name, app_limit=-1)
    daemon_fd = pidfd_of(started["pid"], user.pw_uid)
    try:
        assert first.stop() == 0
        assert not first.socket.exists()
        assert not exited(daemon_fd)  # tenant daemons outlive the helper

        second = helpers.start(state_dir=first.state_dir, tenants_dir=first.tenants_dir)
        again = second.call("start_daemon", tenant=name, app_limit=-1)
        assert again == {**started, "started": False}
        assert second.call("stop_daemon", tenant=name) == {"stopped": True}
        assert exited(daemon_fd)
        second.call("remove_tenant", tenant=name, delete_home=True)
    finally:
        os.close(daemon_fd)


def test_python_path_reaches_the_daemon_and_nothing_else_is_added(
    helpers: HelperFactory, new_name: Callable[[], str]
) -> None:
    first, second = helpers.dir(), helpers.dir()
    helper = helpers.start(extra=("--python-path", str(first), "--python-path", str(second)))
    name = new_name()
    helper.call("create_tenant", tenant=name)
    pid = helper.call("start_daemon", tenant=name, app_limit=0)["pid"]
    raw_env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")[:-1]
    env = dict(item.decode().split("=", 1) for item in raw_env)
    assert env == {**daemon_env(helper, name, 0), "PYTHONPATH": f"{first}:{second}"}


def test_concurrent_requests_for_one_tenant_run_one_at_a_time(
    helper: HelperProcess, new_name: Callable[[], str]
) -> None:
    name = new_name()
    with ThreadPoolExecutor(4) as pool:
        creates = list(pool.map(lambda _: _outcome(helper, "create_tenant", tenant=name), range(4)))
    assert creates.count(ErrorCode.CONFLICT) == 3
    assert [c["uid"] for c in creates if isinstance(c, dict)] == [pwd.getpwnam(name).pw_uid]
    with ThreadPoolExecutor(4) as pool:
        starts = list(
            pool.map(
                lambda _: _outcome(helper, "start_daemon", tenant=name, app_limit=-1), range(4)
            )
        )
    assert all(isinstance(s, dict) for s in starts), starts
    assert [s["started"] for s in starts if isinstance(s, dict)].count(True) == 1
    assert len({s["pid"] for s in starts if isinstance(s, dict)}) == 1


def _outcome(helper: HelperProcess, cmd: str, **args: object) -> object:
    """The result, or the error code."""
    try:
        return helper.call(cmd, **args)
    except ProtocolError as exc:
        return exc.code
