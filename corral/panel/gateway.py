"""The panel's only way to a tenant's apps: that tenant's daemon socket (SPEC 2.2).

Synchronous on purpose: panel routes run in a threadpool. Every call opens its own
connection (a daemon that restarts never leaves a broken one behind); `follow` keeps one
for its subscription. How a daemon gets started is a `DaemonStarter`: `DevStarter` spawns
it under the panel's own uid, as the CLI does; under tenant isolation a privileged
helper that runs it as the tenant's user takes its place.

Methods that take an app `name` match that name exactly (never an id, `all` or a regex);
`act` and `call` take any daemon target.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import re
import socket
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

from corral.cli.commands import LineJoiner
from corral.cli.connect import (
    CONNECT_TIMEOUT,
    START_TIMEOUT,
    DaemonUnavailable,
    spawn_daemon,
    wait_for_daemon,
)
from corral.config.model import NAME_RE
from corral.homedir import SUN_PATH_MAX
from corral.paths import Home
from corral.protocol.client import ControlClient
from corral.protocol.wire import ErrorCode, ProtocolError

if TYPE_CHECKING:
    from types import TracebackType

    from corral.cli.spawn import DaemonProcess

APP_LIMIT_ENV = "CORRAL_APP_LIMIT"
PANEL_UID_ENV = "CORRAL_PANEL_UID"
CALL_TIMEOUT = 120.0
"""How long a reply may take: a stop waits for the apps' kill_timeout, a reload for
readiness."""
TAIL_MAX_LINES = 10_000
FOLLOW_BUFFER = 1000
"""Events `aiter_follow` holds for a slow consumer; past that the daemon drops (and
counts) events for this subscriber, it never slows down."""

Verb = Literal["start", "stop", "restart", "reload", "reset"]
Stream = Literal["out", "err", "both"]
VERBS: tuple[Verb, ...] = ("start", "stop", "restart", "reload", "reset")
_COUNT_RE = re.compile(r"[+-]?[0-9]{1,6}")


# --- errors ------------------------------------------------------------------------------


class GatewayError(Exception):
    """A call to a tenant's daemon failed; `str(exc)` is one line to show the user.

    `code` is the daemon's error code when the daemon answered with an error.
    """

    def __init__(self, message: str, code: ErrorCode | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


class DaemonDown(GatewayError):
    """The daemon cannot be reached or started, or stopped answering."""


class NotFound(GatewayError):
    """No such app in this tenant (or a file the request names does not exist)."""


class Refused(GatewayError):
    """The daemon (or this gateway) refused the request: a bad argument, an app already
    running, a conflict."""


class LimitRefused(Refused):
    """The daemon refused to hold more apps than the tenant's app limit (its own check,
    which holds even when two panels or the tenant's CLI race the panel's)."""


_NOT_FOUND = frozenset({ErrorCode.UNKNOWN_TARGET, ErrorCode.NOT_FOUND})
_REFUSED = frozenset(
    {
        ErrorCode.INVALID_ARGUMENT,
        ErrorCode.ALREADY_RUNNING,
        ErrorCode.CONFLICT,
        ErrorCode.BAD_REQUEST,
    }
)


def _mapped(exc: ProtocolError) -> GatewayError:
    if exc.code is ErrorCode.LIMIT_REACHED:
        return LimitRefused(exc.message, exc.code)
    if exc.code in _NOT_FOUND:
        return NotFound(exc.message, exc.code)
    if exc.code in _REFUSED:
        return Refused(exc.message, exc.code)
    return GatewayError(exc.message, exc.code)


def _reason(exc: OSError) -> str:
    return exc.strerror or str(exc) or type(exc).__name__


@contextlib.contextmanager
def _talking(cmd: str, timeout: float) -> Iterator[None]:
    """Map what can go wrong in one exchange with the daemon to GatewayErrors."""
    try:
        yield
    except ProtocolError as exc:
        raise _mapped(exc) from None
    except TimeoutError:
        raise DaemonDown(f"the daemon did not answer {cmd!r} within {timeout:g} s") from None
    except OSError as exc:  # ConnectionError: it closed the connection
        raise DaemonDown(f"lost the connection to the daemon: {_reason(exc)}") from None


@contextlib.contextmanager
def _app_named(name: str) -> Iterator[None]:
    """An unknown target, for a request about app `name`, is said in its words."""
    try:
        yield
    except NotFound as exc:
        if exc.code is ErrorCode.UNKNOWN_TARGET:
            raise NotFound(f"no app named {name!r}", exc.code) from None
        raise


# --- starting a daemon -------------------------------------------------------------------


class DaemonStarter(Protocol):
    """Starts the daemon of one corral home."""

    def start(self, home: Home, tenant: str = "") -> None:
        """Start the daemon of `home` unless one runs, and return once its socket accepts
        connections. Raise `DaemonDown`, with a message for the user, when it cannot.

        `tenant` is the tenant's name: the daemon gets it as CORRAL_TENANT (the secrets
        store binds it into every ciphertext, so it must be the same at every start)."""


LimitOf = Callable[[str], int]
"""A tenant's app limit by its name (-1 unlimited), read when its daemon starts."""


