"""One function per verb: build the request, send it, print the answer.

Every function takes the parsed arguments and a `Context` and returns the exit status.
A user mistake raises `CliError` (printed as one line by `corral.cli.main`); errors the
daemon reports arrive as `ProtocolError`. The config loader (PyYAML, croniter...) is
imported only by the verbs that read config files, to keep `corral ls` fast.
"""

from __future__ import annotations

import contextlib
import os
import sys
from typing import TYPE_CHECKING, Any

from corral.cli import render
from corral.cli.connect import (
    DaemonUnavailable,
    NoDaemon,
    connect,
    wait_for_daemon,
)
from corral.config.filenames import is_config_file
from corral.protocol.wire import ErrorCode, ProtocolError

if TYPE_CHECKING:
    import argparse
    from collections.abc import Callable, Iterable, Mapping
    from typing import BinaryIO, TextIO

    from corral.cli.early import Prestart
    from corral.cli.spawn import DaemonProcess
    from corral.config.model import AppConfig
    from corral.paths import Home
    from corral.protocol.client import ControlClient

# Looked for, in this order, by a bare `corral start`.
DEFAULT_CONFIGS = (
    "corral.yaml",
    "corral.yml",
    "corral.toml",
    "corral.json",
    "ecosystem.config.yaml",
    "ecosystem.config.yml",
    "ecosystem.config.json",
    "Procfile",
)
TAIL_BLOCK = 64 * 1024
TAIL_MAX_BYTES = 8 * 1024 * 1024
"""`logs` never reads more than this from the end of one file."""
KILL_WAIT = 30.0


class CliError(Exception):
    """A mistake to report as `corral: <message>` with exit status `status`."""

    def __init__(self, message: str, status: int = 1) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


class Context:
    """What the verbs share: the home, the output streams, the daemon connection."""

    def __init__(
        self,
        home: Home,
        *,
        stdout: TextIO,
        stderr: TextIO,
        environ: Mapping[str, str],
        cwd: str | None = None,
        stdin: BinaryIO | None = None,
        ask_hidden: Callable[[str], str] | None = None,
    ) -> None:
        self.home = home
        self.stdout = stdout
        self.stderr = stderr
        self.environ = environ
        self._stdin = stdin
        self.ask_hidden = ask_hidden if ask_hidden is not None else _getpass
        """Asks for a secret on the terminal without echoing it."""
        self._cwd = cwd
        self._client: ControlClient | None = None
        self._starting: DaemonProcess | None = None
        self.style = render.Style.detect(stdout, environ)
        self.err_style = render.Style.detect(stderr, environ)

    @property
    def stdin(self) -> BinaryIO:
        return self._stdin if self._stdin is not None else sys.stdin.buffer

    @property
    def cwd(self) -> str:
        if self._cwd is None:
            try:
                self._cwd = os.getcwd()
            except FileNotFoundError:
                raise CliError("the current directory does not exist any more") from None
        return self._cwd

    def client(self, *, autostart: bool = True) -> ControlClient:
        if self._client is None:
            if self._starting is not None:
                self._client = wait_for_daemon(self.home, self._starting)
            else:
                self._client = connect(self.home, autostart=autostart)
        return self._client

    def prestart(self, early: Prestart | None = None) -> None:
        """Spawn the daemon now, without waiting for it to listen, when none runs and its
        home holds no saved apps (corral.cli.early): its ~0.1 s of start-up then overlaps
        the loading of a config file. `client()` waits for it; `abandon_prestart()` stops
        it again if the config turns out to be wrong, so a mistake still leaves no daemon
        behind. `early` is what corral.cli.main found before parsing the command line."""
        if self._client is not None or self._starting is not None:
            return
        from corral.cli.early import prestart

        found = early if early is not None else prestart(self.home)
        self._client, self._starting = found.client, found.starting

    def abandon_prestart(self) -> None:
        """Stop the daemon `prestart` spawned, once it listens, unless apps were started
        on it meanwhile (by another command); it is our child, so its exit is awaited."""
        proc, self._starting = self._starting, None
        if proc is None:
            return
        with contextlib.suppress(DaemonUnavailable, ProtocolError, OSError, ValueError):
            client = wait_for_daemon(self.home, proc)
            try:
                if not client.call("list"):
                    client.call("kill")
            finally:
                client.close()
        proc.wait(timeout=KILL_WAIT)

    def call(self, cmd: str, **args: Any) -> Any:
        return self.client().call(cmd, **args)

    def print(self, text: str = "") -> None:
        self.stdout.write(text + "\n")

    def warn(self, message: str) -> None:
        self.stderr.write(f"corral: {message}\n")
        self.stderr.flush()

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None


