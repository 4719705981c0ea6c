from __future__ import annotations

from pathlib import Path

import pytest

from corral.config.errors import ConfigError
from corral.config.loader import load_file

PROCFILE = """\
# processes
web: gunicorn app:app --bind 0.0.0.0:8000

worker:   python3 src/main.py --queue default
clock: ./run
release: ./start.sh migrate
"""


def test_procfile(project: Path, fake_bin: Path) -> None:
    (project / "Procfile").write_text(PROCFILE)
    web, worker, clock, release = load_file(project / "Procfile")
    assert (web.name, web.script, web.args) == (
        "web",
        str(fake_bin / "gunicorn"),
        ["app:app", "--bind", "0.0.0.0:8000"],
    )
    assert web.cwd == str(project)
    assert (worker.script, worker.args) == (
        str(fake_bin / "python3"),
        ["src/main.py", "--queue", "default"],
    )
    assert clock.script == str(project / "run")
    assert web.autorestart and worker.autorestart and clock.autorestart
    # Heroku runs `release` once per deploy: not a service to keep alive.
    assert (release.script, release.args, release.autorestart) == (
        str(project / "start.sh"),
        ["migrate"],
        False,
    )


def test_procfile_shell_commands(project: Path, fake_bin: Path) -> None:
    (project / "Procfile.dev").write_text("web: gunicorn app:app --bind 0.0.0.0:$PORT\n")
    (web,) = load_file(project / "Procfile.dev")
    assert (web.script, web.args) == (
        str(fake_bin / "sh"),
        ["-c", "gunicorn app:app --bind 0.0.0.0:$PORT"],
    )


def test_procfile_only(project: Path) -> None:
    (project / "dev.procfile").write_text(PROCFILE)
    assert [a.name for a in load_file(project / "dev.procfile", only=["clock"])] == ["clock"]


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("web gunicorn\n", "line 1: expected 'name: command', got 'web gunicorn'"),
        ("\n# x\nweb:\n", "line 3: expected 'name: command'"),
        ("w/eb: ./run\n", "line 1: expected a name of letters"),
        ("web: ./run\nweb: ./run\n", "app 'web': line 2: duplicate name (first on line 1)"),
        ("# nothing\n\n", "no processes"),
        ("web: nope --x\n", "app 'web': key 'script': no such file or program: 'nope'"),
    ],
)
def test_procfile_errors(project: Path, text: str, fragment: str) -> None:
    (project / "Procfile").write_text(text)
    with pytest.raises(ConfigError) as info:
        load_file(project / "Procfile")
    assert info.value.source == str(project / "Procfile")
    assert fragment in str(info.value)
