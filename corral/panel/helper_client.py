"""The panel's side of the privileged helper (`corral helper`, SPEC 2.2): isolated mode.

In isolated mode the panel runs as its own unprivileged user; a root process, the
helper, does the few things that need root: create a tenant (a system user and its
home), start or stop that tenant's daemon as the tenant's user, remove a tenant. The
panel asks over a unix socket only the panel's uid may use, one JSON object per line
(the control protocol's framing, `corral.protocol.wire`).

`HelperClient` makes one connection per request and checks the shape of every answer;
every failure is a `HelperError` whose message is one line for the admin.
`HelperStarter` is the gateway's `DaemonStarter` for isolated mode: it asks the helper
to start a tenant's daemon, with the tenant's app limit.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from corral.panel.gateway import DaemonDown
from corral.paths import Home
from corral.protocol.client import ControlClient
from corral.protocol.helper import HelperVerb
from corral.protocol.wire import ErrorCode, ProtocolError

DEFAULT_TIMEOUT = 30.0
CONNECT_TIMEOUT = 5.0
_WAITS = {
    HelperVerb.START_DAEMON: 10.0,
    HelperVerb.STOP_DAEMON: 30.0,
    HelperVerb.REMOVE_TENANT: 30.0,
}
"""How long the helper itself may wait on a verb (a daemon answering, one stopping its
apps), on top of the client's time-out."""


class HelperError(Exception):
    """A request to the helper failed; `message` is one line for the admin, `code` the
    helper's error code when it answered with an error (None: unreachable, no answer)."""

    def __init__(self, message: str, code: ErrorCode | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


def _reason(exc: OSError) -> str:
    return exc.strerror or str(exc) or type(exc).__name__


def _field(result: Any, key: str, kind: type, verb: str) -> Any:
    """`result[key]`, which must be of `kind` (a bool is never an int)."""
    value = result.get(key) if isinstance(result, Mapping) else None
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        raise HelperError(f"the helper's answer to {verb} is malformed (no valid {key!r})")
    return value


def _result(reply: dict[str, Any], request_id: int) -> Any:
    """The result of `reply`, or its error as a ProtocolError. A refused connection is
    answered before any request is read (its id is null): its error counts too."""
    if reply.get("ok") is not True:
        raw = reply.get("error")
        error: dict[str, Any] = raw if isinstance(raw, dict) else {}
        try:
            code = ErrorCode(str(error.get("code")))
        except ValueError:
            code = ErrorCode.INTERNAL
        raise ProtocolError(code, str(error.get("message", "unknown error")))
    if reply.get("id") != request_id:
        raise ProtocolError(ErrorCode.INTERNAL, "the reply does not match the request")
    return reply.get("result")


class HelperClient:
    """The helper at `path`. Each method sends one request on a fresh connection."""

    def __init__(self, path: Path, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.path = Path(path)
        self.timeout = timeout

    def __repr__(self) -> str:
        return f"HelperClient({str(self.path)!r})"

    def call(self, verb: HelperVerb, **args: Any) -> Any:
        """Send one request; its result, or HelperError."""
        timeout = self.timeout + _WAITS.get(verb, 0.0)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(CONNECT_TIMEOUT)
            sock.connect(os.fspath(self.path))
        except OSError as exc:
            sock.close()
            raise HelperError(
                f"cannot reach the helper at {self.path}: {_reason(exc)} "
                "(is `corral helper` running, for this panel's user?)"
            ) from None
        with ControlClient(sock) as client:
            client.set_timeout(timeout)
            try:
                request_id = client.send(verb, **args)
                return _result(client.read(), request_id)
            except ProtocolError as exc:
                raise HelperError(f"the helper refused {verb}: {exc.message}", exc.code) from None
            except TimeoutError:
                raise HelperError(
                    f"the helper did not answer {verb} within {timeout:g} s"
                ) from None
            except OSError as exc:  # ConnectionError: it closed the connection
                raise HelperError(
                    f"lost the connection to the helper during {verb}: {_reason(exc)}"
                ) from None

    def ping(self) -> dict[str, Any]:
        """{"version", "panel_uid", "tenants_dir"}."""
        result = self.call(HelperVerb.PING)
        return {
            "version": _field(result, "version", str, "ping"),
            "panel_uid": _field(result, "panel_uid", int, "ping"),
            "tenants_dir": _field(result, "tenants_dir", str, "ping"),
        }

    def create_tenant(self, name: str) -> dict[str, Any]:
        """Create the system user `name`, its group and home: {"tenant", "user", "uid",
        "gid", "home"}. Nothing is left behind when it fails."""
        verb = HelperVerb.CREATE_TENANT
        result = self.call(verb, tenant=name)
        info = {
            "tenant": _field(result, "tenant", str, verb),
            "user": _field(result, "user", str, verb),
            "uid": _field(result, "uid", int, verb),
            "gid": _field(result, "gid", int, verb),
            "home": _field(result, "home", str, verb),
        }
        if info["tenant"] != name or not os.path.isabs(info["home"]):
            raise HelperError(f"the helper's answer to {verb} is malformed (another tenant/home)")
        return info

    def start_daemon(self, name: str, app_limit: int) -> dict[str, Any]:
        """Start the tenant's daemon as the tenant (or set the limit of the one running):
        {"pid", "socket", "started"}."""
        verb = HelperVerb.START_DAEMON
        result = self.call(verb, tenant=name, app_limit=app_limit)
        return {
            "pid": _field(result, "pid", int, verb),
            "socket": _field(result, "socket", str, verb),
            "started": _field(result, "started", bool, verb),
        }

    def stop_daemon(self, name: str) -> dict[str, Any]:
        """Stop the tenant's daemon and its apps: {"stopped"} (False: none was running)."""
        verb = HelperVerb.STOP_DAEMON
        result = self.call(verb, tenant=name)
        return {"stopped": _field(result, "stopped", bool, verb)}

    def remove_tenant(self, name: str, delete_home: bool) -> dict[str, Any]:
        """Stop everything of the tenant, delete its home if asked, then its user and group:
        {"removed", "home_deleted"}."""
        verb = HelperVerb.REMOVE_TENANT
        result = self.call(verb, tenant=name, delete_home=delete_home)
        return {
            "removed": _field(result, "removed", bool, verb),
            "home_deleted": _field(result, "home_deleted", bool, verb),
        }


class HelperStarter:
    """Isolated mode's `DaemonStarter`: the helper starts the tenant's daemon as the
    tenant's user, with `CORRAL_APP_LIMIT` from `limit_of(tenant)` (read at each start,
    so a changed limit applies at the next one)."""

    def __init__(self, client: HelperClient, limit_of: Callable[[str], int]) -> None:
        self.client = client
        self.limit_of = limit_of

    def start(self, home: Home, tenant: str = "") -> None:
        if not tenant:
            raise DaemonDown("cannot start the daemon: the helper starts tenants' daemons only")
        limit = self.limit_of(tenant)
        try:
            started = self.client.start_daemon(tenant, limit)
        except HelperError as exc:
            raise DaemonDown(f"cannot start the daemon of {tenant}: {exc.message}") from None
        if Path(started["socket"]) != home.socket:
            raise DaemonDown(
                f"the helper started the daemon of {tenant} at {started['socket']}, "
                f"but the panel knows its home as {home.root.parent}"
            )
