"""The command line grammar (argparse), and turning `start` flags into app settings.

`parse(argv)` returns a Namespace with `verb` set to the canonical verb name (aliases
resolved) and, for `start`, `app_args` holding what followed `--`. Usage errors exit
with status 2 (argparse's convention) and one line on stderr.
"""

from __future__ import annotations

import argparse
import os
from typing import TYPE_CHECKING, Any, NoReturn

from corral import __version__

if TYPE_CHECKING:
    from collections.abc import Callable

SECRET_KEY_ENV = "CORRAL_SECRET_KEY"
"""corral.secrets.keys.ENV_KEY, not imported: the CLI does not load the cipher."""

# The flags of `start` that define a new app, by the AppConfig (or schema) key they set.
# Values stay raw strings: corral.config.schema validates and converts them.
APP_FLAGS: dict[str, str] = {
    "name": "--name",
    "instances": "--instances",
    "interpreter": "--interpreter",
    "interpreter_args": "--interpreter-args",
    "cwd": "--cwd",
    "watch": "--watch",
    "ignore_watch": "--ignore-watch",
    "watch_delay": "--watch-delay",
    "max_memory_restart": "--max-memory-restart",
    "cron_restart": "--cron-restart",
    "restart_delay": "--restart-delay",
    "exp_backoff_restart_delay": "--exp-backoff-restart-delay",
    "max_restarts": "--max-restarts",
    "min_uptime": "--min-uptime",
    "kill_timeout": "--kill-timeout",
    "wait_ready": "--wait-ready",
    "listen_timeout": "--listen-timeout",
    "autorestart": "--no-autorestart",
    "stop_exit_codes": "--stop-exit-codes",
    "merge_logs": "--merge-logs",
    "log_date_format": "--log-date-format",
    "time": "--time",
    "out_file": "--output",
    "error_file": "--error",
    "log_type": "--log-type",
    "user": "--user",
    "group": "--group",
}

# Options taking any number of values: they may swallow the script (`--watch app.py`).
_VARIADIC = {
    "--watch": "watch",
    "--ignore-watch": "ignore_watch",
    "--stop-exit-codes": "stop_exit_codes",
    "--filter-env": "filter_env",
}

VERB_ALIASES: dict[str, list[str]] = {
    "delete": ["del"],
    "ls": ["list", "status", "l"],
    "describe": ["desc", "show", "info"],
    "save": ["dump"],
    "send-signal": ["sendSignal"],
}


class _Formatter(argparse.HelpFormatter):
    """argparse's help formatter, without a terminal size query per add_argument."""

    def __init__(
        self,
        prog: str,
        indent_increment: int = 2,
        max_help_position: int = 30,
        width: int | None = None,
    ) -> None:
        super().__init__(prog, indent_increment, max_help_position, width or _width())


_WIDTH: list[int] = []


def _width() -> int:
    if not _WIDTH:
        try:
            columns = int(os.environ["COLUMNS"])
        except (KeyError, ValueError):
            try:
                columns = os.get_terminal_size(1).columns
            except OSError:
                columns = 80
        _WIDTH.append(max(40, min(columns, 120)) - 2)
    return _WIDTH[0]


class _Parser(argparse.ArgumentParser):
    """argparse, with errors on one line: `corral: <message>` (exit status 2)."""

    def error(self, message: str) -> NoReturn:
        verb = self.prog.partition(" ")[2]
        where = f"{verb}: " if verb else ""
        self.exit(2, f"corral: {where}{message} (see `{self.prog} --help`)\n")


def _targets(p: argparse.ArgumentParser, what: str = "apps") -> None:
    p.add_argument(
        "targets", nargs="+", metavar="TARGET", help=f"{what}: an id, a name, all or /regex/"
    )


def _env_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--env", metavar="NAME", help="use the env_NAME profile of the config")
    p.add_argument(
        "--update-env",
        action="store_true",
        help="replace the stored environment with this shell's (and the config's)",
    )
    p.add_argument(
        "--filter-env",
        nargs="*",
        metavar="PREFIX",
        help="do not pass variables starting with PREFIX; no PREFIX: pass none at all",
    )
    p.add_argument(
        "--only", action="append", metavar="NAMES", help="comma-separated app names of the config"
    )


