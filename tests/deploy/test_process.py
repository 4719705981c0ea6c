"""run_command: argv only, lines out, exit codes, time-outs and cancel kill the whole group."""

from __future__ import annotations

import os
import sys
import threading
from pathlib import Path

import psutil
import pytest

from corral.deploy.process import MAX_LINE, StepFailed, run_command, shown
from tests.conftest import wait_for
from tests.deploy.conftest import base_env

PY = sys.executable


def run(argv: list[str], tmp_path: Path, timeout: float = 30.0, **kw: object) -> list[str]:
    lines: list[str] = []
    run_command(argv, cwd=tmp_path, env=base_env(), timeout=timeout, output=lines.append, **kw)  # type: ignore[arg-type]
    return lines


def test_lines_are_echoed_then_streamed_stdout_and_stderr_merged(tmp_path: Path) -> None:
    code = "import sys; print('out'); sys.stderr.write('err\\n'); print('é ok')"
    lines = run([PY, "-c", code], tmp_path)
    assert lines[0].startswith("$ ") and "-c" in lines[0]
    assert sorted(lines[1:]) == sorted(["out", "err", "é ok"])


def test_no_shell_ever(tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    lines = run(["echo", f"; touch {marker}", "$(id)"], tmp_path)
    assert lines[1] == f"; touch {marker} $(id)"
    assert not marker.exists()


def test_invalid_utf8_and_long_lines(tmp_path: Path) -> None:
    code = (
        "import sys; sys.stdout.buffer.write(b'bad \\xff byte\\n' + b'x' * 200000 + b'\\nend\\n')"
    )
    lines = run([PY, "-c", code], tmp_path)
    assert lines[1] == "bad \ufffd byte"
    assert lines[2].endswith("[line cut]") and len(lines[2]) <= MAX_LINE + 20
    assert lines[3] == "end"


def test_exit_code_fails_the_step(tmp_path: Path) -> None:
    lines: list[str] = []
    with pytest.raises(StepFailed) as caught:
        run_command(
            [PY, "-c", "print('why'); raise SystemExit(3)"],
            cwd=tmp_path,
            env=base_env(),
            timeout=30,
            output=lines.append,
            step="steps[0]",
        )
    assert caught.value.step == "steps[0]"
    assert "exited with code 3" in caught.value.message
    assert "why" in lines


def test_missing_program(tmp_path: Path) -> None:
    with pytest.raises(StepFailed, match="cannot run 'no-such-program-x'"):
        run(["no-such-program-x"], tmp_path)


def test_credentials_are_redacted_in_the_echo_and_output(tmp_path: Path) -> None:
    lines = run(["echo", "https://bob:s3cr3t@git.example.com/x.git"], tmp_path)
    assert "s3cr3t" not in "\n".join(lines)
    assert lines[1] == "https://***@git.example.com/x.git"


_SPAWNER = """
import os, subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
open(sys.argv[1], "w").write(f"{os.getpid()} {child.pid}")
print("started", flush=True)
time.sleep(300)
"""


def _procs(pids_file: Path) -> list[psutil.Process]:
    text = wait_for(lambda: pids_file.exists() and pids_file.read_text().strip())
    # handles made while the processes live: is_running() checks the create time too,
    # so a reused pid never counts as "still running"
    return [psutil.Process(int(pid)) for pid in text.split()]


def _gone(procs: list[psutil.Process]) -> bool:
    """Every process ended (a zombie waiting for pid 1 to reap it counts as ended)."""
    for proc in procs:
        try:
            if proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE:
                return False
        except psutil.NoSuchProcess:
            pass
    return True


def _run_in_thread(
    argv: list[str], tmp_path: Path, **kw: object
) -> tuple[threading.Thread, dict[str, object]]:
    result: dict[str, object] = {}

    def target() -> None:
        lines: list[str] = []
        try:
            run_command(argv, cwd=tmp_path, env=base_env(), output=lines.append, **kw)  # type: ignore[arg-type]
        except StepFailed as exc:
            result["error"] = exc
        result["lines"] = lines

    thread = threading.Thread(target=target)
    thread.start()
    return thread, result


@pytest.mark.slow
def test_timeout_kills_the_whole_process_group(tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    thread, result = _run_in_thread([PY, "-c", _SPAWNER, str(pids)], tmp_path, timeout=2.0)
    procs = _procs(pids)
    try:
        thread.join(60)
        assert not thread.is_alive()
        error = result["error"]
        assert isinstance(error, StepFailed) and error.message == "timed out after 2s"
        wait_for(lambda: _gone(procs))  # SIGKILLed ones may still be exiting
    finally:
        for proc in procs:
            if proc.is_running():
                proc.kill()


def test_cancel_stops_the_command(tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    cancel = threading.Event()
    thread, result = _run_in_thread(
        [PY, "-c", _SPAWNER, str(pids)], tmp_path, timeout=300, cancel=cancel
    )
    procs = _procs(pids)
    try:
        cancel.set()
        thread.join(60)
        assert not thread.is_alive()
        error = result["error"]
        assert isinstance(error, StepFailed) and error.message == "cancelled"
        wait_for(lambda: _gone(procs))
    finally:
        for proc in procs:
            if proc.is_running():
                proc.kill()


def test_a_finished_step_leaves_nothing_running(tmp_path: Path) -> None:
    """A step that starts a background child and exits: the child is killed with the group."""
    pids = tmp_path / "pids"
    code = (
        "import subprocess, sys; "
        "c = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(300)'], "
        "stdout=subprocess.DEVNULL); "
        "open(sys.argv[1], 'w').write(str(c.pid))"
    )
    run([PY, "-c", code, str(pids)], tmp_path)
    (child,) = _procs(pids)
    try:
        wait_for(lambda: _gone([child]))
    finally:
        if child.is_running():
            child.kill()


def test_runs_in_its_own_session(tmp_path: Path) -> None:
    lines = run([PY, "-c", "import os; print(os.getsid(0), os.getpid())"], tmp_path)
    sid, pid = (int(part) for part in lines[1].split())
    # A session leader: its session id is its own pid, never the caller's session.
    assert sid == pid
    assert sid != os.getsid(0)


def test_stdin_is_empty(tmp_path: Path) -> None:
    lines = run([PY, "-c", "import sys; print(repr(sys.stdin.read()))"], tmp_path)
    assert lines[1] == "''"


def test_works_when_the_caller_holds_many_descriptors(tmp_path: Path) -> None:
    """The daemon may hold over 1024 descriptors: the pipe is polled, not select()ed."""
    import resource

    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 1200:
        pytest.skip(f"RLIMIT_NOFILE is {soft}")
    held = [os.open(os.devnull, os.O_RDONLY) for _ in range(1100)]
    try:
        assert run([PY, "-c", "print('fine')"], tmp_path)[1:] == ["fine"]
    finally:
        for fd in held:
            os.close(fd)


def test_the_echo_of_git_leaves_out_only_its_hardening_options() -> None:
    argv = ["/usr/bin/git", "-c", "protocol.allow=never", "-C", "/c", "fetch", "-c", "x"]
    assert shown(argv) == ["/usr/bin/git", "-C", "/c", "fetch", "-c", "x"]
    assert shown([PY, "-c", "print(1)"]) == [PY, "-c", "print(1)"]
