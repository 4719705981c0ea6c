"""fork/exec for a child that receives listening sockets (systemd socket activation).

The child must find the sockets at fds 3.. and `LISTEN_PID` equal to its own pid, which
subprocess.Popen cannot do: its environment is fixed before the fork, and the pid is
only known after. So this module forks by hand: everything is computed in the parent
(argv, the path of the program, the environment as bytes, uid/gid/groups, rlimits, the
fds to move), and the child only makes system calls through `os`, `signal`, `resource`,
then execs.

Why os.fork() is acceptable although the daemon is multi-threaded: after a fork only the
forking thread exists in the child, and any lock another thread held stays held forever.
The child therefore takes no lock of ours: no logging, no imports, no NSS lookups (user
and group names are resolved before the fork), nothing that may block on a lock. It runs
a handful of thin wrappers around async-signal-safe system calls (setpgid, sigaction,
dup2, close_range, chdir, umask, setrlimit, setgroups, setgid, setuid, execve) and then
execs or `_exit`s. CPython's own at-fork handling (GIL, import lock, threading state) is
made for this; it is exactly what subprocess does when it is given a `preexec_fn`. glibc
makes malloc usable after fork. (Python 3.12+ warns about fork in a threaded process;
the same reasoning applies there.)

Signals: all signals are blocked in the forking thread around the fork, so no handler of
the daemon ever runs in the child (a handler could write to the event loop's wake-up fd,
which the child shares until it closes it). The child resets the dispositions the daemon
changed to the default, then empties its signal mask just before execve.

Errors in the child travel to the parent through a close-on-exec pipe: EOF without data
means the exec succeeded; otherwise the parent reaps the child and raises the matching
OSError (FileNotFoundError, PermissionError...), as subprocess does.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import grp
import os
import pwd
import resource
import shutil
import signal
from dataclasses import dataclass
from typing import NoReturn

from corral.core.osapi import RLIMITS, LaunchSpec

_ERROR_MAX = 4096
_FIRST_LISTEN_FD = 3

# Reset in the child even when the daemon did not change them: Python ignores SIGPIPE and
# SIGXFSZ (SIGXFZ where it exists) at start-up, and the daemon handles the others.
_RESET_ALWAYS: tuple[int, ...] = tuple(
    int(getattr(signal, name))
    for name in (
        "SIGPIPE",
        "SIGXFSZ",
        "SIGXFZ",
        "SIGINT",
        "SIGTERM",
        "SIGHUP",
        "SIGQUIT",
        "SIGUSR1",
        "SIGUSR2",
        "SIGCHLD",
    )
    if hasattr(signal, name)
)


@dataclass
class _Plan:
    """Everything the child needs, computed in the parent."""

    executable: bytes
    argv: list[bytes]
    env: dict[bytes, bytes]
    set_listen_pid: bool
    cwd: bytes
    umask: int | None
    rlimits: list[tuple[int, int]]
    groups: list[int] | None
    gid: int | None
    uid: int | None
    signals: list[int]
    moves: list[tuple[int, int]]
    """(source, target) pairs for dup2; every source is >= `first_free`."""
    first_free: int
    error_fd: int
    fd_limit: int


def spawn_with_fds(
    spec: LaunchSpec,
    listen_fds: list[int],
    fd_names: list[str],
    stdout_w: int,
    stderr_w: int,
    extra_env: dict[str, str] | None = None,
) -> int:
    """Fork and exec `spec` with `listen_fds` at fds 3.. and LISTEN_FDS / LISTEN_FDNAMES /
    LISTEN_PID set; return the child's pid once it has exec'd.

    The child leads a new process group; stdin is /dev/null, stdout and stderr are
    `stdout_w` and `stderr_w`; no other fd is inherited. The caller keeps ownership of
    every fd it passes (nothing is closed here). Blocking: call it from a worker thread.

    Raises what the exec would (FileNotFoundError, PermissionError... all OSError) when
    the program, cwd or identity does not work, KeyError for an unknown user or group,
    ValueError for an invalid spec.
    """
    if len(listen_fds) != len(fd_names):
        raise ValueError("listen_fds and fd_names differ in length")
    for name in fd_names:
        if not name or ":" in name or "\0" in name:
            raise ValueError(f"invalid LISTEN_FDNAMES entry: {name!r}")
    first_free = _FIRST_LISTEN_FD + len(listen_fds)
    owned: list[int] = []  # fds opened here, closed before returning
    try:
        sources = [os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)]
        owned.append(sources[0])
        for fd in (stdout_w, stderr_w, *listen_fds):
            owned.append(fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, first_free))
            sources.append(owned[-1])
        sources[0] = _above(sources[0], first_free, owned)
        err_r, err_w = os.pipe()  # both close-on-exec
        owned += [err_r, err_w]
        err_w = _above(err_w, first_free, owned)
        plan = _plan(spec, fd_names, extra_env, sources, first_free, err_w)
        pid = _fork(plan)
        for fd in owned:
            if fd != err_r:
                os.close(fd)
        owned = [err_r]
        report = _read_all(err_r)
    finally:
        for fd in owned:
            os.close(fd)
    if not report:
        return pid
    _reap(pid)
    raise _child_error(report, spec)


def _above(fd: int, low: int, owned: list[int]) -> int:
    """`fd` itself if it is >= low, else a close-on-exec duplicate that is (`fd` closed)."""
    if fd >= low:
        return fd
    new = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, low)
    owned.append(new)
    owned.remove(fd)
    os.close(fd)
    return new


def _plan(
    spec: LaunchSpec,
    fd_names: list[str],
    extra_env: dict[str, str] | None,
    sources: list[int],
    first_free: int,
    error_fd: int,
) -> _Plan:
    if not spec.argv or not spec.argv[0]:
        raise ValueError("empty command line")
    count = len(fd_names)
    env = dict(spec.env)
    env.update(extra_env or {})
    for key in ("LISTEN_FDS", "LISTEN_FDNAMES", "LISTEN_PID"):
        env.pop(key, None)
    if count:
        env["LISTEN_FDS"] = str(count)
        env["LISTEN_FDNAMES"] = ":".join(fd_names)
    env_bytes: dict[bytes, bytes] = {}
    for key, value in env.items():
        key_b, value_b = os.fsencode(key), os.fsencode(value)
        if not key_b or b"=" in key_b or b"\0" in key_b or b"\0" in value_b:
            raise ValueError(f"invalid environment variable: {key!r}")
        env_bytes[key_b] = value_b
    uid, gid, groups = resolve_identity(spec)
    targets = list(range(3 + count))  # stdin, stdout, stderr, then the sockets
    return _Plan(
        executable=os.fsencode(_executable(spec, env)),
        argv=[os.fsencode(arg) for arg in spec.argv],
        env=env_bytes,
        set_listen_pid=count > 0,
        cwd=os.fsencode(spec.cwd),
        umask=spec.umask,
        rlimits=_rlimits(spec.rlimits),
        groups=groups,
        gid=gid,
        uid=uid,
        signals=_signals_to_reset(),
        moves=list(zip(sources, targets, strict=True)),
        first_free=first_free,
        error_fd=error_fd,
        fd_limit=max(_open_max(), error_fd + 1),
    )


def _executable(spec: LaunchSpec, env: dict[str, str]) -> str:
    """argv[0] as execve needs it: looked up on the child's PATH when it has no slash
    (relative PATH entries are taken from the child's cwd)."""
    program = spec.argv[0]
    if "/" in program:
        return program  # relative to the cwd, which the child enters before the exec
    search = env.get("PATH", os.defpath)
    path = os.pathsep.join(
        os.path.join(spec.cwd, entry or ".") for entry in search.split(os.pathsep)
    )
    found = shutil.which(program, path=path)
    if found is None:
        raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), program)
    return found


