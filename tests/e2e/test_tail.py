"""The daemon's `tail` command and per-app `flush`, on a real daemon with real apps."""

from __future__ import annotations

from typing import Any

import pytest

from corral.core.logtail import CUT_MARKER, MAX_LINE
from corral.protocol.wire import ErrorCode, ProtocolError

from ..conftest import Corral, wait_for

pytestmark = pytest.mark.slow

PRINTER = """
import sys, time
for i in range({count}):
    print(f"out {{i}}")
    print(f"err {{i}}", file=sys.stderr)
print("E" * {long}, flush=True)
sys.stderr.flush()
time.sleep(600)
"""


def tail(daemon: Corral, target: str, **args: object) -> list[dict[str, Any]]:
    return list(daemon.call("tail", target=target, **args))


def lines_of(entries: list[dict[str, Any]], stream: str) -> list[str]:
    return [str(e["line"]) for e in entries if e["stream"] == stream]


def started(daemon: Corral, name: str, count: int, **config: Any) -> None:
    """Start a PRINTER app and wait until each of its instances has written everything."""
    daemon.start_app(name, PRINTER.format(count=count, long=10), **config)
    files = int(config.get("instances", 1))

    def done() -> bool:
        last = tail(daemon, name, lines=1)
        return (
            lines_of(last, "out") == ["E" * 10] * files
            and lines_of(last, "err") == [f"err {count - 1}"] * files
        )

    wait_for(done)


def test_tail_out_err_both_and_the_lines_limit(daemon: Corral) -> None:
    started(daemon, "printer", 300)
    out = tail(daemon, "printer", lines=5, stream="out")
    assert out == [
        {"name": "printer", "instance": 0, "stream": "out", "line": line}
        for line in ["out 296", "out 297", "out 298", "out 299", "E" * 10]
    ]
    err = tail(daemon, "printer", lines=3, stream="err")
    assert lines_of(err, "err") == ["err 297", "err 298", "err 299"]
    assert lines_of(err, "out") == []
    both = tail(daemon, "printer", lines=2)  # default stream: both, out first
    assert [(e["stream"], e["line"]) for e in both] == [
        ("out", "out 299"),
        ("out", "E" * 10),
        ("err", "err 298"),
        ("err", "err 299"),
    ]
    every = tail(daemon, "printer")  # default: 100 lines
    assert lines_of(every, "out") == [f"out {i}" for i in range(201, 300)] + ["E" * 10]
    assert len(tail(daemon, "printer", lines=10_000, stream="out")) == 301


def test_a_long_line_is_cut_with_a_marker(daemon: Corral) -> None:
    size = 3 * MAX_LINE
    daemon.start_app("long", PRINTER.format(count=2, long=size))
    wait_for(lambda: "line cut" in str(tail(daemon, "long", lines=1, stream="out")))
    before, cut = lines_of(tail(daemon, "long", lines=2, stream="out"), "out")
    assert before == "out 1"
    assert cut == "E" * MAX_LINE + CUT_MARKER.format(size=size)


def test_each_instance_and_merged_files_once(daemon: Corral) -> None:
    started(daemon, "two", 3, instances=2)
    entries = tail(daemon, "two", lines=1, stream="out")
    assert [(e["instance"], e["line"]) for e in entries] == [(0, "E" * 10), (1, "E" * 10)]
    daemon.start_app("merged", PRINTER.format(count=3, long=10), instances=2, merge_logs=True)
    wait_for(lambda: lines_of(tail(daemon, "merged", stream="out"), "out").count("E" * 10) == 2)
    merged = tail(daemon, "merged", stream="out")
    assert {e["instance"] for e in merged} == {0}  # one file, read once
    assert sorted(lines_of(merged, "out")) == sorted(["out 0", "out 1", "out 2", "E" * 10] * 2)


def test_bad_arguments_and_unknown_apps(daemon: Corral) -> None:
    started(daemon, "known", 1)
    with pytest.raises(ProtocolError) as info:
        daemon.call("tail", target="nope")
    assert info.value.code is ErrorCode.UNKNOWN_TARGET
    assert "nope" in info.value.message
    for bad in (
        {"lines": 0},
        {"lines": 10_001},
        {"lines": "5"},
        {"lines": True},
        {"stream": "stdout"},
        {"target": ""},
    ):
        with pytest.raises(ProtocolError) as info:
            daemon.call("tail", **{"target": "known", **bad})
        assert info.value.code is ErrorCode.INVALID_ARGUMENT, bad


def test_flush_of_one_app_empties_only_its_files(daemon: Corral) -> None:
    started(daemon, "keep", 2)
    started(daemon, "clear", 2)
    flushed = daemon.call("flush", target="clear")["flushed"]
    assert flushed and all("clear" in path for path in flushed)
    assert tail(daemon, "clear") == []
    assert lines_of(tail(daemon, "keep"), "err") == ["err 0", "err 1"]
