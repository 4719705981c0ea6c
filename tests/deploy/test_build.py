"""Real builds from a real repository over HTTPS on loopback and through the ssh shim."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import subprocess
import sys
import threading
import zipfile
from pathlib import Path

import pytest

from corral.deploy import keys, process
from corral.deploy.history import DeployHistory
from corral.deploy.layout import RELEASE_META
from corral.deploy.pipeline import BuildRequest, build_release
from corral.deploy.source import GitSource
from tests.deploy.conftest import APP_FILES, Builds, files_of
from tests.support.gitrepos import GitRepo, Symlink, git_https_server, make_repo, ssh_shim
from tests.support.tls import Pki


def test_build_over_https_makes_a_complete_release_and_leaves_current(
    repo: GitRepo, https_base: str, builds: Builds
) -> None:
    url = f"{https_base}/{repo.path}"
    result = builds.build(url, install=False)
    assert result.ok, builds.text
    assert result.commit == repo.head() and result.step is None and result.error is None
    assert result.release is not None and result.release.endswith(repo.head()[:12])
    layout = builds.layout
    path = layout.releases / result.release
    assert files_of(path) == {**APP_FILES, RELEASE_META: (path / RELEASE_META).read_text()}
    meta = json.loads((path / RELEASE_META).read_text())
    assert meta["commit"] == repo.head() and meta["ref"] == "main" and meta["source"] == url
    assert layout.current_release() is None  # building never switches
    assert builds.lines[0].startswith("$ git ") and " fetch " in builds.text
    # the next build fetches into the same cache and makes a second release
    second = repo.commit({"app.py": "print('v2')\n"})
    again = builds.build(url, install=False)
    assert again.ok and again.commit == second and again.release != result.release
    assert (layout.releases / str(again.release) / "app.py").read_text() == "print('v2')\n"
    assert [r.id for r in layout.list_releases()] == [again.release, result.release]


def test_refs_tags_commits_and_other_branches(
    repo: GitRepo, https_base: str, builds: Builds
) -> None:
    url = f"{https_base}/{repo.path}"
    first = repo.head()
    repo.tag("v1.0")
    repo.commit({"app.py": "print('v2')\n"})
    repo.branch_from("feature/x")
    third = repo.commit({"app.py": "print('v3')\n"})
    assert builds.build(url, ref="v1.0", install=False).commit == first
    assert builds.build(url, ref=first[:10], install=False).commit == first
    assert builds.build(url, ref="feature/x", install=False).commit != third
    assert builds.build(url, install=False).commit == third
    missing = builds.build(url, ref="nope", install=False)
    assert not missing.ok and missing.step == "checkout" and "nope not found" in str(missing.error)
    other = builds.build(url, branch="gone", install=False)
    assert not other.ok and "branch 'gone' not found" in str(other.error)


def test_credentials_in_https_urls_never_reach_the_output(
    repo: GitRepo, pki: Pki, builds: Builds
) -> None:
    with git_https_server(repo.served, pki, auth=("deploy", "t0ken-S3CRET")) as base:
        host = base.removeprefix("https://")
        good = builds.build(f"https://deploy:t0ken-S3CRET@{host}/{repo.path}", install=False)
        good_text = builds.text
        bad = builds.build(f"https://deploy:wrong-S3CRET@{host}/{repo.path}", install=False)
    assert good.ok, good_text
    assert "S3CRET" not in good_text and "https://***@" in good_text
    meta = (builds.layout.releases / str(good.release) / RELEASE_META).read_text()
    assert "S3CRET" not in meta
    assert not bad.ok and bad.step == "fetch"
    assert "S3CRET" not in builds.text + str(bad.error)
    history = DeployHistory(builds.layout)
    with history.output_writer("d1") as out:
        for line in good_text.splitlines():
            out.write(line)
    assert "https://***@" in history.output("d1") and "S3CRET" not in history.output("d1")


def test_cancel_and_timeout_stop_a_build_and_remove_its_release(
    repo: GitRepo, https_base: str, builds: Builds
) -> None:
    url = f"{https_base}/{repo.path}"
    cancel = threading.Event()
    request = BuildRequest(
        app="api",
        source=GitSource(
            repo=url, install=False, steps=(("python3", "-u", "-c", _SLEEPER),), timeout=300
        ),
        ref=None,
        env=builds.env,
        python=sys.executable,
    )

    def output(line: str) -> None:
        builds.lines.append(line)
        if line == "sleeping":
            cancel.set()

    result = build_release(builds.layout, request, output, cancel)
    assert not result.ok and result.step == "steps[0]" and result.error == "cancelled"
    assert not list(builds.layout.releases.iterdir())
    slow = builds.build(url, install=False, steps=(("python3", "-c", _SLEEPER),), timeout=1)
    assert not slow.ok and slow.error == "timed out after 1s"
    assert not list(builds.layout.releases.iterdir())


_SLEEPER = "import time; print('sleeping', flush=True); time.sleep(300)"


def test_refused_sources_never_run_git(
    builds: Builds, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    marker = tmp_path / "pwned"
    spawned: list[object] = []

    def no_popen(*args: object, **kw: object) -> None:
        spawned.append(args)
        raise AssertionError("a process was started")

    monkeypatch.setattr(process.subprocess, "Popen", no_popen)
    cases = [
        ({"repo": f"ext::sh -c touch% {marker}"}, None, "git.repo: must not contain spaces"),
        ({"repo": "ext::sh"}, None, "git.repo: transport helpers"),
        ({"repo": "file:///srv/x.git"}, None, "git.repo: file://"),
        ({"repo": "fd::3"}, None, "git.repo: transport helpers"),
        ({"repo": "https://h/x.git", "branch": "--upload-pack=touch"}, None, "git.branch"),
        ({"repo": "https://h/x.git", "branch": "-x"}, None, "git.branch: must not start"),
        ({"repo": "https://h/x.git", "branch": "a..b"}, None, "git.branch: must not contain"),
        ({"repo": "https://h/x.git"}, "--output=/tmp/x", "git.ref: must not start with '-'"),
        ({"repo": "https://h/x.git"}, "a@{1}", "git.ref: must not contain '@{'"),
    ]
    for source, ref, message in cases:
        repo = str(source.pop("repo"))
        result = builds.build(repo, ref=ref, **source)
        assert not result.ok and result.step == "check", (repo, source)
        assert message in str(result.error), result.error
        assert builds.lines == [f"refused: {result.error}"]
    assert spawned == []
    assert not marker.exists()
    assert not builds.layout.root.exists()  # nothing made either


def test_build_over_ssh_with_the_deploy_key(
    repo: GitRepo, builds: Builds, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    public = keys.ensure_key(builds.layout, "corral-api")
    shim = ssh_shim(tmp_path / "shim", repo.served, authorized_key=public)
    monkeypatch.setenv(keys.SSH_PROGRAM_ENV, str(shim.program))
    urls = (
        f"ssh://git@localhost/{repo.path}",
        f"git@localhost:{repo.path}",
        f"ssh://git@localhost:2222/{repo.path}",
    )
    for url in urls:
        result = builds.build(url, install=False)
        assert result.ok, builds.text
        assert result.commit == repo.head()
    assert any(c[c.index("-p") + 1] == "2222" for c in shim.calls() if "-p" in c)
    call = next(c for c in shim.calls() if "-G" not in c)
    assert call[call.index("-i") + 1] == str(builds.layout.key)
    assert "IdentitiesOnly=yes" in call and "BatchMode=yes" in call
    assert "StrictHostKeyChecking=accept-new" in call


def test_ssh_without_the_right_key_fails_at_fetch(
    repo: GitRepo, builds: Builds, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    other = keys.ensure_key(type(builds.layout)(tmp_path / "other", "x"), "other")
    shim = ssh_shim(tmp_path / "shim", repo.served, authorized_key=other)
    monkeypatch.setenv(keys.SSH_PROGRAM_ENV, str(shim.program))
    no_key = builds.build(f"git@localhost:{repo.path}", install=False)
    assert not no_key.ok and no_key.step == "fetch"
    assert "Permission denied (publickey)" in builds.text
    keys.ensure_key(builds.layout, "api")  # a key, but not the authorized one
    wrong = builds.build(f"git@localhost:{repo.path}", install=False)
    assert not wrong.ok and "Permission denied" in builds.text
    assert not list(builds.layout.releases.iterdir())


def test_failed_step_removes_the_partial_release_and_keeps_current(
    repo: GitRepo, https_base: str, builds: Builds
) -> None:
    url = f"{https_base}/{repo.path}"
    good = builds.build(url, install=False)
    assert good.ok and good.release is not None
    builds.layout.activate(good.release)
    repo.commit({"app.py": "print('broken')\n"})
    failing = [["python3", "-c", "print('compiling'); print('boom: bad thing'); exit(7)"]]
    result = builds.build(url, install=False, steps=(("true",), *map(tuple, failing)))
    assert not result.ok and result.release is None
    assert result.step == "steps[1]" and "exited with code 7" in str(result.error)
    assert "boom: bad thing" in builds.lines and "compiling" in builds.lines
    assert builds.lines[-1] == f"failed at steps[1]: {result.error}"
    assert [p.name for p in builds.layout.releases.iterdir()] == [good.release]
    assert builds.layout.current_release() == good.release


def test_repository_symlink_leaving_the_release_is_refused(
    repo: GitRepo, https_base: str, builds: Builds
) -> None:
    url = f"{https_base}/{repo.path}"
    repo.commit({"latest.txt": Symlink("data/v.txt")})
    inside = builds.build(url, install=False)
    assert inside.ok, builds.text
    release = builds.layout.releases / str(inside.release)
    assert (release / "latest.txt").read_text() == "v1\n"
    repo.commit({"passwd": Symlink("/etc/passwd")})
    outside = builds.build(url, install=False)
    assert not outside.ok and outside.step == "checkout"
    assert "refused an unsafe file" in str(outside.error) and "passwd" in str(outside.error)
    assert [p.name for p in builds.layout.releases.iterdir()] == [inside.release]


def _make_wheel(folder: Path, name: str = "corraltestpkg", version: str = "1.0") -> Path:
    """A minimal pure-Python wheel, built here without network or build tools."""
    files = {
        f"{name}/__init__.py": b"VALUE = 'from the local wheel'\n",
        f"{name}-{version}.dist-info/METADATA": (
            f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n".encode()
        ),
        f"{name}-{version}.dist-info/WHEEL": (
            b"Wheel-Version: 1.0\nGenerator: corral-tests\nRoot-Is-Purelib: true\n"
            b"Tag: py3-none-any\n"
        ),
    }
    record = []
    for path, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={digest},{len(data)}")
    record.append(f"{name}-{version}.dist-info/RECORD,,")
    folder.mkdir(parents=True, exist_ok=True)
    wheel = folder / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        for path, data in files.items():
            archive.writestr(path, data)
        archive.writestr(f"{name}-{version}.dist-info/RECORD", "\n".join(record) + "\n")
    return wheel


@pytest.mark.slow
def test_install_from_an_empty_requirements_file(
    repo: GitRepo, https_base: str, builds: Builds
) -> None:
    repo.commit({"requirements.txt": ""})
    steps = (("python", "-c", "import sys; print('prefix=' + sys.prefix)"),)
    result = builds.build(f"{https_base}/{repo.path}", steps=steps)
    assert result.ok, builds.text
    release = builds.layout.releases / str(result.release)
    assert (release / ".venv" / "bin" / "python").exists()
    assert any(" -m venv " in line for line in builds.lines)
    assert any("pip install --disable-pip-version-check --no-input -r" in x for x in builds.lines)
    assert f"prefix={release / '.venv'}" in builds.lines  # steps see the venv first on PATH


@pytest.mark.slow
def test_install_from_a_local_wheel(
    repo: GitRepo, https_base: str, builds: Builds, tmp_path: Path
) -> None:
    wheels = tmp_path / "wheels"
    _make_wheel(wheels)
    repo.commit({"requirements.txt": f"--no-index\n--find-links {wheels}\ncorraltestpkg==1.0\n"})
    steps = (("python", "-c", "import corraltestpkg; print(corraltestpkg.VALUE)"),)
    result = builds.build(f"{https_base}/{repo.path}", steps=steps)
    assert result.ok, builds.text
    assert "from the local wheel" in builds.lines


@pytest.mark.slow
def test_install_from_pyproject(
    repo: GitRepo, https_base: str, builds: Builds, tmp_path: Path
) -> None:
    wheels = tmp_path / "wheels"
    _make_wheel(wheels)
    repo.commit(
        {
            "pyproject.toml": (
                '[project]\nname = "myapp"\nversion = "0.1"\ndependencies = ["corraltestpkg"]\n'
                '[build-system]\nrequires = []\nbuild-backend = "backend"\n'
                'backend-path = ["."]\n'
            ),
            "backend.py": _BACKEND,
        }
    )
    env = {**builds.env, "PIP_NO_INDEX": "1", "PIP_FIND_LINKS": str(wheels)}
    builds.env = env
    result = builds.build(f"{https_base}/{repo.path}")
    assert result.ok, builds.text
    assert any(
        line.endswith("pip install --disable-pip-version-check --no-input .")
        for line in builds.lines
    )
    site = list(
        (builds.layout.releases / str(result.release) / ".venv").glob(
            "lib/*/site-packages/corraltestpkg"
        )
    )
    assert site


# An in-tree PEP 517 backend that builds an empty wheel, so pip needs no setuptools.
_BACKEND = """
import base64, hashlib, os, zipfile
NAME, VERSION = "myapp", "0.1"
def _record_line(path, data):
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{path},sha256={digest},{len(data)}"
def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    info = f"{NAME}-{VERSION}.dist-info"
    files = {
        f"{info}/METADATA": (
            f"Metadata-Version: 2.1\\nName: {NAME}\\nVersion: {VERSION}\\n"
            "Requires-Dist: corraltestpkg\\n"
        ).encode(),
        f"{info}/WHEEL": (
            b"Wheel-Version: 1.0\\nGenerator: t\\nRoot-Is-Purelib: true\\n"
            b"Tag: py3-none-any\\n"
        ),
    }
    name = f"{NAME}-{VERSION}-py3-none-any.whl"
    with zipfile.ZipFile(os.path.join(wheel_directory, name), "w") as z:
        for path, data in files.items():
            z.writestr(path, data)
        record = [_record_line(p, d) for p, d in files.items()] + [f"{info}/RECORD,,"]
        z.writestr(f"{info}/RECORD", "\\n".join(record) + "\\n")
    return name
