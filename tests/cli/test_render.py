"""The CLI's text output: tables on a terminal and piped, colors, numbers, describe."""

from __future__ import annotations

import io
import re
from typing import Any

import pytest

from corral.cli import render
from corral.cli.render import Style

BOX = set("┌┬┐│├┼┤└┴┘─")
ESC = "\x1b"
TTY = Style(tty=True, color=True)
TTY_NO_COLOR = Style(tty=True, color=False)
PIPED = Style(tty=False, color=False)


def record(**over: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "schema": 1,
        "id": 0,
        "name": "api",
        "instance": 0,
        "pid": 4242,
        "status": "online",
        "exec_mode": "fork",
        "instances": 1,
        "restarts": 3,
        "unstable_restarts": 1,
        "created_at": 1_700_000_000.0,
        "started_at": 1_700_000_100.0,
        "uptime": 125.0,
        "exit_code": None,
        "exit_signal": None,
        "error": None,
        "cpu": 1.4,
        "memory": 12_900_000,
        "user": "alice",
        "script": "/srv/app.py",
        "args": ["--port", "8000"],
        "interpreter": "python3",
        "cwd": "/srv",
        "autorestart": True,
        "watch": False,
        "out_log": "/h/logs/api-out.log",
        "err_log": "/h/logs/api-err.log",
    }
    base.update(over)
    return base


class FakeStream(io.StringIO):
    def __init__(self, tty: bool) -> None:
        super().__init__()
        self._tty = tty

    def isatty(self) -> bool:
        return self._tty


# --- Numbers ---


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (None, "-"),
        (0, "0b"),
        (512, "512b"),
        (1023, "1023b"),
        (1536, "1.5kb"),
        (12_900_000, "12.3mb"),
        (int(1.2 * 1024**3), "1.2gb"),
        (5 * 1024**4, "5120.0gb"),
    ],
)
def test_format_memory(value: int | None, text: str) -> None:
    assert render.format_memory(value) == text


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (None, "-"),
        (0, "0s"),
        (5.9, "5s"),
        (59, "59s"),
        (60, "1m"),
        (180, "3m"),
        (3599, "59m"),
        (7200, "2h"),
        (86399, "23h"),
        (4 * 86400 + 5, "4D"),
        (-3, "0s"),
    ],
)
def test_format_uptime(seconds: float | None, text: str) -> None:
    assert render.format_uptime(seconds) == text


def test_format_cpu() -> None:
    assert render.format_cpu(None) == "-"
    assert render.format_cpu(0) == "0%"
    assert render.format_cpu(12.6) == "13%"
    assert render.format_cpu(250.0) == "250%"


def test_format_exit() -> None:
    assert render.format_exit(record()) == "-"
    assert render.format_exit(record(exit_code=3)) == "code 3"
    assert render.format_exit(record(exit_code=0)) == "code 0"
    assert render.format_exit(record(exit_signal="SIGKILL")) == "SIGKILL"


# --- Style ---


def test_style_terminal_has_colors() -> None:
    style = Style.detect(FakeStream(tty=True), environ={})
    assert style.tty and style.color


def test_style_piped_is_plain() -> None:
    style = Style.detect(FakeStream(tty=False), environ={})
    assert not style.tty and not style.color


@pytest.mark.parametrize("env", [{"NO_COLOR": "1"}, {"TERM": "dumb"}])
def test_style_no_color_keeps_the_borders(env: dict[str, str]) -> None:
    style = Style.detect(FakeStream(tty=True), environ=env)
    assert style.tty and not style.color


def test_style_empty_no_color_is_ignored() -> None:
    # no-color.org: only a non-empty NO_COLOR disables colors.
    assert Style.detect(FakeStream(tty=True), environ={"NO_COLOR": ""}).color


def test_style_stream_without_isatty() -> None:
    class Closed(io.StringIO):
        def isatty(self) -> bool:
            raise ValueError("closed")

    assert not Style.detect(Closed(), environ={}).tty


def test_paint() -> None:
    assert TTY.paint("x", render.GREEN) == "\x1b[32mx\x1b[0m"
    assert TTY.paint("x", None) == "x"
    assert TTY.paint("", render.GREEN) == ""
    assert PIPED.paint("x", render.GREEN) == "x"