def resolve_identity(spec: LaunchSpec) -> tuple[int | None, int | None, list[int] | None]:
    """uid, gid and supplementary groups for `user`/`group`: setgid + initgroups + setuid
    (only possible as root; the daemon checks that before it gets here). Both spawn
    paths (subprocess in realos, this module's fork) use it."""
    if spec.user is None and spec.group is None:
        return None, None, None
    gid = grp.getgrnam(spec.group).gr_gid if spec.group else None
    if spec.user is None:
        return None, gid, []
    entry = pwd.getpwnam(spec.user)
    gid = entry.pw_gid if gid is None else gid
    return entry.pw_uid, gid, os.getgrouplist(entry.pw_name, gid)


def _rlimits(limits: dict[str, int]) -> list[tuple[int, int]]:
    pairs = []
    for name, value in limits.items():
        if name not in RLIMITS:
            raise ValueError(f"unknown rlimit {name!r} (known: {', '.join(sorted(RLIMITS))})")
        pairs.append((RLIMITS[name], resource.RLIM_INFINITY if value < 0 else value))
    return pairs


def _signals_to_reset() -> list[int]:
    """The signals whose disposition the child must set back to the default."""
    wanted = set(_RESET_ALWAYS)
    for signum in signal.valid_signals():
        if signum in (signal.SIGKILL, signal.SIGSTOP):
            continue
        try:
            handler = signal.getsignal(signum)
        except (OSError, ValueError):
            continue
        if handler != signal.SIG_DFL:  # ignored, a Python handler, or set from C (None)
            wanted.add(int(signum))
    return sorted(wanted)


