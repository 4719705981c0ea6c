"""The `tail` reader on real files: line boundaries, cut lines, scan and byte limits."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from corral.core import logtail
from corral.core.logtail import CUT_MARKER, MAX_LINE, Source, read_tails, tail_file

BIG = 10**9


def write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"", []),
        (b"\n", [""]),
        (b"a", ["a"]),
        (b"a\n", ["a"]),
        (b"a\nb", ["a", "b"]),
        (b"a\n\nb\n", ["a", "", "b"]),
        (b"\n\n", ["", ""]),
    ],
)
def test_line_boundaries_match_splitlines(tmp_path: Path, data: bytes, expected: list[str]) -> None:
    assert tail_file(write(tmp_path / "f", data), 100, BIG) == expected


def test_the_last_n_lines_across_many_blocks(tmp_path: Path) -> None:
    lines = [f"line {i:06d} " + "x" * (i % 300) for i in range(20_000)]
    path = write(tmp_path / "f", ("\n".join(lines) + "\n").encode())
    assert path.stat().st_size > 20 * logtail.BLOCK
    assert tail_file(path, 1, BIG) == lines[-1:]
    assert tail_file(path, 5000, BIG) == lines[-5000:]
    assert tail_file(path, 30_000, BIG) == lines


def test_a_long_line_keeps_its_start_and_gets_the_marker(tmp_path: Path) -> None:
    long = b"S" + b"y" * (3 * MAX_LINE) + b"E"
    path = write(tmp_path / "f", b"before\n" + long + b"\nafter\n")
    before, cut, after = tail_file(path, 10, BIG)
    assert (before, after) == ("before", "after")
    assert cut == "S" + "y" * (MAX_LINE - 1) + CUT_MARKER.format(size=len(long))


def test_a_line_of_exactly_max_line_bytes_is_whole(tmp_path: Path) -> None:
    line = "z" * MAX_LINE
    assert tail_file(write(tmp_path / "f", line.encode() + b"\n"), 3, BIG) == [line]


def test_invalid_utf8_is_replaced(tmp_path: Path) -> None:
    assert tail_file(write(tmp_path / "f", b"ok \xff\xfe\n"), 1, BIG) == ["ok \ufffd\ufffd"]


def test_reading_stops_after_scan_max(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(logtail, "SCAN_MAX", 4 * logtail.BLOCK)
    # The last line alone is longer than the scan limit: it is not shown, and says so.
    path = write(tmp_path / "f", b"first\n" + b"q" * (5 * logtail.BLOCK) + b"\n")
    (notice,) = tail_file(path, 10, BIG)
    assert notice == logtail.TOO_LONG.format(scan=4 * logtail.BLOCK)
    # Lines found before the limit are given; the one cut by the limit is not.
    short = [f"{i}" * 100 for i in range(10)]
    data = b"w" * (5 * logtail.BLOCK) + b"\n" + "\n".join(short).encode()
    assert tail_file(write(tmp_path / "g", data), 100, BIG) == short


def test_the_budget_keeps_the_newest_lines(tmp_path: Path) -> None:
    lines = [f"{i:04d}" for i in range(100)]
    path = write(tmp_path / "f", "\n".join(lines).encode())
    cost = len(json.dumps("0000")) + 10  # one line with an overhead of 10
    assert tail_file(path, 100, cost * 8 - 1, overhead=10) == lines[-7:]
    assert tail_file(path, 100, cost * 8, overhead=10) == lines[-8:]


def test_escaping_counts_against_the_budget(tmp_path: Path) -> None:
    path = write(tmp_path / "f", b"\x01" * 10 + b"\n")  # 60 bytes as \u0001 escapes
    assert tail_file(path, 1, 61) == []
    assert tail_file(path, 1, 62) == ["\x01" * 10]


def test_missing_fifo_and_devices_have_no_lines(tmp_path: Path) -> None:
    assert tail_file(tmp_path / "absent", 10, BIG) == []
    os.mkfifo(tmp_path / "fifo")
    assert tail_file(tmp_path / "fifo", 10, BIG) == []  # and it does not block
    assert tail_file(Path("/dev/null"), 10, BIG) == []


def test_a_symlink_is_refused(tmp_path: Path) -> None:
    target = write(tmp_path / "secret", b"do not show\n")
    (tmp_path / "link").symlink_to(target)
    with pytest.raises(OSError):
        tail_file(tmp_path / "link", 10, BIG)


def test_read_tails_shares_the_budget_and_keeps_the_order(tmp_path: Path) -> None:
    a = write(tmp_path / "a", b"".join(b"a%03d\n" % i for i in range(500)))
    b = write(tmp_path / "b", b"b1\nb2\n")
    sources = [Source("api", 0, "out", a), Source("api", 0, "err", b)]
    entries = read_tails(sources, 1000, 4000)
    assert entries[-2:] == [
        {"name": "api", "instance": 0, "stream": "err", "line": "b1"},
        {"name": "api", "instance": 0, "stream": "err", "line": "b2"},
    ]
    from_a = [e["line"] for e in entries if e["stream"] == "out"]
    assert 0 < len(from_a) < 500
    assert from_a == [f"a{i:03d}" for i in range(500 - len(from_a), 500)]
    wire = json.dumps(entries, separators=(",", ":"), ensure_ascii=False)
    assert len(wire.encode()) <= 4000
