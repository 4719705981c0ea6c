"""`corral monit` without a terminal: the View's state, keys and the rows it draws."""

from __future__ import annotations

import io
import json
import socket
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import pytest

from corral.cli import monit
from corral.cli.commands import Context
from corral.cli.monit import (
    MIN_HEIGHT,
    MIN_WIDTH,
    Action,
    LogFeed,
    Monitor,
    View,
    clip,
    clip_left,
    filter_records,
    fit_row,
    host_text,
    layout_columns,
    metric_text,
    render_text,
    row_text,
    text_width,
)
from corral.paths import Home
from corral.protocol.wire import ErrorCode, ProtocolError

if TYPE_CHECKING:
    from corral.protocol.client import ControlClient

HOST = {
    "load1": 0.52,
    "load5": 0.4,
    "load15": 0.25,
    "mem_total": 16 * 1024**3,
    "mem_available": 12 * 1024**3,
    "swap_used": 0,
    "cpu_count": 8,
    "cpu_percent": 12.3,
}


def record(name: str = "api", **over: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "schema": 1,
        "id": 0,
        "name": name,
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
        "exit_code": 1,
        "exit_signal": None,
        "error": None,
        "cpu": 1.4,
        "memory": 12_900_000,
        "user": "app",
        "script": f"/srv/{name}/main.py",
        "args": [],
        "interpreter": "/usr/bin/python3",
        "cwd": f"/srv/{name}",
        "autorestart": True,
        "watch": False,
        "out_log": f"/home/app/.corral/logs/{name}-out.log",
        "err_log": f"/home/app/.corral/logs/{name}-err.log",
        "log_dropped": 0,
    }
    base.update(over)
    return base


def many(count: int) -> list[dict[str, Any]]:
    return [record(f"app{i:02d}", id=i, pid=1000 + i) for i in range(count)]


def view_with(records: list[dict[str, Any]], **kwargs: Any) -> View:
    view = View(**kwargs)
    view.set_records(records)
    view.set_host(HOST)
    return view


def screen(view: View, width: int = 120, height: int = 40) -> list[str]:
    return render_text(view, width, height).split("\n")


def selected_name(view: View) -> str:
    selected = view.selected()
    assert selected is not None
    return str(selected["name"])


# --- Text measurement and clipping ---


def test_clip_counts_wide_characters_as_two_cells() -> None:
    assert text_width("日本") == 4
    assert clip("日本語", 5) == "日本"
    assert clip("abcdef", 4, "…") == "abc…"
    assert clip("abc", 4, "…") == "abc"
    assert clip("abc", 0) == ""
    assert clip_left("/a/very/long/path/file.log", 10, "…") == "…/file.log"


def test_fit_row_is_exactly_the_width() -> None:
    row = fit_row([("hello ", "a"), ("world", "b")], 8)
    assert row_text(row) == "hello wo"
    assert fit_row([("hi", "")], 5) == [("hi", ""), ("   ", "")]
    assert row_text(fit_row([("日本語", "")], 5)) == "日本 "


# --- Selection ---


def test_selection_moves_and_stops_at_both_ends() -> None:
    view = view_with(many(3))
    assert selected_name(view) == "app00"
    view.handle_key("down")
    view.handle_key("j")
    assert selected_name(view) == "app02"
    view.handle_key("j")
    assert selected_name(view) == "app02"
    view.handle_key("k")
    assert selected_name(view) == "app01"
    view.handle_key("up")
    view.handle_key("up")
    assert selected_name(view) == "app00"
    view.handle_key("end")
    assert selected_name(view) == "app02"
    view.handle_key("home")
    assert selected_name(view) == "app00"


def test_page_keys_move_by_the_visible_rows() -> None:
    view = view_with(many(50))
    screen(view, 120, 30)  # the list pane: half the body (14 lines), 12 process rows
    view.handle_key("pgdn")
    assert view.selected_index() == 12
    view.handle_key("pgdn")
    assert view.selected_index() == 24
    view.handle_key("pgup")
    assert view.selected_index() == 12
    view.handle_key("end")
    view.handle_key("pgdn")
    assert view.selected_index() == 49


