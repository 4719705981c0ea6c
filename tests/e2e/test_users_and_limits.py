"""SPEC 1.11: as root, an app runs as another user; rlimits and umask per app."""

from __future__ import annotations

import json
import os
import pwd

import pytest

from ..conftest import Corral, read_text, system_python, wait_for

REPORT = """
import json, os, resource, time
info = {
    "uid": os.getuid(), "gid": os.getgid(), "euid": os.geteuid(), "groups": os.getgroups(),
    "home": os.environ.get("HOME"), "user": os.environ.get("USER"),
    "nofile": resource.getrlimit(resource.RLIMIT_NOFILE)[0],
    "umask": os.umask(0),
}
print("INFO " + json.dumps(info), flush=True)
time.sleep(600)
"""


def report(corral: Corral, name: str) -> dict[str, object]:
    out = corral.proc(name)["out_log"]
    text = wait_for(lambda: "INFO " in read_text(out) and read_text(out))
    line = next(ln for ln in text.splitlines() if ln.startswith("INFO "))
    return dict(json.loads(line[5:]))


@pytest.mark.slow
@pytest.mark.skipif(os.geteuid() != 0, reason="only root can run an app as another user")
def test_app_runs_as_nobody_with_its_groups_and_home(daemon: Corral) -> None:
    os.chmod(daemon.workdir.parent, 0o755)  # nobody must be able to read its script
    os.chmod(daemon.workdir, 0o755)
    nobody = pwd.getpwnam("nobody")
    daemon.start_app("asnobody", REPORT, user="nobody", interpreter=system_python())
    info = report(daemon, "asnobody")
    assert info["uid"] == info["euid"] == nobody.pw_uid
    assert info["gid"] == nobody.pw_gid
    assert 0 not in info["groups"]  # root's supplementary groups are dropped
    assert info["home"] == nobody.pw_dir and info["user"] == "nobody"
    assert daemon.proc("asnobody")["user"] == "nobody"


@pytest.mark.slow
def test_unknown_user_is_errored_with_the_reason(daemon: Corral) -> None:
    record = daemon.start_app("ghost", REPORT, user="no-such-user-here")[0]
    assert record["status"] == "errored"
    assert "no-such-user-here" in record["error"]


@pytest.mark.slow
def test_rlimits_and_umask(daemon: Corral) -> None:
    daemon.start_app("limited", REPORT, rlimits={"nofile": 123}, umask=0o027)
    info = report(daemon, "limited")
    assert info["nofile"] == 123
    assert info["umask"] == 0o027