# --- Helpers ---


def _load_config(path: str, only: list[str] | None) -> list[AppConfig]:
    from pathlib import Path

    from corral.config.errors import ConfigError
    from corral.config.loader import load_file

    try:
        return load_file(Path(path), only=only)
    except ConfigError as exc:
        raise CliError(str(exc)) from None


def _check_env_name(apps: list[AppConfig], name: str, source: str) -> None:
    from corral.config.errors import ConfigError
    from corral.config.loader import check_env_name

    try:
        check_env_name(apps, name, source=source)
    except ConfigError as exc:
        raise CliError(str(exc)) from None


def _existing_config(target: str, cwd: str) -> bool:
    """A target naming an existing config file (cheap test first: no loader import)."""
    return os.path.isfile(os.path.join(cwd, target)) and is_config_file(target)


def _merge_records(batches: Iterable[Iterable[Mapping[str, Any]]]) -> list[Mapping[str, Any]]:
    """Records of several requests, each process once (the latest answer wins)."""
    merged: dict[tuple[Any, Any], Mapping[str, Any]] = {}
    for batch in batches:
        for record in batch:
            merged[(record.get("id"), record.get("instance"))] = record
    return render.sort_records(merged.values())


def _print_records(ctx: Context, records: Iterable[Mapping[str, Any]]) -> None:
    ctx.print(render.process_table(records, ctx.style))


def _each_target(
    ctx: Context, targets: list[str], send: Callable[[str], Any]
) -> tuple[list[Any], bool]:
    """`send` for every target; a failing one is reported and the others still run."""
    results: list[Any] = []
    ok = True
    for target in targets:
        try:
            results.append(send(target))
        except ProtocolError as exc:
            ctx.warn(exc.message)
            ok = False
    return results, ok


def _expand_config_targets(ctx: Context, targets: list[str]) -> list[str]:
    """A config file among the targets stands for the apps it defines."""
    expanded: list[str] = []
    for target in targets:
        if _existing_config(target, ctx.cwd):
            expanded += [app.name for app in _load_config(target, None)]
        else:
            expanded.append(target)
    return expanded


def _cli_env(ctx: Context, ns: argparse.Namespace) -> dict[str, str] | None:
    from corral.cli.parser import filtered_env

    return filtered_env(dict(ctx.environ), ns.filter_env)


# --- start ---


def classify_start_target(
    target: str,
    *,
    cwd: str,
    app_cwd: str | None,
    is_config: Callable[[str], bool],
    which: Callable[[str], str | None],
) -> str:
    """What `corral start TARGET` means: "config", "new" (an app from flags), "program",
    or "target" (existing apps).

    A config file by its name; then an existing file (here, or in --cwd) or a command line
    (whitespace) is a new app; a bare word found on PATH is a "program": a new app, unless
    an app of that name exists (`corral start sleep` after `corral start "sleep 60"`);
    anything else names existing apps.
    """
    if is_config(target):
        return "config"
    if any(c.isspace() for c in target):
        return "new"
    path = os.path.expanduser(target)
    bases = [cwd] + ([os.path.join(cwd, os.path.expanduser(app_cwd))] if app_cwd else [])
    if any(os.path.isfile(os.path.join(base, path)) for base in bases):
        return "new"
    if "/" not in target and which(target):
        return "program"
    return "target"


def _default_config(cwd: str) -> str:
    for name in DEFAULT_CONFIGS:
        if os.path.isfile(os.path.join(cwd, name)):
            return name
    raise CliError(
        "start what? give a script, a command, a config file or an app "
        f"(no {DEFAULT_CONFIGS[0]} here)",
        status=2,
    )


def start_request(
    apps: list[AppConfig], ns: argparse.Namespace, environ: Mapping[str, str]
) -> dict[str, Any]:
    from corral.cli.parser import filtered_env

    return {
        "apps": [app.to_dict() for app in apps],
        "cli_env": filtered_env(dict(environ), ns.filter_env),
        "env_name": ns.env,
        "force": bool(ns.force),
    }