def test_selection_follows_its_instance_when_the_records_change() -> None:
    view = view_with(many(3))
    view.handle_key("j")
    assert view.selected_key() == (1, 0)
    records = many(3)
    view.set_records([records[2], records[1], records[0], record("new", id=9)])
    assert view.selected_key() == (1, 0)
    # The selected app is deleted: the selection stays on the same row.
    view.set_records([records[0], records[2]])
    assert selected_name(view) == "app02"
    view.set_records([])
    assert view.selected() is None and view.selected_key() is None
    view.handle_key("j")  # no records: no crash
    assert view.selected() is None


def test_the_list_scrolls_to_keep_the_selection_visible() -> None:
    view = view_with(many(60))
    view.handle_key("end")
    lines = screen(view, 120, 24)
    assert any("app59" in line for line in lines)
    assert not any("app00" in line for line in lines)
    view.handle_key("home")
    lines = screen(view, 120, 24)
    assert any("app00" in line for line in lines)


# --- Keys ---


def test_quit_keys() -> None:
    for key in ("q", "Q", "esc", "ctrl-c"):
        assert View().handle_key(key) == Action("quit")


def test_restart_asks_first() -> None:
    view = view_with([record("web", id=4)])
    assert view.handle_key("r") is None
    assert screen(view)[-1].strip() == "restart web? y/n"
    assert view.handle_key("y") == Action("restart", "4", "web")
    assert view.mode == "normal"


def test_restart_is_cancelled_by_any_other_key() -> None:
    view = view_with([record("web")])
    view.handle_key("r")
    assert view.handle_key("q") is None  # not a quit: it answers the question
    assert "cancelled" in screen(view)[-1]
    view.handle_key("r")
    view.handle_key("resize")  # a resize keeps the question
    assert "restart web? y/n" in screen(view)[-1]
    assert view.handle_key("n") is None


def test_restart_without_a_selection_does_nothing() -> None:
    view = view_with([])
    assert view.handle_key("r") is None
    assert view.mode == "normal"


def test_help_line() -> None:
    view = view_with([record()])
    view.handle_key("?")
    footer = screen(view)[-1]
    assert "q/Esc/Ctrl-C quit" in footer and "r restart" in footer
    view.handle_key("?")  # toggles off
    assert "q/Esc" not in screen(view)[-1]
    view.handle_key("?")
    assert view.handle_key("q") == Action("quit")


# --- Rows ---


def test_process_rows() -> None:
    view = view_with(
        [
            record("api", id=0, cpu=12.6, memory=1536 * 1024, uptime=7200.0),
            record("worker", id=1, instance=0, status="stopped", pid=None, cpu=None, memory=None),
            record("worker", id=1, instance=1, status="errored", pid=None, restarts=16),
        ]
    )
    lines = screen(view)
    header = next(line for line in lines if " name " in line)
    for column in ("id", "name", "inst", "status", "cpu", "memory", "↺", "uptime"):
        assert column in header
    api = next(line for line in lines if " api " in line)
    assert "online" in api and "13%" in api and "1.5mb" in api and "2h" in api
    stopped = next(line for line in lines if "stopped" in line)
    assert stopped.split("│")[0].split()[-4:] == ["-", "-", "3", "-"]
    assert any("errored" in line and " 16 " in line for line in lines)


def test_rows_are_styled_by_status_and_selection() -> None:
    view = view_with([record("api"), record("db", id=1, status="errored")])
    rows = view.render(120, 40)
    api_row = next(row for row in rows if "api" in row_text(row) and "online" in row_text(row))
    tags = {tag for _, tag in api_row}
    assert "selected status:online" in tags
    db_row = next(row for row in rows if " db " in row_text(row))
    assert "status:errored" in {tag for _, tag in db_row}
    assert not any("selected" in tag for _, tag in db_row)