def _add_start_flags(p: argparse.ArgumentParser) -> None:
    a = p.add_argument
    a("--name", help="the app's name (default: the script's name)")
    a("-i", "--instances", metavar="N", help="number of instances: N, max (one per CPU), -1")
    a("--interpreter", metavar="PROG", help="run the script with PROG (none: exec it)")
    a(
        "--interpreter-args",
        "--node-args",
        dest="interpreter_args",
        metavar="ARGS",
        help="arguments for the interpreter, one string",
    )
    a("--cwd", metavar="DIR", help="the app's working directory (default: here)")
    a(
        "--watch",
        nargs="*",
        metavar="PATH",
        help="restart on file changes in PATHs (no PATH: the app's cwd)",
    )
    a("--ignore-watch", nargs="+", metavar="PATTERN", help="paths or globs not to watch")
    a("--watch-delay", metavar="DURATION", help="debounce delay of the watcher")
    a("--max-memory-restart", metavar="SIZE", help="restart above this RSS (200M, 1G)")
    a("--cron-restart", "--cron", dest="cron_restart", metavar="CRON", help="restart on a cron")
    a("--restart-delay", metavar="DURATION", help="wait this long before a restart")
    a(
        "--exp-backoff-restart-delay",
        metavar="DURATION",
        help="exponential backoff between crash restarts, starting here",
    )
    a("--max-restarts", metavar="N", help="unstable restarts before the app is errored")
    a("--min-uptime", metavar="DURATION", help="a shorter run is an unstable restart")
    a("--kill-timeout", metavar="DURATION", help="SIGKILL this long after the stop signal")
    a("--wait-ready", action="store_true", default=None, help="wait for READY=1 (sd_notify)")
    a("--listen-timeout", metavar="DURATION", help="how long to wait for ready")
    a(
        "--no-autorestart",
        dest="autorestart",
        action="store_false",
        default=None,
        help="do not restart the app when it exits",
    )
    a(
        "--stop-exit-codes",
        nargs="+",
        metavar="CODE",
        help="exit codes that do not trigger a restart",
    )
    a("--merge-logs", action="store_true", default=None, help="one log file for all instances")
    a("--log-date-format", metavar="FORMAT", help="prefix log lines with this time format")
    a("--time", action="store_true", default=None, help="prefix log lines with the time")
    a("-o", "--output", dest="out_file", metavar="FILE", help="stdout log file")
    a("-e", "--error", dest="error_file", metavar="FILE", help="stderr log file")
    a("--log-type", choices=["raw", "json"], help="log lines as they are, or JSON lines")
    a("--user", "--uid", dest="user", metavar="USER", help="run as this user (as root)")
    a("--group", "--gid", dest="group", metavar="GROUP", help="run with this group (as root)")


def _start(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "script",
        nargs="?",
        metavar="SCRIPT|CONFIG|APP",
        help="a script or program, a quoted command line, a config file, or an app",
    )
    _add_start_flags(p)
    _env_options(p)
    p.add_argument(
        "-f", "--force", action="store_true", help="start the app even if it is already running"
    )
    p.epilog = "Arguments after `--` are passed to the app."


def _restart(p: argparse.ArgumentParser) -> None:
    _targets(p, "apps (or a config file)")
    _env_options(p)


def _reload(p: argparse.ArgumentParser) -> None:
    _restart(p)
    p.add_argument(
        "--parallel",
        type=_positive,
        default=None,
        metavar="N",
        help="instances replaced at a time (default: the app's reload_parallel, 1)",
    )


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of 1 or more, got {text!r}")
    return int(text)


def _scale(p: argparse.ArgumentParser) -> None:
    p.add_argument("target", metavar="NAME")
    p.add_argument("count", metavar="N|+N|-N", help="the new number, or a change")


def _logs(p: argparse.ArgumentParser) -> None:
    p.add_argument("target", nargs="?", metavar="TARGET", help="an app (default: all)")
    p.add_argument("--lines", type=_non_negative, default=15, metavar="N", help="default 15")
    p.add_argument("--follow", "-F", action="store_true", help="print new lines as they come")
    streams = p.add_mutually_exclusive_group()
    streams.add_argument("--err", action="store_true", help="stderr only")
    streams.add_argument("--out", action="store_true", help="stdout only")
    p.add_argument("--raw", action="store_true", help="no name|instance| prefix")
    p.add_argument("--json", action="store_true", help="one JSON object per line")