def cmd_start(ctx: Context, ns: argparse.Namespace) -> int:
    import shutil

    from corral.cli.parser import given_app_flags

    target: str = ns.script if ns.script is not None else _default_config(ctx.cwd)
    flags = given_app_flags(ns)
    kind = classify_start_target(
        target, cwd=ctx.cwd, app_cwd=ns.cwd, is_config=is_config_file, which=shutil.which
    )
    if kind == "program" and not (flags or ns.app_args or ns.only):
        # An existing app of that name wins over the program of the same name.
        try:
            records = ctx.call("start", **_target_start_request(ctx, ns, target))
        except ProtocolError as exc:
            if exc.code != ErrorCode.UNKNOWN_TARGET:
                raise
        else:
            _print_records(ctx, records)
            return 0
    if kind == "config":
        extra = flags + (["-- arguments"] if ns.app_args else [])
        if extra:
            raise CliError(
                f"{', '.join(extra)} cannot be used with a config file (set them in {target})"
            )
        ctx.prestart()  # a config file is about to be started: the daemon will be needed
        try:
            apps = _load_config(target, ns.only)
            if ns.env is not None:
                _check_env_name(apps, ns.env, target)
        except CliError:
            ctx.abandon_prestart()
            raise
    elif kind in ("new", "program"):
        if ns.only:
            raise CliError("--only applies to a config file")
        apps = [_app_from_flags(ctx, ns, target)]
        if ns.env is not None:
            _check_env_name(apps, ns.env, "command line")
    else:
        if flags or ns.app_args or ns.only:
            extra = flags + (["--only"] if ns.only else []) + (["--"] if ns.app_args else [])
            raise CliError(
                f"no such file or program: {target} "
                f"({', '.join(extra)}: only for starting a new app)"
            )
        try:
            records = ctx.call("start", **_target_start_request(ctx, ns, target))
        except ProtocolError as exc:
            if exc.code == ErrorCode.UNKNOWN_TARGET:
                raise CliError(f"no such file, program or app: {target}") from None
            raise
        _print_records(ctx, records)
        return 0
    records = ctx.call("start", **start_request(apps, ns, ctx.environ))
    _print_records(ctx, records)
    _note_no_release(ctx, apps, records)
    return 0


def _note_no_release(ctx: Context, apps: list[AppConfig], records: list[Any]) -> None:
    """A git app is not launched before its first deploy: say what to do."""
    for app in apps:
        statuses = {r.get("status") for r in records if r.get("name") == app.name}
        if app.git is not None and statuses <= {"stopped"}:
            ctx.warn(f"{app.name} has no release yet: run `corral deploy {app.name}`")


def _target_start_request(ctx: Context, ns: argparse.Namespace, target: str) -> dict[str, Any]:
    """`start` of existing apps: {"target"}, with the env options only when given."""
    request: dict[str, Any] = {"target": target, "force": bool(ns.force)}
    if ns.update_env:
        request |= {"update_env": True, "cli_env": _cli_env(ctx, ns)}
    if ns.env is not None:
        request["env_name"] = ns.env
    return request


def _app_from_flags(ctx: Context, ns: argparse.Namespace, script: str) -> AppConfig:
    from pathlib import Path

    from corral.cli.parser import app_mapping
    from corral.config.errors import ConfigError
    from corral.config.schema import app_from_mapping

    mapping = app_mapping(ns, script=script, args=ns.app_args, cwd=ctx.cwd)
    try:
        return app_from_mapping(mapping, source="command line", base_dir=Path(ctx.cwd))
    except ConfigError as exc:
        raise CliError(str(exc)) from None


# --- Verbs on existing apps ---


def _restart_like(ctx: Context, ns: argparse.Namespace, cmd: str) -> int:
    common: dict[str, Any] = {
        "update_env": bool(ns.update_env),
        "cli_env": _cli_env(ctx, ns) if ns.update_env else None,
        "env_name": ns.env,
    }
    if cmd == "reload" and ns.parallel is not None:
        common["parallel"] = ns.parallel

    def send(target: str) -> Any:
        if _existing_config(target, ctx.cwd):
            apps = _load_config(target, ns.only)
            if ns.env is not None:
                _check_env_name(apps, ns.env, target)
            return ctx.call(cmd, apps=[a.to_dict() for a in apps], **common)
        return ctx.call(cmd, target=target, **common)

    results, ok = _each_target(ctx, ns.targets, send)
    if results:
        _print_records(ctx, _merge_records(results))
    return 0 if ok else 1


def cmd_restart(ctx: Context, ns: argparse.Namespace) -> int:
    return _restart_like(ctx, ns, "restart")


def cmd_reload(ctx: Context, ns: argparse.Namespace) -> int:
    return _restart_like(ctx, ns, "reload")


def _simple_targets(ctx: Context, ns: argparse.Namespace, cmd: str) -> int:
    targets = _expand_config_targets(ctx, ns.targets)
    results, ok = _each_target(ctx, targets, lambda t: ctx.call(cmd, target=t))
    if results:
        _print_records(ctx, _merge_records(results))
    return 0 if ok else 1