def test_narrow_list_drops_the_least_useful_columns_first() -> None:
    records = [record("a-rather-long-application-name")]
    keys = [c.key for c, _ in layout_columns(records, 200)]
    assert keys == ["id", "name", "inst", "status", "cpu", "memory", "restarts", "uptime"]
    narrow = [c.key for c, _ in layout_columns(records, 40)]
    assert "uptime" not in narrow and {"id", "name", "status"} <= set(narrow)
    tiny = layout_columns(records, 20)
    assert [c.key for c, _ in tiny] == ["id", "name", "status"]


def test_long_names_are_cut_with_an_ellipsis() -> None:
    view = view_with([record("x" * 80)])
    lines = screen(view, 80, 24)
    assert any("x…" in line for line in lines)
    assert all(text_width(line) == 80 for line in lines)


# --- Details ---


def test_details_of_the_selected_instance() -> None:
    view = view_with(
        [
            record("api"),
            record(
                "db",
                id=1,
                pid=777,
                restarts=5,
                unstable_restarts=2,
                exit_code=None,
                exit_signal="SIGKILL",
                processes=3,
                threads=9,
                fds=21,
                status_text="warming up",
            ),
        ]
    )
    view.handle_key("j")
    text = "\n".join(screen(view))
    assert "db:0  (id 1)" in text
    assert "777" in text and "5 (2 unstable)" in text and "SIGKILL" in text
    assert "3 processes, 9 threads, 21 fds" in text
    assert "warming up" in text
    assert "/srv/db/main.py" in text and "db-out.log" in text and "db-err.log" in text


def test_details_show_app_metrics_when_present() -> None:
    metrics = {
        "requests": {"kind": "counter", "value": 5.0},
        "queue_depth": {"kind": "gauge", "value": 7},
        "jobs": {"kind": "meter", "rate": 2.345},
        "latency_ms": {"kind": "histogram", "count": 4, "p50": 1.25, "p95": 3.5},
    }
    view = view_with([record(app_metrics=metrics)])
    lines = screen(view)
    text = "\n".join(lines)
    assert "app metrics" in text
    assert any("requests" in line and " 5 " in line and "counter" in line for line in lines)
    assert any("queue_depth" in line and " 7 " in line and "gauge" in line for line in lines)
    assert any("jobs" in line and "2.35/s" in line for line in lines)
    assert any("latency_ms" in line and "p50 1.25 p95 3.5 count 4" in line for line in lines)
    # Percentiles come first (in order), whatever order the daemon sent.
    histogram = {"kind": "histogram", "count": 9, "max": 40, "p99": 30, "p50": 2, "p100": 40}
    assert metric_text(histogram) == ("p50 2 p99 30 p100 40 count 9 max 40", "histogram")


def test_details_tolerate_missing_and_odd_fields() -> None:
    view = view_with([{"id": 3, "name": "bare", "instance": 0, "app_metrics": {"x": 1}}])
    text = "\n".join(screen(view))
    assert "bare:0" in text and "x " in text
    assert metric_text({"kind": "gauge"}) == ("-", "gauge")
    assert metric_text("odd") == ("odd", "")


def test_long_errors_and_status_texts_wrap() -> None:
    error = "3 unstable restarts in a row (each ran less than min_uptime 1s): errored"
    view = view_with([record(status="errored", error=error, status_text="s" * 300)])
    lines = screen(view, 120, 40)
    left = [line.split("│")[0] for line in lines]
    start = next(i for i, line in enumerate(left) if line.startswith(" error "))
    joined = " ".join(line[14:].strip() for line in left[start : start + 2])
    assert joined == error
    status = [line for line in left if "sss" in line]
    assert len(status) == 3 and status[-1].rstrip().endswith("…")


def test_long_paths_keep_their_end() -> None:
    path = "/very/" + "deep/" * 40 + "app-out.log"
    view = view_with([record(out_log=path)])
    lines = screen(view, 120, 40)
    assert any("…" in line and "app-out.log" in line for line in lines)


