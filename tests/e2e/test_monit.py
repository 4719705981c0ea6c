"""`corral monit` in a real terminal (a detached tmux session) against a real daemon."""

from __future__ import annotations

import contextlib
import os
import secrets
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from ..conftest import Corral

TICKER = """
import time
i = 0
while True:
    print(f"{name} tick {{i}}", flush=True)
    i += 1
    time.sleep(0.2)
"""


class Tmux:
    """A tmux server of our own: `-L` name in a private TMUX_TMPDIR, removed afterwards."""

    def __init__(self, config: Path) -> None:
        self.socket_name = f"corral-monit-{secrets.token_hex(6)}"
        self.config = config
        self.tmpdir = tempfile.mkdtemp(prefix="tmx-")  # short: socket paths are limited

    def __call__(self, *args: str, env: dict[str, str] | None = None) -> str:
        environ = dict(os.environ if env is None else env, TMUX_TMPDIR=self.tmpdir)
        environ.pop("TMUX", None)  # tests run inside tmux must not talk to that one
        result = subprocess.run(
            ["tmux", "-L", self.socket_name, "-f", str(self.config), *args],
            env=environ,
            capture_output=True,
            text=True,
            timeout=15,
        )
        assert result.returncode == 0, f"tmux {' '.join(args)}: {result.stderr}"
        return result.stdout

    def screen(self) -> str:
        return self("capture-pane", "-p", "-t", "monit")

    def wait_screen(self, predicate: Callable[[str], bool], timeout: float = 20.0) -> str:
        deadline = time.monotonic() + timeout
        while True:
            text = self.screen()
            if predicate(text):
                return text
            if time.monotonic() > deadline:
                raise AssertionError(f"the screen never showed what was expected:\n{text}")
            time.sleep(0.1)

    def kill(self) -> None:
        try:
            with contextlib.suppress(AssertionError, subprocess.TimeoutExpired):
                self("kill-server")
        finally:
            shutil.rmtree(self.tmpdir, ignore_errors=True)


@pytest.fixture
def tmux(tmp_path: Path) -> Iterator[Tmux]:
    if shutil.which("tmux") is None:
        pytest.skip("tmux is not installed")
    config = tmp_path / "tmux.conf"
    config.write_text("set-option -g remain-on-exit on\n")  # keep the screen to read it
    server = Tmux(config)
    try:
        yield server
    finally:
        server.kill()


def details_title(screen: str, name: str) -> bool:
    return any(line.startswith(f" {name}:0  (id ") for line in screen.splitlines())


@pytest.mark.slow
def test_monit_shows_apps_follows_the_selection_restarts_and_quits(
    daemon: Corral, tmux: Tmux
) -> None:
    corral = daemon
    corral.start_app("alpha", TICKER.format(name="alpha"))
    corral.start_app("beta", TICKER.format(name="beta"))
    beta_pid = corral.proc("beta")["pid"]
    # The shell reports monit's exit status and stays: tmux's own #{pane_dead_status}
    # can be lost when a pane ends while tmux runs its utmp helper (tmux/tmux#311), and
    # the last output of a pane that ends may not make it to the screen.
    monit = shlex.join([sys.executable, "-m", "corral", "monit"])
    command = f'{monit}; echo "monit exited with status $?"; exec sleep 60'
    tmux(
        "new-session", "-d", "-s", "monit", "-x", "120", "-y", "40",
        "-c", str(corral.workdir), "-e", f"CORRAL_HOME={corral.home.root}", command,
        env=corral.env,
    )  # fmt: skip

    screen = tmux.wait_screen(lambda s: " alpha " in s and " beta " in s and "alpha tick" in s)
    assert details_title(screen, "alpha")
    assert "Processes (2)" in screen and "load " in screen

    tmux("send-keys", "-t", "monit", "j")
    screen = tmux.wait_screen(lambda s: details_title(s, "beta") and "beta tick" in s)
    assert f" {beta_pid}" in screen
    assert "alpha tick" not in screen  # the log pane follows the selection

    tmux("send-keys", "-t", "monit", "r")
    tmux.wait_screen(lambda s: "restart beta? y/n" in s)
    tmux("send-keys", "-t", "monit", "y")
    tmux.wait_screen(lambda s: "restarted beta" in s)
    assert corral.proc("beta")["pid"] != beta_pid
    assert corral.proc("beta")["restarts"] == 1

    tmux("send-keys", "-t", "monit", "q")
    screen = tmux.wait_screen(lambda s: "monit exited with status" in s, timeout=10)
    assert "monit exited with status 0" in screen
    assert "corral monit │" not in screen  # the terminal is back to normal


@pytest.mark.slow
def test_monit_refuses_to_run_without_a_terminal(corral: Corral) -> None:
    result = corral.cli("monit")
    assert result.code == 1
    assert result.err.strip() == "corral monit needs a terminal"
    assert not corral.home.socket.exists()  # and no daemon was started for nothing