def cmd_stop(ctx: Context, ns: argparse.Namespace) -> int:
    return _simple_targets(ctx, ns, "stop")


def cmd_reset(ctx: Context, ns: argparse.Namespace) -> int:
    return _simple_targets(ctx, ns, "reset")


def cmd_delete(ctx: Context, ns: argparse.Namespace) -> int:
    targets = _expand_config_targets(ctx, ns.targets)
    results, ok = _each_target(ctx, targets, lambda t: ctx.call("delete", target=t))
    for result in results:
        for name in result.get("deleted", []):
            ctx.print(f"deleted: {name}")
    return 0 if ok else 1


def cmd_scale(ctx: Context, ns: argparse.Namespace) -> int:
    count = ns.count.strip()
    digits = count[1:] if count[:1] in ("+", "-") else count
    if not (digits.isascii() and digits.isdigit()):
        raise CliError(f"scale: expected N, +N or -N instances, got {ns.count!r}", status=2)
    _print_records(ctx, ctx.call("scale", target=ns.target, count=count))
    return 0


def normalize_signal(text: str) -> str | int:
    """`9` -> 9, `usr1` -> "SIGUSR1", `SIGTERM` stays."""
    stripped = text.strip()
    if stripped.isdigit():
        return int(stripped)
    upper = stripped.upper()
    return upper if upper.startswith("SIG") else f"SIG{upper}"


def cmd_send_signal(ctx: Context, ns: argparse.Namespace) -> int:
    signal = normalize_signal(ns.signal)
    _print_records(ctx, ctx.call("send_signal", target=ns.target, signal=signal))
    return 0


def cmd_ls(ctx: Context, ns: argparse.Namespace) -> int:
    _print_records(ctx, ctx.call("list"))
    return 0


def cmd_jlist(ctx: Context, ns: argparse.Namespace) -> int:
    import json

    ctx.print(json.dumps(ctx.call("list")))
    return 0


def cmd_prettylist(ctx: Context, ns: argparse.Namespace) -> int:
    import json

    ctx.print(json.dumps(ctx.call("list"), indent=2))
    return 0


def cmd_describe(ctx: Context, ns: argparse.Namespace) -> int:
    targets = _expand_config_targets(ctx, ns.targets)
    results, ok = _each_target(ctx, targets, lambda t: ctx.call("describe", target=t))
    apps: dict[Any, Mapping[str, Any]] = {}
    for result in results:
        for app in result:
            apps[app.get("id")] = app
    if apps:
        ordered = sorted(apps.values(), key=lambda a: a.get("id") or 0)
        ctx.print(render.describe(ordered, ctx.style))
    return 0 if ok else 1


def cmd_env(ctx: Context, ns: argparse.Namespace) -> int:
    targets = _expand_config_targets(ctx, ns.targets)
    results, ok = _each_target(ctx, targets, lambda t: ctx.call("env", target=t))
    seen: dict[tuple[Any, Any], Mapping[str, Any]] = {}
    for result in results:
        for entry in result:
            seen[(entry.get("name"), entry.get("instance"))] = entry
    if seen:
        ctx.print(render.env_lines([seen[k] for k in sorted(seen, key=str)]))
    return 0 if ok else 1


# --- Logs ---


def tail_lines(path: str, count: int) -> list[str]:
    """The last `count` lines of a file, read backwards in blocks (never the whole file).

    At most TAIL_MAX_BYTES are read, so one giant line cannot take all the memory; a
    final line without a newline counts as a line. Invalid UTF-8 is replaced.
    """
    if count <= 0:
        return []
    with open(path, "rb") as f:
        end = f.seek(0, os.SEEK_END)
        pos = end
        chunks: list[bytes] = []
        newlines = 0
        # One more newline than lines wanted: the one ending the line before them.
        while pos > 0 and newlines <= count and end - pos < TAIL_MAX_BYTES:
            size = min(TAIL_BLOCK, pos)
            pos -= size
            f.seek(pos)
            chunk = f.read(size)
            chunks.append(chunk)
            newlines += chunk.count(b"\n")
    if end == 0:
        return []
    data = b"".join(reversed(chunks))
    if data.endswith(b"\n"):
        data = data[:-1]
    lines = data.split(b"\n")
    if pos > 0 and len(lines) > 1:
        lines = lines[1:]  # the first piece may be the end of an earlier line
    return [line.decode("utf-8", "replace") for line in lines[-count:]]