"""


def _npm() -> str:
    npm = shutil.which("npm")
    if npm is None:
        pytest.skip("npm is not installed")
    return npm


@pytest.mark.slow
def test_npm_ci_ignores_install_scripts(
    repo: GitRepo, https_base: str, builds: Builds, tmp_path: Path
) -> None:
    _npm()
    marker = tmp_path / "script-ran"
    script = f"node -e \"require('fs').writeFileSync('{marker}', 'x')\""
    package = {
        "name": "app",
        "version": "1.0.0",
        "scripts": {
            "preinstall": script,
            "install": script,
            "postinstall": script,
            "prepare": script,
        },
    }
    lock = {
        "name": "app",
        "version": "1.0.0",
        "lockfileVersion": 3,
        "requires": True,
        "packages": {"": {"name": "app", "version": "1.0.0"}},
    }
    repo.commit({"package.json": json.dumps(package), "package-lock.json": json.dumps(lock)})
    result = builds.build(f"{https_base}/{repo.path}")
    assert result.ok, builds.text
    assert any(line.endswith("ci --ignore-scripts --no-audit --no-fund") for line in builds.lines)
    assert not marker.exists()


def test_package_json_without_a_lock_file_fails_clearly(
    repo: GitRepo, https_base: str, builds: Builds
) -> None:
    _npm()
    repo.commit({"package.json": '{"name": "app", "version": "1.0.0"}'})
    result = builds.build(f"{https_base}/{repo.path}")
    assert not result.ok and result.step == "install"
    assert "package-lock.json" in str(result.error)
    assert not list(builds.layout.releases.iterdir())


def test_build_as_another_user(repo: GitRepo, pki: Pki, tmp_path: Path) -> None:
    from corral.deploy.layout import DeployLayout
    from tests.support.otheruid import can_switch_users, temp_user, world_dir

    reason = can_switch_users()
    if reason:
        pytest.skip(reason)
    home = world_dir("ctdeploy")
    try:
        repo.make_readable()
        shutil.copy(pki.ca_cert, home / "ca.pem")
        (home / "ca.pem").chmod(0o644)
        with temp_user() as user, git_https_server(repo.served, pki) as base:
            builds = Builds(
                DeployLayout(home / "corral", "api"),
                {"PATH": os.environ["PATH"], "GIT_SSL_CAINFO": str(home / "ca.pem")},
            )
            (home / "corral").mkdir(mode=0o755)
            request = BuildRequest(
                app="api",
                source=GitSource(
                    repo=f"{base}/{repo.path}",
                    install=False,
                    steps=(("sh", "-c", "id -u > whoami"),),
                ),
                ref=None,
                env=builds.env,
                python="/usr/bin/python3",
                user=user.pw_name,
            )
            result = build_release(builds.layout, request, builds.lines.append)
            assert result.ok, builds.text
            release = builds.layout.releases / str(result.release)
            assert (release / "whoami").read_text().strip() == str(user.pw_uid)
            assert (release / "app.py").stat().st_uid == user.pw_uid
            assert builds.layout.cache.stat().st_uid == user.pw_uid
            # what the daemon relies on stays its own: the user cannot swap it for a link
            layout = builds.layout
            for item in (layout.root, layout.releases, layout.outputs, layout.current.parent):
                assert item.stat().st_uid == 0, item
            done = subprocess.run(
                ["stat", "-c", "%U", str(release / "whoami")], capture_output=True, text=True
            )
            assert done.stdout.strip() == user.pw_name
    finally:
        shutil.rmtree(home, ignore_errors=True)


def test_deploy_key_over_ssh_as_another_user(monkeypatch: pytest.MonkeyPatch) -> None:
    """A root daemon building as the app's user: that user's ssh reads the app's key."""
    from corral.deploy.layout import DeployLayout
    from tests.support.otheruid import can_switch_users, temp_user, world_dir

    reason = can_switch_users()
    if reason:
        pytest.skip(reason)
    home = world_dir("ctdeploy")
    try:
        repo = make_repo(home / "git", APP_FILES)  # the shim runs as the user: reachable
        repo.make_readable()
        layout = DeployLayout(home / "corral", "api")
        public = keys.ensure_key(layout, "api")
        shim = ssh_shim(home / "shim", repo.served, authorized_key=public)
        monkeypatch.setenv(keys.SSH_PROGRAM_ENV, str(shim.program))
        lines: list[str] = []
        with temp_user() as user:
            request = BuildRequest(
                app="api",
                source=GitSource(repo=f"git@localhost:{repo.path}", install=False),
                ref=None,
                env={"PATH": os.environ["PATH"]},
                python="/usr/bin/python3",
                user=user.pw_name,
            )
            result = build_release(layout, request, lines.append)
            assert result.ok, "\n".join(lines)
            assert result.commit == repo.head()
            assert layout.key.stat().st_uid == user.pw_uid
            assert layout.key.stat().st_mode & 0o777 == 0o600
    finally:
        shutil.rmtree(home, ignore_errors=True)
