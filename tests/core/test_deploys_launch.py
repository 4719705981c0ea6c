"""How a git app is launched (SPEC 4): from its current release, resolved at each launch,
with the release's venv as interpreter and first on PATH."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from corral.config.model import AppConfig
from corral.core.launch import build_launch_spec, release_dir

GIT = {"repo": "https://git.example.com/a.git", "branch": "main"}


def make_release(root: Path, name: str, release: str, *, venv: bool) -> Path:
    folder = root / "deploys" / name / "releases" / release
    (folder / "src").mkdir(parents=True)
    (folder / "src" / "app.py").write_text("print('hi')\n")
    if venv:
        (folder / ".venv" / "bin").mkdir(parents=True)
        python = folder / ".venv" / "bin" / "python"
        python.write_text("#!/bin/sh\n")
        python.chmod(0o755)
    current = root / "deploys" / name / "current"
    tmp = current.with_name("current.tmp")
    tmp.symlink_to(f"releases/{release}")
    os.replace(tmp, current)
    return folder


def spec_for(cfg: AppConfig, root: Path) -> tuple[list[str], dict[str, str], str]:
    spec = build_launch_spec(
        cfg,
        instance=0,
        cli_env={"PATH": "/usr/bin"},
        env_name=None,
        release=release_dir(root / "deploys", cfg.name),
    )
    return spec.argv, spec.env, spec.cwd


def test_a_launch_runs_the_current_release_with_its_venv(tmp_path: Path) -> None:
    first = make_release(tmp_path, "api", "20261124T031500Z-aaaaaaaaaaaa", venv=True)
    cfg = AppConfig(name="api", script="app.py", cwd="src", git=GIT, args=["--x"])
    argv, env, cwd = spec_for(cfg, tmp_path)
    python = str(first / ".venv" / "bin" / "python")
    assert argv == [python, str(first / "src" / "app.py"), "--x"]
    assert cwd == str(first / "src")  # the real folder: the process keeps its release
    assert env["VIRTUAL_ENV"] == str(first / ".venv")
    assert env["PATH"] == f"{first / '.venv' / 'bin'}:/usr/bin"

    # After a switch, the next launch runs the new release (no venv: python3 by extension).
    second = make_release(tmp_path, "api", "20261124T041500Z-bbbbbbbbbbbb", venv=False)
    argv, env, cwd = spec_for(cfg, tmp_path)
    assert argv == ["python3", str(second / "src" / "app.py"), "--x"]
    assert cwd == str(second / "src")
    assert "VIRTUAL_ENV" not in env and env["PATH"] == "/usr/bin"


def test_programs_and_given_interpreters(tmp_path: Path) -> None:
    release = make_release(tmp_path, "api", "20261124T031500Z-aaaaaaaaaaaa", venv=True)
    program = AppConfig(name="api", script="gunicorn", args=["app:app"], git=GIT)
    argv, env, cwd = spec_for(program, tmp_path)
    assert env["PATH"].startswith(str(release / ".venv" / "bin"))
    assert argv == ["gunicorn", "app:app"]  # found on PATH by exec, the venv's bin first
    assert cwd == str(release)
    relative = AppConfig(name="api", script="src/app.py", interpreter=".venv/bin/python", git=GIT)
    argv, _, _ = spec_for(relative, tmp_path)
    assert argv == [str(release / ".venv/bin/python"), str(release / "src/app.py")]


def test_no_release_no_launch(tmp_path: Path) -> None:
    cfg = AppConfig(name="api", script="app.py", git=GIT)
    assert release_dir(tmp_path / "deploys", "api") is None
    with pytest.raises(ValueError, match=r"api has no release yet: run `corral deploy api`"):
        spec_for(cfg, tmp_path)
