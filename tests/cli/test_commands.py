"""The pure parts of the verbs: target resolution, tails, line joining, signals, init.

The verbs against a real daemon are tested end to end elsewhere.
"""

from __future__ import annotations

import io
import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest

from corral.cli import commands
from corral.cli.commands import (
    CliError,
    Context,
    LineJoiner,
    classify_start_target,
    normalize_signal,
    start_request,
    tail_lines,
    write_new_file,
)
from corral.cli.main import main
from corral.cli.parser import parse
from corral.config.filenames import is_config_file
from corral.paths import Home


def classify(
    target: str, cwd: Path, app_cwd: str | None = None, on_path: frozenset[str] = frozenset()
) -> str:
    return classify_start_target(
        target,
        cwd=str(cwd),
        app_cwd=app_cwd,
        is_config=is_config_file,
        which=lambda word: f"/usr/bin/{word}" if word in on_path else None,
    )


# --- start: what the target means ---


@pytest.mark.parametrize(
    "name",
    ["corral.yaml", "corral.yml", "apps.toml", "ecosystem.config.json", "Procfile", "x/c.yaml"],
)
def test_config_files_by_name(tmp_path: Path, name: str) -> None:
    # Even a missing one: load_file then says "no such file" naming it.
    assert classify(name, tmp_path) == "config"


def test_existing_file_is_a_new_app(tmp_path: Path) -> None:
    (tmp_path / "app.py").write_text("")
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "server").write_text("")
    assert classify("app.py", tmp_path) == "new"
    assert classify("bin/server", tmp_path) == "new"
    assert classify(str(tmp_path / "app.py"), Path("/")) == "new"


def test_file_in_the_app_cwd_is_a_new_app(tmp_path: Path) -> None:
    (tmp_path / "srv").mkdir()
    (tmp_path / "srv" / "main.py").write_text("")
    assert classify("main.py", tmp_path) == "target"
    assert classify("main.py", tmp_path, app_cwd="srv") == "new"


def test_command_line_is_a_new_app(tmp_path: Path) -> None:
    assert classify("python3 -m http.server", tmp_path) == "new"
    assert classify("anything at all", tmp_path) == "new"


def test_program_on_path_is_a_program(tmp_path: Path) -> None:
    assert classify("gunicorn", tmp_path, on_path=frozenset({"gunicorn"})) == "program"


def test_names_ids_all_and_regexes_are_targets(tmp_path: Path) -> None:
    for target in ("api", "3", "all", "/^api-/", "api.v2"):
        assert classify(target, tmp_path) == "target"


def test_directory_is_not_a_script(tmp_path: Path) -> None:
    (tmp_path / "api").mkdir()
    assert classify("api", tmp_path) == "target"


def test_a_regex_is_never_looked_up_on_path(tmp_path: Path) -> None:
    assert classify("/x/", tmp_path, on_path=frozenset({"/x/"})) == "target"


# --- start: the request ---


def test_start_request_env_filtering() -> None:
    class App:
        def to_dict(self) -> dict[str, Any]:
            return {"name": "a"}

    environ = {"PATH": "/bin", "AWS_KEY": "k"}
    ns = parse(["start", "x.yaml", "--env", "prod", "-f"])
    request = start_request([App()], ns, environ)  # type: ignore[list-item]
    assert request == {
        "apps": [{"name": "a"}],
        "cli_env": environ,
        "env_name": "prod",
        "force": True,
    }
    ns = parse(["start", "x.yaml", "--filter-env", "AWS_"])
    request = start_request([App()], ns, environ)  # type: ignore[list-item]
    assert request["cli_env"] == {"PATH": "/bin"}
    assert request["env_name"] is None and request["force"] is False
    ns = parse(["start", "x.yaml", "--filter-env"])
    assert start_request([App()], ns, environ)["cli_env"] is None  # type: ignore[list-item]


# --- Signals ---


@pytest.mark.parametrize(
    ("text", "value"),
    [("SIGUSR1", "SIGUSR1"), ("usr2", "SIGUSR2"), ("sigterm", "SIGTERM"), ("9", 9), (" 15 ", 15)],
)
def test_normalize_signal(text: str, value: str | int) -> None:
    assert normalize_signal(text) == value


# --- Tails ---


def write(path: Path, data: bytes) -> str:
    path.write_bytes(data)
    return str(path)


