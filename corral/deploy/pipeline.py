"""Building a release: fetch, resolve, export, install, steps. Never switches `current`.

Runs in a worker thread (synchronous). Every command is an argv list run without a shell,
as the request's user when given, with the source's time-out; each is echoed first.
A failed build removes its partial release folder and reports the step and the error.
"""

from __future__ import annotations

import contextlib
import grp
import os
import pwd
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from corral.deploy import git
from corral.deploy.extract import extract_release
from corral.deploy.files import chown_tree, remove_tree
from corral.deploy.install import install_steps
from corral.deploy.layout import DeployLayout
from corral.deploy.process import Output, StepFailed, run_command
from corral.deploy.source import (
    GitSource,
    SourceError,
    check_branch,
    check_ref,
    check_repo_url,
    is_commit_id,
    redact,
)

__all__ = [
    "BuildRequest",
    "BuildResult",
    "StepFailed",
    "build_release",
    "extract_release",
    "run_command",
]


@dataclass
class BuildRequest:
    app: str
    source: GitSource
    ref: str | None
    env: Mapping[str, str]  # base environment of every command (the caller builds it)
    python: str  # interpreter that creates the release's venv
    user: str | None = None  # run every command as them (root daemon)
    group: str | None = None


@dataclass
class BuildResult:
    ok: bool
    release: str | None
    commit: str | None
    error: str | None
    step: str | None


@dataclass
class _Context:
    layout: DeployLayout
    request: BuildRequest
    output: Output
    cancel: threading.Event | None
    owner: tuple[int, int] | None

    def run(
        self,
        argv: list[str],
        cwd: Path,
        env: Mapping[str, str],
        step: str,
        stdout: IO[bytes] | None = None,
    ) -> None:
        run_command(
            argv,
            cwd=cwd,
            env=env,
            timeout=self.request.source.timeout,
            output=self.output,
            cancel=self.cancel,
            user=self.request.user,
            group=self.request.group,
            step=step,
            stdout=stdout,
        )


def _owner(request: BuildRequest) -> tuple[int, int] | None:
    if request.user is None:
        return None
    try:
        entry = pwd.getpwnam(request.user)
    except KeyError:
        raise StepFailed("prepare", f"no such user: {request.user!r}") from None
    gid = entry.pw_gid
    if request.group is not None:
        try:
            gid = grp.getgrnam(request.group).gr_gid
        except KeyError:
            raise StepFailed("prepare", f"no such group: {request.group!r}") from None
    return entry.pw_uid, gid


def build_release(
    layout: DeployLayout,
    request: BuildRequest,
    output: Callable[[str], None],
    cancel: threading.Event | None = None,
) -> BuildResult:
    """Build a new release of `request.source`; `current` is left as it is."""
    commit: str | None = None
    path: Path | None = None
    stage = "check"
    done = False
    try:
        # checked again here, before any command: no caller can skip it
        check_repo_url(request.source.repo)
        check_branch(request.source.branch)
        if request.ref is not None:
            check_ref(request.ref)
        stage = "prepare"
        ctx = _Context(layout, request, output, cancel, _owner(request))
        _prepare(ctx)
        stage = "fetch"
        _fetch(ctx)
        stage = "checkout"
        commit, ref = _resolve(ctx)
        created = time.time()
        release, path = layout.new_release(commit, created)
        output(f"building release {release} from {ref} at {commit}")
        _export(ctx, commit, path)
        if request.source.install:
            stage = "install"
            for argv, step in install_steps(path, request.python):
                ctx.run(argv, path, _build_env(ctx, path), step)
        for index, step_argv in enumerate(request.source.steps):
            stage = f"steps[{index}]"
            ctx.run(list(step_argv), path, _build_env(ctx, path), stage)
        layout.finish_release(release, commit, ref, created, redact(request.source.repo))
        output(f"release {release} is ready")
        done = True
        return BuildResult(True, release, commit, None, None)
    except SourceError as exc:
        output(f"refused: {exc}")
        return BuildResult(False, None, None, str(exc), "check")
    except StepFailed as exc:
        output(f"failed at {exc.step}: {exc.message}")
        return BuildResult(False, None, commit, exc.message, exc.step)
    except OSError as exc:
        message = redact(f"{exc.strerror or exc}" + (f": {exc.filename}" if exc.filename else ""))
        output(f"failed at {stage}: {message}")
        return BuildResult(False, None, commit, message, stage)
    finally:
        if not done and path is not None:  # whatever went wrong, no partial release stays
            _discard(path)


def _discard(path: Path) -> None:
    with contextlib.suppress(OSError):
        remove_tree(path)