def _log_sources(
    entries: Iterable[Mapping[str, Any]], streams: tuple[str, ...]
) -> list[tuple[str, Any, str, str]]:
    """(name, instance, stream, path) of every file, each path once (merged logs)."""
    seen: set[str] = set()
    sources: list[tuple[str, Any, str, str]] = []
    ordered = sorted(entries, key=lambda e: (str(e.get("name")), e.get("instance") or 0))
    for entry in ordered:
        for stream in streams:
            path = entry.get(stream)
            if not path or path in seen:
                continue
            seen.add(path)
            sources.append((str(entry.get("name")), entry.get("instance", 0), stream, path))
    return sources


def _log_line(
    ns: argparse.Namespace, style: render.Style, name: str, instance: Any, stream: str, line: str
) -> str:
    if ns.json:
        import json

        # The same keys as a `log_type: json` file line (which already is one: pass it on).
        if line.startswith("{"):
            try:
                record = json.loads(line)
            except ValueError:
                record = None
            if isinstance(record, dict) and "message" in record:
                return line
        return json.dumps({"app": name, "instance": instance, "stream": stream, "message": line})
    if ns.raw:
        return line
    return render.log_prefix(name, instance, stream, style) + line


def cmd_logs(ctx: Context, ns: argparse.Namespace) -> int:
    streams = ("err",) if ns.err else ("out",) if ns.out else ("out", "err")
    client = ctx.client()
    entries = client.call("log_files", target=ns.target)
    if ns.follow:
        # Subscribe before reading the tails: a line may show twice, but none is lost.
        client.call("subscribe", logs=ns.target, events=False)
    headers = ctx.style.tty and not (ns.raw or ns.json)
    for name, instance, stream, path in _log_sources(entries, streams):
        try:
            lines = tail_lines(path, ns.lines)
        except FileNotFoundError:
            continue
        except OSError as exc:
            ctx.warn(f"cannot read {path}: {exc.strerror or exc}")
            continue
        if headers and ns.lines:
            ctx.print(render.log_header(path, ns.lines, ctx.style))
        for line in lines:
            ctx.print(_log_line(ns, ctx.style, name, instance, stream, line))
    ctx.stdout.flush()
    if not ns.follow:
        return 0
    try:
        return _follow(ctx, ns, client, streams)
    except KeyboardInterrupt:
        return 0


class LineJoiner:
    """Log events carry chunks as read from the pipes: put whole lines back together.

    A partial line waits for its end, up to PARTIAL_MAX characters; `flush` gives what
    is left (on exit).
    """

    PARTIAL_MAX = 64 * 1024

    def __init__(self) -> None:
        self._partial: dict[tuple[str, Any, str], str] = {}

    def feed(self, name: str, instance: Any, stream: str, data: str) -> list[str]:
        key = (name, instance, stream)
        text = self._partial.pop(key, "") + data
        *lines, rest = text.split("\n")
        if len(rest) > self.PARTIAL_MAX:
            lines.append(rest)
        elif rest:
            self._partial[key] = rest
        return lines

    def flush(self) -> list[tuple[str, Any, str, str]]:
        left = [(*key, text) for key, text in self._partial.items()]
        self._partial.clear()
        return left


def _follow(
    ctx: Context, ns: argparse.Namespace, client: ControlClient, streams: tuple[str, ...]
) -> int:
    joiner = LineJoiner()
    try:
        while True:
            try:
                message = client.read()
            except ConnectionError:
                ctx.warn("the daemon closed the connection")
                return 1
            event = message.get("event")
            if not isinstance(event, dict):
                continue
            kind = event.get("type")
            if kind == "dropped":
                ctx.warn(f"{event.get('count', '?')} log events dropped (output too slow)")
                continue
            if kind != "log" or event.get("stream") not in streams:
                continue
            name = str(event.get("name"))
            instance = event.get("instance", 0)
            stream = str(event.get("stream"))
            for line in joiner.feed(name, instance, stream, str(event.get("data", ""))):
                ctx.print(_log_line(ns, ctx.style, name, instance, stream, line))
            ctx.stdout.flush()
    finally:
        for name, instance, stream, line in joiner.flush():
            ctx.print(_log_line(ns, ctx.style, name, instance, stream, line))


def cmd_monit(ctx: Context, ns: argparse.Namespace) -> int:
    from corral.cli import monit

    return monit.run(ctx, ns.target)


