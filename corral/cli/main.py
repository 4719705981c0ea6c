"""`corral`: the entry point. Parses the command line, runs the verb, maps errors to
exit statuses: 0 success, 1 an error (reported by the daemon, a config mistake, a daemon
that cannot be reached), 2 a usage error, 130 interrupted. Errors are one line on stderr,
`corral: <message>`, never a traceback for a user mistake.
"""

from __future__ import annotations

import os
import sys

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (~10 ms); mypy knows it
if TYPE_CHECKING:
    from typing import Any

# Nothing else is imported before `corral start FILE` has spawned its daemon (cli.early).

# Verbs that take no arguments skip argparse: `corral ls` must answer in well under
# 100 ms, and building a parser costs ~10 ms of it (SPEC 1.3).
_BARE_VERBS = {
    "ls": "ls",
    "list": "ls",
    "status": "ls",
    "l": "ls",
    "jlist": "jlist",
    "prettylist": "prettylist",
    "ping": "ping",
}


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else list(argv)
    early = None
    if args and args[0] == "start":  # spawn the daemon before all the rest is imported
        from corral.cli.early import spawn_before_parsing

        early = spawn_before_parsing(args)
    _tolerant_output()
    ns: Any
    if args and args[0] == "panel":  # the web panel has its own command line
        from corral.panel.cli import main as panel_main

        return panel_main(args[1:])
    if args and args[0] == "hub":  # the monitoring hub has its own command line (SPEC 5)
        from corral.hub.cli import main as hub_main

        return hub_main(args[1:])
    if args and args[0] == "helper":  # the privileged tenant helper (root only, SPEC 2.2)
        from corral.helper.cli import main as helper_main

        return helper_main(args[1:])
    if len(args) == 1 and args[0] in _BARE_VERBS:
        from types import SimpleNamespace

        ns = SimpleNamespace(verb=_BARE_VERBS[args[0]])
    else:
        from corral.cli.parser import parse

        try:
            ns = parse(args)
        except SystemExit as exc:  # --help, --version, usage errors
            return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)

    from corral.cli.commands import CliError, Context, run
    from corral.cli.connect import DaemonUnavailable
    from corral.paths import Home
    from corral.protocol.wire import ProtocolError

    ctx = Context(Home.from_env(), stdout=sys.stdout, stderr=sys.stderr, environ=os.environ)
    if early is not None:
        ctx.prestart(early)
    try:
        status = run(ctx, ns)
        sys.stdout.flush()
        return status
    except CliError as exc:
        return _fail(exc.message, exc.status)
    except DaemonUnavailable as exc:
        return _fail(str(exc))
    except ProtocolError as exc:
        return _fail(exc.message)
    except KeyboardInterrupt:
        sys.stderr.write("\n")
        return 130
    except BrokenPipeError:
        # `corral logs | head`: the reader is gone, and that is fine.
        _silence_stdout()
        return 0
    except OSError as exc:
        # The connection broke in the middle of a request (the daemon died or was killed).
        home = ctx.home
        why = exc.strerror or str(exc) or type(exc).__name__
        return _fail(f"lost the connection to the daemon ({why}); see {home.daemon_log}")
    finally:
        ctx.close()


def _fail(message: str, status: int = 1) -> int:
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        _silence_stdout()
    sys.stderr.write(f"corral: {message}\n")
    return status


def _tolerant_output() -> None:
    """Paths and environments may hold undecodable bytes: print them escaped, never crash."""
    import contextlib

    for stream in (sys.stdout, sys.stderr):
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None:
            with contextlib.suppress(ValueError, OSError):
                reconfigure(errors="backslashreplace")


def _silence_stdout() -> None:
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        pass