def _flush(p: argparse.ArgumentParser) -> None:
    p.add_argument("targets", nargs="*", metavar="TARGET", help="apps (default: all)")


def _save(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--force", "-f", action="store_true", help="save even an empty list over a non-empty one"
    )


def _startup(p: argparse.ArgumentParser) -> None:
    p.add_argument("platform", nargs="?", choices=["systemd"], default="systemd")
    kind = p.add_mutually_exclusive_group()
    kind.add_argument(
        "--system", dest="system", action="store_true", default=None, help="a system unit"
    )
    kind.add_argument("--user", dest="system", action="store_false", help="a user unit")
    p.add_argument("--unit-dir", metavar="DIR", help="the unit's folder (then not enabled)")


def _send_signal(p: argparse.ArgumentParser) -> None:
    p.add_argument("signal", metavar="SIGNAL", help="SIGUSR1, USR1 or a number")
    p.add_argument("target", metavar="TARGET")


def _init(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", nargs="?", default="corral.yaml", metavar="FILE")
    p.add_argument("--force", "-f", action="store_true", help="overwrite an existing file")


def _metrics(p: argparse.ArgumentParser) -> None:
    serve = p.add_mutually_exclusive_group()
    serve.add_argument(
        "--serve",
        type=_positive,
        metavar="PORT",
        help="serve them on http://127.0.0.1:PORT/metrics (kept across restarts)",
    )
    serve.add_argument("--off", action="store_true", help="stop serving them")


def _set(p: argparse.ArgumentParser) -> None:
    p.add_argument("key", metavar="KEY", help="e.g. logs.max_size, logs.retain, logs.compress")
    p.add_argument("value", metavar="VALUE", nargs="?")
    p.epilog = (
        "agent.password takes no VALUE: it is asked twice at a hidden prompt (or read from"
        ' stdin) and only its argon2 verifier is stored; `corral set agent.password ""`'
        " removes it."
    )


def _unlink(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "public", metavar="PUBLIC", nargs="?", help="only if linked to this bucket (a check)"
    )


def _link(p: argparse.ArgumentParser) -> None:
    p.add_argument("public", metavar="PUBLIC", nargs="?", help="the bucket's public id")
    p.add_argument(
        "secret",
        metavar="SECRET",
        nargs="?",
        help="the bucket's secret key (`-`: read it from stdin or a hidden prompt)",
    )
    p.add_argument("--hub", metavar="URL", help="the hub, wss://host[:port] (ws:// on loopback)")
    p.add_argument(
        "--ca-file", metavar="FILE", help="trust this CA for the hub (default: SSL_CERT_FILE)"
    )
    p.add_argument("--info", action="store_true", help="show the link and its state")
    p.add_argument("--json", action="store_true", help="--info: as JSON")
    p.epilog = (
        "Only keys derived from the secret reach the daemon (<home>/agent.json, 0600); the "
        "secret is never stored and never sent to the hub."
    )


def _get(p: argparse.ArgumentParser) -> None:
    p.add_argument("key", nargs="?", metavar="KEY", help="one setting (default: all)")


def _monit(p: argparse.ArgumentParser) -> None:
    p.add_argument("target", nargs="?", metavar="TARGET", help="only these apps (default: all)")
    p.epilog = "Keys: up/down or j/k select, r restart, ? help, q quit."


def _nothing(p: argparse.ArgumentParser) -> None:
    pass


def _deploy(p: argparse.ArgumentParser) -> None:
    p.add_argument("app", metavar="APP", help="an app with a git source (its name)")
    p.add_argument("--ref", metavar="REF", help="a branch, tag or commit (default: its branch)")
    action = p.add_mutually_exclusive_group()
    action.add_argument(
        "--rollback",
        nargs="?",
        const="",
        metavar="RELEASE",
        help="switch back to RELEASE (default: the one before the current) and reload",
    )
    action.add_argument("--history", action="store_true", help="the app's past deploys")
    action.add_argument("--releases", action="store_true", help="the releases kept on disk")
    action.add_argument(
        "--key", action="store_true", help="print the app's SSH deploy key (made if missing)"
    )
    action.add_argument("--output", metavar="ID", help="the kept output of one deploy")
    p.add_argument("--no-follow", action="store_true", help="queue the deploy and return at once")
    p.add_argument(
        "--limit", type=_positive, default=20, metavar="N", help="--history: N deploys (20)"
    )
    p.add_argument("--json", action="store_true", help="--history, --releases: as JSON")
    p.epilog = (
        "Without an option: fetch the app's branch (or --ref), build a new release, switch "
        "to it and reload without downtime, printing the output live; exit status 0 when "
        "it succeeded, 1 when it failed. Ctrl-C detaches: the deploy goes on."
    )


ARGV_VALUE_REFUSED = (
    "a secret's value is never taken from the command line, where `ps` and the shell's "
    "history would show it: run `corral secret set APP NAME` and type it at the prompt, "
    "or give it on stdin (`corral secret set APP NAME < file`)"
)


def _secret(p: argparse.ArgumentParser) -> None:
    actions = p.add_subparsers(
        dest="secret_verb", metavar="ACTION", parser_class=_Parser, required=True
    )

    def action(name: str, help_text: str, aliases: list[str] | None = None) -> Any:
        return actions.add_parser(
            name,
            aliases=aliases or [],
            help=help_text,
            description=help_text,
            formatter_class=_Formatter,
        )

    set_ = action("set", "encrypt and save a secret of an app; it applies from its next start")
    set_.add_argument("app", metavar="APP", help="the app's name (it need not exist yet)")
    set_.add_argument("name", metavar="NAME", help="the environment variable, e.g. DB_PASSWORD")
    # Only to refuse it with an explanation (never echoed): values do not go in argv.
    set_.add_argument("value", nargs="*", help=argparse.SUPPRESS)
    set_.epilog = (
        "The value is asked twice at a hidden prompt when stdin is a terminal, else read "
        "from stdin (one trailing newline removed). Never on the command line."
    )
    set_.set_defaults(secret_verb="set")
    ls = action("ls", "list secrets: names and when they were set, never values", ["list"])
    ls.add_argument("app", nargs="?", metavar="APP", help="one app (default: all)")
    ls.add_argument("--json", action="store_true", help="as JSON")
    ls.set_defaults(secret_verb="ls")
    rm = action("rm", "remove a secret of an app (from its next start)", ["remove", "delete"])
    rm.add_argument("app", metavar="APP")
    rm.add_argument("name", metavar="NAME")
    rm.set_defaults(secret_verb="rm")
    rotate = action("rotate-key", "re-encrypt every secret under a new master key")
    rotate.set_defaults(secret_verb="rotate-key")
    p.epilog = (
        "Secrets are stored encrypted (AES-256-GCM) in the corral home and reach an app "
        "only in its environment at exec time. List the names an app needs under "
        "`secrets:` in its config: it is not started while one is missing."
    )


# verb -> (help, adds its arguments), in the order `corral --help` lists them.
VERBS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None]]] = {
    "start": ("start a script, a command, a config file, or an existing app", _start),
    "stop": ("stop apps (they stay in the list)", _targets),
    "restart": ("restart apps", _restart),
    "reload": ("replace apps' instances one by one without downtime", _reload),
    "delete": ("stop apps and remove them from the list", _targets),
    "scale": ("set the number of instances of an app", _scale),
    "reset": ("reset the restart counters of apps", _targets),
    "ls": ("list the processes", _nothing),
    "jlist": ("the processes as JSON (one line)", _nothing),
    "prettylist": ("the processes as indented JSON", _nothing),
    "describe": ("everything about apps", _targets),
    "env": ("the environment of apps' processes", _targets),
    "logs": ("show the last log lines, then new ones with --follow", _logs),
    "monit": ("a live dashboard of the processes, their metrics and logs", _monit),
    "flush": ("empty log files", _flush),
    "reload-logs": ("reopen every log file (after an external rotation)", _nothing),
    "save": ("save the app list for `corral resurrect`", _save),
    "resurrect": ("start the apps saved by `corral save`", _nothing),
    "startup": ("install a systemd unit that starts corral at boot", _startup),
    "unstartup": ("remove the systemd unit", _startup),
    "kill": ("stop every app and the daemon", _nothing),
    "ping": ("check that the daemon answers (starting it if needed)", _nothing),
    "send-signal": ("send a signal to the main process of apps", _send_signal),
    "init": ("write an example corral.yaml here", _init),
    "metrics": ("print the Prometheus metrics, or serve them on loopback", _metrics),
    "set": ("change a daemon-wide setting (kept across restarts)", _set),
    "get": ("show daemon-wide settings", _get),
    "link": ("link this server to a monitoring hub, or show the link (--info)", _link),
    "unlink": ("close the link to the monitoring hub and forget it", _unlink),
    "secret": ("set, list, remove apps' secrets (stored encrypted, never shown)", _secret),
    "deploy": ("deploy an app from its git source, roll back, show its history", _deploy),
}
CANONICAL: dict[str, str] = {
    alias: verb for verb in VERBS for alias in [verb, *VERB_ALIASES.get(verb, [])]
}


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The whole grammar, or with `only` the arguments of that one verb (much faster:
    argparse looks up translations for every parser it creates)."""
    parser = _Parser(
        prog="corral",
        description="corral: a process manager for servers.",
        epilog="A TARGET is an app id, a name, `all` or `/regex/`. "
        "`corral COMMAND --help` describes a command. "
        "The services have their own: `corral panel --help` (the web control panel), "
        "`corral helper --help` (its root helper for isolated tenants), "
        "`corral hub --help` (the monitoring hub).",
        formatter_class=_Formatter,
    )
    parser.add_argument("--version", action="version", version=f"corral {__version__}")
    sub = parser.add_subparsers(dest="verb", metavar="COMMAND", parser_class=_Parser)
    for name, (help_text, add_arguments) in VERBS.items():
        if only is not None and name != only:
            continue
        p = sub.add_parser(
            name,
            aliases=VERB_ALIASES.get(name, []),
            help=help_text,
            description=help_text,
            formatter_class=_Formatter,
        )
        p.set_defaults(verb=name)
        add_arguments(p)
    return parser


def _non_negative(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of lines, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected 0 or more lines, got {value}")
    return value


def parse(argv: list[str]) -> argparse.Namespace:
    """Parse a command line; `--` ends corral's options, what follows goes to the app."""
    if argv and CANONICAL.get(argv[0]) == "link":
        return _parse_link(argv)
    app_args: list[str] = []
    if "--" in argv:
        cut = argv.index("--")
        argv, app_args = argv[:cut], argv[cut + 1 :]
    parser = build_parser(CANONICAL.get(argv[0]) if argv else None)
    argv = _glue_dash_values(argv)
    if argv and CANONICAL.get(argv[0]) == "secret":
        # Words argparse does not expect could be a value: refused, and never echoed.
        ns, extra = parser.parse_known_args(argv)
        if ns.secret_verb == "set" and (extra or ns.value):
            parser.exit(2, f"corral: secret set: {ARGV_VALUE_REFUSED}\n")
        if extra:
            verb = f"secret {ns.secret_verb}"
            parser.exit(2, f"corral: {verb}: unexpected arguments (see `corral {verb} --help`)\n")
    else:
        ns = parser.parse_args(argv)
    if ns.verb is None:
        parser.print_usage()
        parser.exit(2, "corral: a command is needed (see `corral --help`)\n")
    ns.app_args = app_args
    if app_args and ns.verb != "start":
        parser.exit(2, f"corral: {ns.verb}: arguments after `--` only apply to start\n")
    if ns.verb == "start":
        _recover_script(ns, argv)
        if ns.only is not None:
            ns.only = split_names(ns.only)
    elif ns.verb in ("restart", "reload") and ns.only is not None:
        ns.only = split_names(ns.only)
    return ns


