"""`corral monit`: a live terminal dashboard of the processes (SPEC 1.3, 1.9).

Two layers. `View` is pure: it holds the state (process records, host metrics, the
selection, the log lines of the selected instance) and turns key names into state
changes and the state into rows of styled text for a given terminal size, so that it
is tested without a terminal. `run` is the thin part: a curses screen that draws those
rows, a polling connection to the daemon (`list` and `host` every second) and a second
connection subscribed to the logs of the selected app, read without ever blocking.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import select
import signal
import socket
import sys
import time
import unicodedata
from collections import deque
from typing import TYPE_CHECKING, Any, NamedTuple

from corral.cli import render
from corral.cli.commands import CliError, LineJoiner, tail_lines
from corral.protocol.wire import MAX_MESSAGE_BYTES, ErrorCode, ProtocolError, encode_message

if TYPE_CHECKING:
    import curses
    from collections.abc import Callable, Iterable, Mapping, Sequence
    from pathlib import Path

    from corral.cli.commands import Context
    from corral.paths import Home
    from corral.protocol.client import ControlClient

Segment = tuple[str, str]
"""A piece of a screen row: its text and a style tag (space-separated words, "" plain)."""
Row = list[Segment]

MIN_WIDTH = 40
MIN_HEIGHT = 10
SIDE_BY_SIDE = 100
"""From this width on, the process list and the details are side by side."""
LOG_KEEP = 500
"""Log lines kept for the selected instance."""
TAIL_LINES = 100
"""Lines read from the end of each log file when an instance is selected."""
MAX_LINE = 2000
"""Characters kept of one log line (the pane shows the start of it)."""
POLL_INTERVAL = 1.0
MAX_WAIT = 0.2
"""Longest sleep between two looks at the keyboard (a resize is noticed this fast)."""
CALL_TIMEOUT = 5.0
"""How long a request to the daemon may take before the connection counts as lost."""
CHUNK = 256 * 1024
READ_CHUNKS = 16
"""Log data read per turn of the loop at most (the daemon drops what a slow reader misses)."""
NAME_MIN = 8
KEY_WIDTH = 11
WRAP_LINES = 3
"""Lines an error or a status text may take in the details pane."""

HELP = "up/down j/k move  PgUp/PgDn page  Home/End first/last  r restart  ? help  q/Esc/Ctrl-C quit"


class Action(NamedTuple):
    """What a key asks of the layer that talks to the daemon."""

    kind: str  # "quit" or "restart"
    target: str = ""
    name: str = ""


# --- Text measured in terminal cells ---


def char_width(ch: str) -> int:
    if unicodedata.combining(ch):
        return 0
    return 2 if unicodedata.east_asian_width(ch) in ("W", "F") else 1


def text_width(text: str) -> int:
    if text.isascii():
        return len(text)
    return sum(char_width(ch) for ch in text)


def clean(text: str, *, ascii_only: bool = False) -> str:
    """Printable text: tabs expanded, other control characters shown as `?`."""
    if "\t" in text:
        text = text.expandtabs(4)
    if text.isascii() and text.isprintable():
        return text
    out = []
    for ch in text:
        if ascii_only and not ch.isascii():
            out.append("?")
        elif ch.isprintable():
            out.append(ch)
        else:
            out.append(" " if ch.isspace() else "?")
    return "".join(out)


def clip(text: str, width: int, ellipsis: str = "") -> str:
    """At most `width` cells of `text`; a cut one ends with `ellipsis`."""
    if width <= 0:
        return ""
    if text_width(text) <= width:
        return text
    room = width - text_width(ellipsis)
    if room < 0:
        return clip(text, width)
    out: list[str] = []
    used = 0
    for ch in text:
        w = char_width(ch)
        if used + w > room:
            break
        out.append(ch)
        used += w
    return "".join(out) + ellipsis


def clip_left(text: str, width: int, ellipsis: str = "") -> str:
    """At most `width` cells, cut at the start (paths: the file name stays visible)."""
    if text_width(text) <= width:
        return text
    reversed_clip = clip(text[::-1], width, ellipsis[::-1])
    return reversed_clip[::-1]


def pad(text: str, width: int, *, right: bool = False) -> str:
    text = clip(text, width)
    fill = " " * (width - text_width(text))
    return fill + text if right else text + fill


def wrap(text: str, width: int, most: int) -> list[str]:
    """`text` in lines of at most `width` cells, at most `most` lines (the last one cut)."""
    import textwrap

    if text_width(text) <= width:
        return [text]
    lines = textwrap.wrap(text, max(1, width)) or [""]
    if len(lines) > most:
        lines = [*lines[: most - 1], " ".join(lines[most - 1 :])]
    return [clip(line, width, "…" if i == most - 1 else "") for i, line in enumerate(lines)]


def fit_row(segments: Iterable[Segment], width: int, fill_tag: str = "") -> Row:
    """Segments clipped to exactly `width` cells, padded with spaces in `fill_tag`."""
    out: Row = []
    used = 0
    for text, tag in segments:
        if used >= width:
            break
        piece = clip(text, width - used)
        if piece:
            out.append((piece, tag))
            used += text_width(piece)
    if used < width:
        out.append((" " * (width - used), fill_tag))
    return out


def row_text(row: Sequence[Segment]) -> str:
    return "".join(text for text, _ in row)


# --- Formatting of records and host metrics ---


def number(value: Any) -> str:
    """A metric value: integers as they are, other numbers with at most 2 decimals."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return str(value)
    if isinstance(value, int) or value.is_integer():
        return str(int(value))
    text = f"{value:.2f}".rstrip("0").rstrip(".")
    return text if text not in ("-0", "") else "0"