class DevStarter:
    """Development mode: `python -m corral.core.daemon` under the panel's own uid, with
    CORRAL_HOME and CORRAL_TENANT set, spawned and awaited as the CLI does it.

    The daemon also gets CORRAL_APP_LIMIT, the tenant's app limit from `limit_of` (which
    the daemon enforces itself; -1, unlimited, without `limit_of`), and CORRAL_PANEL_UID,
    this uid, so that the panel may change that limit (`set_app_limit`) without being
    root. Both replace whatever the panel's own environment says.

    The daemons are children of the panel: `reap` collects those that exited (every
    `start` does it too).
    """

    def __init__(self, timeout: float = START_TIMEOUT, limit_of: LimitOf | None = None) -> None:
        self.timeout = timeout
        self.limit_of = limit_of
        self._lock = threading.Lock()
        self._home_locks: dict[Home, threading.Lock] = {}
        self._children: list[DaemonProcess] = []

    def start(self, home: Home, tenant: str = "") -> None:
        owner = home.root.parent
        if not owner.is_dir():  # never create a tenant home as a side effect
            raise DaemonDown(f"cannot start the daemon: {owner} does not exist")
        with self._lock_of(home):  # two requests at once start one daemon
            self.reap()
            with contextlib.suppress(OSError):
                ControlClient.connect(home.socket, timeout=CONNECT_TIMEOUT).close()
                return  # started by an earlier request
            try:
                home.ensure()
            except OSError as exc:
                raise DaemonDown(f"cannot create {home.root}: {_reason(exc)}") from None
            limit = -1 if self.limit_of is None else self.limit_of(tenant)
            env = {
                "CORRAL_TENANT": tenant,
                APP_LIMIT_ENV: str(limit),
                PANEL_UID_ENV: str(os.getuid()),
            }
            try:
                proc = spawn_daemon(home, env)
                with self._lock:
                    self._children.append(proc)
                wait_for_daemon(home, proc, self.timeout).close()
            except DaemonUnavailable as exc:
                raise DaemonDown(str(exc)) from None

    def reap(self) -> None:
        """Collect the exit status of spawned daemons that have exited (no zombies)."""
        with self._lock:
            self._children = [proc for proc in self._children if proc.poll() is None]

    def _lock_of(self, home: Home) -> threading.Lock:
        with self._lock:
            return self._home_locks.setdefault(home, threading.Lock())


class NoAutostart:
    """A starter that never starts anything: for callers that must not wake a tenant's
    daemon (a periodic sampler), or a deployment where daemons are started elsewhere."""

    def start(self, home: Home, tenant: str = "") -> None:
        raise DaemonDown(f"the daemon is not running (no socket at {home.socket})")


_dev_starter = DevStarter()


def default_starter() -> DaemonStarter:
    """The starter used when none is given: one shared `DevStarter` per process."""
    return _dev_starter


# --- following events --------------------------------------------------------------------