# --- Tables ---


def columns_of(header: str, line: str, name: str) -> str:
    """The text of column `name` in `line`, from its header's offset to the next one."""
    start = header.index(name)
    names = header.split()
    after = names.index(name) + 1
    end = header.index(names[after], start) if after < len(names) else None
    return line[start:end].strip()


def test_piped_table_is_plain_text() -> None:
    text = render.process_table([record(), record(id=1, name="worker", status="errored")], PIPED)
    assert ESC not in text
    assert not BOX & set(text)
    lines = text.splitlines()
    assert lines[0].split() == [
        "id",
        "name",
        "mode",
        "restarts",
        "status",
        "cpu",
        "memory",
        "uptime",
        "pid",
        "user",
    ]
    assert len(lines) == 3
    row = ["0", "api", "fork", "3", "online", "1%", "12.3mb", "2m", "4242", "alice"]
    assert lines[1].split() == row
    assert columns_of(lines[0], lines[2], "status") == "errored"
    assert all(line == line.rstrip() for line in lines)


def test_piped_columns_are_aligned() -> None:
    records = [
        record(name="a"),
        record(id=7, name="a-much-longer-name", pid=None, status="stopped"),
    ]
    lines = render.process_table(records, PIPED).splitlines()
    offsets = {line.index("fork") for line in lines[1:]}
    assert len(offsets) == 1
    assert lines[0].index("mode") == offsets.pop()


def test_terminal_table_has_borders_and_colors() -> None:
    records = [
        record(),
        record(id=1, name="b", status="errored"),
        record(id=2, name="c", status="stopped", pid=None),
        record(id=3, name="d", status="launching"),
        record(id=4, name="e", status="waiting-restart"),
        record(id=5, name="f", status="stopping"),
    ]
    text = render.process_table(records, TTY)
    lines = text.splitlines()
    assert lines[0].startswith("┌") and lines[-1].startswith("└")
    assert "↺" in lines[1]
    assert "\x1b[32monline" in text
    assert "\x1b[31merrored" in text
    assert "\x1b[90mstopped" in text
    for status in ("launching", "waiting-restart", "stopping"):
        assert f"\x1b[33m{status}" in text
    plain = re.sub(r"\x1b\[[0-9;]*m", "", text)
    assert len({len(line) for line in plain.splitlines()}) == 1  # a rectangle


def test_terminal_table_without_colors() -> None:
    text = render.process_table([record()], TTY_NO_COLOR)
    assert ESC not in text
    assert "┌" in text and "online" in text


def test_inst_column_only_with_several_instances() -> None:
    single = render.process_table([record()], PIPED).splitlines()[0].split()
    assert "inst" not in single
    several = [
        record(instances=2),
        record(instance=1, instances=2, pid=4243),
        record(id=1, name="solo"),
    ]
    lines = render.process_table(several, PIPED).splitlines()
    assert lines[0].split()[:3] == ["id", "name", "inst"]
    assert [columns_of(lines[0], line, "inst") for line in lines[1:]] == ["0", "1", "0"]


def test_rows_are_sorted_by_id_then_instance() -> None:
    records = [record(id=2, name="z"), record(instance=1, instances=2), record(instances=2)]
    lines = render.process_table(records, PIPED).splitlines()[1:]
    assert [(line.split()[0], line.split()[2]) for line in lines] == [
        ("0", "0"),
        ("0", "1"),
        ("2", "0"),
    ]


def test_stopped_process_shows_dashes() -> None:
    lines = render.process_table([record(pid=None, status="stopped", uptime=None)], PIPED)
    header, row = lines.splitlines()
    assert columns_of(header, row, "pid") == "-"
    assert columns_of(header, row, "uptime") == "-"


def test_stale_uptime_of_a_stopped_process_is_hidden() -> None:
    header, row = render.process_table([record(pid=None, status="stopped")], PIPED).splitlines()
    assert columns_of(header, row, "uptime") == "-"


def test_empty_table_is_a_header() -> None:
    assert render.process_table([], PIPED).splitlines()[0].startswith("id")
    assert len(render.process_table([], TTY).splitlines()) == 4