def metric_text(metric: Any) -> tuple[str, str]:
    """(value, kind) of one app metric `{kind, value | rate | count, p50, ...}`."""
    if not isinstance(metric, dict):
        return number(metric), ""
    kind = str(metric.get("kind", ""))
    parts: list[str] = []
    if "value" in metric:
        parts.append(number(metric["value"]))
    if "rate" in metric:
        parts.append(f"{number(metric['rate'])}/s")
    # Percentiles first: what is cut off at the right of a narrow pane matters least.
    keys = sorted(
        (k for k in metric if k not in ("kind", "value", "rate")),
        key=lambda k: (0, float(k[1:])) if re.fullmatch(r"p\d+(\.\d+)?", str(k)) else (1, 0.0),
    )
    parts += [f"{key} {number(metric[key])}" for key in keys]
    return " ".join(parts) or "-", kind


def host_text(host: Mapping[str, Any] | None, available: bool) -> str:
    """The host line: load, memory used/total, swap, CPUs (from the `host` command)."""
    if not available:
        return "host metrics unavailable"
    if host is None:
        return "host metrics: waiting"
    parts: list[str] = []
    loads = [host.get(k) for k in ("load1", "load5", "load15")]
    if all(isinstance(v, int | float) for v in loads):
        parts.append("load " + " ".join(f"{v:.2f}" for v in loads))
    total, free = host.get("mem_total"), host.get("mem_available")
    if isinstance(total, int | float) and isinstance(free, int | float):
        used = render.format_memory(max(0, total - free))
        parts.append(f"mem {used} / {render.format_memory(total)}")
    swap = host.get("swap_used")
    if isinstance(swap, int | float) and swap:
        parts.append(f"swap {render.format_memory(swap)}")
    cpus = host.get("cpu_count")
    if isinstance(cpus, int) and not isinstance(cpus, bool):
        cpu_part = f"{cpus} CPU{'s' if cpus != 1 else ''}"
        percent = host.get("cpu_percent")
        if isinstance(percent, int | float):
            cpu_part += f" {render.format_cpu(percent)}"
        parts.append(cpu_part)
    return "   ".join(parts) or "host metrics: none"


def _uptime(record: Mapping[str, Any]) -> str:
    online = record.get("pid") is not None
    return render.format_uptime(record.get("uptime") if online else None)


def _status_tag(status: str) -> str:
    return f"status:{status}"


class Column(NamedTuple):
    key: str
    header: str
    right: bool
    cell: Callable[[Mapping[str, Any]], str]


COLUMNS = (
    Column("id", "id", True, lambda r: str(r.get("id", ""))),
    Column("name", "name", False, lambda r: str(r.get("name", ""))),
    Column("inst", "inst", True, lambda r: str(r.get("instance", 0))),
    Column("status", "status", False, lambda r: str(r.get("status", ""))),
    Column("cpu", "cpu", True, lambda r: render.format_cpu(r.get("cpu"))),
    Column("memory", "memory", True, lambda r: render.format_memory(r.get("memory"))),
    Column("restarts", "↺", True, lambda r: str(r.get("restarts", 0))),
    Column("uptime", "uptime", True, _uptime),
)
DROP_ORDER = ("uptime", "restarts", "inst", "memory", "cpu")
"""Columns left out, in this order, when the list pane is too narrow."""


def layout_columns(
    records: Sequence[Mapping[str, Any]], width: int, *, unicode: bool = True
) -> list[tuple[Column, int]]:
    """The columns that fit in `width` cells (one space between two), with their widths."""
    columns = list(COLUMNS)
    if not unicode:
        columns = [c._replace(header="rs") if c.key == "restarts" else c for c in columns]
    natural = {
        c.key: max([text_width(c.header)] + [text_width(clean(c.cell(r))) for r in records])
        for c in columns
    }
    for drop in (None, *DROP_ORDER):
        if drop is not None:
            columns = [c for c in columns if c.key != drop]
        fixed = sum(natural[c.key] for c in columns if c.key != "name") + len(columns)
        if fixed + natural["name"] <= width:
            return [(c, natural[c.key]) for c in columns]
        if fixed + NAME_MIN <= width:
            name_width = width - fixed
            return [(c, name_width if c.key == "name" else natural[c.key]) for c in columns]
    return [(c, max(1, width - fixed) if c.key == "name" else natural[c.key]) for c in columns]