class Follow:
    """The events of one subscription, as an iterator of dicts:

    - `{"type": "log", "name", "instance", "stream", "line"}`: one whole line (chunks
      from the pipes are joined back into lines);
    - the daemon's own events (`transition`, `deleted`, `dropped`), as docs/PROTOCOL.md
      describes them; with a `name`, only that app's.

    `close()` may be called from any thread: a reader blocked in `next()` wakes up and
    the iteration ends. If the daemon goes away instead, the iteration raises
    `DaemonDown` (after the lines it had sent). Iterate from one thread at a time.
    """

    def __init__(self, client: ControlClient, sock: socket.socket, name: str | None) -> None:
        self._client = client
        self._sock = sock
        self._name = name
        self._joiner = LineJoiner()
        self._pending: collections.deque[dict[str, Any]] = collections.deque()
        self._failure: GatewayError | None = None
        self._lock = threading.Lock()
        self._closed = False
        self._reading = False

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            reading = self._reading
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)  # wakes a reader blocked in recv()
        if not reading:
            self._client.close()  # else the reader closes it on its way out

    def __enter__(self) -> Follow:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return self

    def __next__(self) -> dict[str, Any]:
        while True:
            if self._pending:
                return self._pending.popleft()
            if self._failure is not None:
                failure, self._failure = self._failure, None
                raise failure
            message = self._read()
            if message is None:
                raise StopIteration
            event = message.get("event")
            if isinstance(event, dict):
                self._pending.extend(self._convert(event))

    def _read(self) -> dict[str, Any] | None:
        """The next message ({} for none); None once `close()` was called."""
        with self._lock:
            if self._closed:
                return None
            self._reading = True
        try:
            message = self._client.read()
        except ProtocolError:
            message = {}  # a line out of frame: skip it
        except OSError as exc:  # ConnectionError: the daemon went away
            if self._done_reading(over=True):
                return None
            self._pending.extend(self._leftovers())
            self._failure = DaemonDown(f"the event stream ended: {_reason(exc)}")
            return {}
        except BaseException:
            self._done_reading(over=True)
            raise
        return None if self._done_reading(over=False) else message

    def _done_reading(self, *, over: bool) -> bool:
        """Leave the reading state, closing the connection if it is over; True if
        `close()` was called meanwhile (then the iteration ends quietly)."""
        with self._lock:
            self._reading = False
            closed_by_us = self._closed
            self._closed = closed_by_us or over
        if self._closed:
            self._client.close()
        return closed_by_us

    def _convert(self, event: dict[str, Any]) -> list[dict[str, Any]]:
        kind = event.get("type")
        if kind == "log":
            name, instance, stream = (
                str(event.get("name")),
                event.get("instance", 0),
                event.get("stream"),
            )
            return [
                {"type": "log", "name": name, "instance": instance, "stream": stream, "line": line}
                for line in self._joiner.feed(
                    name, instance, str(stream), str(event.get("data", ""))
                )
            ]
        if self._name is not None and "name" in event and event["name"] != self._name:
            return []
        return [event]

    def _leftovers(self) -> list[dict[str, Any]]:
        return [
            {"type": "log", "name": name, "instance": instance, "stream": stream, "line": line}
            for name, instance, stream, line in self._joiner.flush()
        ]


# --- the gateway -------------------------------------------------------------------------


def _exact(name: str) -> str:
    """A daemon target matching the app called `name` and nothing else."""
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise NotFound(f"no app named {name!r}", ErrorCode.UNKNOWN_TARGET)
    return f"/^{re.escape(name)}$/"