def test_empty_list() -> None:
    view = view_with([])
    text = "\n".join(screen(view))
    assert "Processes (0)" in text and "no processes" in text and "nothing selected" in text


# --- Logs ---


def test_log_pane_keeps_only_the_last_lines() -> None:
    view = View(log_keep=5)
    view.set_records([record()])
    view.set_logs("api:0", [("out", f"line {i}") for i in range(10)])
    assert [text for _, text in view.logs] == [f"line {i}" for i in range(5, 10)]
    view.add_log("err", "oops")
    assert list(view.logs)[-1] == ("err", "oops")
    assert len(view.logs) == 5


def test_log_pane_shows_the_newest_lines_that_fit() -> None:
    view = view_with([record()])
    view.set_logs("api:0", [("out", f"line {i:03d}") for i in range(300)])
    view.add_log("err", "the last one")
    lines = screen(view, 120, 30)
    assert "Logs api:0" in "\n".join(lines)
    assert "the last one" in lines[-2]
    assert "line 299" in lines[-3]
    assert not any("line 000" in line for line in lines)
    err_row = view.render(120, 30)[-2]
    assert "err" in {tag for _, tag in err_row}


def test_log_lines_lose_control_characters() -> None:
    view = View()
    view.add_log("out", "a\tb\x1b[31mred\x00")
    assert list(view.logs) == [("out", "a   b?[31mred?")]
    ascii_view = View(unicode=False)
    ascii_view.add_log("out", "café")
    assert list(ascii_view.logs) == [("out", "caf?")]


# --- Host line ---


def test_host_line() -> None:
    text = host_text(HOST, True)
    assert "load 0.52 0.40 0.25" in text
    assert "mem 4.0gb / 16.0gb" in text
    assert "8 CPUs 12%" in text
    assert "swap" not in text
    assert "swap 1.0mb" in host_text({**HOST, "swap_used": 1024 * 1024}, True)
    assert host_text(None, False) == "host metrics unavailable"
    assert "waiting" in host_text(None, True)
    assert host_text({"cpu_count": 1}, True) == "1 CPU"


def test_host_line_unavailable_and_connection_errors() -> None:
    view = view_with([record()])
    view.set_host(None, available=False)
    assert "host metrics unavailable" in screen(view)[0]
    view.set_error("lost the connection to the daemon (gone)")
    assert "lost the connection" in screen(view)[0]


# --- Sizes ---


@pytest.mark.parametrize(
    ("width", "height"),
    [(120, 40), (100, 30), (99, 30), (80, 24), (MIN_WIDTH, MIN_HEIGHT), (250, 80), (41, 11)],
)
def test_every_row_is_exactly_the_terminal_width(width: int, height: int) -> None:
    view = view_with(many(30))
    view.records[0] = {**view.records[0], "app_metrics": {"n" * 50: {"kind": "gauge"}}}
    view.set_logs("t", [("out", "日本語 " * 60), ("err", "x" * 500)])
    rows = view.render(width, height)
    assert len(rows) == height
    for row in rows:
        assert text_width(row_text(row)) == width


@pytest.mark.parametrize(("width", "height"), [(39, 40), (120, 9), (10, 3), (1, 1)])
def test_a_small_terminal_says_so(width: int, height: int) -> None:
    view = view_with(many(3))
    lines = screen(view, width, height)
    assert len(lines) == height
    assert lines[0] == clip("terminal too small", width).ljust(width)
    assert View().render(0, 0) == []


def test_narrow_terminal_stacks_the_panes() -> None:
    view = view_with([record("api")])
    view.set_logs("api:0", [("out", "hello")])
    lines = screen(view, 80, 24)
    assert "│" not in "".join(lines[1:-1])
    titles = [
        i for i, line in enumerate(lines) if line.startswith((" Processes", " api:0", " Logs"))
    ]
    assert len(titles) == 3 and titles == sorted(titles)
    wide = screen(view, 120, 40)
    assert all("│" in line for line in wide[1:-1])


