"""`corral start FILE` in a home with no daemon: the daemon starts while the file loads.

The config file here is a named pipe, so the CLI blocks on reading it for as long as the
test likes: what the daemon does meanwhile is then plain to see.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from ..conftest import Corral, wait_for

SLEEPER = "import time\ntime.sleep(600)\n"


@contextmanager
def blocked_start(
    corral: Corral, config_text: str, flags: tuple[str, ...] = ()
) -> Iterator[subprocess.Popen[str]]:
    """`corral start corral.yaml [flags]`, where corral.yaml is a pipe we write
    `config_text` to when the block ends; the CLI process is yielded while it waits for
    the text."""
    fifo = corral.workdir / "corral.yaml"
    os.mkfifo(fifo)
    cli = subprocess.Popen(
        [sys.executable, "-m", "corral", "start", "corral.yaml", *flags],
        env=corral.env,
        cwd=corral.workdir,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        yield cli
        with open(fifo, "w") as pipe:  # unblocks the CLI's read
            pipe.write(config_text)
        cli.wait(timeout=60)
    finally:
        if cli.poll() is None:
            cli.kill()
            cli.wait()
        fifo.unlink()
        corral._remember_daemon()  # stopped by the fixture whatever happens


def _listening(corral: Corral) -> bool:
    try:
        return bool(corral.call("ping")["pid"])
    except OSError:
        return False


@pytest.mark.slow
@pytest.mark.parametrize(
    "flags",
    [
        (),  # exactly `start FILE`: spawned by corral.cli.main before argparse
        ("--only", "api"),  # any other form: spawned by the start verb, before the load
    ],
)
def test_a_fresh_home_gets_its_daemon_while_the_config_is_still_loading(
    corral: Corral, flags: tuple[str, ...]
) -> None:
    script = corral.write("app.py", SLEEPER)
    config = f"apps:\n  - name: api\n    script: {script}\n"
    with blocked_start(corral, config, flags) as cli:
        wait_for(lambda: _listening(corral))  # the CLI has not read its config yet
        assert cli.poll() is None
        assert corral.jlist() == []
    assert cli.returncode == 0, cli.stderr.read() if cli.stderr else ""
    assert corral.proc("api")["status"] == "online"


@pytest.mark.slow
@pytest.mark.parametrize("flags", [(), ("--only", "api")])
def test_a_wrong_config_stops_the_daemon_it_started_early(
    corral: Corral, flags: tuple[str, ...]
) -> None:
    with blocked_start(corral, "apps:\n  - name: api\n    scirpt: x.py\n", flags) as cli:
        wait_for(lambda: _listening(corral))
        pid = corral.daemon_pid()
    assert cli.returncode == 1
    assert cli.stderr is not None and "script" in cli.stderr.read()
    assert pid is not None
    wait_for(lambda: not corral.home.pid_file.exists())
    assert not _listening(corral)


@pytest.mark.slow
def test_a_home_with_saved_apps_waits_for_a_good_config(corral: Corral) -> None:
    """Starting a daemon restores the saved apps: only a good config may cause that."""
    script = corral.write("app.py", SLEEPER)
    corral.ok("start", str(script), "--name", "saved")
    corral.ok("kill")
    assert not _listening(corral)
    with blocked_start(corral, "apps:\n  - name: api\n    scirpt: x.py\n") as cli:
        time.sleep(1.0)  # ample for a daemon to start (~0.15 s), were one started
        assert cli.poll() is None
        assert not corral.home.socket.exists()
    assert cli.returncode == 1
    assert not _listening(corral)
    assert "saved" in corral.home.state.read_text()  # still saved, not started


@pytest.mark.slow
def test_start_replies_without_reading_figures_of_new_processes(corral: Corral) -> None:
    """The start reply shows no CPU or memory for a process that just exec'd (reading
    /proc for each of a hundred new processes would delay the reply); `list` reads them."""
    script = corral.write("app.py", SLEEPER)
    corral.ok("start", str(script), "--name", "api")
    corral.ok("stop", "api")
    (record,) = corral.call("start", target="api")
    assert record["status"] == "online" and record["pid"]
    assert record["memory"] is None and record["cpu"] is None
    listed = corral.proc("api")
    assert listed["pid"] == record["pid"]
    assert isinstance(listed["memory"], int)
    # The kernel's RSS counters are approximate for a process that has only just begun
    # (per-CPU batches not yet folded in): a fresh one may read 0 for a moment.
    wait_for(lambda: corral.proc("api")["memory"] > 0)


@pytest.mark.parametrize("home", ["file/home", "h" * 100])
def test_a_home_that_cannot_serve_is_one_line_of_error(corral: Corral, home: str) -> None:
    """`start FILE` spawns no daemon early for a home it cannot create, or whose socket
    path is too long for a unix socket: the start verb says what is wrong."""
    (corral.workdir / "file").write_text("")
    corral.write("corral.yaml", "apps:\n  - name: api\n    script: app.py\n")
    corral.write("app.py", SLEEPER)
    root = corral.workdir / home
    result = corral.cli("start", "corral.yaml", env={**corral.env, "CORRAL_HOME": str(root)})
    assert result.code == 1
    lines = result.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("corral: ") and str(root) in lines[0]
    assert "Traceback" not in result.err
    assert not root.exists() or not any(root.iterdir())
