"""Fixtures for the deploy engine's tests: a real repository, a layout, a build helper."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from corral.deploy.layout import DeployLayout
from corral.deploy.pipeline import BuildRequest, BuildResult, build_release
from corral.deploy.source import GitSource
from tests.support.gitrepos import FileValue, GitRepo, git_https_server, make_repo
from tests.support.tls import Pki, make_pki

APP_FILES: dict[str, FileValue] = {"app.py": "print('v1')\n", "data/v.txt": "v1\n"}


@dataclass
class Builds:
    """Runs real builds into one layout and keeps every output line."""

    layout: DeployLayout
    env: dict[str, str]
    lines: list[str] = field(default_factory=list)

    def build(self, repo: str, ref: str | None = None, **source: object) -> BuildResult:
        self.lines.clear()
        request = BuildRequest(
            app=self.layout.app,
            source=GitSource(repo=repo, **source),  # type: ignore[arg-type]
            ref=ref,
            env=self.env,
            python=sys.executable,
        )
        return build_release(self.layout, request, self.lines.append)

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


def base_env(**extra: str) -> dict[str, str]:
    env = {"PATH": os.environ.get("PATH", os.defpath), "LANG": "C.UTF-8"}
    env.update(extra)
    return env


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return make_pki(tmp_path / "pki")


@pytest.fixture
def repo(tmp_path: Path) -> GitRepo:
    return make_repo(tmp_path / "git", APP_FILES)


@pytest.fixture
def layout(tmp_path: Path) -> DeployLayout:
    return DeployLayout(tmp_path / "home", "api")


@pytest.fixture
def https_base(repo: GitRepo, pki: Pki) -> Iterator[str]:
    with git_https_server(repo.served, pki) as base:
        yield base


@pytest.fixture
def builds(layout: DeployLayout, pki: Pki) -> Builds:
    return Builds(layout, base_env(GIT_SSL_CAINFO=str(pki.ca_cert)))


def files_of(path: Path) -> Mapping[str, str]:
    return {
        str(item.relative_to(path)): item.read_text()
        for item in sorted(path.rglob("*"))
        if item.is_file() and not item.is_symlink() and ".venv" not in item.parts
    }
