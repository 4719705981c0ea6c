"""Deploys from git with a real daemon, a real repository served over HTTPS on loopback and
a real cluster app (SPEC 4): zero-downtime switch, failures that leave the running release
alone, rollback, retention, one deploy of an app at a time."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from ..conftest import Corral, alive, wait_for
from ..support.load import Load
from .deploy_helpers import deploy_world, version_files, wait_version


@pytest.mark.slow
def test_deploy_then_redeploy_under_load_loses_no_request(corral: Corral, tmp_path: Path) -> None:
    with deploy_world(corral, tmp_path) as world:
        path = world.write_config(world.app())
        started = corral.ok("start", str(path))
        # Registered, not launched: there is nothing to run before the first deploy.
        assert "web has no release yet: run `corral deploy web`" in started.err
        assert {r["status"] for r in corral.jlist()} == {"stopped"}
        assert not (corral.home.root / "deploys" / "web" / "current").exists()

        first = corral.ok("deploy", "web")
        assert "succeeded" in first.out
        assert {r["status"] for r in corral.jlist()} == {"online"}
        wait_version(world, "1")
        before = world.pids()

        commit = world.repo.commit(version_files("2"), "version 2")
        url = f"http://127.0.0.1:{world.port}/"
        with Load(url, concurrency=6, max_requests=200_000, max_seconds=120) as load:
            assert load.wait_for(ok=100, timeout=20)
            second = corral.cli("deploy", "web")
            served_during = load.ok
            time.sleep(0.3)
        assert second.code == 0, second.err + second.out
        assert load.failed == 0, load.errors[:5]
        assert load.ok > served_during > 100
        assert world.version() == "version=2"
        assert not before & world.pids() and len(world.pids()) == 2

        history = corral.call("deploy_history", app="web")
        assert [h["status"] for h in history] == ["succeeded", "succeeded"]
        assert history[0]["commit"] == commit and history[0]["kind"] == "deploy"
        assert history[0]["previous"] == history[1]["release"]
        assert history[0]["trigger"].startswith("cli (uid ")
        releases = world.releases()
        assert [r["current"] for r in releases] == [True, False]
        assert releases[0]["id"] == history[0]["release"] and releases[0]["commit"] == commit


@pytest.mark.slow
@pytest.mark.parametrize("failure", ["requirements", "step"])
def test_a_failed_build_leaves_the_running_release_serving(
    corral: Corral, tmp_path: Path, failure: str
) -> None:
    links = tmp_path / "wheels"  # a local find-links folder without the package
    links.mkdir()
    with deploy_world(corral, tmp_path) as world:
        app = world.app(
            git={"steps": [["python3", "-c", "import os, sys; sys.exit(os.path.exists('FAIL'))"]]}
        )
        app["env"] |= {"PIP_NO_INDEX": "1", "PIP_FIND_LINKS": str(links)}
        world.start(app)
        good = world.deployed()
        wait_version(world, "1")
        before = world.pids()
        if failure == "requirements":
            change = {"requirements.txt": "corral-test-no-such-package==1.0\n"}
        else:
            change = {"FAIL": "yes\n"}
        world.repo.commit({**version_files("2"), **change}, "broken")
        record = world.finished(world.deploy()["id"])
        assert record["status"] == "failed"
        assert record["release"] is None and record["error"]
        output = corral.call("deploy_output", app="web", id=record["id"])
        assert output["deploy"] == record
        if failure == "requirements":
            assert record["step"] != "steps[0]"
            assert "corral-test-no-such-package" in output["output"]
        else:
            assert record["step"] == "steps[0]"
        assert "failed" in output["output"].splitlines()[-1]
        # Untouched: the same release, the same processes, still serving version 1.
        assert world.current() == good["release"]
        assert [r["id"] for r in world.releases()] == [good["release"]]
        assert world.version() == "version=1"
        assert world.pids() == before
        assert len(list((corral.home.root / "deploys" / "web" / "releases").iterdir())) == 1


@pytest.mark.slow
def test_a_release_that_does_not_start_is_switched_back(corral: Corral, tmp_path: Path) -> None:
    with deploy_world(corral, tmp_path) as world:
        world.start(world.app(listen_timeout="3s"))
        good = world.deployed()
        wait_version(world, "1")
        before = world.pids()
        broken = version_files("2")
        broken["app.py"] = "import sys\nsys.exit('this release cannot start')\n"
        world.repo.commit(broken, "exits at once")
        record = world.finished(world.deploy()["id"])
        assert record["status"] == "failed"
        assert record["error"].startswith("the new release did not start: ")
        assert record["previous"] == good["release"] and record["release"] != good["release"]
        assert world.current() == good["release"]
        assert world.version() == "version=1"
        assert world.pids() == before
        assert {r["status"] for r in corral.jlist()} == {"online"}
        output = corral.call("deploy_output", app="web", id=record["id"])["output"]
        assert f"current release back to {good['release']}" in output


@pytest.mark.slow
def test_rollback_and_retention(corral: Corral, tmp_path: Path) -> None:
    with deploy_world(corral, tmp_path) as world:
        world.start(world.app(git={"keep": 2}))
        v1 = world.deployed()
        world.repo.commit(version_files("2"))
        v2 = world.deployed()
        world.repo.commit(version_files("3"))
        v3 = world.deployed()
        wait_version(world, "3")
        # keep: 2 -> the oldest is gone from disk, the history still has it.
        assert [r["id"] for r in world.releases()] == [v3["release"], v2["release"]]
        assert not (corral.home.root / "deploys" / "web" / "releases" / v1["release"]).exists()

        back = world.finished(world.rollback()["id"])  # the one before the current
        assert (back["status"], back["kind"]) == ("succeeded", "rollback")
        assert (back["release"], back["previous"]) == (v2["release"], v3["release"])
        assert world.current() == v2["release"] and world.version() == "version=2"

        named = world.finished(world.rollback(release=v3["release"])["id"])
        assert named["status"] == "succeeded"
        assert world.current() == v3["release"] and world.version() == "version=3"

        gone = world.finished(world.rollback(release=v1["release"])["id"])
        assert gone["status"] == "failed" and "no release" in gone["error"]
        assert world.current() == v3["release"] and world.version() == "version=3"
        kinds = [h["kind"] for h in corral.call("deploy_history", app="web")]
        assert kinds == ["rollback"] * 3 + ["deploy"] * 3


@pytest.mark.slow
def test_deploys_of_one_app_run_one_after_the_other(corral: Corral, tmp_path: Path) -> None:
    with deploy_world(corral, tmp_path) as world:
        world.start(world.app())
        with corral.client() as one, corral.client() as two:
            first = one.call("deploy", app="web", ref=None, trigger="panel: alice")["deploy"]
            second = two.call("deploy", app="web", ref=None, trigger="webhook: github")["deploy"]
        assert first["status"] == second["status"] == "queued"
        a = world.finished(first["id"])
        b = world.finished(second["id"])
        assert a["status"] == b["status"] == "succeeded"
        assert (a["trigger"], b["trigger"]) == ("panel: alice", "webhook: github")
        assert b["started"] >= a["ended"]  # the second began after the first had ended
        assert b["previous"] == a["release"]
        assert [h["id"] for h in corral.call("deploy_history", app="web")] == [b["id"], a["id"]]


def stop_daemon(corral: Corral) -> None:
    """SIGTERM: the daemon stops its apps and keeps what each should be (the test's own
    child: its pid cannot be reused before the fixture reaps it)."""
    pid = corral.daemon_pid()
    assert pid is not None
    os.kill(pid, signal.SIGTERM)
    wait_for(lambda: not alive(pid))


@pytest.mark.slow
def test_a_restarted_daemon_runs_the_current_release(corral: Corral, tmp_path: Path) -> None:
    with deploy_world(corral, tmp_path) as world:
        world.start(world.app())
        stop_daemon(corral)
        corral.start_daemon()
        # Restored as meant to run, still not launched: it has no release.
        assert {r["status"] for r in corral.jlist()} == {"stopped"}
        assert corral.call("describe", target="web")[0]["desired"] == "running"
        release = world.deployed()["release"]  # the first deploy starts it
        wait_version(world, "1")
        stop_daemon(corral)
        corral.start_daemon()
        wait_version(world, "1")
        assert {r["status"] for r in corral.jlist()} == {"online"}
        assert world.current() == release
