"""Deploys of git apps inside the daemon (SPEC 4): queue, build, switch, reload, record.

One `asyncio.Lock` per app: deploys and rollbacks of one app run one after the other, in
the order asked. The build (`corral.deploy.pipeline.build_release`: fetch, export,
install, steps) runs in a thread; its output lines reach subscribers as "deploy" events
(published on the loop with `call_soon_threadsafe`) and the kept output file. After a
good build `current` is switched atomically and the app reloaded without downtime; if the
new instances do not come up, `current` goes back to the previous release and the deploy
is failed. Every state change is written to the app's history and published.

Event shapes (the `deploys` option of `subscribe`):
    {"type": "deploy", "app": name, "id": deploy id, "line": str}
    {"type": "deploy", "app": name, "id": deploy id, "status": str, "deploy": record}
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import secrets
import shutil
import socket
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from corral.core.environment import build_environment
from corral.core.lifecycle import State
from corral.protocol.wire import ErrorCode, ProtocolError

if TYPE_CHECKING:
    from corral.core.app import App
    from corral.core.supervisor import Supervisor
    from corral.deploy.history import DeployHistory
    from corral.deploy.layout import DeployLayout

log = logging.getLogger("corral.deploys")

DEPLOY_ID_RE = re.compile(r"\d{8}T\d{6}Z-[0-9a-f]{6}\Z")
FINISHED = frozenset({"succeeded", "failed"})
TRIGGER_MAX = 200
T = TypeVar("T")


class _Failed(Exception):
    def __init__(self, step: str | None, error: str, *, told: bool = False) -> None:
        super().__init__(error)
        self.step = step
        self.error = error
        self.told = told
        """The output says it already (the build's own last line)."""


@dataclass(eq=False)
class _Job:
    record: dict[str, Any]
    ref: str | None = None
    release: str | None = None
    """A rollback's target (None: the release before the current one)."""
    cancel: threading.Event = field(default_factory=threading.Event)

    @property
    def app(self) -> str:
        return str(self.record["app"])


def new_deploy_id(now: float) -> str:
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now)) + "-" + secrets.token_hex(3)


def check_trigger(value: Any, default: str) -> str:
    """Who or what asked: given by the panel ("panel: alice", "webhook: github"), else the
    peer's uid. One printable line."""
    if value is None:
        return default
    if (
        not isinstance(value, str)
        or not value
        or len(value) > TRIGGER_MAX
        or not value.isprintable()
    ):
        raise ProtocolError(
            ErrorCode.INVALID_ARGUMENT,
            f"'trigger' must be one printable line of 1 to {TRIGGER_MAX} characters",
        )
    return value