class TenantDaemon:
    """One tenant's daemon, reached at `<home>/.corral/corral.sock`.

    `starter` starts the daemon when its socket is absent (default: `default_starter()`,
    development mode). Cheap to create: make one per request.
    """

    def __init__(
        self,
        home: Path,
        starter: DaemonStarter | None = None,
        *,
        timeout: float = CALL_TIMEOUT,
        tenant: str = "",
    ) -> None:
        self.home = home
        self.corral_home = Home(home / ".corral")
        self.starter: DaemonStarter = starter if starter is not None else default_starter()
        self.timeout = timeout
        self.tenant = tenant
        """The tenant's name, for a daemon this gateway starts (CORRAL_TENANT)."""

    def __repr__(self) -> str:
        return f"TenantDaemon({str(self.home)!r})"

    @property
    def socket_path(self) -> Path:
        return self.corral_home.socket

    # --- the protocol

    def call(self, cmd: str, /, **args: Any) -> Any:
        """Send one command and return its result; every failure is a GatewayError."""
        with ControlClient(self._connect()) as client, _talking(cmd, self.timeout):
            client.set_timeout(self.timeout)
            return client.call(cmd, **args)

    def _connect(self) -> socket.socket:
        path = self.socket_path
        if len(os.fsencode(path)) > SUN_PATH_MAX:
            raise DaemonDown(
                f"the socket path {path} is longer than {SUN_PATH_MAX} bytes, the limit of "
                "unix sockets: the tenant needs a shorter home"
            )
        try:
            return _open(path)
        except (FileNotFoundError, ConnectionRefusedError):
            pass  # nobody listens there: start it
        except PermissionError as exc:
            # Isolated mode: a daemon the tenant started itself (its own CLI) locks the panel
            # out; the helper's start replaces it. Development mode: an error like any other.
            if isinstance(self.starter, (DevStarter, NoAutostart)):
                raise DaemonDown(f"cannot reach the daemon at {path}: {_reason(exc)}") from None
        except OSError as exc:
            raise DaemonDown(f"cannot reach the daemon at {path}: {_reason(exc)}") from None
        self.starter.start(self.corral_home, self.tenant)
        try:
            return _open(path)
        except OSError as exc:
            raise DaemonDown(
                f"the daemon was started but {path} refuses connections: {_reason(exc)}"
            ) from None

    def _named(self, cmd: str, name: str, **args: Any) -> Any:
        with _app_named(name):
            return self.call(cmd, target=_exact(name), **args)

    # --- commands

    def ping(self) -> dict[str, Any]:
        result: dict[str, Any] = self.call("ping")
        return result

    def processes(self) -> list[dict[str, Any]]:
        """Every instance of every app, as process records (`corral jlist`)."""
        return list(self.call("list"))

    def describe(self, name: str) -> dict[str, Any]:
        """{"id", "name", "config", "env_name", "desired", "created_at", "instances",
        "events"} of one app."""
        for app in self._named("describe", name):
            if app.get("name") == name:
                result: dict[str, Any] = app
                return result
        raise NotFound(f"no app named {name!r}", ErrorCode.UNKNOWN_TARGET)

    def start(
        self,
        apps: list[dict[str, Any]],
        *,
        cli_env: dict[str, str] | None = None,
        env_name: str | None = None,
        force: bool = False,
    ) -> list[dict[str, Any]]:
        """Add and start apps given as `AppConfig.to_dict()` dicts (what the CLI sends).

        `cli_env` is the base environment of the apps (None: only their own `env`);
        `force` replaces running apps of the same names with the new config and restarts
        them (how an edited config is applied)."""
        return list(self.call("start", apps=apps, cli_env=cli_env, env_name=env_name, force=force))

    def resolve_paths(self, entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Resolve a tenant's paths with the daemon's (the tenant's) rights, confined to its
        home: entries `{"path", "kind", "must_exist", "base"}` (at most 64) -> one
        `{"ok": true, "path"}` or `{"ok": false, "error"}` each, in order."""
        answers = self.call("resolve_paths", paths=entries)
        if (
            not isinstance(answers, list)
            or len(answers) != len(entries)
            or not all(isinstance(a, dict) for a in answers)
        ):
            raise GatewayError("the daemon's resolve_paths answer does not match the request")
        return [dict(a) for a in answers]

    def configure(self, apps: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Replace the stored config of existing apps (`AppConfig.to_dict()` dicts, by
        name) without restarting anything: each instance gets it at its next launch. An
        unknown name is a NotFound; nothing changes unless every app is accepted."""
        return list(self.call("configure", apps=apps))

    def act(self, verb: Verb, target: str) -> list[dict[str, Any]]:
        """start, stop, restart, reload or reset existing apps (any daemon target)."""
        if verb not in VERBS:
            raise Refused(f"unknown action {verb!r}: expected one of {', '.join(VERBS)}")
        return list(self.call(verb, target=target))

    def scale(self, name: str, count: str) -> list[dict[str, Any]]:
        """Set the number of instances: "N", or "+N"/"-N" relative to the current one."""
        if not isinstance(count, str) or not _COUNT_RE.fullmatch(count.strip()):
            raise Refused(f"instances: expected N, +N or -N, got {count!r}")
        return list(self._named("scale", name, count=count.strip()))

    def delete(self, name: str) -> list[str]:
        """Stop the app and forget it; the names deleted."""
        return list(self._named("delete", name)["deleted"])

    def tail(self, name: str, lines: int = 100, stream: Stream = "both") -> list[dict[str, Any]]:
        """The last `lines` lines of each of the app's current log files, as
        {"name", "instance", "stream", "line"}, oldest first, file by file."""
        if (
            isinstance(lines, bool)
            or not isinstance(lines, int)
            or not 1 <= lines <= TAIL_MAX_LINES
        ):
            raise Refused(f"lines: expected a whole number from 1 to {TAIL_MAX_LINES}")
        if stream not in ("out", "err", "both"):
            raise Refused(f"stream: expected out, err or both, got {stream!r}")
        return list(self._named("tail", name, lines=lines, stream=stream))

    def flush(self, name: str) -> list[str]:
        """Empty the app's log files; the paths emptied."""
        return list(self._named("flush", name)["flushed"])

    def env(self, name: str) -> list[dict[str, Any]]:
        """The environment of each instance: [{"name", "instance", "env"}]."""
        return list(self._named("env", name))

    # --- secrets: values go to the daemon, which encrypts them; none ever comes back

    def secret_set(self, app: str, name: str, value: str) -> dict[str, Any]:
        """Store `value` as the secret `name` of `app`: {"app", "name", "set_at"}. It
        applies from the app's next start; the daemon never returns the value."""
        _exact(app)  # an app name, never a target for many
        result: dict[str, Any] = self.call("secret_set", app=app, name=name, value=value)
        return result

    def secret_list(self, app: str | None = None) -> list[dict[str, Any]]:
        """The secrets of `app` (of every app with None): [{"app", "name", "set_at"}]."""
        if app is not None:
            _exact(app)
        return list(self.call("secret_list", app=app))

    def secret_remove(self, app: str, name: str) -> bool:
        """Forget the secret `name` of `app`; False when there was none."""
        _exact(app)
        return bool(self.call("secret_remove", app=app, name=name)["removed"])

    # --- deploys (SPEC 4): the daemon builds, switches and keeps the history

    def _app_call(self, cmd: str, name: str, **args: Any) -> Any:
        """A command that takes `app` (an exact name, never a target)."""
        _exact(name)
        with _app_named(name):
            return self.call(cmd, app=name, **args)

    def deploy(
        self, name: str, ref: str | None = None, trigger: str | None = None
    ) -> dict[str, Any]:
        """Queue a deploy of the app's git source (at `ref`, default its branch); the
        deploy record, answered at once (progress comes as deploy events)."""
        return _record(self._app_call("deploy", name, ref=ref, trigger=trigger))

    def rollback(
        self, name: str, release: str | None = None, trigger: str | None = None
    ) -> dict[str, Any]:
        """Queue a switch back to `release` (default: the one before the current one); the
        deploy record (kind "rollback")."""
        return _record(self._app_call("rollback", name, release=release, trigger=trigger))

    def deploy_history(self, name: str, limit: int = 50) -> list[dict[str, Any]]:
        """The app's deploy records, newest first (at most `limit`, 1..200)."""
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= 200:
            raise Refused("limit: expected a whole number from 1 to 200")
        return [dict(r) for r in self._app_call("deploy_history", name, limit=limit)]

    def deploy_output(self, name: str, deploy_id: str) -> dict[str, Any]:
        """{"deploy": record, "output": str}: one deploy's kept output (at most 1 MiB)."""
        answer = self._app_call("deploy_output", name, id=deploy_id)
        if not isinstance(answer, dict) or not isinstance(answer.get("output"), str):
            raise GatewayError("the daemon's deploy_output answer is malformed")
        return {"deploy": _record(answer), "output": answer["output"]}

    def releases(self, name: str) -> list[dict[str, Any]]:
        """The app's releases, newest first: {"id", "commit", "ref", "created", "current"}."""
        return [dict(r) for r in self._app_call("releases", name)]

    def deploy_key(self, name: str, create: bool = False) -> str | None:
        """The public half of the app's SSH deploy key (made first with `create`)."""
        key = self._app_call("deploy_key", name, create=create).get("public_key")
        return key if isinstance(key, str) else None

    def host(self) -> dict[str, Any]:
        """Load, memory, swap and CPU of the machine, as the daemon samples them."""
        result: dict[str, Any] = self.call("host")
        return result

    # --- streams

    def follow(self, name: str | None = None, *, events: bool, logs: bool = True) -> Follow:
        """Subscribe: log lines of app `name` (every app with None) unless `logs` is
        False, and process events (of that app only, with a name) if `events`."""
        if not (events or logs):
            raise Refused("nothing to follow: ask for log lines, events or both")
        args: dict[str, Any] = {"events": events}
        if logs:
            args["logs"] = None if name is None else _exact(name)
        elif name is not None:
            self.describe(name)  # an unknown app is NotFound here too
        return self._subscribe(args, name)

    def follow_deploys(self, name: str) -> Follow:
        """Subscribe to the "deploy" events of app `name` (no log lines, no process
        events): `{"type": "deploy", "app", "id", "line"}` per output line and
        `{"type": "deploy", "app", "id", "status", "deploy": record}` per status change."""
        return self._subscribe({"events": False, "deploys": _exact(name)}, name)

    def _subscribe(self, args: dict[str, Any], name: str | None) -> Follow:
        sock = self._connect()
        client = ControlClient(sock)
        try:
            named = contextlib.nullcontext() if name is None else _app_named(name)
            with named, _talking("subscribe", self.timeout):
                client.set_timeout(self.timeout)
                client.call("subscribe", **args)
            client.set_timeout(None)  # events come when they come
        except BaseException:
            client.close()
            raise
        return Follow(client, sock, name)

    async def aiter_follow(
        self, name: str | None = None, *, events: bool, logs: bool = True
    ) -> AsyncIterator[dict[str, Any]]:
        """`follow` for an asyncio consumer: a thread reads, the events arrive here.

        When the consumer stops (breaks out, is cancelled, closes the generator), the
        subscription is closed and the thread ends on its own; errors (NotFound, a daemon
        that went away) are raised here.
        """
        async for event in self._aiter(lambda: self.follow(name, events=events, logs=logs)):
            yield event

    async def aiter_deploys(
        self, name: str, subscribed: asyncio.Event | None = None
    ) -> AsyncIterator[dict[str, Any]]:
        """`follow_deploys` for an asyncio consumer, as `aiter_follow` does it;
        `subscribed` is set once the daemon has accepted the subscription (an event after
        that is never missed)."""
        async for event in self._aiter(lambda: self.follow_deploys(name), subscribed):
            yield event

    async def _aiter(
        self, open_follow: Callable[[], Follow], subscribed: asyncio.Event | None = None
    ) -> AsyncIterator[dict[str, Any]]:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        room = threading.Semaphore(FOLLOW_BUFFER)
        stop = threading.Event()
        opened: list[Follow] = []
        guard = threading.Lock()

        def post(kind: str, value: Any) -> None:
            with contextlib.suppress(RuntimeError):  # the loop is gone: nobody listens
                loop.call_soon_threadsafe(queue.put_nowait, (kind, value))

        def pump() -> None:
            try:
                follow = open_follow()
            except Exception as exc:
                post("error", exc)
                return
            with guard:
                if stop.is_set():
                    follow.close()
                    return
                opened.append(follow)
            post("subscribed", None)
            try:
                for event in follow:
                    room.acquire()  # a slow consumer holds the reader back
                    if stop.is_set():
                        return
                    post("event", event)
            except Exception as exc:
                post("error", exc)
                return
            finally:
                follow.close()
            post("end", None)

        thread = threading.Thread(target=pump, name=f"corral-follow {self.home}", daemon=True)
        thread.start()
        try:
            while True:
                kind, value = await queue.get()
                if kind == "event":
                    room.release()
                    yield value
                elif kind == "subscribed":
                    if subscribed is not None:
                        subscribed.set()
                elif kind == "error":
                    raise value
                else:
                    return
        finally:
            with guard:
                stop.set()
                to_close = list(opened)
            for follow in to_close:
                follow.close()  # never blocks: the reader thread closes the socket
            room.release()  # a reader waiting for room sees `stop`

    # --- isolated mode: app settings judged with the tenant's rights

    def check_apps(self, apps: list[dict[str, Any]], source: str) -> list[dict[str, Any]]:
        """Validate raw app settings (as a config file has them, at most 64) in the daemon,
        with the tenant's rights: one `AppConfig.to_dict()` each, in order. A bad app is a
        Refused (invalid_argument) whose message names the app and the key."""
        answers = self.call("check_apps", apps=apps, source=source)
        if (
            not isinstance(answers, list)
            or len(answers) != len(apps)
            or not all(isinstance(a, dict) for a in answers)
        ):
            raise GatewayError("the daemon's check_apps answer does not match the request")
        return [dict(a) for a in answers]


def _record(answer: Any) -> dict[str, Any]:
    """The deploy record of a daemon's `{"deploy": record}` answer."""
    record = answer.get("deploy") if isinstance(answer, dict) else None
    if not isinstance(record, dict) or not isinstance(record.get("id"), str):
        raise GatewayError("the daemon's answer has no deploy record")
    return dict(record)


def _open(path: Path) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(CONNECT_TIMEOUT)
        sock.connect(str(path))
    except OSError:
        sock.close()
        raise
    return sock