def cmd_flush(ctx: Context, ns: argparse.Namespace) -> int:
    targets = _expand_config_targets(ctx, ns.targets)
    if targets:
        results, ok = _each_target(ctx, targets, lambda t: ctx.call("flush", target=t))
    else:
        results, ok = [ctx.call("flush", target=None)], True
    flushed = {path for result in results for path in result.get("flushed", [])}
    ctx.print(f"flushed {len(flushed)} log file{'s' if len(flushed) != 1 else ''}")
    return 0 if ok else 1


def cmd_reload_logs(ctx: Context, ns: argparse.Namespace) -> int:
    reopened = ctx.call("reload_logs").get("reopened")
    if isinstance(reopened, int) and not isinstance(reopened, bool):
        ctx.print(f"reopened {reopened} log file{'s' if reopened != 1 else ''}")
    else:
        ctx.print("reopened the log files")
    return 0


# --- State, daemon ---


def cmd_save(ctx: Context, ns: argparse.Namespace) -> int:
    result = ctx.call("save", force=bool(ns.force))
    count = result.get("apps", 0)
    ctx.print(f"saved {count} app{'s' if count != 1 else ''} to {result.get('path')}")
    return 0


def cmd_resurrect(ctx: Context, ns: argparse.Namespace) -> int:
    result = ctx.call("resurrect")
    # [record], or {"restored": [record], "warning": str | None} (a dump read from .bak).
    if isinstance(result, dict):
        if result.get("warning"):
            ctx.warn(str(result["warning"]))
        result = result.get("restored") or []
    if not result:
        ctx.print("nothing to resurrect: every saved app is here already")
        return 0
    _print_records(ctx, result)
    return 0


def cmd_ping(ctx: Context, ns: argparse.Namespace) -> int:
    result = ctx.call("ping")
    ctx.print(
        f"pong: daemon pid {result.get('pid')}, version {result.get('version')}, "
        f"home {result.get('home')}"
    )
    return 0


def cmd_kill(ctx: Context, ns: argparse.Namespace) -> int:
    import time

    try:
        client = ctx.client(autostart=False)
    except NoDaemon:
        ctx.warn("no daemon running")
        return 0
    pid = client.call("ping").get("pid")
    result = client.call("kill")
    # The daemon exits after replying: wait for it, so that the next command finds none.
    deadline = time.monotonic() + KILL_WAIT
    client.set_timeout(KILL_WAIT)
    try:
        while True:
            client.read()
    except (OSError, ValueError, ProtocolError):
        pass
    while isinstance(pid, int) and _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.01)
    stopped = result.get("stopped", 0)
    ctx.print(f"daemon stopped ({stopped} app{'s' if stopped != 1 else ''} stopped)")
    return 0


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _startup_user() -> str:
    import pwd

    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        raise CliError(f"uid {os.geteuid()} has no user name; cannot write a unit") from None


def cmd_startup(ctx: Context, ns: argparse.Namespace) -> int:
    from pathlib import Path

    from corral.cli.startup import StartupError, install_unit

    system = ns.system if ns.system is not None else os.geteuid() == 0
    unit_dir = Path(ctx.cwd, os.path.expanduser(ns.unit_dir)) if ns.unit_dir else None
    try:
        result = install_unit(
            corral_argv=[os.path.abspath(sys.executable), "-m", "corral.core.daemon"],
            home=ctx.home.root,
            user=_startup_user(),
            system=system,
            unit_dir=unit_dir,
        )
    except StartupError as exc:
        raise CliError(str(exc)) from None
    ctx.print(f"wrote {result.path}")
    if result.ran:
        for argv in result.commands:
            ctx.print(f"ran: {' '.join(argv)}")
    else:
        ctx.print("to enable it, run:")
        for argv in result.commands:
            ctx.print(f"  {' '.join(argv)}")
    for note in result.notes:
        ctx.print(f"note: {note}")
    return 0


def cmd_unstartup(ctx: Context, ns: argparse.Namespace) -> int:
    from pathlib import Path

    from corral.cli.startup import StartupError, remove_unit

    system = ns.system if ns.system is not None else os.geteuid() == 0
    unit_dir = Path(ctx.cwd, os.path.expanduser(ns.unit_dir)) if ns.unit_dir else None
    try:
        result = remove_unit(system=system, user=_startup_user(), unit_dir=unit_dir)
    except StartupError as exc:
        raise CliError(str(exc)) from None
    if not result.removed:
        ctx.print(f"no unit at {result.path}")
        return 0
    ctx.print(f"removed {result.path}")
    if result.ran:
        for argv in result.commands:
            ctx.print(f"ran: {' '.join(argv)}")
    elif result.commands:
        ctx.print("to finish, run:")
        for argv in result.commands:
            ctx.print(f"  {' '.join(argv)}")
    return 0