_LINK_VALUED = frozenset({"--hub", "--ca-file"})
_LINK_FLAGS = frozenset({"--info", "--json", "-h", "--help"})


def _parse_link(argv: list[str]) -> argparse.Namespace:
    """`corral link`: a bucket secret may start with a dash (URL-safe base64), which
    argparse would take for an option; anything that is not one of link's own options is
    passed as a positional."""
    flags: list[str] = []
    positionals: list[str] = []
    rest = argv[1:]
    i = 0
    while i < len(rest):
        token = rest[i]
        if token == "--":
            positionals += rest[i + 1 :]
            break
        if token.split("=", 1)[0] in _LINK_VALUED:
            flags.append(token)
            if "=" not in token and i + 1 < len(rest):
                i += 1
                flags.append(rest[i])
        elif token in _LINK_FLAGS:
            flags.append(token)
        else:
            positionals.append(token)
        i += 1
    ns = build_parser("link").parse_args([argv[0], *flags, "--", *positionals])
    ns.app_args = []
    return ns


# Options whose value usually starts with a dash (`--node-args --harmony`): argparse
# would take the value for an option, so `--flag value` becomes `--flag=value`.
_DASH_VALUES = frozenset({"--interpreter-args", "--node-args"})


def _glue_dash_values(argv: list[str]) -> list[str]:
    glued: list[str] = []
    words = iter(argv)
    for word in words:
        if word in _DASH_VALUES:
            value = next(words, None)
            if value is not None:
                word = f"{word}={value}"
        glued.append(word)
    return glued