class DeployManager:
    def __init__(self, sup: Supervisor, home_root: Path) -> None:
        self.sup = sup
        self.home_root = home_root
        self._locks: dict[str, asyncio.Lock] = {}
        self._file_locks: dict[str, threading.Lock] = {}
        self._jobs: set[_Job] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._closing = False
        self._repaired: set[str] = set()
        """Apps whose history was checked for deploys a previous daemon left unfinished."""
        sup.shutdown_hooks.append(self.close)

    # ------------------------------------------------------------ lookups

    def layout(self, name: str) -> DeployLayout:
        from corral.deploy.layout import DeployLayout

        try:
            return DeployLayout(self.home_root, name)
        except ValueError as exc:
            raise ProtocolError(ErrorCode.INVALID_ARGUMENT, str(exc)) from None

    def app(self, name: str, *, need_git: bool) -> App:
        app = self.sup.by_name(name)
        if app is None:
            raise ProtocolError(ErrorCode.UNKNOWN_TARGET, f"no app named {name!r}")
        if need_git and app.config.git is None:
            raise ProtocolError(
                ErrorCode.INVALID_ARGUMENT,
                f"app {name!r} has no git source: add `git: {{repo: ..., branch: ...}}` to "
                "its config",
            )
        return app

    async def _history(self, name: str, call: Callable[[DeployHistory], T]) -> T:
        """A history operation in a thread; one at a time per app (read-modify-write)."""
        from corral.deploy.history import DeployHistory

        layout = self.layout(name)
        lock = self._file_locks.setdefault(name, threading.Lock())
        repair = name not in self._repaired
        self._repaired.add(name)
        active = {job.record["id"] for job in self._jobs}

        def run() -> T:
            with lock:  # the history makes its folders when it first writes
                history = DeployHistory(layout)
                if repair:
                    _fail_interrupted(history, active)
                return call(history)

        return await asyncio.to_thread(run)

    # ------------------------------------------------------------ commands

    async def deploy(self, name: str, ref: str | None, trigger: str) -> dict[str, Any]:
        self.app(name, need_git=True)
        return await self._queue(_Job(self._record(name, "deploy", trigger, ref), ref=ref))

    async def rollback(self, name: str, release: str | None, trigger: str) -> dict[str, Any]:
        self.app(name, need_git=True)
        record = self._record(name, "rollback", trigger, None)
        return await self._queue(_Job(record, release=release))

    async def history(self, name: str, limit: int) -> list[dict[str, Any]]:
        self.app(name, need_git=False)
        return await self._history(name, lambda h: h.list(limit))

    async def output(self, name: str, deploy_id: str) -> dict[str, Any]:
        self.app(name, need_git=False)
        if not DEPLOY_ID_RE.match(deploy_id):
            raise ProtocolError(ErrorCode.INVALID_ARGUMENT, f"not a deploy id: {deploy_id!r}")

        def read(h: DeployHistory) -> tuple[dict[str, Any] | None, str]:
            record = h.get(deploy_id)
            return record, h.output(deploy_id) if record is not None else ""

        record, text = await self._history(name, read)
        if record is None:
            raise ProtocolError(ErrorCode.NOT_FOUND, f"no deploy {deploy_id} of {name!r}")
        return {"deploy": record, "output": text}

    async def releases(self, name: str) -> list[dict[str, Any]]:
        self.app(name, need_git=False)
        layout = self.layout(name)
        found = await asyncio.to_thread(layout.list_releases)
        return [info.to_dict() for info in found]

    async def key(self, name: str, create: bool) -> dict[str, Any]:
        from corral.deploy import keys

        self.app(name, need_git=False)
        layout = self.layout(name)
        lock = self._file_locks.setdefault(name, threading.Lock())

        def run() -> str | None:
            with lock:
                if create:
                    layout.ensure()
                    return keys.ensure_key(layout, f"corral-deploy-{name}@{socket.gethostname()}")
                return keys.public_key(layout)

        return {"public_key": await asyncio.to_thread(run)}

    # ------------------------------------------------------------ the queue

    def _record(self, name: str, kind: str, trigger: str, ref: str | None) -> dict[str, Any]:
        now = time.time()
        return {
            "id": new_deploy_id(now),
            "app": name,
            "kind": kind,
            "status": "queued",
            "trigger": trigger,
            "ref": ref,
            "commit": None,
            "release": None,
            "previous": None,
            "step": None,
            "error": None,
            "queued": now,
            "started": None,
            "ended": None,
            "duration": None,
        }

    async def _queue(self, job: _Job) -> dict[str, Any]:
        if self._closing:
            raise ProtocolError(ErrorCode.CONFLICT, "the daemon is stopping")
        # The lock is taken in the order of these calls: the task is created at once.
        lock = self._locks.setdefault(job.app, asyncio.Lock())
        await self._history(job.app, lambda h: h.add(dict(job.record)))
        self._publish_status(job)
        self._jobs.add(job)
        task = asyncio.get_running_loop().create_task(self._run(job, lock))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return dict(job.record)

    async def _run(self, job: _Job, lock: asyncio.Lock) -> None:
        record = job.record
        try:
            async with lock:
                await self._execute(job)
        except asyncio.CancelledError:
            if record["status"] not in FINISHED:
                await self._finish(job, "failed", None, "the daemon stopped before it finished")
            raise
        finally:
            self._jobs.discard(job)

    async def _execute(self, job: _Job) -> None:
        record = job.record
        if self._closing:
            await self._finish(job, "failed", None, "the daemon stopped before it started")
            return
        record["status"] = "running"
        record["started"] = time.time()
        await self._history(job.app, lambda h: h.update(dict(record)))
        self._publish_status(job)
        writer = await self._history(job.app, lambda h: h.output_writer(record["id"]))
        try:
            if record["kind"] == "deploy":
                await self._deploy(job, writer)
            else:
                await self._rollback(job, writer)
        except _Failed as failed:
            if not failed.told:
                await self._say(job, writer, f"failed: {failed.error}")
            await self._finish(job, "failed", failed.step, failed.error)
        except Exception as exc:  # a bug must not leave the deploy "running" forever
            log.exception("deploy %s of %s", record["id"], job.app)
            await self._finish(job, "failed", None, f"internal error: {exc}")
        else:
            await self._finish(job, "succeeded", None, None)
        finally:
            with contextlib.suppress(Exception):
                await asyncio.to_thread(writer.close)

    async def _finish(self, job: _Job, status: str, step: str | None, error: str | None) -> None:
        record = job.record
        record["status"] = status
        record["step"] = step
        record["error"] = error
        record["ended"] = time.time()
        started = record["started"]
        record["duration"] = None if started is None else round(record["ended"] - started, 3)
        try:
            await self._history(job.app, lambda h: h.update(dict(record)))
        except OSError as exc:
            log.error("cannot record deploy %s of %s: %s", record["id"], job.app, exc)
        self._publish_status(job)
        log.info(
            "%s %s of %s: %s%s",
            record["kind"],
            record["id"],
            job.app,
            status,
            f" ({error})" if error else "",
        )

    # ------------------------------------------------------------ events and output

    def _publish_status(self, job: _Job) -> None:
        record = job.record
        self.sup.events.publish(
            {
                "type": "deploy",
                "app": job.app,
                "id": record["id"],
                "status": record["status"],
                "deploy": dict(record),
            }
        )

    def _publish_line(self, app: str, deploy_id: str, line: str) -> None:
        self.sup.events.publish({"type": "deploy", "app": app, "id": deploy_id, "line": line})

    def _thread_output(self, job: _Job, writer: Any) -> Callable[[str], None]:
        """The build thread's output callback: kept in the file, published on the loop."""
        loop = asyncio.get_running_loop()
        app, deploy_id = job.app, job.record["id"]

        def output(line: str) -> None:
            writer.write(line)
            loop.call_soon_threadsafe(self._publish_line, app, deploy_id, line)

        return output

    async def _say(self, job: _Job, writer: Any, line: str) -> None:
        """A line of the daemon's own (switch, reload...) in the deploy's output."""
        line = f"corral: {line}"
        with contextlib.suppress(OSError):
            await asyncio.to_thread(writer.write, line)
        self._publish_line(job.app, job.record["id"], line)

    # ------------------------------------------------------------ deploy

    def _build_env(self, app: App) -> dict[str, str]:
        """The app's environment without its secrets: what every build command starts from
        (PATH, proxies, SSL_CERT_FILE / GIT_SSL_CAINFO, PIP_* ...)."""
        try:
            return build_environment(
                app.config, instance=0, cli_env=app.cli_env, env_name=app.env_name
            )
        except ValueError as exc:
            raise _Failed("prepare", str(exc)) from None

    async def _deploy(self, job: _Job, writer: Any) -> None:
        from corral.deploy.pipeline import BuildRequest, build_release
        from corral.deploy.source import SourceError, source_from_mapping

        record = job.record
        app = self.sup.by_name(job.app)
        if app is None or app.config.git is None:
            raise _Failed("prepare", "the app was deleted or has no git source any more")
        try:
            source = source_from_mapping(app.config.git)
        except SourceError as exc:
            raise _Failed("prepare", str(exc)) from None
        env = self._build_env(app)
        root = os.geteuid() == 0
        if root and app.config.user is not None:
            problem = await asyncio.to_thread(
                unreachable_for, self.layout(job.app).root, app.config.user, app.config.group
            )
            if problem is not None:
                raise _Failed("prepare", problem)
        request = BuildRequest(
            app=job.app,
            source=source,
            ref=job.ref,
            env=env,
            python=venv_python(env),
            user=app.config.user if root else None,
            group=app.config.group if root else None,
        )
        layout = self.layout(job.app)
        output = self._thread_output(job, writer)
        result = await asyncio.to_thread(build_release, layout, request, output, job.cancel)
        record["commit"] = result.commit
        record["release"] = result.release
        if not result.ok or result.release is None:
            raise _Failed(result.step, result.error or "the build failed", told=True)
        await self._switch(job, writer, result.release)
        pruned = await asyncio.to_thread(
            layout.prune, source.keep, {record["previous"]} if record["previous"] else set()
        )
        if pruned:
            await self._say(job, writer, f"removed old release(s) {', '.join(pruned)}")

    async def _rollback(self, job: _Job, writer: Any) -> None:
        record = job.record
        self.app(job.app, need_git=False)
        layout = self.layout(job.app)
        releases = await asyncio.to_thread(layout.list_releases)
        ids = [info.id for info in releases]
        current = next((info.id for info in releases if info.current), None)
        if job.release is not None:
            if job.release not in ids:
                raise _Failed("rollback", f"no release {job.release} (see --releases)")
            target = job.release
        else:
            index = ids.index(current) if current in ids else -1
            if current is None or index + 1 >= len(ids):
                raise _Failed("rollback", "there is no release before the current one")
            target = ids[index + 1]
        if target == current:
            raise _Failed("rollback", f"{target} is already the current release")
        info = releases[ids.index(target)]
        record["release"], record["commit"], record["ref"] = target, info.commit, info.ref
        await self._switch(job, writer, target)

    async def _switch(self, job: _Job, writer: Any, release: str) -> None:
        """Point `current` at `release` and bring the app up on it; on failure point it
        back and bring the old release up again."""
        record = job.record
        layout = self.layout(job.app)
        previous = await asyncio.to_thread(layout.activate, release)
        record["previous"] = previous
        await self._say(job, writer, f"current release: {release}")
        app = self.sup.by_name(job.app)
        if app is None:
            return
        before = set(app.instances.values())
        problem = await self._bring_up(job, writer, app)
        if problem is None:
            return
        if previous is not None:
            await asyncio.to_thread(layout.activate, previous)
            await self._say(job, writer, f"current release back to {previous}")
            await self._recover(app, before)
        raise _Failed("start", f"the new release did not start: {problem}")

    async def _bring_up(self, job: _Job, writer: Any, app: App) -> str | None:
        """Reload the instances that serve (zero downtime), start an app meant to run; why
        the new instances are not up, or None."""
        serving = any(inst.state is State.ONLINE for inst in app.instances.values())
        if serving:
            await self._say(job, writer, f"reloading {app.name} ({len(app.instances)} instances)")
            try:
                await self.sup.reload(app)
            except ProtocolError as exc:
                return exc.message
            if app.config.reload_mode == "restart":
                return await self.sup.started_problem(app)
            return None
        if app.desired != "running":
            await self._say(job, writer, f"{app.name} is stopped: the release runs at its start")
            return None
        await self._say(job, writer, f"starting {app.name}")
        await self.sup.restart(app, "deploy")
        return await self.sup.started_problem(app)

    async def _recover(self, app: App, before: set[Any]) -> None:
        """After switching back: instances the failed attempt replaced or stopped run the
        old release again."""
        if app.desired != "running":
            return
        if set(app.instances.values()) != before and any(
            inst.state is State.ONLINE for inst in app.instances.values()
        ):
            with contextlib.suppress(ProtocolError):
                await self.sup.reload(app)
        elif not all(inst.state is State.ONLINE for inst in app.instances.values()):
            await self.sup.restart(app, "deploy failed: previous release")

    # ------------------------------------------------------------ shutdown

    async def close(self) -> None:
        """Daemon shutdown: cancel the running builds (their commands get SIGTERM), fail
        the queued deploys."""
        self._closing = True
        for job in list(self._jobs):
            job.cancel.set()
        tasks = list(self._tasks)
        if not tasks:
            return
        _, pending = await asyncio.wait(tasks, timeout=15)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending, timeout=5)