def write_new_file(path: str, data: bytes, *, force: bool, mode: int = 0o644) -> None:
    """Write `path` atomically (temp file, fsync, rename); never replace it unless `force`.

    Without `force` the temp file is hard-linked into place, which fails if the name
    exists, so a file created meanwhile is not overwritten either.
    """
    import secrets

    folder = os.path.dirname(os.path.abspath(path))
    tmp = os.path.join(folder, f".{os.path.basename(path)}.tmp-{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
    try:
        try:
            os.fchmod(fd, mode & ~_umask())
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        if force:
            os.replace(tmp, path)
        else:
            try:
                os.link(tmp, path)
            except FileExistsError:
                raise
            except OSError:  # a filesystem without hard links
                if os.path.lexists(path):
                    raise FileExistsError(path) from None
                os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    dfd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def cmd_init(ctx: Context, ns: argparse.Namespace) -> int:
    from corral.config.template import EXAMPLE_YAML

    path = os.path.join(ctx.cwd, os.path.expanduser(ns.file))
    if os.path.isdir(path):
        raise CliError(f"{ns.file} is a directory")
    try:
        write_new_file(path, EXAMPLE_YAML.encode("utf-8"), force=ns.force)
    except FileExistsError:
        raise CliError(f"{ns.file} exists already (use --force to overwrite it)") from None
    except OSError as exc:
        raise CliError(f"cannot write {ns.file}: {exc.strerror or exc}") from None
    ctx.print(f"wrote {ns.file}: edit it, then run `corral start {ns.file}`")
    return 0


def cmd_metrics(ctx: Context, ns: argparse.Namespace) -> int:
    if ns.off:
        ctx.call("set", key="metrics.port", value="0")
        ctx.print("metrics: not served")
        return 0
    if ns.serve is not None:
        ctx.call("set", key="metrics.port", value=str(ns.serve))
        host = ctx.call("get", key="metrics.host")["metrics.host"]
        ctx.print(f"metrics: http://{host}:{ns.serve}/metrics")
        return 0
    ctx.stdout.write(ctx.call("metrics")["text"])
    return 0


def cmd_set(ctx: Context, ns: argparse.Namespace) -> int:
    if ns.key == "agent.password":
        from corral.agent.cli import cmd_set_password

        return cmd_set_password(ctx, ns)
    if ns.value is None:
        raise CliError(f"set {ns.key}: a VALUE is needed (corral set KEY VALUE)", 2)
    result = ctx.call("set", key=ns.key, value=ns.value)
    ctx.print(f"{result['key']} = {_setting_text(result['value'])}")
    return 0


def cmd_get(ctx: Context, ns: argparse.Namespace) -> int:
    for key, value in ctx.call("get", key=ns.key).items():
        if key == "agent.password" and value:
            value = "(set)"  # a verifier: nothing to read in it
        ctx.print(f"{key} = {_setting_text(value)}")
    return 0


def cmd_link(ctx: Context, ns: argparse.Namespace) -> int:
    from corral.agent.cli import cmd_link as link

    return link(ctx, ns)


def cmd_unlink(ctx: Context, ns: argparse.Namespace) -> int:
    from corral.agent.cli import cmd_unlink as unlink

    return unlink(ctx, ns)


def _setting_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


# --- Secrets (SPEC 3) ---

SECRET_MAX_BYTES = 65536
"""The longest value the daemon's store takes (corral.secrets.store.MAX_VALUE_BYTES; not
imported, so that the CLI does not load the cipher)."""


def _getpass(prompt: str) -> str:
    import getpass

    return getpass.getpass(prompt)


def _secret_names(ns: argparse.Namespace) -> tuple[str, str]:
    """APP and NAME of `secret set/rm`, checked here so that a mistake is not sent. NAME is
    never echoed: `NAME=value` is a common slip."""
    from corral.cli.parser import ARGV_VALUE_REFUSED
    from corral.config.model import NAME_RE, SECRET_NAME_RE

    if not NAME_RE.match(ns.app):
        raise CliError(f"{ns.app!r} is not an app name (letters, digits and . _ : -)", 2)
    if "=" in ns.name:
        raise CliError(f"secret {ns.secret_verb}: {ARGV_VALUE_REFUSED}", 2)
    if not SECRET_NAME_RE.match(ns.name):
        raise CliError(
            "NAME must be an environment variable name: letters, digits and _, not starting"
            " with a digit, at most 128 characters",
            2,
        )
    return ns.app, ns.name


def read_secret_value(stdin: BinaryIO, ask: Callable[[str], str], what: str) -> str:
    """The value: from a hidden prompt (twice) on a terminal, else all of stdin minus one
    trailing newline. Errors never show it."""
    if stdin.isatty():
        try:
            value = ask(f"value of {what} (not shown): ")
            again = ask("the same again: ")
        except EOFError:
            raise CliError("no value given: nothing saved") from None
        if value != again:
            raise CliError("the two values differ: nothing saved")
    else:
        data = stdin.read(SECRET_MAX_BYTES + 3)  # + a newline (CR LF), + one to tell
        try:
            value = data.decode("utf-8")
        except UnicodeDecodeError:
            raise CliError("the value on stdin is not UTF-8 text: nothing saved") from None
        if value.endswith("\n"):
            value = value[:-2] if value.endswith("\r\n") else value[:-1]
    if not value:
        raise CliError("empty value: nothing saved")
    if "\0" in value:
        raise CliError("the value contains a NUL byte, which no environment can hold")
    if len(value.encode("utf-8")) > SECRET_MAX_BYTES:
        raise CliError(f"the value is longer than {SECRET_MAX_BYTES} bytes: nothing saved")
    return value


def cmd_secret_set(ctx: Context, ns: argparse.Namespace) -> int:
    app, name = _secret_names(ns)
    value = read_secret_value(ctx.stdin, ctx.ask_hidden, f"{name} of {app}")
    ctx.call("secret_set", app=app, name=name, value=value)
    ctx.print(
        f"secret {name} of {app} saved; it applies from the app's next start: corral reload {app}"
    )
    return 0


def cmd_secret_ls(ctx: Context, ns: argparse.Namespace) -> int:
    import json

    entries = ctx.call("secret_list", app=ns.app)
    if ns.json:
        ctx.print(json.dumps(entries))
    elif entries:
        ctx.print(render.secret_table(entries, ctx.style))
    else:
        ctx.print(f"no secrets for {ns.app}" if ns.app else "no secrets")
    return 0


def cmd_secret_rm(ctx: Context, ns: argparse.Namespace) -> int:
    app, name = _secret_names(ns)
    if not ctx.call("secret_remove", app=app, name=name).get("removed"):
        raise CliError(f"{app} has no secret {name}")
    ctx.print(f"secret {name} of {app} removed; the app keeps it until its next start")
    return 0


def cmd_secret_rotate_key(ctx: Context, ns: argparse.Namespace) -> int:
    result = ctx.call("secret_rotate")
    count = result.get("rotated", 0)
    ctx.print(
        f"new master key {result.get('key_id')}: "
        f"{count} secret{'s' if count != 1 else ''} re-encrypted"
    )
    return 0


SECRET_VERBS: dict[str, Callable[[Context, argparse.Namespace], int]] = {
    "set": cmd_secret_set,
    "ls": cmd_secret_ls,
    "rm": cmd_secret_rm,
    "rotate-key": cmd_secret_rotate_key,
}


def cmd_secret(ctx: Context, ns: argparse.Namespace) -> int:
    return SECRET_VERBS[ns.secret_verb](ctx, ns)


def cmd_deploy(ctx: Context, ns: argparse.Namespace) -> int:
    from corral.cli import deploy

    return deploy.run(ctx, ns)


VERBS: dict[str, Callable[[Context, argparse.Namespace], int]] = {
    "start": cmd_start,
    "stop": cmd_stop,
    "restart": cmd_restart,
    "reload": cmd_reload,
    "delete": cmd_delete,
    "scale": cmd_scale,
    "reset": cmd_reset,
    "ls": cmd_ls,
    "jlist": cmd_jlist,
    "prettylist": cmd_prettylist,
    "describe": cmd_describe,
    "env": cmd_env,
    "logs": cmd_logs,
    "monit": cmd_monit,
    "flush": cmd_flush,
    "reload-logs": cmd_reload_logs,
    "save": cmd_save,
    "resurrect": cmd_resurrect,
    "startup": cmd_startup,
    "unstartup": cmd_unstartup,
    "kill": cmd_kill,
    "ping": cmd_ping,
    "send-signal": cmd_send_signal,
    "init": cmd_init,
    "metrics": cmd_metrics,
    "set": cmd_set,
    "get": cmd_get,
    "link": cmd_link,
    "unlink": cmd_unlink,
    "secret": cmd_secret,
    "deploy": cmd_deploy,
}


def run(ctx: Context, ns: argparse.Namespace) -> int:
    return VERBS[ns.verb](ctx, ns)
