"""A tenant's daemon (running as the tenant's uid) deploys from git: every build command,
the release's files and the app run as the tenant; the app runs in the release's venv."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from typing import Any

import psutil
import pytest

from corral.config.model import AppConfig
from corral.paths import Home
from corral.protocol.client import ControlClient
from tests.support.otheruid import (
    can_switch_users,
    kill_user_processes,
    temp_user,
    world_dir,
    world_python,
)

from ..conftest import read_text, wait_for
from ..support.gitrepos import git_https_server, make_repo
from ..support.tls import make_pki
from .deploy_helpers import free_port, get, version_files

pytestmark = pytest.mark.slow


@pytest.fixture
def world() -> Iterator[dict[str, Any]]:
    why = can_switch_users()
    if why is not None:
        pytest.skip(why)
    python = world_python()
    base = world_dir("ctd")
    with contextlib.ExitStack() as stack:
        stack.callback(shutil.rmtree, base, True)
        home_dir = base / "t"
        tenant = stack.enter_context(temp_user(home=home_dir))
        os.chown(home_dir, tenant.pw_uid, tenant.pw_gid)
        home_dir.chmod(0o700)
        repo = make_repo(base / "git", version_files("1"))
        repo.commit({"requirements.txt": "", "whoami.sh": "id -u > whoami\n"})
        repo.make_readable()
        pki = make_pki(base / "pki")
        ca = base / "ca.pem"
        shutil.copy(pki.ca_cert, ca)
        ca.chmod(0o644)
        url = stack.enter_context(git_https_server(repo.served, pki))
        home = Home(home_dir / ".corral")
        env = {
            "PATH": "/usr/local/bin:/usr/bin:/bin",
            "HOME": str(home_dir),
            "LANG": "C.UTF-8",
            "CORRAL_HOME": str(home.root),
            "PYTHONDONTWRITEBYTECODE": "1",
        }
        daemon = subprocess.Popen(
            [str(python), "-m", "corral.core.daemon"],
            env=env,
            cwd=home_dir,
            user=tenant.pw_uid,
            group=tenant.pw_gid,
            extra_groups=[],
            start_new_session=True,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

        def stop() -> None:
            with contextlib.suppress(OSError), ControlClient.connect(home.socket, 10) as c:
                c.call("kill")
            with contextlib.suppress(subprocess.TimeoutExpired):
                daemon.wait(timeout=20)
            kill_user_processes(tenant.pw_uid)
            daemon.wait(timeout=10)

        stack.callback(stop)
        stack.callback(kill_user_processes, tenant.pw_uid)

        def answers() -> bool:
            if daemon.poll() is not None:
                raise AssertionError(f"the daemon exited: {read_text(home.daemon_log)}")
            return home.socket.exists()

        wait_for(answers)
        yield {
            "tenant": tenant,
            "home": home,
            "url": f"{url}/{repo.path}",
            "ca": ca,
            "env": env,
        }


def test_a_tenant_daemon_builds_and_runs_its_release_as_the_tenant(world: dict[str, Any]) -> None:
    tenant, home = world["tenant"], world["home"]
    port = free_port()
    cfg = AppConfig(
        name="web",
        script="app.py",
        exec_mode="cluster",
        instances=2,
        listen=[f"127.0.0.1:{port}"],
        wait_ready=True,
        listen_timeout=10.0,
        env={"WAIT_READY": "1", "GIT_SSL_CAINFO": str(world["ca"])},
        git={
            "repo": world["url"],
            "branch": "main",
            "keep": 5,
            "install": True,
            "steps": [["sh", "whoami.sh"]],
            "timeout": 600.0,
        },
    )
    with ControlClient.connect(home.socket, timeout=120) as client:
        client.call("start", apps=[cfg.to_dict()], cli_env={"PATH": world["env"]["PATH"]})
        deploy_id = client.call("deploy", app="web")["deploy"]["id"]

        def finished() -> dict[str, Any] | None:
            records = client.call("deploy_history", app="web")
            return records[0] if records[0]["status"] in ("succeeded", "failed") else None

        record = wait_for(finished, timeout=180, interval=0.2)
        output = client.call("deploy_output", app="web", id=deploy_id)["output"]
        assert record["status"] == "succeeded", (record["step"], record["error"], output)
        processes = [r for r in client.call("list") if r["name"] == "web"]
    release = home.root / "deploys" / "web" / "releases" / record["release"]
    assert (release / "whoami").read_text().strip() == str(tenant.pw_uid)
    assert (release / "app.py").stat().st_uid == tenant.pw_uid
    assert {r["status"] for r in processes} == {"online"} and len(processes) == 2
    for record_ in processes:
        assert psutil.Process(record_["pid"]).uids().real == tenant.pw_uid
    assert get(port).startswith("version=1 ")
    # The app runs in the release's venv (its real folder, not the `current` link).
    assert get(port, "/env/VIRTUAL_ENV") == str(release / ".venv")
    assert get(port, "/env/PATH").startswith(f"{release / '.venv' / 'bin'}:")