def test_tail_small_file(tmp_path: Path) -> None:
    path = write(tmp_path / "a.log", b"one\ntwo\nthree\n")
    assert tail_lines(path, 2) == ["two", "three"]
    assert tail_lines(path, 3) == ["one", "two", "three"]
    assert tail_lines(path, 10) == ["one", "two", "three"]
    assert tail_lines(path, 0) == []


def test_tail_last_line_without_newline(tmp_path: Path) -> None:
    path = write(tmp_path / "a.log", b"one\ntwo\npartial")
    assert tail_lines(path, 2) == ["two", "partial"]


def test_tail_empty_lines_and_empty_file(tmp_path: Path) -> None:
    assert tail_lines(write(tmp_path / "e.log", b""), 5) == []
    assert tail_lines(write(tmp_path / "n.log", b"\n\nx\n"), 5) == ["", "", "x"]


def test_tail_invalid_utf8(tmp_path: Path) -> None:
    assert tail_lines(write(tmp_path / "a.log", b"ok\n\xff\xfebad\n"), 5) == [
        "ok",
        "\ufffd\ufffdbad",
    ]


def test_tail_across_blocks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(commands, "TAIL_BLOCK", 16)
    lines = [f"line {i:04d}" for i in range(1000)]
    path = write(tmp_path / "big.log", ("\n".join(lines) + "\n").encode())
    assert tail_lines(path, 15) == lines[-15:]
    assert tail_lines(path, 1) == lines[-1:]
    assert tail_lines(path, 1000) == lines
    assert tail_lines(path, 5000) == lines


