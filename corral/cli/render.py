"""Text output of the CLI: tables, app descriptions, log prefixes, human-readable numbers.

Everything here is pure: it takes data (process records, descriptions) and a `Style`
and returns text. On a terminal the tables have box-drawing borders and colors; piped,
they are plain whitespace-aligned columns under one header line, without any escape
sequence or box character, so that `grep`, `awk` and `cut` work on them.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping, Sequence
    from typing import TextIO

# SGR codes.
RESET = "\x1b[0m"
BOLD = "1"
DIM = "2"
RED = "31"
GREEN = "32"
YELLOW = "33"
BLUE = "34"
MAGENTA = "35"
CYAN = "36"
GREY = "90"

STATUS_COLORS = {
    "online": GREEN,
    "errored": RED,
    "stopped": GREY,
    "launching": YELLOW,
    "waiting-restart": YELLOW,
    "stopping": YELLOW,
}
# Log prefixes: one color per app, chosen from its name so that it is stable.
PREFIX_COLORS = (CYAN, GREEN, MAGENTA, BLUE, YELLOW)

Cell = str | tuple[str, str | None]
"""A table cell: its text, or (text, SGR color code or None)."""


class Style:
    """How to write: on a terminal (`tty`: borders) and with colors (`color`)?"""

    __slots__ = ("color", "tty")

    def __init__(self, *, tty: bool, color: bool) -> None:
        self.tty = tty
        self.color = color

    @classmethod
    def detect(cls, stream: TextIO, environ: Mapping[str, str] | None = None) -> Style:
        """A terminal gets borders, and colors unless NO_COLOR is set (no-color.org)."""
        env = os.environ if environ is None else environ
        try:
            tty = stream.isatty()
        except (AttributeError, ValueError):
            tty = False
        no_color = bool(env.get("NO_COLOR")) or env.get("TERM") == "dumb"
        return cls(tty=tty, color=tty and not no_color)

    def paint(self, text: str, code: str | None) -> str:
        if not self.color or not code or not text:
            return text
        return f"\x1b[{code}m{text}{RESET}"

    def __repr__(self) -> str:
        return f"Style(tty={self.tty}, color={self.color})"


PLAIN = Style(tty=False, color=False)


# --- Numbers and times ---


def format_memory(value: int | float | None) -> str:
    """Bytes as PM2 shows them: 512b, 1.5kb, 12.3mb, 1.2gb."""
    if value is None:  # not sampled yet, or not running
        return "-"
    number = float(value)
    for unit in ("b", "kb", "mb", "gb"):
        if number < 1024 or unit == "gb":
            if unit == "b":
                return f"{int(number)}b"
            return f"{number:.1f}{unit}"
        number /= 1024
    raise AssertionError("unreachable")


def format_uptime(seconds: int | float | None) -> str:
    """A compact duration: 5s, 3m, 2h, 4D ("-" when not running)."""
    if seconds is None:
        return "-"
    s = max(0, int(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m"
    if s < 86400:
        return f"{s // 3600}h"
    return f"{s // 86400}D"


def format_cpu(value: int | float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.0f}%"


def format_time(timestamp: int | float | None) -> str:
    """A Unix time as local date and time, "-" when unknown."""
    if timestamp is None:
        return "-"
    import time

    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(timestamp))


def format_exit(record: Mapping[str, Any]) -> str:
    """How the last process ended: "code 1", "SIGKILL" or "-"."""
    if record.get("exit_signal"):
        return str(record["exit_signal"])
    if record.get("exit_code") is not None:
        return f"code {record['exit_code']}"
    return "-"


def _dash(value: object) -> str:
    if value is None or value == "" or value == []:
        return "-"
    return str(value)


def _yes_no(value: object) -> str:
    return "yes" if value else "no"


# --- Tables ---


def _cell(cell: Cell) -> tuple[str, str | None]:
    if isinstance(cell, tuple):
        return cell
    return cell, None


def table(
    headers: Sequence[str],
    rows: Iterable[Sequence[Cell]],
    style: Style,
    *,
    right: Iterable[int] = (),
) -> str:
    """Rows under a header: boxed on a terminal, whitespace-aligned when piped.

    Columns whose index is in `right` are right-aligned (numbers). No trailing newline.
    """
    body = [[_cell(c) for c in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in body:
        for i, (text, _) in enumerate(row):
            widths[i] = max(widths[i], len(text))
    right_set = set(right)

    def pad(i: int, text: str) -> str:
        return text.rjust(widths[i]) if i in right_set else text.ljust(widths[i])

    if not style.tty:
        lines = ["  ".join(pad(i, h) for i, h in enumerate(headers)).rstrip()]
        for row in body:
            lines.append("  ".join(pad(i, t) for i, (t, _) in enumerate(row)).rstrip())
        return "\n".join(lines)

    def rule(left: str, mid: str, end: str) -> str:
        return left + mid.join("─" * (w + 2) for w in widths) + end

    head = "│".join(
        " " + style.paint(pad(i, h), f"{BOLD};{CYAN}") + " " for i, h in enumerate(headers)
    )
    lines = [rule("┌", "┬", "┐"), f"│{head}│", rule("├", "┼", "┤")]
    for row in body:
        cells = "│".join(" " + style.paint(pad(i, t), c) + " " for i, (t, c) in enumerate(row))
        lines.append(f"│{cells}│")
    lines.append(rule("└", "┴", "┘"))
    return "\n".join(lines)


def status_cell(status: str) -> Cell:
    return (status, STATUS_COLORS.get(status))


def sort_records(records: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    return sorted(records, key=lambda r: (r.get("id", 0), r.get("instance", 0)))


def process_table(records: Iterable[Mapping[str, Any]], style: Style) -> str:
    """The `corral ls` table: one row per instance."""
    rows = sort_records(records)
    per_app: dict[Any, int] = {}
    for r in rows:
        per_app[r.get("id")] = per_app.get(r.get("id"), 0) + 1
    show_inst = any(n > 1 for n in per_app.values()) or any(
        int(r.get("instances") or 1) > 1 for r in rows
    )
    headers = ["id", "name"]
    if show_inst:
        headers.append("inst")
    headers += ["mode", "↺" if style.tty else "restarts", "status", "cpu", "memory"]
    headers += ["uptime", "pid", "user"]
    out: list[list[Cell]] = []
    for r in rows:
        row: list[Cell] = [str(r.get("id", "")), (str(r.get("name", "")), BOLD)]
        if show_inst:
            row.append(str(r.get("instance", 0)))
        online = r.get("pid") is not None
        row += [
            str(r.get("exec_mode", "")),
            str(r.get("restarts", 0)),
            status_cell(str(r.get("status", ""))),
            format_cpu(r.get("cpu")),
            format_memory(r.get("memory")),
            format_uptime(r.get("uptime") if online else None),
            _dash(r.get("pid")),
            str(r.get("user", "")),
        ]
        out.append(row)
    numeric = {headers.index(h) for h in ("↺", "restarts", "cpu", "memory") if h in headers}
    return table(headers, out, style, right=numeric)


# --- describe ---


def _status_summary(records: Sequence[Mapping[str, Any]], style: Style) -> str:
    counts: dict[str, int] = {}
    for r in records:
        status = str(r.get("status", "?"))
        counts[status] = counts.get(status, 0) + 1
    if not counts:
        return style.paint("stopped", STATUS_COLORS["stopped"])
    if len(counts) == 1:
        status = next(iter(counts))
        return style.paint(status, STATUS_COLORS.get(status))
    return ", ".join(f"{style.paint(s, STATUS_COLORS.get(s))} {n}" for s, n in counts.items())


def _join_words(words: Sequence[str]) -> str:
    if not words:
        return "-"
    import shlex

    return shlex.join(words)


def _unique(values: Iterable[object]) -> str:
    seen: list[str] = []
    for v in values:
        if v not in (None, "") and str(v) not in seen:
            seen.append(str(v))
    return ", ".join(seen) if seen else "-"


def describe_app(app: Mapping[str, Any], style: Style) -> str:
    """One app of a `describe` result: header, key/value lines, instances, events."""
    config: Mapping[str, Any] = app.get("config") or {}
    records = sort_records(app.get("instances") or [])
    name = str(app.get("name", config.get("name", "?")))
    app_id = app.get("id")
    first: Mapping[str, Any] = records[0] if records else {}
    uptimes = [r["uptime"] for r in records if r.get("pid") is not None and r.get("uptime")]
    watch = config.get("watch") or []
    pairs: list[tuple[str, str]] = [
        ("status", _status_summary(records, style)),
        ("id", _dash(app_id)),
        ("instances", _dash(config.get("instances", first.get("instances")))),
        ("script", _dash(config.get("script", first.get("script")))),
        ("args", _join_words(list(config.get("args", first.get("args")) or []))),
        ("interpreter", _dash(config.get("interpreter") or first.get("interpreter"))),
    ]
    if config.get("interpreter_args"):
        pairs.append(("interpreter args", _join_words(list(config["interpreter_args"]))))
    pairs += [
        ("cwd", _dash(config.get("cwd") or first.get("cwd"))),
        ("exec mode", _dash(config.get("exec_mode", first.get("exec_mode")))),
    ]
    if config.get("listen"):
        pairs.append(("listen", ", ".join(config["listen"])))
    if isinstance(config.get("git"), dict):
        pairs.append(("git", _git_source(config["git"])))
    pairs += [
        ("restarts", str(sum(int(r.get("restarts") or 0) for r in records))),
        ("unstable restarts", str(sum(int(r.get("unstable_restarts") or 0) for r in records))),
        ("created at", format_time(app.get("created_at", first.get("created_at")))),
        ("uptime", format_uptime(max(uptimes) if uptimes else None)),
        ("pid", _unique(r.get("pid") for r in records)),
        ("out log", _unique(r.get("out_log") for r in records)),
        ("err log", _unique(r.get("err_log") for r in records)),
        ("log dropped", f"{sum(int(r.get('log_dropped') or 0) for r in records)} bytes"),
        ("autorestart", _yes_no(config.get("autorestart", first.get("autorestart")))),
        ("watch", ", ".join(watch) if watch else "off"),
        ("max memory", _max_memory(config.get("max_memory_restart"))),
        ("cron", _dash(config.get("cron_restart"))),
        ("user", _dash(config.get("user") or first.get("user"))),
        ("env profile", _dash(app.get("env_name"))),
    ]
    if app.get("secrets"):
        pairs.append(("secrets", _secrets_summary(app["secrets"])))
    pairs += [
        ("processes", _total(r.get("processes") for r in records)),
        ("threads", _total(r.get("threads") for r in records)),
        ("open fds", _total(r.get("fds") for r in records)),
    ]
    statuses = _unique(r.get("status_text") for r in records)
    if statuses != "-":
        pairs.append(("app status", statuses))
    errors = _unique(r.get("error") for r in records)
    if errors != "-":
        pairs.append(("error", style.paint(errors, RED)))
    width = max(len(k) for k, _ in pairs)
    title = f"{name} (id {_dash(app_id)})"
    lines = [style.paint(title, BOLD) if style.color else title]
    if style.tty:
        lines.append("─" * max(len(title), width + 20))
    lines += [f"  {style.paint(k.ljust(width), DIM)}  {v}" for k, v in pairs]
    if records:
        lines += ["", instance_table(records, style)]
    metric_lines = app_metric_lines(records)
    if metric_lines:
        lines += ["", style.paint("app metrics", BOLD) if style.color else "app metrics"]
        lines += [f"  {line}" for line in metric_lines]
    events = app.get("events") or []
    if events:
        lines += ["", style.paint("recent events", BOLD) if style.color else "recent events"]
        lines += [f"  {_event_line(e, style)}" for e in events]
    return "\n".join(lines)


def _total(values: Iterable[object]) -> str:
    numbers = [v for v in values if isinstance(v, int) and not isinstance(v, bool)]
    return str(sum(numbers)) if numbers else "-"


def app_metric_lines(records: Iterable[Mapping[str, Any]]) -> list[str]:
    """`#<instance> <name> (<kind>) <values>` for every metric the app pushed."""
    lines = []
    for r in sort_records(records):
        metrics = r.get("app_metrics") or {}
        for name in sorted(metrics):
            lines.append(f"#{r.get('instance', 0)} {name} {format_app_metric(metrics[name])}")
    return lines


def format_app_metric(metric: Mapping[str, Any]) -> str:
    kind = str(metric.get("kind", "?"))
    if kind in ("gauge", "counter"):
        return f"({kind}) {_number(metric.get('value'))}"
    if kind == "meter":
        return f"(meter) {_number(metric.get('rate'))}/s, {_number(metric.get('count'))} total"
    if kind == "histogram":
        parts = [f"{q} {_number(metric.get(q))}" for q in ("p50", "p95", "p99")]
        return f"(histogram) n={_number(metric.get('count'))} " + " ".join(parts)
    return f"({kind})"


def _number(value: object) -> str:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return f"{value:.6g}"
    return "-"


def _max_memory(value: object) -> str:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return format_memory(value)
    return "-"


def _git_source(git: Mapping[str, Any]) -> str:
    """`https://***@host/team/api.git (branch main, keep 5)`: credentials never shown."""
    from corral.deploy.source import redact

    return (
        f"{redact(str(git.get('repo', '?')))} (branch {git.get('branch', '?')}, "
        f"keep {git.get('keep', '?')})"
    )


def instance_table(records: Iterable[Mapping[str, Any]], style: Style) -> str:
    headers = ["inst", "status", "pid", "↺" if style.tty else "restarts", "unstable"]
    headers += ["uptime", "cpu", "memory", "last exit", "error"]
    rows: list[list[Cell]] = []
    for r in sort_records(records):
        online = r.get("pid") is not None
        rows.append(
            [
                str(r.get("instance", 0)),
                status_cell(str(r.get("status", ""))),
                _dash(r.get("pid")),
                str(r.get("restarts", 0)),
                str(r.get("unstable_restarts", 0)),
                format_uptime(r.get("uptime") if online else None),
                format_cpu(r.get("cpu")),
                format_memory(r.get("memory")),
                format_exit(r),
                _dash(r.get("error")),
            ]
        )
    return table(headers, rows, style, right=(3, 4, 6, 7))


def _event_line(event: Mapping[str, Any], style: Style) -> str:
    at = format_time(event.get("at"))
    before = str(event.get("from", "?"))
    after = str(event.get("to", "?"))
    move = f"{style.paint(before, STATUS_COLORS.get(before))} -> "
    move += style.paint(after, STATUS_COLORS.get(after))
    reason = event.get("reason")
    tail = f"  ({reason})" if reason else ""
    return f"{at}  #{event.get('instance', 0)}  {move}{tail}"


def describe(apps: Iterable[Mapping[str, Any]], style: Style) -> str:
    return "\n\n".join(describe_app(a, style) for a in apps)


# --- secrets ---


def secret_table(entries: Iterable[Mapping[str, Any]], style: Style) -> str:
    """name, app, set at: never a value (the daemon never sends one)."""
    rows: list[list[Cell]] = [
        [str(e.get("name", "?")), str(e.get("app", "?")), format_time(e.get("set_at"))]
        for e in sorted(entries, key=lambda e: (str(e.get("app")), str(e.get("name"))))
    ]
    return table(["name", "app", "set at"], rows, style)


def _secrets_summary(secrets: Iterable[Mapping[str, Any]]) -> str:
    """`DB_PASSWORD (set 2024-05-01 10:00:00), TOKEN (not set)`"""
    parts = []
    for s in secrets:
        when = s.get("set_at")
        state = "not set" if when is None else f"set {format_time(when)}"
        parts.append(f"{s.get('name')} ({state})")
    return ", ".join(parts) or "-"


# --- env, logs ---


def env_lines(entries: Sequence[Mapping[str, Any]]) -> str:
    """KEY=VALUE lines, sorted; a `# name:instance` line before each block if several."""
    lines: list[str] = []
    several = len(entries) > 1
    for i, entry in enumerate(entries):
        if several:
            if i:
                lines.append("")
            lines.append(f"# {entry.get('name')}:{entry.get('instance', 0)}")
        env: Mapping[str, str] = entry.get("env") or {}
        lines += [f"{k}={env[k]}" for k in sorted(env)]
    return "\n".join(lines)


def log_prefix(name: str, instance: object, stream: str, style: Style) -> str:
    """`name|instance| `, colored per app on a terminal (red for stderr)."""
    text = f"{name}|{instance}|"
    if not style.color:
        return text + " "
    code = RED if stream == "err" else PREFIX_COLORS[sum(name.encode()) % len(PREFIX_COLORS)]
    return style.paint(text, code) + " "


def log_header(path: str, lines: int, style: Style) -> str:
    return style.paint(f"==> {path} (last {lines} lines) <==", GREY)