def _open_max() -> int:
    try:
        value = os.sysconf("SC_OPEN_MAX")
    except (OSError, ValueError):
        value = -1
    return value if value > 0 else 1024


def _fork(plan: _Plan) -> int:
    """Fork with every signal blocked in this thread; the child never returns."""
    old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, signal.valid_signals())
    try:
        pid = os.fork()
        if pid == 0:
            _child(plan)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
    return pid


def _child(plan: _Plan) -> NoReturn:
    """Between fork and exec: system calls only, no locks, nothing that can block."""
    step = "setpgid"
    try:
        os.setpgid(0, 0)
        step = "signals"
        for signum in plan.signals:
            try:  # noqa: SIM105 (no context manager objects in the child)
                signal.signal(signum, signal.SIG_DFL)
            except (OSError, ValueError):
                pass
        step = "fds"
        for source, target in plan.moves:
            os.dup2(source, target)  # the target is inheritable (no FD_CLOEXEC)
        os.closerange(plan.first_free, plan.error_fd)
        os.closerange(plan.error_fd + 1, plan.fd_limit)
        step = "chdir"
        os.chdir(plan.cwd)
        if plan.umask is not None:
            os.umask(plan.umask)
        step = "setrlimit"
        for resource_id, limit in plan.rlimits:
            resource.setrlimit(resource_id, (limit, limit))
        step = "setgroups"
        if plan.groups is not None:
            os.setgroups(plan.groups)
        step = "setgid"
        if plan.gid is not None:
            os.setgid(plan.gid)
        step = "setuid"
        if plan.uid is not None:
            os.setuid(plan.uid)
        step = "exec"
        if plan.set_listen_pid:
            plan.env[b"LISTEN_PID"] = b"%d" % os.getpid()
        signal.pthread_sigmask(signal.SIG_SETMASK, ())
        os.execve(plan.executable, plan.argv, plan.env)
    except BaseException as exc:
        try:
            number = exc.errno if isinstance(exc, OSError) and exc.errno else 0
            message = f"{step}:{type(exc).__name__}:{number}:{exc}"
            os.write(plan.error_fd, message.encode("utf-8", "replace")[:_ERROR_MAX])
        except BaseException:
            pass
    finally:
        os._exit(127)


def _read_all(fd: int) -> bytes:
    """Read until EOF (the child exec'd or exited); keep at most _ERROR_MAX bytes."""
    data = b""
    while True:
        chunk = os.read(fd, _ERROR_MAX)
        if not chunk:
            return data
        if len(data) < _ERROR_MAX:
            data += chunk


def _reap(pid: int) -> None:
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, 0)


def _child_error(report: bytes, spec: LaunchSpec) -> OSError:
    fields = report.decode("utf-8", "replace").split(":", 3) + [""] * 4
    step, kind, number_text, text = fields[:4]
    try:
        number = int(number_text)
    except ValueError:
        number = 0
    if number:
        strerror = os.strerror(number)
        if step == "exec":
            return OSError(number, strerror, spec.argv[0])
        if step == "chdir":
            return OSError(number, strerror, spec.cwd)
        return OSError(number, f"{strerror} (in the child, at {step})")
    if step == "setrlimit" and kind == "ValueError":  # how resource.setrlimit reports EPERM
        return PermissionError(errno.EPERM, f"setrlimit: {text}")
    return OSError(f"the child failed at {step}: {kind}: {text}")
