"""The helper's socket: owned by the panel's user, 0600; every peer checked by SO_PEERCRED.

One thread per connection (the helper is small and its peers are one panel). A request
that cannot be served is answered with an error and the helper goes on: nothing a peer
sends ends the service. Every request and every refused connection is audited.
"""

from __future__ import annotations

import contextlib
import logging
import os
import selectors
import socket
import stat
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from corral.helper.audit import AuditLog
from corral.helper.config import ConfigError, HelperConfig, not_traversable, prepare_dir
from corral.helper.service import Helper
from corral.homedir import SUN_PATH_MAX
from corral.protocol.helper import MAX_MESSAGE_BYTES, validate_request
from corral.protocol.peer import peer_cred
from corral.protocol.wire import (
    ErrorCode,
    ProtocolError,
    decode_message,
    encode_message,
    error_reply,
    ok_reply,
)

log = logging.getLogger("corral.helper")

MAX_CONNECTIONS = 32
IDLE_TIMEOUT = 600.0
"""A connection silent this long (or stuck in the middle of a line) is closed."""
_DRAIN_READS = 64
_AUDIT_TEXT = 64
"""How much of a peer's verb or tenant name goes into the audit log."""


class HelperServer:
    def __init__(self, config: HelperConfig, helper: Helper, audit: AuditLog) -> None:
        self.config = config
        self.helper = helper
        self.audit = audit
        self._listener: socket.socket | None = None
        self._inode: int | None = None
        self._slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
        self._busy = 0
        self._closing = False
        self._idle = threading.Condition()

    # --- the listening socket -------------------------------------------------------

    def bind(self) -> None:
        """Create the socket (its folder root 0755 if missing); ConfigError if it cannot be
        made safely or another helper already listens there."""
        path = self.config.socket
        if not path.is_absolute():
            raise ConfigError(f"--socket: {path} is not an absolute path")
        if len(os.fsencode(path)) > SUN_PATH_MAX:
            raise ConfigError(f"--socket: {path} is longer than {SUN_PATH_MAX} bytes")
        prepare_dir(path.parent, 0o755, "--socket")
        blocked = not_traversable(path.parent)
        if blocked is not None:
            raise ConfigError(f"--socket: the panel cannot reach {path}: {blocked}")
        if os.path.lexists(path):
            self._clear_stale(path)
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old_umask = os.umask(0o177)  # born 0600: never a moment when others may connect
        try:
            listener.bind(str(path))
        except OSError as exc:
            listener.close()
            raise ConfigError(f"--socket: cannot bind {path}: {exc.strerror or exc}") from None
        finally:
            os.umask(old_umask)
        os.chown(path, self.config.panel_uid, self.config.panel_gid, follow_symlinks=False)
        os.chmod(path, 0o600)
        listener.listen(64)
        listener.setblocking(False)
        self._listener = listener
        self._inode = os.lstat(path).st_ino

    @staticmethod
    def _clear_stale(path: os.PathLike[str]) -> None:
        if not stat.S_ISSOCK(os.lstat(path).st_mode):
            raise ConfigError(f"--socket: {path} exists and is not a socket")
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(os.fspath(path))
        except ConnectionRefusedError:
            os.unlink(path)  # left by a helper that was killed
            return
        except OSError as exc:
            raise ConfigError(f"--socket: cannot use {path}: {exc.strerror or exc}") from None
        finally:
            probe.close()
        raise ConfigError(f"--socket: another helper is already listening on {path}")

    def close(self) -> None:
        """Stop listening and remove the socket (if it is still ours); requests that
        arrive on open connections from now on are refused."""
        with self._idle:
            self._closing = True
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        with contextlib.suppress(OSError):
            st = os.lstat(self.config.socket)
            if stat.S_ISSOCK(st.st_mode) and st.st_ino == self._inode:
                os.unlink(self.config.socket)

    def serve(self, wakeup_fd: int, stopping: Callable[[], bool]) -> None:
        """Accept connections until `stopping()` is true (checked when `wakeup_fd`, the
        signal wake-up pipe, becomes readable)."""
        assert self._listener is not None
        with selectors.DefaultSelector() as selector:
            selector.register(self._listener, selectors.EVENT_READ)
            selector.register(wakeup_fd, selectors.EVENT_READ)
            while not stopping():
                for key, _ in selector.select():
                    if key.fileobj is self._listener:
                        self._accept()
                    else:
                        with contextlib.suppress(OSError):
                            os.read(wakeup_fd, 512)

    def wait_idle(self, timeout: float) -> bool:
        """Wait until no request is being served (a create or remove is never cut short)."""
        with self._idle:
            return self._idle.wait_for(lambda: self._busy == 0, timeout)

    def _accept(self) -> None:
        assert self._listener is not None
        try:
            conn, _ = self._listener.accept()
        except (BlockingIOError, InterruptedError, ConnectionAbortedError):
            return
        except OSError as exc:  # out of fds: wait a moment rather than spin
            log.error("accept failed: %s", exc)
            time.sleep(0.1)
            return
        conn.setblocking(True)
        thread = threading.Thread(target=self._connection, args=(conn,), daemon=True)
        thread.start()

    # --- one connection -------------------------------------------------------------

    def _connection(self, sock: socket.socket) -> None:
        with sock:
            try:
                pid, uid, _gid = peer_cred(sock)
            except OSError:
                return
            if uid != self.config.panel_uid:
                self._refuse(
                    sock,
                    pid,
                    uid,
                    ErrorCode.PERMISSION_DENIED,
                    "permission denied: only the panel's user "
                    f"(uid {self.config.panel_uid}) may use the helper",
                )
                return
            if not self._slots.acquire(blocking=False):
                self._refuse(sock, pid, uid, ErrorCode.INTERNAL, "too many connections")
                return
            try:
                self._conversation(sock, pid, uid)
            except (OSError, ValueError):
                pass  # the peer went away or stalled
            except Exception:
                log.exception("connection from uid %d pid %d ended by an error", uid, pid)
            finally:
                self._slots.release()

    def _refuse(self, sock: socket.socket, pid: int, uid: int, code: ErrorCode, msg: str) -> None:
        self.audit.record(
            peer_uid=uid,
            peer_pid=pid,
            verb=None,
            tenant=None,
            result="refused",
            detail=f"connection refused: {msg}",
        )
        log.warning("refused a connection from uid %d pid %d: %s", uid, pid, msg)
        _last_word(sock, ProtocolError(code, msg))

    def _conversation(self, sock: socket.socket, pid: int, uid: int) -> None:
        sock.settimeout(IDLE_TIMEOUT)
        with sock.makefile("rb") as reader:
            while True:
                line = reader.readline(MAX_MESSAGE_BYTES + 1)
                if not line:
                    return
                if len(line) > MAX_MESSAGE_BYTES:
                    error = ProtocolError(
                        ErrorCode.BAD_REQUEST,
                        f"message over {MAX_MESSAGE_BYTES} bytes; connection closed",
                    )
                    self._audit_error(uid, pid, None, None, error)
                    _last_word(sock, error)
                    return  # the stream is out of frame now
                if not line.strip():
                    continue
                with self._serving() as open_:
                    if not open_:
                        error = ProtocolError(ErrorCode.INTERNAL, "the helper is stopping")
                        sock.sendall(encode_message(error_reply(None, error)))
                        return
                    reply = self._handle(line, pid, uid)
                sock.sendall(encode_message(reply))

    @contextlib.contextmanager
    def _serving(self) -> Iterator[bool]:
        """Counts a request in progress; yields False once the helper is stopping."""
        with self._idle:
            accepted = not self._closing
            if accepted:
                self._busy += 1
        if not accepted:
            yield False
            return
        try:
            yield True
        finally:
            with self._idle:
                self._busy -= 1
                self._idle.notify_all()

    def _handle(self, line: bytes, pid: int, uid: int) -> dict[str, Any]:
        request_id: Any = None
        verb: str | None = None
        tenant: str | None = None
        try:
            message = decode_message(line)
            request_id, verb, tenant = _audit_fields(message)
            checked_verb, args = validate_request(message)
            result, detail = self.helper.dispatch(checked_verb, args)
        except ProtocolError as exc:
            self._audit_error(uid, pid, verb, tenant, exc)
            return error_reply(request_id, exc)
        except Exception:
            log.exception("internal error serving %s", verb)
            error = ProtocolError(ErrorCode.INTERNAL, "internal error in the helper (see its log)")
            self._audit_error(uid, pid, verb, tenant, error)
            return error_reply(request_id, error)
        self.audit.record(
            peer_uid=uid, peer_pid=pid, verb=verb, tenant=tenant, result="ok", detail=detail
        )
        return ok_reply(request_id, result)

    def _audit_error(
        self, uid: int, pid: int, verb: str | None, tenant: str | None, error: ProtocolError
    ) -> None:
        self.audit.record(
            peer_uid=uid,
            peer_pid=pid,
            verb=verb,
            tenant=tenant,
            result="failed" if error.code is ErrorCode.INTERNAL else "refused",
            detail=f"{error.code}: {error.message}",
        )


def _last_word(sock: socket.socket, error: ProtocolError) -> None:
    """Send `error` before closing. What the peer already sent is swallowed first (a little
    of it, briefly), so that closing does not reset the connection before it has read the
    reply."""
    with contextlib.suppress(OSError):
        sock.settimeout(0.2)
        sock.sendall(encode_message(error_reply(None, error)))
        sock.shutdown(socket.SHUT_WR)
        for _ in range(_DRAIN_READS):
            if not sock.recv(65536):
                break


def _audit_fields(message: dict[str, Any]) -> tuple[Any, str | None, str | None]:
    """The id to answer with, and the verb and tenant as the peer gave them (cut short)."""
    request_id = message.get("id")
    if not isinstance(request_id, int) or isinstance(request_id, bool):
        request_id = None
    cmd = message.get("cmd")
    verb = cmd[:_AUDIT_TEXT] if isinstance(cmd, str) else None
    args = message.get("args")
    raw = args.get("tenant") if isinstance(args, dict) else None
    tenant = raw[:_AUDIT_TEXT] if isinstance(raw, str) else None
    return request_id, verb, tenant
