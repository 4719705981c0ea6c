"""`OsApi` for real: asyncio timers, fork/exec, exits from pidfds.

Exits are learned from the kernel: each child's pidfd becomes readable when it exits
(`loop.add_reader`), and only then is it reaped with `waitpid`, so no process is ever
polled.

Where it spawns: a plain launch (no `rlimits`, no `user`/`group`, no listening sockets)
is spawned on the event loop itself. subprocess then uses vfork(): the daemon's memory
is not copied, no Python code runs in the child, and the loop is held only until the
child has exec'd (a fraction of a millisecond). A worker thread would not keep the loop
running meanwhile anyway (CPython's _posixsubprocess keeps the GIL through vfork and
exec), and handing the spawn to one costs more than the spawn: the thread waits for the
GIL while the loop finishes its turn (the crash-to-respawn path, docs/BENCHMARKS.md).
Everything else takes a real fork (a `preexec_fn` for rlimits, corral.core.forkexec for
sockets) or NSS lookups (a user or group): that runs in a worker thread, so that a slow
fork or lookup never stalls the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import resource
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass

from corral.core.forkexec import resolve_identity, spawn_with_fds
from corral.core.orphans import process_start_time
from corral.core.osapi import RLIMITS, Child, ExitStatus, LaunchSpec, OutputSink, Timer

_GROUP_POLL = 0.02  # only while ending the leftovers of a group that is known to be dying


@dataclass
class _Spawned:
    popen: subprocess.Popen[bytes] | None
    """None when spawned by forkexec (for listening sockets)."""
    child: Child
    pidfd: int
    stdout: int
    stderr: int


class RealOs:
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._live: dict[int, _Spawned] = {}

    # ------------------------------------------------------------------ clock

    def now(self) -> float:
        return time.monotonic()

    def wall(self) -> float:
        return time.time()

    def call_later(self, delay: float, callback: Callable[[], None]) -> Timer:
        return self._loop.call_later(delay, callback)

    # ------------------------------------------------------------------ spawn

    def spawn(
        self,
        spec: LaunchSpec,
        output: OutputSink,
        on_spawned: Callable[[Child], None],
        on_failed: Callable[[str], None],
        on_exit: Callable[[ExitStatus], None],
    ) -> None:
        if vfork_eligible(spec):
            # On the loop: vfork + exec, no thread hop (see the module docstring). The
            # callbacks still come later, from the loop, as OsApi promises.
            try:
                proc = _fork_exec(spec)
            except Exception as exc:
                self._loop.call_soon(on_failed, _describe_spawn_error(spec, exc))
                return
            self._loop.call_soon(self._spawned, proc, output, on_spawned, on_exit)
            return

        future = self._loop.run_in_executor(None, _fork_exec, spec)

        def spawned(fut: asyncio.Future[_Spawned]) -> None:
            exc = fut.exception()
            if exc is not None:
                on_failed(_describe_spawn_error(spec, exc))
                return
            self._spawned(fut.result(), output, on_spawned, on_exit)

        future.add_done_callback(spawned)

    def _spawned(
        self,
        proc: _Spawned,
        output: OutputSink,
        on_spawned: Callable[[Child], None],
        on_exit: Callable[[ExitStatus], None],
    ) -> None:
        self._live[proc.child.pid] = proc
        output.attach(proc.stdout, proc.stderr)
        self._loop.add_reader(proc.pidfd, self._reap, proc, on_exit)
        on_spawned(proc.child)

    def _reap(self, proc: _Spawned, on_exit: Callable[[ExitStatus], None]) -> None:
        try:
            pid, status = os.waitpid(proc.child.pid, os.WNOHANG)
        except ChildProcessError:
            pid, status = proc.child.pid, 0
        if pid == 0:
            return  # spurious wake-up
        self._loop.remove_reader(proc.pidfd)
        os.close(proc.pidfd)
        self._live.pop(proc.child.pid, None)
        exit_status = ExitStatus.from_wait_status(status)
        if proc.popen is not None:
            # Tell Popen the child is reaped, or it may try to waitpid a reused pid later.
            proc.popen.returncode = (
                exit_status.code if exit_status.code is not None else -(exit_status.signal or 0)
            )
        on_exit(exit_status)

    # ---------------------------------------------------------------- signals

    def signal_group(self, child: Child, signum: int) -> None:
        try:
            os.killpg(child.pid, signum)
        except ProcessLookupError:
            pass
        except PermissionError:
            self.signal_process(child, signum)

    def signal_process(self, child: Child, signum: int) -> None:
        if child.pid not in self._live:
            return  # already reaped: the pid may belong to someone else now
        with contextlib.suppress(ProcessLookupError):
            os.kill(child.pid, signum)

    def clear_group(
        self, child: Child, signum: int | None, timeout: float, done: Callable[[], None]
    ) -> None:
        if not _group_alive(child.pid):
            done()
            return
        if signum is not None:
            self.signal_group(child, signum)
        deadline = self.now() + timeout
        killed = False

        def check() -> None:
            nonlocal killed
            if not _group_alive(child.pid):
                done()
                return
            if self.now() >= deadline:
                if killed and self.now() >= deadline + 2.0:
                    done()  # unkillable (uninterruptible sleep): do not wait forever
                    return
                if not killed:
                    self.signal_group(child, signal.SIGKILL)
                    killed = True
            self._loop.call_later(_GROUP_POLL, check)

        self._loop.call_later(_GROUP_POLL, check)

    def live_children(self) -> list[Child]:
        return [proc.child for proc in self._live.values()]


def vfork_eligible(spec: LaunchSpec) -> bool:
    """Whether subprocess can spawn `spec` with vfork() (nothing to run in the child
    between fork and exec, no identity to resolve): then it is spawned on the loop."""
    return not (spec.listen_fds or spec.rlimits or spec.user is not None or spec.group is not None)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _fork_exec(spec: LaunchSpec) -> _Spawned:
    """Runs in a worker thread: fork, exec, and open the pidfd before anyone can reap."""
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    if spec.listen_fds:
        return _fork_exec_with_sockets(spec, out_r, out_w, err_r, err_w)
    try:
        uid, gid, groups = resolve_identity(spec)
        preexec = _rlimit_setter(spec.rlimits) if spec.rlimits else None
        popen = subprocess.Popen(
            spec.argv,
            stdin=subprocess.DEVNULL,
            stdout=out_w,
            stderr=err_w,
            cwd=spec.cwd,
            env=spec.env,
            close_fds=True,
            process_group=0,
            umask=spec.umask if spec.umask is not None else -1,
            preexec_fn=preexec,
            user=uid,
            group=gid,
            extra_groups=groups,
        )
    except BaseException:
        for fd in (out_r, out_w, err_r, err_w):
            os.close(fd)
        raise
    os.close(out_w)
    os.close(err_w)
    pidfd = os.pidfd_open(popen.pid)  # before anyone can reap it: the pid stays ours
    start_time = process_start_time(popen.pid) or 0.0
    return _Spawned(popen, Child(popen.pid, start_time), pidfd, out_r, err_r)


def _fork_exec_with_sockets(
    spec: LaunchSpec, out_r: int, out_w: int, err_r: int, err_w: int
) -> _Spawned:
    """Listening sockets at fds 3.. with LISTEN_PID = the child's pid: subprocess cannot
    set an environment after the fork, so corral.core.forkexec does the fork/exec."""
    try:
        pid = spawn_with_fds(spec, list(spec.listen_fds), list(spec.listen_names), out_w, err_w)
    except BaseException:
        for fd in (out_r, err_r):
            os.close(fd)
        raise
    finally:
        os.close(out_w)
        os.close(err_w)
    pidfd = os.pidfd_open(pid)
    start_time = process_start_time(pid) or 0.0
    return _Spawned(None, Child(pid, start_time), pidfd, out_r, err_r)


def _rlimit_setter(limits: dict[str, int]) -> Callable[[], None]:
    pairs = [(RLIMITS[name], value) for name, value in limits.items()]

    def apply() -> None:  # runs in the child between fork and exec: no locks, no logging
        for resource_id, value in pairs:
            limit = resource.RLIM_INFINITY if value < 0 else value
            resource.setrlimit(resource_id, (limit, limit))

    return apply


def _describe_spawn_error(spec: LaunchSpec, exc: BaseException) -> str:
    program = spec.argv[0] if spec.argv else "?"
    if isinstance(exc, FileNotFoundError):
        return f"{program}: no such file or directory (or cwd {spec.cwd} is missing)"
    if isinstance(exc, PermissionError):
        return f"{program}: permission denied"
    if isinstance(exc, KeyError):
        return f"unknown user or group: {exc.args[0] if exc.args else exc}"
    if isinstance(exc, OSError) and exc.errno == errno.ENOEXEC:
        return f"{program}: not an executable (set an interpreter)"
    return f"{program}: {exc}"
