"""Which commands install a release's dependencies, from the files it has."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from corral.deploy.process import StepFailed

PIP_FLAGS = ("--disable-pip-version-check", "--no-input")
NPM_CI = ("ci", "--ignore-scripts", "--no-audit", "--no-fund")


def _is_file(path: Path) -> bool:
    # only decides which command runs; the command itself reads the file as the app's user
    return os.path.isfile(path)


def install_steps(release: Path, python: str) -> list[tuple[list[str], str]]:
    """(argv, step name) for the release: requirements.txt or pyproject.toml into
    <release>/.venv, package.json with `npm ci --ignore-scripts`."""
    steps: list[tuple[list[str], str]] = []
    venv_python = str(release / ".venv" / "bin" / "python")
    make_venv = ([python, "-m", "venv", str(release / ".venv")], "install")
    if _is_file(release / "requirements.txt"):
        steps.append(make_venv)
        pip = [venv_python, "-m", "pip", "install", *PIP_FLAGS, "-r", "requirements.txt"]
        steps.append((pip, "install"))
    elif _is_file(release / "pyproject.toml"):
        steps.append(make_venv)
        steps.append(([venv_python, "-m", "pip", "install", *PIP_FLAGS, "."], "install"))
    if _is_file(release / "package.json"):
        if not (
            _is_file(release / "package-lock.json") or _is_file(release / "npm-shrinkwrap.json")
        ):
            raise StepFailed(
                "install",
                "package.json without package-lock.json: `npm ci` installs exactly what a "
                "lock file lists; commit package-lock.json (made by `npm install`)",
            )
        npm = shutil.which("npm")
        if npm is None:
            raise StepFailed("install", "package.json needs npm, which is not installed")
        steps.append(([npm, *NPM_CI], "install"))
    return steps