def list_width(records: Sequence[Mapping[str, Any]], *, unicode: bool = True) -> int:
    """Cells the process list needs to show every column in full."""
    return sum(w + 1 for _, w in layout_columns(records, 10_000, unicode=unicode)) + 1


def process_row(
    record: Mapping[str, Any],
    columns: Sequence[tuple[Column, int]],
    *,
    selected: bool = False,
    ellipsis: str = "…",
) -> list[Segment]:
    base = "selected" if selected else ""
    segments: list[Segment] = [(" ", base)]
    for i, (column, width) in enumerate(columns):
        text = clean(column.cell(record), ascii_only=ellipsis != "…")
        if column.key == "name":
            text = clip(text, width, ellipsis)
        tag = base
        if column.key == "status":
            tag = f"{base} {_status_tag(text)}".strip()
        elif column.key == "name":
            tag = f"{base} bold".strip()
        segments.append((pad(text, width, right=column.right), tag))
        if i < len(columns) - 1:
            segments.append((" ", base))
    return segments


def header_row(columns: Sequence[tuple[Column, int]]) -> list[Segment]:
    cells = [pad(c.header, w, right=c.right) for c, w in columns]
    return [(" " + " ".join(cells), "header")]


def tree_text(record: Mapping[str, Any]) -> str | None:
    """`3 processes, 9 threads, 21 fds` from the optional fields, None without any."""
    parts = []
    for key, singular in (("processes", "process"), ("threads", "thread"), ("fds", "fd")):
        value = record.get(key)
        if isinstance(value, int) and not isinstance(value, bool):
            plural = "es" if singular == "process" else "s"
            parts.append(f"{value} {singular}{plural if value != 1 else ''}")
    return ", ".join(parts) if parts else None


