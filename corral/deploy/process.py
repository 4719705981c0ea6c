"""Running one build command: argv only, own process group, output line by line, time-out.

Every line goes through `redact` (a URL with a token must not reach the history). On
time-out or cancel the whole group gets SIGTERM, then SIGKILL 5 s later; when the command
ends, whatever it left in its group is killed too. The leader is reaped only after that, so
the group id can never belong to an unrelated process when it is signalled.
"""

from __future__ import annotations

import contextlib
import os
import select
import shlex
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO

from corral.deploy.source import redact

MAX_LINE = 64 * 1024
KILL_GRACE = 5.0
Output = Callable[[str], None]


class StepFailed(Exception):
    """A build step that failed: `step` names it ("fetch", "install", "steps[0]")."""

    def __init__(self, step: str, message: str) -> None:
        super().__init__(f"{step}: {message}")
        self.step = step
        self.message = message


def format_seconds(seconds: float) -> str:
    if seconds >= 3600 and seconds % 3600 == 0:
        return f"{int(seconds // 3600)}h"
    if seconds >= 60 and seconds % 60 == 0:
        return f"{int(seconds // 60)}m"
    return f"{seconds:g}s"


class _Lines:
    """Bytes in, whole lines out (cut at MAX_LINE, decoded with replacement)."""

    def __init__(self, output: Output) -> None:
        self.output = output
        self.buffer = b""
        self.skipping = False

    def feed(self, data: bytes) -> None:
        self.buffer += data
        while True:
            end = self.buffer.find(b"\n")
            if end < 0:
                if len(self.buffer) > MAX_LINE:
                    if not self.skipping:
                        self._emit(self.buffer[:MAX_LINE] + b" [line cut]")
                    self.skipping = True
                    self.buffer = b""
                return
            line, self.buffer = self.buffer[:end], self.buffer[end + 1 :]
            if self.skipping:
                self.skipping = False  # the rest of a line already cut
                continue
            self._emit(line[:MAX_LINE] + (b" [line cut]" if len(line) > MAX_LINE else b""))

    def close(self) -> None:
        if self.buffer and not self.skipping:
            self._emit(self.buffer)
        self.buffer = b""

    def _emit(self, line: bytes) -> None:
        self.output(redact(line.rstrip(b"\r").decode("utf-8", "replace")))


def shown(argv: Sequence[str]) -> list[str]:
    """The command as echoed: git's `-c` hardening options before the subcommand (the same
    on every call, see git.py) are left out so the line says what runs; nothing else is."""
    if not argv or os.path.basename(argv[0]) != "git":
        return list(argv)
    out, index = [argv[0]], 1
    while index < len(argv) and argv[index].startswith("-"):  # git's own options
        if argv[index] != "-c":
            out.append(argv[index])
            if argv[index] == "-C" and index + 1 < len(argv):
                out.append(argv[index + 1])
                index += 1
        else:
            index += 1  # and its value
        index += 1
    return out + list(argv[index:])


def run_command(
    argv: Sequence[str],
    *,
    cwd: Path | str,
    env: Mapping[str, str],
    timeout: float,
    output: Output,
    cancel: threading.Event | None = None,
    user: str | None = None,
    group: str | None = None,
    step: str | None = None,
    stdout: IO[bytes] | None = None,
) -> int:
    """Run `argv` (never through a shell); 0, or StepFailed on any other end.

    With `stdout` (a binary file), standard output goes there and only standard error is
    shown; otherwise both are merged into `output`.
    """
    argv = [str(arg) for arg in argv]
    name = step or os.path.basename(argv[0])
    output("$ " + redact(shlex.join(shown(argv))))
    try:
        proc = subprocess.Popen(
            argv,
            cwd=cwd,
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=stdout if stdout is not None else subprocess.PIPE,
            stderr=subprocess.PIPE if stdout is not None else subprocess.STDOUT,
            start_new_session=True,
            close_fds=True,
            user=user,
            group=group,
            # as root: drop the daemon's supplementary groups (only root may set them)
            extra_groups=[] if user is not None and os.geteuid() == 0 else None,
        )
    except OSError as exc:
        raise StepFailed(name, f"cannot run {argv[0]!r}: {exc.strerror or exc}") from None
    pipe = proc.stderr if stdout is not None else proc.stdout
    assert pipe is not None
    lines = _Lines(output)
    deadline = time.monotonic() + timeout
    why: str | None = None  # set when we stop it
    term_at: float | None = None
    killed_at: float | None = None
    fd = pipe.fileno()
    poller = select.poll()  # not select(): the daemon may hold more than 1024 descriptors
    poller.register(fd, select.POLLIN)
    eof = False
    exited_at: float | None = None
    try:
        while True:
            now = time.monotonic()
            if why is None and exited_at is None:
                if cancel is not None and cancel.is_set():
                    why = "cancelled"
                elif now >= deadline:
                    why = f"timed out after {format_seconds(timeout)}"
                if why is not None:
                    _signal_group(proc, signal.SIGTERM)
                    term_at = now
            if term_at is not None and killed_at is None and now - term_at >= KILL_GRACE:
                _signal_group(proc, signal.SIGKILL)
                killed_at = now
            if exited_at is None and _leader_exited(proc):
                # the leader is a zombie (not reaped): its group id is still ours to signal;
                # whatever it left running in the group goes with it
                _signal_group(proc, signal.SIGKILL)
                exited_at = now
            if exited_at is not None and (eof or now - exited_at >= 2.0):
                break  # done, or a process outside the group still holds the pipe
            if eof:
                time.sleep(0.02)
                continue
            if poller.poll(100):
                data = os.read(fd, 65536)
                if data:
                    lines.feed(data)
                else:
                    eof = True
        lines.close()
        code = proc.wait()
    finally:
        pipe.close()
        if proc.returncode is None:
            _signal_group(proc, signal.SIGKILL)
            proc.wait()
    if why is not None:
        raise StepFailed(name, why)
    if code < 0:
        raise StepFailed(name, f"killed by signal {signal.Signals(-code).name}")
    if code != 0:
        raise StepFailed(name, f"{argv[0]} exited with code {code}")
    return code


def _signal_group(proc: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    # Popen.returncode stays None until we reap: until then the pid (and group) is ours.
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, sig)


def _leader_exited(proc: subprocess.Popen[bytes]) -> bool:
    """True once the leader has exited; it is not reaped (WNOWAIT)."""
    try:
        info = os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOWAIT | os.WNOHANG)
    except ChildProcessError:
        return True
    return info is not None and bool(info.si_pid != 0)