def test_ascii_mode_draws_no_unicode() -> None:
    view = view_with([record("api")], unicode=False)
    view.set_logs("api:0", [("out", "x")])
    for width, height in ((120, 40), (80, 24)):
        assert render_text(view, width, height).isascii()


# --- Targets ---


def test_filter_records_by_target() -> None:
    records = [record("api", id=0), record("7", id=1), record("web", id=7), record("api2", id=3)]
    assert [r["name"] for r in filter_records(None, records)] == ["api", "7", "web", "api2"]
    assert [r["name"] for r in filter_records("all", records)] == ["api", "7", "web", "api2"]
    assert [r["name"] for r in filter_records("api", records)] == ["api"]
    assert [r["name"] for r in filter_records("/^api/", records)] == ["api", "api2"]
    assert [r["name"] for r in filter_records("7", records)] == ["web"]  # the id wins
    assert [r["name"] for r in filter_records("3", records)] == ["api2"]
    assert filter_records("/(/", records) == []


# --- Without a terminal ---


def test_monit_needs_a_terminal(tmp_path: Path) -> None:
    out, err = io.StringIO(), io.StringIO()
    ctx = Context(Home(tmp_path / "home"), stdout=out, stderr=err, environ={})
    assert monit.run(ctx) == 1
    assert err.getvalue() == "corral monit needs a terminal\n"
    assert not (tmp_path / "home").exists()  # no daemon was started


# --- The data side, with a stand-in daemon ---


class FakeClient:
    """Answers `list`, and `host` like a daemon that does not know it yet."""

    def __init__(self, records: list[dict[str, Any]]) -> None:
        self.records = records
        self.calls: list[str] = []
        self.timeout: float | None = None

    def set_timeout(self, timeout: float | None) -> None:
        self.timeout = timeout

    def call(self, cmd: str, **args: Any) -> Any:
        self.calls.append(cmd)
        if cmd == "list":
            return self.records
        if cmd == "log_files":
            return []
        raise ProtocolError(ErrorCode.UNKNOWN_COMMAND, f"unknown command {cmd!r}")

    def close(self) -> None:
        pass


def test_an_older_daemon_without_host_shows_it_unavailable(tmp_path: Path) -> None:
    client = FakeClient([record("api"), record("web", id=1)])
    view = View()
    monitor = Monitor(Home(tmp_path / "home"), cast("ControlClient", client), view, target="web")
    monitor.refresh()
    assert [r["name"] for r in view.records] == ["web"]  # the target filters
    assert "host metrics unavailable" in screen(view)[0]
    assert client.timeout is not None  # a hung daemon cannot freeze the screen for good
    monitor.refresh()
    assert client.calls == ["list", "host", "list"]  # not asked again


def read_some(feed: LogFeed) -> list[dict[str, Any]]:
    deadline = time.monotonic() + 10
    while not (messages := feed.read()):
        assert time.monotonic() < deadline, "nothing arrived"
        time.sleep(0.01)
    return messages


def test_log_feed_reads_without_blocking(tmp_path: Path) -> None:
    path = tmp_path / "s.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as server:
        server.bind(str(path))
        server.listen(1)
        feed = LogFeed(path)
        feed.open("api")
        peer, _ = server.accept()
        with peer, peer.makefile("rb") as reader:
            request = json.loads(reader.readline())
            assert request["cmd"] == "subscribe"
            assert request["args"] == {"logs": "api", "events": False}
            assert feed.read() == []  # nothing yet: returns at once
            event = {"type": "log", "name": "api", "instance": 0, "stream": "out", "data": "x"}
            line = json.dumps({"id": 1, "event": event}).encode() + b"\n"
            peer.sendall(b'{"id": 1, "ok": true, "result": {}}\n' + line[:10])
            assert read_some(feed) == [{"id": 1, "ok": True, "result": {}}]
            peer.sendall(line[10:])  # the rest of a line cut in two
            assert read_some(feed) == [{"id": 1, "event": event}]
        with pytest.raises(ConnectionError):
            read_some(feed)
        assert feed.fileno() is None