def test_table_right_alignment() -> None:
    text = render.table(["n", "word"], [["1", "a"], ["100", "bb"]], PIPED, right=[0])
    assert text.splitlines() == ["  n  word", "  1  a", "100  bb"]


# --- describe, env, logs ---


def description(**over: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "id": 0,
        "name": "api",
        "config": {
            "name": "api",
            "script": "/srv/app.py",
            "args": ["--port", "8000", "two words"],
            "interpreter": "python3",
            "interpreter_args": [],
            "cwd": "/srv",
            "instances": 2,
            "exec_mode": "fork",
            "autorestart": True,
            "watch": ["/srv/src"],
            "max_memory_restart": 200 * 1024 * 1024,
            "cron_restart": "0 3 * * *",
            "user": None,
        },
        "env_name": "production",
        "created_at": 1_700_000_000.0,
        "instances": [
            record(instances=2),
            record(instance=1, instances=2, pid=None, status="errored", error="boom", exit_code=1),
        ],
        "events": [
            {"at": 1_700_000_050.0, "instance": 1, "from": "online", "to": "errored", "reason": "x"}
        ],
    }
    base.update(over)
    return base


def kv(text: str) -> dict[str, str]:
    pairs = {}
    for line in text.splitlines():
        match = re.match(r"^  ([a-z][a-z ()]*?)\s{2,}(.*)$", line)
        if match:
            pairs[match[1]] = match[2]
    return pairs


def test_describe_piped() -> None:
    text = render.describe([description()], PIPED)
    assert ESC not in text and not BOX & set(text)
    assert text.splitlines()[0] == "api (id 0)"
    pairs = kv(text)
    assert pairs["status"] == "online 1, errored 1"
    assert pairs["id"] == "0"
    assert pairs["instances"] == "2"
    assert pairs["script"] == "/srv/app.py"
    assert pairs["args"] == "--port 8000 'two words'"
    assert pairs["interpreter"] == "python3"
    assert pairs["cwd"] == "/srv"
    assert pairs["exec mode"] == "fork"
    assert pairs["restarts"] == "6"
    assert pairs["unstable restarts"] == "2"
    assert pairs["uptime"] == "2m"
    assert pairs["pid"] == "4242"
    assert pairs["out log"] == "/h/logs/api-out.log"
    assert pairs["autorestart"] == "yes"
    assert pairs["watch"] == "/srv/src"
    assert pairs["max memory"] == "200.0mb"
    assert pairs["cron"] == "0 3 * * *"
    assert pairs["user"] == "alice"
    assert pairs["env profile"] == "production"
    assert pairs["error"] == "boom"
    assert "created at" in pairs
    assert "recent events" in text
    assert "online -> errored  (x)" in text
    assert "code 1" in text  # the instance rows


def test_describe_minimal_app() -> None:
    app = {"id": 3, "name": "w", "config": {}, "instances": [], "events": []}
    pairs = kv(render.describe([app], PIPED))
    assert pairs["status"] == "stopped"
    assert pairs["watch"] == "off"
    assert pairs["max memory"] == "-"
    assert pairs["env profile"] == "-"


def test_describe_terminal_colors() -> None:
    text = render.describe([description()], TTY)
    assert "\x1b[32monline" in text and "\x1b[31merrored" in text
    assert "┌" in text


def test_env_lines_sorted() -> None:
    entries = [{"name": "api", "instance": 0, "env": {"B": "2", "A": "1", "PATH": "/bin"}}]
    assert render.env_lines(entries) == "A=1\nB=2\nPATH=/bin"


def test_env_lines_several_instances() -> None:
    entries = [
        {"name": "api", "instance": 0, "env": {"X": "0"}},
        {"name": "api", "instance": 1, "env": {"X": "1"}},
    ]
    assert render.env_lines(entries) == "# api:0\nX=0\n\n# api:1\nX=1"


def test_log_prefix() -> None:
    assert render.log_prefix("api", 0, "out", PIPED) == "api|0| "
    colored = render.log_prefix("api", 1, "out", TTY)
    assert colored.startswith(ESC) and "api|1|" in colored
    assert render.log_prefix("api", 1, "err", TTY).startswith("\x1b[31m")
    assert render.log_prefix("api", 1, "out", TTY) == render.log_prefix("api", 1, "out", TTY)