def _recover_script(ns: argparse.Namespace, argv: list[str]) -> None:
    """`start --watch app.py`: the variadic option swallowed the script; take it back."""
    if ns.script is not None:
        return
    last: str | None = None
    for word in argv:
        flag = word.partition("=")[0]
        if flag in _VARIADIC:
            last = flag
    if last is None:
        return
    dest = _VARIADIC[last]
    values: list[str] | None = getattr(ns, dest)
    minimum = 1 if last in ("--watch", "--filter-env") else 2
    if values and len(values) >= minimum and f"{last}=" not in " ".join(argv):
        ns.script = values.pop()


def split_names(values: list[str]) -> list[str]:
    """`--only a,b --only c` -> ["a", "b", "c"]."""
    return [n.strip() for v in values for n in v.split(",") if n.strip()]


def given_app_flags(ns: argparse.Namespace) -> list[str]:
    """The app-defining flags of `start` that were given, as the user would spell them."""
    return [flag for key, flag in APP_FLAGS.items() if getattr(ns, key, None) is not None]


def _number(text: str) -> Any:
    """A numeric string as an int (PM2: bare numbers are milliseconds / bytes)."""
    stripped = text.strip()
    digits = stripped[1:] if stripped[:1] == "-" else stripped
    if digits.isascii() and digits.isdigit():
        return int(stripped)
    return text