def test_tail_reads_only_the_end(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(commands, "TAIL_BLOCK", 64)
    path = write(tmp_path / "big.log", b"x" * 100_000 + b"\nlast\n")
    reads: list[int] = []
    real_open = open

    def spy_open(file: str, mode: str = "r") -> Any:
        handle = real_open(file, mode)
        original = handle.read

        def read(size: int = -1) -> bytes:
            reads.append(size)
            data: bytes = original(size)
            return data

        handle.read = read  # type: ignore[method-assign]
        return handle

    monkeypatch.setattr("builtins.open", spy_open)
    assert tail_lines(path, 1) == ["last"]
    assert sum(reads) <= 128


def test_tail_giant_line_is_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(commands, "TAIL_BLOCK", 1024)
    monkeypatch.setattr(commands, "TAIL_MAX_BYTES", 4096)
    path = write(tmp_path / "giant.log", b"start\n" + b"y" * 50_000 + b"\n")
    (line,) = tail_lines(path, 3)
    assert set(line) == {"y"}
    assert len(line) <= 4096


# --- Live log chunks back into lines ---


def test_line_joiner() -> None:
    joiner = LineJoiner()
    assert joiner.feed("a", 0, "out", "hel") == []
    assert joiner.feed("a", 1, "out", "other\n") == ["other"]
    assert joiner.feed("a", 0, "err", "err line\nnext") == ["err line"]
    assert joiner.feed("a", 0, "out", "lo\nwor") == ["hello"]
    assert joiner.feed("a", 0, "out", "ld\n\n") == ["world", ""]
    assert joiner.flush() == [("a", 0, "err", "next")]
    assert joiner.flush() == []


def test_line_joiner_bounds_a_partial_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(LineJoiner, "PARTIAL_MAX", 10)
    joiner = LineJoiner()
    assert joiner.feed("a", 0, "out", "x" * 11) == ["x" * 11]
    assert joiner.flush() == []


# --- init ---


def test_write_new_file(tmp_path: Path) -> None:
    path = tmp_path / "corral.yaml"
    write_new_file(str(path), b"one", force=False)
    assert path.read_bytes() == b"one"
    with pytest.raises(FileExistsError):
        write_new_file(str(path), b"two", force=False)
    assert path.read_bytes() == b"one"
    write_new_file(str(path), b"three", force=True)
    assert path.read_bytes() == b"three"
    assert sorted(os.listdir(tmp_path)) == ["corral.yaml"]  # no temp file left
    assert stat.S_IMODE(path.stat().st_mode) == 0o644 & ~_umask()


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def test_init(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from corral.config.template import EXAMPLE_YAML

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CORRAL_HOME", str(tmp_path / "home"))
    assert main(["init"]) == 0
    assert (tmp_path / "corral.yaml").read_text() == EXAMPLE_YAML
    capsys.readouterr()
    (tmp_path / "corral.yaml").write_text("mine")
    assert main(["init"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("corral: ") and "--force" in err and err.count("\n") == 1
    assert (tmp_path / "corral.yaml").read_text() == "mine"
    assert main(["init", "--force"]) == 0
    assert (tmp_path / "corral.yaml").read_text() == EXAMPLE_YAML
    assert main(["init", "other.yaml"]) == 0
    assert (tmp_path / "other.yaml").exists()
    assert not (tmp_path / "home").exists()  # init never needs the daemon


# --- Without a daemon ---


def test_kill_without_daemon_does_not_start_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    home = tmp_path / "home"
    monkeypatch.setenv("CORRAL_HOME", str(home))
    assert main(["kill"]) == 0
    assert "no daemon running" in capsys.readouterr().err
    assert not Home(home).socket.exists()


def test_config_flags_conflict(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CORRAL_HOME", str(tmp_path / "home"))
    (tmp_path / "corral.yaml").write_text("apps:\n  - name: a\n    script: sleep 9\n")
    assert main(["start", "corral.yaml", "--name", "x", "--watch"]) == 1
    err = capsys.readouterr().err
    assert (
        err
        == "corral: --name, --watch cannot be used with a config file (set them in corral.yaml)\n"
    )
    assert main(["start", "corral.yaml", "--", "arg"]) == 1
    assert "cannot be used with a config file" in capsys.readouterr().err


def test_config_error_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CORRAL_HOME", str(tmp_path / "home"))
    (tmp_path / "corral.yaml").write_text(
        "apps:\n  - name: a\n    script: sleep 9\n    restrat: 1\n"
    )
    assert main(["start", "corral.yaml"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("corral: corral.yaml") and "restart" in err and err.count("\n") == 1
    assert main(["start", "missing.yaml"]) == 1
    assert "no such file" in capsys.readouterr().err
    # The daemon spawned early (to overlap its start-up with the config's loading) was
    # stopped again: a mistake leaves no daemon and no app behind.
    home = Home(tmp_path / "home")
    assert not home.socket.exists()
    assert not home.pid_file.exists()
    assert not home.state.exists() or json.loads(home.state.read_text())["apps"] == []


def test_unknown_script_with_flags_is_refused_locally(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CORRAL_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("PATH", str(tmp_path))
    assert main(["start", "nope.py", "--name", "x"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("corral: no such file or program: nope.py") and err.count("\n") == 1


def test_bad_scale_count(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ctx = Context(
        Home(tmp_path / "home"), stdout=io.StringIO(), stderr=io.StringIO(), environ={}, cwd="/"
    )
    for count in ("x", "++2", "2.5", "+", ""):
        with pytest.raises(CliError) as info:
            commands.cmd_scale(ctx, parse(["scale", "api", count or "''"]))
        assert info.value.status == 2


# --- Reaching the daemon ---


class FakeProc:
    def __init__(self, status: int | None) -> None:
        self.status = status

    def poll(self) -> int | None:
        return self.status


def test_a_daemon_that_crashes_fails_fast(tmp_path: Path) -> None:
    import time

    from corral.cli.connect import DaemonUnavailable, wait_for_daemon

    home = Home(tmp_path / "home")
    began = time.monotonic()
    with pytest.raises(DaemonUnavailable) as info:
        wait_for_daemon(home, FakeProc(1), timeout=10)  # type: ignore[arg-type]
    assert time.monotonic() - began < 2
    message = str(info.value)
    assert str(home.daemon_log) in message and str(home.socket) in message
    assert "\n" not in message


def test_a_daemon_that_never_listens_times_out(tmp_path: Path) -> None:
    from corral.cli.connect import DaemonUnavailable, wait_for_daemon

    home = Home(tmp_path / "home")
    # Exit status 0: another daemon holds the lock, so keep trying until the deadline.
    with pytest.raises(DaemonUnavailable) as info:
        wait_for_daemon(home, FakeProc(0), timeout=0.2)  # type: ignore[arg-type]
    assert str(home.socket) in str(info.value) and str(home.daemon_log) in str(info.value)


def test_no_autostart(tmp_path: Path) -> None:
    from corral.cli.connect import NoDaemon, connect

    with pytest.raises(NoDaemon):
        connect(Home(tmp_path / "home"), autostart=False)
    assert not (tmp_path / "home").exists()


def test_socket_path_too_long(tmp_path: Path) -> None:
    from corral.cli.connect import DaemonUnavailable, connect

    home = Home(tmp_path / ("x" * 120))
    with pytest.raises(DaemonUnavailable, match="shorter"):
        connect(home)
    assert not home.root.exists()
