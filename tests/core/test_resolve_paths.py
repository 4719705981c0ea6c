"""`resolve_paths`: a daemon resolves a tenant's paths with its own rights, confined to
its tenant home (the parent of CORRAL_HOME), for the panel's isolated mode (SPEC 2.2)."""

from __future__ import annotations

import contextlib
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from corral.protocol.wire import ErrorCode, ProtocolError
from tests.e2e.test_tenant_mode import TenantSetup, setup  # noqa: F401 (the fixture)
from tests.support.otheruid import temp_user

from ..conftest import Corral


def entry(path: str, kind: str = "any", must_exist: bool = False, **extra: Any) -> dict[str, Any]:
    return {"path": path, "kind": kind, "must_exist": must_exist, **extra}


@pytest.fixture
def tree(daemon: Corral) -> tuple[Corral, Path]:
    """The daemon's tenant home with app/run.py, app/data/ and a symlink leading out."""
    home = daemon.home.root.parent
    (home / "app" / "data").mkdir(parents=True)
    (home / "app" / "run.py").write_text("print('hi')\n")
    (home / "out").symlink_to("/etc")
    (home / "passwd").symlink_to("/etc/passwd")
    (home / "inside").symlink_to(home / "app")
    return daemon, Path(os.path.realpath(home))


def resolve(corral: Corral, *entries: dict[str, Any]) -> list[dict[str, Any]]:
    answer = corral.call("resolve_paths", paths=list(entries))
    assert isinstance(answer, list) and len(answer) == len(entries)
    return answer


def test_paths_inside_the_home_resolve_to_absolute_paths(tree: tuple[Corral, Path]) -> None:
    corral, home = tree
    answers = resolve(
        corral,
        entry("app/run.py", "file", True),
        entry(str(home / "app"), "dir", True),
        entry("run.py", "file", True, base="app"),
        entry("app/data/../run.py", "file", True),
        entry("inside/run.py", "file", True),  # a symlink in the middle, staying inside
        entry("logs/new.log", "file"),  # need not exist
    )
    assert answers == [
        {"ok": True, "path": str(home / "app" / "run.py")},
        {"ok": True, "path": str(home / "app")},
        {"ok": True, "path": str(home / "app" / "run.py")},
        {"ok": True, "path": str(home / "app" / "run.py")},
        {"ok": True, "path": str(home / "app" / "run.py")},
        {"ok": True, "path": str(home / "logs" / "new.log")},
    ]


def test_paths_leaving_the_home_are_refused(tree: tuple[Corral, Path]) -> None:
    corral, _ = tree
    answers = resolve(
        corral,
        entry("../../etc/passwd", "file"),
        entry("/etc/passwd", "file"),
        entry("passwd", "file", True),  # a symlink pointing out
        entry("out/hostname", "file"),  # a symlink in the middle pointing out
        entry("run.py", "file", base="/etc"),  # a base elsewhere
        entry("../x", "any", base="app/.."),
    )
    for answer in answers:
        assert answer["ok"] is False
        assert "outside your home" in answer["error"]
        assert "\n" not in answer["error"]
    assert "leads to /etc/passwd" in answers[2]["error"]


def test_missing_paths_and_kind_mismatches_say_what_is_wrong(tree: tuple[Corral, Path]) -> None:
    corral, _ = tree
    answers = resolve(
        corral,
        entry("app/nope.py", "file", True),
        entry("app", "file", True),
        entry("app/run.py", "dir", True),
        entry("", "any"),
        entry("a\x00b", "any"),
    )
    assert [a["ok"] for a in answers] == [False] * 5
    assert answers[0]["error"] == "'app/nope.py' does not exist"
    assert answers[1]["error"] == "'app' is not a regular file"
    assert answers[2]["error"] == "'app/run.py' is not a directory"
    assert answers[3]["error"] == "a path is required"
    assert "NUL" in answers[4]["error"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ({"paths": [entry("x")] * 65}, "at most 64"),
        ({"paths": "x"}, "'paths' must be a list"),
        ({}, "'paths' must be a list"),
        ({"paths": ["x"]}, "paths[0] must be an object"),
        ({"paths": [{"path": 3}]}, "paths[0].path must be a string"),
        ({"paths": [entry("x", "socket")]}, "paths[0].kind must be"),
        ({"paths": [entry("x", must_exist=1)]}, "paths[0].must_exist must be true or false"),
        ({"paths": [entry("x", base=["/"])]}, "paths[0].base must be a string"),
        ({"paths": [entry("x", mode=1)]}, "unknown key 'mode'"),
        ({"paths": [entry("x" * 4097)]}, "longer than 4096 bytes"),
        ({"paths": [], "home": "/etc"}, "'home' must be this daemon's tenant home"),
        ({"paths": [], "root": "/"}, "unknown argument 'root'"),
    ],
)
def test_malformed_requests_are_refused(daemon: Corral, args: dict[str, Any], message: str) -> None:
    with pytest.raises(ProtocolError) as caught:
        daemon.call("resolve_paths", **args)
    assert caught.value.code == ErrorCode.INVALID_ARGUMENT
    assert message in caught.value.message


def test_the_home_argument_may_only_name_the_daemons_home(tree: tuple[Corral, Path]) -> None:
    corral, home = tree
    answer = corral.call("resolve_paths", home=str(home), paths=[entry("app", "dir", True)])
    assert answer == [{"ok": True, "path": str(home / "app")}]
    assert corral.call("resolve_paths", paths=[entry("x")] * 64)[0]["ok"] is True


# --- As root: a daemon running as a tenant user resolves with the tenant's rights ---


def test_a_tenant_daemon_sees_its_private_folders_and_never_another_home(
    setup: TenantSetup,  # noqa: F811
) -> None:
    tenant = setup.tenant
    private = setup.home_dir / "app"
    private.mkdir(mode=0o700)
    os.chown(private, tenant.pw_uid, tenant.pw_gid)
    private.chmod(0o700)
    script = private / "run.py"
    script.write_text("print('hi')\n")
    os.chown(script, tenant.pw_uid, tenant.pw_gid)
    with temp_user(home=setup.base / "other") as other:
        secret = setup.base / "other" / "secret.txt"
        secret.write_text("not yours\n")
        os.chown(secret, other.pw_uid, other.pw_gid)
        link = setup.home_dir / "theirs"
        link.symlink_to(secret)
        os.lchown(link, tenant.pw_uid, tenant.pw_gid)
        setup.start()
        # The panel's uid cannot see into app/ (0700)...
        probe = subprocess.run(
            ["/usr/bin/test", "-e", str(script)],
            user=setup.panel.pw_uid,
            group=setup.panel.pw_gid,
            extra_groups=[],
            cwd="/",
        )
        assert probe.returncode != 0
        # ...but its call is answered with the tenant's rights.
        answer = setup.call_as(
            setup.panel,
            "resolve_paths",
            paths=[entry("app/run.py", "file", True), entry("theirs", "file", False)],
        )
        reply = answer["reply"]
        assert reply["ok"] is True, answer
        home = os.path.realpath(setup.home_dir)
        ok, out = reply["result"]
        assert ok == {"ok": True, "path": f"{home}/app/run.py"}
        assert out["ok"] is False and "outside your home" in out["error"]
        with contextlib.suppress(OSError):
            link.unlink()
