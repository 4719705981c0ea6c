"""`corral deploy` with a real daemon and a real repository: output streamed live, exit
status, Ctrl-C, history, releases, key; bad git sources refused by `corral start`."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

from ..conftest import Corral, wait_for
from .deploy_helpers import DeployWorld, deploy_world, version_files, wait_version

WAIT_FOR_GO = (
    "import os, sys, time\n"
    "print('step: waiting for go', flush=True)\n"
    "deadline = time.monotonic() + 60\n"
    "while not os.path.exists(sys.argv[1]) and time.monotonic() < deadline:\n"
    "    time.sleep(0.05)\n"
    "sys.exit(0 if os.path.exists(sys.argv[1]) else 3)\n"
)


def deploy_cli(world: DeployWorld, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "corral", "deploy", "web", *args],
        env=world.corral.env,
        cwd=world.corral.workdir,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def read_until(proc: subprocess.Popen[str], text: str) -> list[str]:
    assert proc.stdout is not None
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if text in line:
            return lines
    raise AssertionError(f"the CLI ended without printing {text!r}: {''.join(lines)}")


@pytest.mark.slow
def test_the_cli_streams_the_output_live_and_exits_0_or_1(corral: Corral, tmp_path: Path) -> None:
    go = tmp_path / "go"
    with deploy_world(corral, tmp_path) as world:
        step = ["python3", "-c", WAIT_FOR_GO, str(go)]
        fail = ["python3", "-c", "import os, sys; sys.exit(os.path.exists('FAIL'))"]
        world.start(world.app(git={"steps": [step, fail]}))
        proc = deploy_cli(world)
        try:
            # The step's line arrives while the step still waits: nothing has finished yet.
            seen = read_until(proc, "step: waiting for go")
            assert seen[0].startswith("deploy ") and "queued (cli (uid " in seen[0]
            assert any(line.startswith("$ git ") for line in seen)
            assert proc.poll() is None
            assert corral.call("deploy_history", app="web")[0]["status"] == "running"
            go.touch()
            out, err = proc.communicate(timeout=120)
        finally:
            proc.kill()
            proc.wait()
        assert proc.returncode == 0, err
        last = out.splitlines()[-1]
        assert (
            last.startswith("deploy ")
            and " succeeded after " in last
            and "web runs release" in last
        )
        wait_version(world, "1")

        world.repo.commit({**version_files("2"), "FAIL": "1\n"}, "broken")
        failed = corral.cli("deploy", "web")
        assert failed.code == 1
        assert " failed at step steps[1]" in failed.err
        assert "step: waiting for go" in failed.out
        assert world.version() == "version=1"

        history = corral.ok("deploy", "web", "--history")
        lines = history.out.splitlines()
        assert lines[0].split()[:4] == ["id", "kind", "status", "trigger"]
        assert [line.split()[2] for line in lines[1:]] == ["failed", "succeeded"]
        releases = corral.ok("deploy", "web", "--releases", "--json")
        assert '"current": true' in releases.out
        record = corral.call("deploy_history", app="web")[0]
        shown = corral.ok("deploy", "web", "--output", record["id"])
        assert "step: waiting for go" in shown.out and "failed at step steps[1]" in shown.out


@pytest.mark.slow
def test_ctrl_c_detaches_and_the_deploy_goes_on(corral: Corral, tmp_path: Path) -> None:
    go = tmp_path / "go"
    with deploy_world(corral, tmp_path) as world:
        world.start(world.app(git={"steps": [["python3", "-c", WAIT_FOR_GO, str(go)]]}))
        proc = deploy_cli(world)
        try:
            read_until(proc, "step: waiting for go")
            proc.send_signal(signal.SIGINT)
            _, err = proc.communicate(timeout=30)
        finally:
            proc.kill()
            proc.wait()
        assert proc.returncode == 130
        assert "detached: deploy " in err and "goes on in the daemon" in err
        record = corral.call("deploy_history", app="web")[0]
        assert record["status"] == "running"
        go.touch()
        assert world.finished(record["id"])["status"] == "succeeded"
        wait_version(world, "1")


@pytest.mark.slow
def test_rollback_no_follow_and_key_from_the_cli(corral: Corral, tmp_path: Path) -> None:
    with deploy_world(corral, tmp_path) as world:
        world.start(world.app())
        v1 = world.deployed()
        world.repo.commit(version_files("2"))
        queued = corral.ok("deploy", "web", "--no-follow")
        assert "queued; its output: corral deploy web --output " in queued.out
        deploy_id = queued.out.split()[1]
        v2 = world.finished(deploy_id)
        assert v2["status"] == "succeeded"
        back = corral.ok("deploy", "web", "--rollback")
        assert "rollback " in back.out and f"runs release {v1['release']}" in back.out
        wait_version(world, "1")
        again = corral.ok("deploy", "web", "--rollback", v2["release"])
        assert f"runs release {v2['release']}" in again.out
        wait_version(world, "2")

        key = corral.ok("deploy", "web", "--key").out.strip()
        assert key.startswith("ssh-ed25519 ") and "corral-deploy-web@" in key
        assert corral.ok("deploy", "web", "--key").out.strip() == key  # made once
        private = corral.home.root / "deploys" / "web" / "id_ed25519"
        assert private.stat().st_mode & 0o777 == 0o600
        assert "PRIVATE" not in corral.ok("deploy", "web", "--key").out


@pytest.mark.parametrize(
    ("git", "key"),
    [
        ("      repo: https://git.example.com/a.git\n      branch: '-x'\n", "git.branch"),
        (
            "      repo: https://git.example.com/a.git\n      branch: '--upload-pack=touch x'\n",
            "git.branch",
        ),
        ("      repo: https://git.example.com/a.git\n      branch: 'a..b'\n", "git.branch"),
        ("      repo: 'ext::sh -c touch% /tmp/x'\n", "git.repo"),
        ("      repo: file:///srv/git/a.git\n", "git.repo"),
        ("      repo: 'https://git.example.com/a b.git'\n", "git.repo"),
    ],
)
def test_a_bad_git_source_is_refused_by_start_and_nothing_changes(
    daemon: Corral, git: str, key: str
) -> None:
    daemon.write("ok.py", "import time\ntime.sleep(60)\n")
    path = daemon.write(
        "corral.yaml",
        "apps:\n  - name: ok\n    script: ok.py\n"
        f"  - name: api\n    script: app.py\n    git:\n{git}",
    )
    result = daemon.cli("start", str(path))
    assert result.code == 1
    assert result.err.startswith(f"corral: {path}: app 'api': key '{key}': ")
    assert "Traceback" not in result.err
    assert daemon.jlist() == []  # not even the good app of the same file
    assert not (daemon.home.root / "deploys").exists()


def test_deploy_refusals(daemon: Corral) -> None:
    daemon.start_app("plain", "import time\ntime.sleep(60)\n")
    no_git = daemon.cli("deploy", "plain")
    assert no_git.code == 1 and "app 'plain' has no git source" in no_git.err
    unknown = daemon.cli("deploy", "nope")
    assert unknown.code == 1 and "no app" in unknown.err and "'nope'" in unknown.err
    both = daemon.cli("deploy", "plain", "--history", "--releases")
    assert both.code == 2
    bad_ref = daemon.cli("deploy", "plain", "--ref", "--upload-pack=x")
    assert bad_ref.code != 0 and "Traceback" not in bad_ref.err
    wait_for(lambda: daemon.proc("plain")["status"] == "online")
