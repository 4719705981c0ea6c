"""Fixtures for the config tests: a project folder with scripts, and a fake PATH."""

from __future__ import annotations

from pathlib import Path

import pytest

FAKE_PROGRAMS = ("python3", "node", "bash", "ruby", "php", "perl", "sh", "gunicorn", "npm")


def make_executable(path: Path, text: str = "#!/bin/sh\nexit 0\n") -> Path:
    path.write_text(text)
    path.chmod(0o755)
    return path


@pytest.fixture
def fake_bin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A PATH holding only fake interpreters and tools, so tests don't depend on the host."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in FAKE_PROGRAMS:
        make_executable(bin_dir / name)
    monkeypatch.setenv("PATH", str(bin_dir))
    return bin_dir


@pytest.fixture
def project(tmp_path: Path, fake_bin: Path) -> Path:
    """A folder with an app of each kind: scripts by extension and executables."""
    root = tmp_path / "project"
    root.mkdir()
    for name in ("app.py", "worker.js", "server.mjs", "job.rb", "data.txt"):
        (root / name).write_text("")
    make_executable(root / "run")
    make_executable(root / "start.sh")
    (root / "src").mkdir()
    (root / "src" / "main.py").write_text("")
    return root