def detail_pairs(record: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    """(label, value, tag) lines of the details pane, above the app metrics."""
    status = str(record.get("status", "?"))
    restarts = f"{record.get('restarts', 0)} ({record.get('unstable_restarts', 0)} unstable)"
    pairs: list[tuple[str, str, str]] = [
        ("status", status, _status_tag(status)),
        ("pid", render._dash(record.get("pid")), ""),
        ("uptime", _uptime(record), ""),
        ("restarts", restarts, ""),
        ("last exit", render.format_exit(record), ""),
        (
            "cpu / mem",
            f"{render.format_cpu(record.get('cpu'))} / "
            f"{render.format_memory(record.get('memory'))}",
            "",
        ),
    ]
    tree = tree_text(record)
    if tree:
        pairs.append(("tree", tree, ""))
    if record.get("status_text"):
        pairs.append(("status text", str(record["status_text"]), "bold"))
    if record.get("error"):
        pairs.append(("error", str(record["error"]), "error"))
    if record.get("log_dropped"):
        pairs.append(("log dropped", f"{record['log_dropped']} bytes", "error"))
    return pairs


def path_pairs(record: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(label, path) lines of the details pane, below the app metrics (cut at the left)."""
    return [
        ("script", str(record.get("script") or "-")),
        ("cwd", str(record.get("cwd") or "-")),
        ("out log", str(record.get("out_log") or "-")),
        ("err log", str(record.get("err_log") or "-")),
    ]


def metric_rows(record: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    """(name, value, kind) of the app's own metrics, sorted by name."""
    metrics = record.get("app_metrics")
    if not isinstance(metrics, dict):
        return []
    return [(str(name), *metric_text(metrics[name])) for name in sorted(metrics, key=str)]


def matches(target: str | None, record: Mapping[str, Any]) -> bool:
    """Whether a record belongs to `target` (an id, a name, `all`, `/regex/`, None: all).

    A digits-only target names the app with that id, or else one named so (as the daemon
    resolves targets, but per record).
    """
    if target is None or target == "all":
        return True
    name = str(record.get("name", ""))
    if len(target) >= 2 and target.startswith("/") and target.endswith("/"):
        try:
            return re.search(target[1:-1], name) is not None
        except re.error:
            return False
    if target.isdigit() and str(record.get("id")) == target:
        return True
    return name == target


def filter_records(
    target: str | None, records: Iterable[Mapping[str, Any]]
) -> list[Mapping[str, Any]]:
    records = list(records)
    if target is not None and target.isdigit() and any(str(r.get("id")) == target for r in records):
        return [r for r in records if str(r.get("id")) == target]
    return [r for r in records if matches(target, r)]


# --- The pure model ---


class View:
    """Everything `monit` shows, and the keys that change it; no terminal in here."""

    def __init__(self, *, unicode: bool = True, log_keep: int = LOG_KEEP) -> None:
        self.unicode = unicode
        self.records: list[Mapping[str, Any]] = []
        self.host: Mapping[str, Any] | None = None
        self.host_available = True
        self.error: str | None = None
        self.message: tuple[str, str] | None = None  # (text, tag)
        self.mode = "normal"  # "normal", "confirm", "help"
        self.pending: Action | None = None
        self.logs: deque[tuple[str, str]] = deque(maxlen=max(1, log_keep))
        self.log_title: str | None = None
        self._selected: tuple[Any, Any] | None = None
        self._index = 0
        self._top = 0
        self._page = 10

    # Data in.

    def set_records(self, records: Iterable[Mapping[str, Any]]) -> None:
        """New records; the selection stays on the same instance, or at the same row."""
        self.records = render.sort_records(records)
        keys = [_key(r) for r in self.records]
        if self._selected in keys:
            self._index = keys.index(self._selected)
        self._select(self._index)

    def set_host(self, host: Mapping[str, Any] | None, *, available: bool = True) -> None:
        self.host = host if available else None
        self.host_available = available

    def set_error(self, error: str | None) -> None:
        self.error = error

    def set_message(self, text: str | None, tag: str = "message") -> None:
        self.message = (text, tag) if text else None

    def set_logs(self, title: str | None, lines: Iterable[tuple[str, str]]) -> None:
        """Replace the log lines: `(stream, text)` pairs, oldest first."""
        self.log_title = title
        self.logs.clear()
        for stream, text in lines:
            self.add_log(stream, text)

    def add_log(self, stream: str, text: str) -> None:
        self.logs.append((stream, clean(text[:MAX_LINE], ascii_only=not self.unicode)))

    # Selection.

    def selected(self) -> Mapping[str, Any] | None:
        if not self.records:
            return None
        return self.records[self._index]

    def selected_index(self) -> int | None:
        return self._index if self.records else None

    def selected_key(self) -> tuple[Any, Any] | None:
        return self._selected

    def _select(self, index: int) -> None:
        if not self.records:
            self._index = 0
            self._selected = None
            return
        self._index = max(0, min(index, len(self.records) - 1))
        self._selected = _key(self.records[self._index])

    def move(self, delta: int) -> None:
        self._select(self._index + delta)

    # Keys.

    def handle_key(self, key: str) -> Action | None:
        """Apply one key (a name: "up", "pgdn", "esc", "ctrl-c", "resize" or a character)."""
        if key == "ctrl-c":
            return Action("quit")
        if key == "resize":
            return None
        if self.mode == "confirm":
            pending, self.pending = self.pending, None
            self.mode = "normal"
            if key in ("y", "Y") and pending is not None:
                return pending
            self.set_message("restart cancelled")
            return None
        self.message = None
        if self.mode == "help":
            self.mode = "normal"
            if key == "?":
                return None
        if key in ("q", "Q", "esc"):
            return Action("quit")
        moves = {
            "up": -1,
            "k": -1,
            "down": 1,
            "j": 1,
            "pgup": -max(1, self._page),
            "pgdn": max(1, self._page),
            "home": -len(self.records),
            "g": -len(self.records),
            "end": len(self.records),
            "G": len(self.records),
        }
        if key in moves:
            self.move(moves[key])
        elif key == "?":
            self.mode = "help"
        elif key == "r":
            record = self.selected()
            if record is not None:
                name = str(record.get("name", ""))
                self.pending = Action("restart", str(record.get("id", name)), name)
                self.mode = "confirm"
        return None

    # Drawing.

    @property
    def _ellipsis(self) -> str:
        return "…" if self.unicode else "~"

    def render(self, width: int, height: int) -> list[Row]:
        """Exactly `height` rows of exactly `width` cells."""
        if width <= 0 or height <= 0:
            return []
        if width < MIN_WIDTH or height < MIN_HEIGHT:
            rows = [fit_row([("terminal too small", "error")], width)]
            return rows + [fit_row([], width) for _ in range(height - 1)]
        body = height - 2
        rows = [self._host_row(width)]
        if width >= SIDE_BY_SIDE:
            rows += self._side_by_side(width, body)
        else:
            rows += self._stacked(width, body)
        rows.append(self._footer_row(width))
        return rows

    def _host_row(self, width: int) -> Row:
        sep = " │ " if self.unicode else " | "
        segments: list[Segment] = [(" corral monit", "host bold"), (sep, "host")]
        if self.error:
            segments.append((clean(self.error, ascii_only=not self.unicode), "host error"))
        else:
            text = host_text(self.host, self.host_available)
            segments.append((text, "host" if self.host_available else "host dim"))
        return fit_row(segments, width, "host")

    def _footer_row(self, width: int) -> Row:
        if self.mode == "confirm" and self.pending is not None:
            return fit_row([(f" restart {self.pending.name}? y/n", "prompt")], width)
        if self.mode == "help":
            return fit_row([(" " + HELP, "help")], width, "help")
        if self.message is not None:
            text, tag = self.message
            return fit_row([(" " + clean(text, ascii_only=not self.unicode), tag)], width)
        arrows = "↑↓" if self.unicode else "j/k"
        hint = f" q quit  {arrows} select  r restart  ? help"
        count = f"{len(self.records)} process{'es' if len(self.records) != 1 else ''} "
        room = width - text_width(hint) - text_width(count)
        if room < 1:
            return fit_row([(hint, "dim")], width)
        return fit_row([(hint, "dim"), (" " * room, ""), (count, "dim")], width)

    def _list_rows(self, width: int, height: int) -> list[Row]:
        """Title, column headers and the visible process rows, `height` rows in all."""
        title = f" Processes ({len(self.records)})" + (" - not updated" if self.error else "")
        rows = [fit_row([(title, "title")], width, "title")]
        if height <= 1:
            return rows[:height]
        if not self.records:
            rows.append(fit_row([("  no processes: start one with `corral start`", "dim")], width))
            return rows + [fit_row([], width) for _ in range(height - 2)]
        columns = layout_columns(self.records, width - 1, unicode=self.unicode)
        rows.append(fit_row(header_row(columns), width, "header"))
        visible = max(1, height - 2)
        self._page = visible
        if self._index < self._top:
            self._top = self._index
        elif self._index >= self._top + visible:
            self._top = self._index - visible + 1
        self._top = max(0, min(self._top, len(self.records) - visible))
        for i in range(self._top, min(len(self.records), self._top + visible)):
            selected = i == self._index
            segments = process_row(
                self.records[i], columns, selected=selected, ellipsis=self._ellipsis
            )
            rows.append(fit_row(segments, width, "selected" if selected else ""))
        rows = rows[:height]
        return rows + [fit_row([], width) for _ in range(height - len(rows))]

    def details_rows(self, width: int) -> list[Row]:
        """The details of the selected instance (no title), the most useful first."""
        record = self.selected()
        if record is None:
            return [fit_row([("  nothing selected", "dim")], width)]
        ascii_only = not self.unicode
        value_width = max(1, width - KEY_WIDTH - 4)

        def pair(label: str, value: str, tag: str) -> Row:
            return fit_row([(f" {label:<{KEY_WIDTH}}  ", "dim"), (value, tag)], width)

        rows: list[Row] = []
        for label, value, tag in detail_pairs(record):
            value = clean(value, ascii_only=ascii_only)
            # Messages (error, status text) wrap over a few lines; the rest is cut.
            lines = wrap(value, value_width, WRAP_LINES) if tag in ("error", "bold") else [value]
            rows.append(pair(label, lines[0], tag))
            rows += [pair("", line, tag) for line in lines[1:]]
        metrics = metric_rows(record)
        if metrics:
            rows.append(fit_row([(" app metrics", "header")], width))
            name_width = min(max(text_width(n) for n, _, _ in metrics), max(8, width // 3))
            kind_width = max(text_width(kind) for _, _, kind in metrics)
            for name, value, kind in metrics:
                name = clip(clean(name, ascii_only=ascii_only), name_width, self._ellipsis)
                kind = clean(kind, ascii_only=ascii_only)
                segments: list[Segment] = [(f"   {pad(name, name_width)}  ", "")]
                if kind_width:
                    segments.append((pad(kind, kind_width) + "  ", "dim"))
                segments.append((clean(value, ascii_only=ascii_only), "bold"))
                rows.append(fit_row(segments, width))
        for label, path in path_pairs(record):
            path = clip_left(clean(path, ascii_only=ascii_only), value_width, self._ellipsis)
            rows.append(pair(label, path, ""))
        return rows

    def _details_block(self, width: int, height: int) -> list[Row]:
        """Title and details, exactly `height` rows."""
        rows = [fit_row([(self._details_title(), "title")], width, "title")]
        rows += self.details_rows(width)[: max(0, height - 1)]
        rows = rows[:height]
        return rows + [fit_row([], width) for _ in range(height - len(rows))]

    def _details_title(self) -> str:
        record = self.selected()
        if record is None:
            return " Details"
        name = clean(str(record.get("name", "?")), ascii_only=not self.unicode)
        return f" {name}:{record.get('instance', 0)}  (id {record.get('id', '?')})"

    def log_rows(self, width: int, height: int) -> list[Row]:
        """Title and the newest log lines that fit, `height` rows in all."""
        title = f" Logs {self.log_title}" if self.log_title else " Logs"
        rows = [fit_row([(title, "title")], width, "title")]
        if height <= 1:
            return rows[:height]
        room = height - 1
        if not self.logs:
            rows.append(fit_row([("  no log lines yet", "dim")], width))
        else:
            for stream, text in list(self.logs)[-room:]:
                tag = "err" if stream == "err" else "dim" if stream == "note" else ""
                rows.append(fit_row([(" " + text, tag)], width))
        return rows + [fit_row([], width) for _ in range(height - len(rows))]

    def _side_by_side(self, width: int, height: int) -> list[Row]:
        """Processes above details on the left, logs on the right."""
        natural = list_width(self.records, unicode=self.unicode)
        left_width = max(min(natural, width // 2), min(56, width // 2))
        right_width = width - left_width - 1
        listed = min(2 + max(1, len(self.records)), max(3, height // 2))
        left = self._list_rows(left_width, listed)
        left += self._details_block(left_width, height - listed)
        right = self.log_rows(right_width, height)
        bar = ("│" if self.unicode else "|", "border")
        return [[*left[i], bar, *right[i]] for i in range(height)]

    def _stacked(self, width: int, height: int) -> list[Row]:
        """Processes, details and logs one above the other."""
        listed = 2 + min(max(1, len(self.records)), max(1, (height - 4) // 3))
        rest = height - listed
        details = 1 + min(len(self.details_rows(width)), max(1, (rest - 2) // 2))
        return (
            self._list_rows(width, listed)
            + self._details_block(width, details)
            + self.log_rows(width, rest - details)
        )


def _key(record: Mapping[str, Any]) -> tuple[Any, Any]:
    return (record.get("id"), record.get("instance", 0))


def render_text(view: View, width: int, height: int) -> str:
    """The screen as plain text (for tests and debugging)."""
    return "\n".join(row_text(row) for row in view.render(width, height))


# --- Talking to the daemon ---


class LogFeed:
    """A `subscribe` connection for the logs of one app, read without blocking.

    It speaks the protocol on its own socket (not through ControlClient, whose buffered
    reader cannot be read without blocking): one request, then event lines.
    """

    def __init__(self, socket_path: Path) -> None:
        self.socket_path = socket_path
        self._sock: socket.socket | None = None
        self._buffer = b""

    def open(self, target: str) -> None:
        """Subscribe to the logs of `target`, replacing any earlier subscription."""
        self.close()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(CALL_TIMEOUT)
            sock.connect(str(self.socket_path))
            request = {"id": 1, "cmd": "subscribe", "args": {"logs": target, "events": False}}
            sock.sendall(encode_message(request))
            sock.setblocking(False)
        except OSError:
            sock.close()
            raise
        self._sock = sock

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        self._buffer = b""

    def fileno(self) -> int | None:
        return self._sock.fileno() if self._sock is not None else None

    def read(self) -> list[dict[str, Any]]:
        """Every message that has arrived, as dicts; raises ConnectionError when closed."""
        if self._sock is None:
            return []
        for _ in range(READ_CHUNKS):  # bounded: a flood of lines cannot freeze the screen
            try:
                chunk = self._sock.recv(CHUNK)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as exc:
                self.close()
                raise ConnectionError(str(exc)) from None
            if not chunk:
                self.close()
                raise ConnectionError("the daemon closed the log connection")
            self._buffer += chunk
            if len(chunk) < CHUNK:
                break
        *lines, self._buffer = self._buffer.split(b"\n")
        if len(self._buffer) > MAX_MESSAGE_BYTES:
            self.close()
            raise ConnectionError("a message from the daemon is too long")
        messages = []
        for line in lines:
            try:
                message = json.loads(line)
            except ValueError:
                continue
            if isinstance(message, dict):
                messages.append(message)
        return messages


class Monitor:
    """The view fed from the daemon: polls `list` and `host`, follows the selected logs."""

    def __init__(
        self,
        home: Home,
        client: ControlClient | None,
        view: View,
        *,
        target: str | None = None,
        connect: Callable[[], ControlClient] | None = None,
    ) -> None:
        self.home = home
        self.client = client
        if client is not None:
            client.set_timeout(CALL_TIMEOUT)
        self.view = view
        self.target = target
        self._connect = connect
        self.feed = LogFeed(home.socket)
        self._joiner = LineJoiner()
        self._host_supported = True
        self._following: tuple[Any, Any] | None = None
        self._feed_app: Any = None

    def close(self) -> None:
        self.feed.close()
        if self.client is not None:
            self.client.close()
            self.client = None

    def _lost(self, why: str) -> None:
        if self.client is not None:
            self.client.close()
            self.client = None
        self.view.set_error(f"lost the connection to the daemon ({why})")

    def refresh(self) -> None:
        """One poll: the records, then the host metrics."""
        if self.client is None:
            if self._connect is None:
                return
            try:
                self.client = self._connect()
            except Exception as exc:
                self.view.set_error(f"cannot reach the daemon: {exc}")
                return
            self.client.set_timeout(CALL_TIMEOUT)
            self._host_supported = True
            self._feed_app = None  # resubscribe: the old connection is gone too
        try:
            records = self.client.call("list")
        except ProtocolError as exc:
            self.view.set_error(f"list failed: {exc.message}")
            return
        except (OSError, ValueError) as exc:
            self._lost(str(exc) or type(exc).__name__)
            return
        self.view.set_error(None)
        if isinstance(records, list):
            records = [r for r in records if isinstance(r, dict)]
            self.view.set_records(filter_records(self.target, records))
        if not self._host_supported:
            self.view.set_host(None, available=False)
            return
        try:
            host = self.client.call("host")
        except ProtocolError as exc:
            if exc.code == ErrorCode.UNKNOWN_COMMAND:
                self._host_supported = False
            self.view.set_host(None, available=False)
        except (OSError, ValueError) as exc:
            self._lost(str(exc) or type(exc).__name__)
        else:
            self.view.set_host(host if isinstance(host, dict) else None)

    def sync_selection(self, *, retry: bool = False) -> None:
        """After the selection moved: follow the new app's logs, show the instance's tail.

        With `retry` (once per poll), a log subscription that failed or was lost is
        opened again.
        """
        if self.client is None:
            return  # not connected: keep what is shown, the host line says why
        record = self.view.selected()
        if record is None:
            if self._following is not None:
                self.feed.close()
                self._feed_app = None
                self._following = None
                self.view.set_logs(None, [])
            return
        key = _key(record)
        app_id = record.get("id")
        unsubscribed = app_id != self._feed_app or self.feed.fileno() is None
        if key == self._following and not (retry and unsubscribed):
            return
        target = str(app_id if app_id is not None else record.get("name"))
        self._joiner = LineJoiner()
        if unsubscribed:
            try:
                self.feed.open(target)  # before the tail: a line may show twice, none is lost
                self._feed_app = app_id
            except OSError as exc:
                self.feed.close()
                self._feed_app = None
                self.view.set_message(f"cannot follow the logs: {exc.strerror or exc}", "error")
        self._following = key
        title = f"{record.get('name')}:{record.get('instance', 0)}"
        self.view.set_logs(title, self._tail(record, target))

    def _tail(self, record: Mapping[str, Any], target: str) -> list[tuple[str, str]]:
        """The last lines of the instance's out and err files, the older file first."""
        out, err = record.get("out_log"), record.get("err_log")
        if self.client is not None:
            try:
                entries = self.client.call("log_files", target=target)
            except ProtocolError:
                entries = []
            except (OSError, ValueError) as exc:
                self._lost(str(exc) or type(exc).__name__)
                entries = []
            for entry in entries if isinstance(entries, list) else []:
                if isinstance(entry, dict) and entry.get("instance") == record.get("instance"):
                    out, err = entry.get("out") or out, entry.get("err") or err
        files: list[tuple[float, str, list[str]]] = []
        for stream, path in (("out", out), ("err", err)):
            if not isinstance(path, str) or not path:
                continue
            try:
                mtime = os.stat(path).st_mtime
                lines = tail_lines(path, TAIL_LINES)
            except OSError:
                continue
            files.append((mtime, stream, lines))
        files.sort(key=lambda f: f[0])
        return [(stream, line) for _, stream, lines in files for line in lines]

    def pump_logs(self) -> bool:
        """Take in the log events that arrived; True when the log pane changed."""
        try:
            messages = self.feed.read()
        except ConnectionError:
            self._feed_app = None  # the next sync_selection subscribes again
            return False
        record = self.view.selected()
        changed = False
        for message in messages:
            if message.get("ok") is False:
                error = message.get("error") or {}
                self.view.add_log("note", f"logs: {error.get('message', 'refused')}")
                changed = True
                continue
            event = message.get("event")
            if not isinstance(event, dict) or record is None:
                continue
            kind = event.get("type")
            if kind == "dropped":
                self.view.add_log("note", f"({event.get('count', '?')} log events dropped)")
                changed = True
            elif kind == "log":
                if event.get("name") != record.get("name"):
                    continue
                if event.get("instance") != record.get("instance", 0):
                    continue
                stream = str(event.get("stream", "out"))
                data = str(event.get("data", ""))
                for line in self._joiner.feed(str(event.get("name")), 0, stream, data):
                    self.view.add_log(stream, line)
                    changed = True
        return changed

    def restart(self, action: Action) -> None:
        if self.client is None:
            self.view.set_message("not connected to the daemon", "error")
            return
        try:
            self.client.call("restart", target=action.target)
        except ProtocolError as exc:
            self.view.set_message(f"restart {action.name}: {exc.message}", "error")
        except (OSError, ValueError) as exc:
            self._lost(str(exc) or type(exc).__name__)
        else:
            self.view.set_message(f"restarted {action.name}")


# --- The curses layer ---

_KEYS: dict[int, str] = {}


def key_name(key: str | int) -> str | None:
    """A curses key (from get_wch) as a View key name; None for keys without a meaning."""
    import curses

    if isinstance(key, str):
        return {"\x1b": "esc", "\x03": "ctrl-c", "\n": "enter", "\r": "enter"}.get(key, key)
    if not _KEYS:
        _KEYS.update(
            {
                curses.KEY_UP: "up",
                curses.KEY_DOWN: "down",
                curses.KEY_PPAGE: "pgup",
                curses.KEY_NPAGE: "pgdn",
                curses.KEY_HOME: "home",
                curses.KEY_END: "end",
                curses.KEY_RESIZE: "resize",
                curses.KEY_ENTER: "enter",
            }
        )
    return _KEYS.get(key)


class Painter:
    """Style tags to curses attributes."""

    def __init__(self, color: bool) -> None:
        import curses

        self._attrs: dict[str, int] = {}
        self._words: dict[str, int] = {
            "selected": curses.A_REVERSE,
            "host": curses.A_REVERSE,
            "title": curses.A_BOLD | curses.A_UNDERLINE,
            "header": curses.A_BOLD,
            "bold": curses.A_BOLD,
            "dim": curses.A_DIM,
            "border": curses.A_DIM,
            "prompt": curses.A_BOLD,
            "help": curses.A_REVERSE,
            "error": curses.A_BOLD,
            "message": curses.A_BOLD,
        }
        colors: dict[str, int] = {}
        if color and curses.has_colors():
            with contextlib.suppress(curses.error):
                curses.start_color()
                with contextlib.suppress(curses.error):
                    curses.use_default_colors()
                for n, (code, fg) in enumerate(
                    [
                        (render.GREEN, curses.COLOR_GREEN),
                        (render.RED, curses.COLOR_RED),
                        (render.YELLOW, curses.COLOR_YELLOW),
                        (render.CYAN, curses.COLOR_CYAN),
                    ],
                    start=1,
                ):
                    curses.init_pair(n, fg, -1)
                    colors[code] = curses.color_pair(n)
        for status, code in render.STATUS_COLORS.items():
            attr = colors.get(code, 0) if code != render.GREY else curses.A_DIM
            self._words[_status_tag(status)] = attr | (curses.A_BOLD if code == render.RED else 0)
        self._words["err"] = colors.get(render.RED, 0)
        self._words["error"] |= colors.get(render.RED, 0)
        self._words["prompt"] |= colors.get(render.YELLOW, 0)
        self._words["title"] |= colors.get(render.CYAN, 0)
        self._words["message"] |= colors.get(render.GREEN, 0)

    def attr(self, tag: str) -> int:
        cached = self._attrs.get(tag)
        if cached is None:
            cached = 0
            for word in tag.split():
                cached |= self._words.get(word, 0)
            self._attrs[tag] = cached
        return cached


def draw(screen: curses.window, view: View, painter: Painter) -> None:
    import curses

    height, width = screen.getmaxyx()
    screen.erase()
    for y, row in enumerate(view.render(width, height)):
        x = 0
        for text, tag in row:
            # The bottom-right cell cannot be written without an error: ignore it.
            with contextlib.suppress(curses.error):
                screen.addstr(y, x, text, painter.attr(tag))
            x += text_width(text)
    screen.noutrefresh()
    curses.doupdate()


def _loop(screen: curses.window, monitor: Monitor, color: bool) -> None:
    import curses

    with contextlib.suppress(curses.error):
        curses.curs_set(0)
    with contextlib.suppress(AttributeError, curses.error):
        curses.set_escdelay(25)
    screen.keypad(True)
    screen.nodelay(True)
    painter = Painter(color)
    view = monitor.view
    next_poll = 0.0
    dirty = True
    while True:
        now = time.monotonic()
        if now >= next_poll:
            monitor.refresh()
            monitor.sync_selection(retry=True)
            next_poll = now + POLL_INTERVAL
            dirty = True
        if monitor.pump_logs():
            dirty = True
        while True:
            try:
                key = screen.get_wch()
            except curses.error:
                break  # no key waiting
            name = key_name(key)
            if name is None:
                continue
            if name == "resize":
                with contextlib.suppress(curses.error):
                    curses.update_lines_cols()
            action = view.handle_key(name)
            dirty = True
            if action is not None and action.kind == "quit":
                return
            if action is not None and action.kind == "restart":
                view.set_message(f"restarting {action.name}...")
                draw(screen, view, painter)
                monitor.restart(action)
                next_poll = 0.0
        monitor.sync_selection()  # once for all the keys read: holding `j` stays cheap
        if dirty:
            draw(screen, view, painter)
            dirty = False
        waits: list[Any] = [sys.stdin.fileno()]
        if monitor.feed.fileno() is not None:
            waits.append(monitor.feed)
        timeout = max(0.0, min(MAX_WAIT, next_poll - time.monotonic()))
        with contextlib.suppress(InterruptedError, ValueError, OSError):
            select.select(waits, [], [], timeout)


def run(ctx: Context, target: str | None = None) -> int:
    """`corral monit`: returns the exit status."""
    import curses

    from corral.cli.connect import connect

    if not (_isatty(ctx.stdout) and _isatty(sys.stdin)):
        ctx.stderr.write("corral monit needs a terminal\n")
        ctx.stderr.flush()
        return 1
    try:
        curses.setupterm(fd=ctx.stdout.fileno())
    except (curses.error, OSError, ValueError) as exc:
        term = ctx.environ.get("TERM")
        raise CliError(f"monit cannot use this terminal (TERM={term}): {exc}") from None
    client = connect(ctx.home)  # starts the daemon if needed, like the other verbs
    encoding = (getattr(ctx.stdout, "encoding", None) or "").lower().replace("-", "")
    view = View(unicode=encoding.startswith("utf"))
    monitor = Monitor(
        ctx.home,
        client,
        view,
        target=target,
        connect=lambda: connect(ctx.home, autostart=False),
    )
    color = render.Style.detect(ctx.stdout, ctx.environ).color
    status = 0

    def terminated(signum: int, frame: object) -> None:
        raise _Terminated(signum)

    previous = {sig: signal.signal(sig, terminated) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        curses.wrapper(_loop, monitor, color)  # restores the terminal whatever happens
    except KeyboardInterrupt:
        pass
    except _Terminated as exc:
        status = 128 + exc.signum
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        monitor.close()
    return status


class _Terminated(Exception):
    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def _isatty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False