def _fail_interrupted(history: DeployHistory, active: set[str]) -> None:
    """Records left queued or running by a daemon that died: they will never finish."""
    now = time.time()
    for record in history.list(200):
        if record.get("status") in FINISHED or record.get("id") in active:
            continue
        record["status"] = "failed"
        record["error"] = "the daemon stopped before the deploy finished"
        record["ended"] = now
        history.update(record)


def unreachable_for(folder: Path, user: str, group: str | None) -> str | None:
    """Why `user` could not reach `folder` (a folder above it they may not traverse), or
    None. A root daemon's home is 0700: an app run as another user cannot be built or run
    from a release inside it."""
    import grp
    import pwd

    try:
        entry = pwd.getpwnam(user)
        gids = {entry.pw_gid, *(g.gr_gid for g in grp.getgrall() if user in g.gr_mem)}
        if group is not None:
            gids.add(grp.getgrnam(group).gr_gid)
    except KeyError as exc:
        return f"no such user or group: {exc.args[0]}"
    for parent in reversed([folder, *folder.parents]):
        try:
            info = parent.stat()
        except FileNotFoundError:
            break  # made by the build, traversable (0755)
        if info.st_uid == entry.pw_uid:
            allowed = info.st_mode & 0o100
        elif info.st_gid in gids:
            allowed = info.st_mode & 0o010
        else:
            allowed = info.st_mode & 0o001
        if not allowed:
            return (
                f"the app runs as {user!r}, who cannot traverse {parent} (mode "
                f"{info.st_mode & 0o7777:o}), so it could not reach its releases in {folder}"
            )
    return None


def venv_python(env: dict[str, str]) -> str:
    """The interpreter that makes a release's venv: python3 on the build's PATH (one the
    app's user can run), else the daemon's own."""
    return shutil.which("python3", path=env.get("PATH")) or sys.executable