def _prepare(ctx: _Context) -> None:
    """Folders exist; for a root daemon building as a user, what the user's commands
    write is theirs, and nothing else (see layout.py)."""
    layout = ctx.layout
    layout.ensure()
    if not layout.scratch.is_dir():
        layout.scratch.mkdir(mode=0o700)
    if ctx.owner is None:
        return
    uid, gid = ctx.owner
    if not layout.known_hosts.exists():
        layout.known_hosts.touch(mode=0o600)
    for item in (layout.scratch, layout.key, layout.known_hosts):
        if item.exists() and not item.is_symlink():
            os.lchown(item, uid, gid)
    if layout.cache.exists() and layout.cache.lstat().st_uid != uid:
        # another user's cache (the app's user changed): fetched again rather than
        # chowned, so nothing they left in it is walked by root
        remove_tree(layout.cache)


def _fetch(ctx: _Context) -> None:
    layout, request = ctx.layout, ctx.request
    env = git.git_env(request.env, layout)
    if not (layout.cache / "HEAD").exists():
        remove_tree(layout.cache)
        layout.cache.mkdir(mode=0o700)
        if ctx.owner is not None:
            os.lchown(layout.cache, *ctx.owner)
        argv = git.git_argv(request.env, "init", "--quiet", "--bare", str(layout.cache))
        ctx.run(argv, layout.root, env, "fetch")
    argv = git.fetch_argv(request.env, layout.cache, request.source.repo, request.source.branch)
    ctx.run(argv, layout.root, env, "fetch")


def _resolve(ctx: _Context) -> tuple[str, str]:
    """The commit to build and the ref it came from."""
    request = ctx.request
    if request.ref is None:
        candidates = [(f"refs/heads/{request.source.branch}", request.source.branch)]
    else:
        ref = request.ref
        candidates = [(f"refs/heads/{ref}", ref), (f"refs/tags/{ref}", ref)]
        if is_commit_id(ref):
            candidates.append((ref, ref))
    for name, shown in candidates:
        commit = _rev_parse(ctx, f"{name}^{{commit}}")
        if commit is not None:
            return commit, shown
    wanted = request.ref if request.ref is not None else f"branch {request.source.branch!r}"
    raise StepFailed("checkout", f"{wanted} not found in {redact(request.source.repo)}")


def _rev_parse(ctx: _Context, name: str) -> str | None:
    lines: list[str] = []
    argv = git.git_argv(
        ctx.request.env,
        "-C",
        str(ctx.layout.cache),
        "rev-parse",
        "--verify",
        "--quiet",
        "--end-of-options",
        name,
    )
    try:
        run_command(
            argv,
            cwd=ctx.layout.root,
            env=git.git_env(ctx.request.env, ctx.layout),
            timeout=ctx.request.source.timeout,
            output=lines.append,
            cancel=ctx.cancel,
            user=ctx.request.user,
            group=ctx.request.group,
            step="checkout",
        )
    except StepFailed as exc:
        if exc.message.endswith("exited with code 1"):
            return None
        raise
    found = [line.strip() for line in lines[1:] if line.strip()]  # lines[0] is the echo
    if len(found) == 1 and len(found[0]) in (40, 64):
        return found[0]
    return None


def _export(ctx: _Context, commit: str, path: Path) -> None:
    """`git archive` of the commit into a private unnamed file, then extracted with the
    "data" filter: no absolute names, no '..', no links leaving the release, no devices."""
    argv = git.git_argv(
        ctx.request.env, "-C", str(ctx.layout.cache), "archive", "--format=tar", commit
    )
    env = git.git_env(ctx.request.env, ctx.layout)
    # opened by us, written by the child through its stdout: no path anyone could swap
    with tempfile.TemporaryFile(dir=ctx.layout.root) as archive:
        ctx.run(argv, ctx.layout.root, env, "checkout", stdout=archive)
        archive.seek(0)
        extract_release(archive, path)
    if ctx.owner is not None:
        chown_tree(path, *ctx.owner)


def _build_env(ctx: _Context, release: Path) -> dict[str, str]:
    """The env of installs and steps: the release's venv first on PATH, caches in the
    app's deploy folder (the user may have no writable home)."""
    env = dict(ctx.request.env)
    venv = release / ".venv"
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', os.defpath)}"
    if venv.is_dir():
        env["VIRTUAL_ENV"] = str(venv)
    env.pop("PYTHONHOME", None)
    cache = ctx.layout.scratch
    env.setdefault("XDG_CACHE_HOME", str(cache))
    env.setdefault("npm_config_cache", str(cache / "npm"))
    return env