def app_mapping(
    ns: argparse.Namespace, *, script: str, args: list[str], cwd: str
) -> dict[str, Any]:
    """The raw app settings of `start SCRIPT [flags] [-- args]`, for app_from_mapping.

    Only the flags given appear (the schema supplies the defaults); `cwd` is the CLI's
    working directory when --cwd is absent. A script that exists relative to the CLI's
    cwd is made absolute, so that --cwd does not change which file it names.
    """
    mapping: dict[str, Any] = {}
    for key in APP_FLAGS:
        value = getattr(ns, key, None)
        if value is not None:
            mapping[key] = value
    mapping["script"] = _script_path(script, cwd)
    if args:
        mapping["args"] = list(args)
    mapping["cwd"] = os.path.join(cwd, os.path.expanduser(ns.cwd)) if ns.cwd else cwd
    if "watch" in mapping and mapping["watch"] == []:
        mapping["watch"] = True
    if "stop_exit_codes" in mapping:
        codes = [c for v in mapping["stop_exit_codes"] for c in v.split(",") if c.strip()]
        mapping["stop_exit_codes"] = [_number(c) for c in codes]
    for key in (
        "watch_delay",
        "max_memory_restart",
        "restart_delay",
        "exp_backoff_restart_delay",
        "max_restarts",
        "min_uptime",
        "kill_timeout",
        "listen_timeout",
    ):
        if key in mapping:
            mapping[key] = _number(mapping[key])
    return mapping


def _script_path(script: str, cwd: str) -> str:
    if any(c.isspace() for c in script):
        return script
    candidate = os.path.join(cwd, os.path.expanduser(script))
    if os.path.isfile(candidate):
        return os.path.normpath(candidate)
    return script


def filtered_env(environ: dict[str, str], filter_env: list[str] | None) -> dict[str, str] | None:
    """The CLI environment to send: all of it, none (bare --filter-env), or without prefixes.

    Never the secrets store's master key (CORRAL_SECRET_KEY): the daemon keeps this
    environment in its state file and hands it to the app."""
    if filter_env is None:
        return {k: v for k, v in environ.items() if k != SECRET_KEY_ENV}
    if not filter_env:
        return None
    prefixes = tuple(p for p in filter_env if p)
    return {k: v for k, v in environ.items() if not k.startswith(prefixes) and k != SECRET_KEY_ENV}
