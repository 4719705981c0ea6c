#!/usr/bin/env python3
"""An HTTP/1.1 test app that serves on sockets it is handed (systemd socket activation).

Standard library only, and it does not import corral: it is what a user's app looks like.

    LISTEN_FDS=1 LISTEN_PID=<its own pid> python fd_http.py    (listening socket at fd 3)

It serves every passed socket (fds 3 .. 3+LISTEN_FDS-1, TCP or unix) and refuses to start
(exit 2, with a message on stderr) when LISTEN_FDS < 1, LISTEN_PID is not its own pid, or
fd 3 is not a listening socket. The LISTEN_* variables are left in its environment, so
`GET /env/LISTEN_FDNAMES` shows what corral passed.

    GET /              pid=<pid> instance=<CORRAL_INSTANCE>
    GET /slow          the same after 0.3 s (/slow?seconds=S for another delay)
    GET /env/<NAME>    the value of that environment variable (404 when it is unset)

Optional behaviour, chosen by environment variables:

    FAIL_AT_START=1    exit 1 at once, before looking at the sockets
    WAIT_READY=1       send READY=1 on $NOTIFY_SOCKET once serving (sd_notify)
    READY_DELAY=S      ... but only S seconds after it started serving
    NEVER_READY=1      never send READY=1 (wins over WAIT_READY)
    WATCHDOG=1         send WATCHDOG=1 every $WATCHDOG_USEC / 2 while healthy
    HANG_AFTER=S       S seconds after it started serving: stop answering (requests hang
                       forever) and stop sending WATCHDOG=1; signals are still handled

SIGINT and SIGTERM stop it gracefully: it stops accepting (connections still in the
socket's queue stay there for the other instances that share it), finishes the requests in
flight (a keep-alive connection is closed after its current response, an idle one at once),
then exits 0. That is what lets a reload lose no request. A hung app (HANG_AFTER) with a
request in flight never finishes it, so only SIGKILL ends it, as with a real hang.

It puts the shared listening socket in non-blocking mode, as gunicorn, uvicorn and Node do:
O_NONBLOCK belongs to the open file description that every instance shares, so when two
processes wake up for one connection the loser's accept() fails with EAGAIN (ignored by
socketserver) instead of blocking its accept loop, which would delay a graceful stop.
"""

from __future__ import annotations

import contextlib
import http.server
import os
import signal
import socket
import sys
import threading
import time
from urllib.parse import parse_qs, urlsplit

LISTEN_FDS_START = 3
PID = os.getpid()
INSTANCE = os.environ.get("CORRAL_INSTANCE", "")


def log(message: str) -> None:
    print(f"fd_http[{PID}]: {message}", flush=True)


def sd_notify(state: str) -> bool:
    """Send one sd_notify datagram ("READY=1", "WATCHDOG=1"); False when it could not."""
    address = os.environ.get("NOTIFY_SOCKET", "")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]  # abstract namespace
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall(state.encode())
    except OSError as exc:
        print(f"fd_http[{PID}]: sd_notify {state!r} failed: {exc}", file=sys.stderr, flush=True)
        return False
    return True


def flag(name: str) -> bool:
    return os.environ.get(name, "") not in ("", "0")


def seconds(name: str) -> float | None:
    value = os.environ.get(name, "")
    if not value:
        return None
    try:
        return float(value)
    except ValueError:
        sys.exit(f"fd_http: {name}={value!r} is not a number of seconds")


class Health:
    """Healthy until HANG_AFTER seconds after serving started."""

    def __init__(self, hang_after: float | None) -> None:
        self.hang_after = hang_after
        self.started = time.monotonic()
        self.never = threading.Event()  # what a hung request waits for: never set

    def hung(self) -> bool:
        return self.hang_after is not None and time.monotonic() - self.started >= self.hang_after


class Server(http.server.ThreadingHTTPServer):
    """ThreadingHTTPServer on an inherited, already listening socket."""

    daemon_threads = False  # server_close() waits for the requests in flight
    block_on_close = True

    def __init__(self, sock: socket.socket, health: Health) -> None:
        super().__init__(sock.getsockname(), Handler, bind_and_activate=False)
        self.socket.close()  # the unbound socket TCPServer made: use the inherited one
        self.socket = sock
        self.address_family = sock.family
        self.server_address = sock.getsockname()
        self.health = health
        self.lock = threading.Lock()
        self.stopping = False
        self.idle: set[socket.socket] = set()  # keep-alive connections between requests

    def mark_busy(self, conn: socket.socket) -> None:
        with self.lock:
            self.idle.discard(conn)

    def mark_idle(self, conn: socket.socket) -> bool:
        """After a response: False when stopping (the caller closes the connection)."""
        with self.lock:
            if self.stopping:
                return False
            self.idle.add(conn)
            return True

    def close_idle(self) -> None:
        """From now on every response closes its connection; idle ones end now (their
        handler reads EOF). Requests already received are still answered."""
        with self.lock:
            self.stopping = True
            for conn in self.idle:
                with contextlib.suppress(OSError):  # already closed by its client
                    conn.shutdown(socket.SHUT_RD)
            self.idle.clear()

    def shutdown_request(self, request: socket.socket | tuple[bytes, socket.socket]) -> None:
        if isinstance(request, socket.socket):
            self.mark_busy(request)
        super().shutdown_request(request)


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "fd_http/1"
    timeout = 30  # a client that connects and never sends cannot hold a stop forever
    server: Server

    def parse_request(self) -> bool:
        self.server.mark_busy(self.connection)
        return super().parse_request()

    def handle_one_request(self) -> None:
        super().handle_one_request()
        if not self.close_connection and not self.server.mark_idle(self.connection):
            self.close_connection = True

    def do_GET(self) -> None:
        if self.server.health.hung():
            self.server.health.never.wait()
        url = urlsplit(self.path)
        if url.path == "/":
            self.answer(200, f"pid={PID} instance={INSTANCE}\n")
        elif url.path == "/slow":
            delay = parse_qs(url.query).get("seconds", ["0.3"])[0]
            time.sleep(float(delay))
            self.answer(200, f"pid={PID} instance={INSTANCE}\n")
        elif url.path.startswith("/env/"):
            value = os.environ.get(url.path.removeprefix("/env/"))
            self.answer(200 if value is not None else 404, value or "")
        else:
            self.answer(404, "not found\n")

    def answer(self, status: int, text: str) -> None:
        body = text.encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        if self.server.stopping:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)

    def address_string(self) -> str:
        # A unix socket's peer is "" (not a (host, port) tuple).
        return str(self.client_address[0]) if isinstance(self.client_address, tuple) else "unix"

    def log_message(self, format: str, *args: object) -> None:
        pass  # quiet: load tests send thousands of requests


def inherited_sockets() -> list[socket.socket]:
    try:
        count = int(os.environ.get("LISTEN_FDS", "0"))
        listen_pid = int(os.environ.get("LISTEN_PID", "0"))
    except ValueError:
        count, listen_pid = 0, 0
    if count < 1 or listen_pid != PID:
        sys.stderr.write(
            f"fd_http: no sockets passed: LISTEN_FDS={os.environ.get('LISTEN_FDS')!r} "
            f"LISTEN_PID={os.environ.get('LISTEN_PID')!r} (my pid is {PID}); start me with "
            "the systemd socket-activation convention\n"
        )
        sys.exit(2)
    socks = []
    for fd in range(LISTEN_FDS_START, LISTEN_FDS_START + count):
        try:
            sock = socket.socket(fileno=fd)
            listening = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN)
        except OSError as exc:
            sys.stderr.write(f"fd_http: fd {fd} is not a socket: {exc}\n")
            sys.exit(2)
        if not listening or sock.type != socket.SOCK_STREAM:
            sys.stderr.write(f"fd_http: fd {fd} is not a listening stream socket\n")
            sys.exit(2)
        sock.setblocking(False)  # see the module docstring
        socks.append(sock)
    return socks


def watchdog(health: Health, stop: threading.Event) -> None:
    usec = os.environ.get("WATCHDOG_USEC", "")
    watchdog_pid = os.environ.get("WATCHDOG_PID", "")
    if watchdog_pid and watchdog_pid != str(PID):
        log(f"WATCHDOG_PID={watchdog_pid} is not me: no watchdog pings")
        return
    interval = int(usec) / 2e6 if usec.isdigit() and int(usec) > 0 else 0.5
    while not stop.is_set() and not health.hung():
        sd_notify("WATCHDOG=1")
        stop.wait(interval)


def main() -> None:
    # Signals are taken synchronously by sigwait() in the main thread, never by a handler
    # that could interrupt a lock; blocked before any thread starts, so all inherit it.
    stop_signals = {signal.SIGINT, signal.SIGTERM}
    signal.pthread_sigmask(signal.SIG_BLOCK, stop_signals)

    if flag("FAIL_AT_START"):
        sys.stderr.write("fd_http: FAIL_AT_START is set: exiting 1\n")
        sys.exit(1)
    socks = inherited_sockets()
    hang_after = seconds("HANG_AFTER")
    ready_delay = seconds("READY_DELAY") or 0.0

    health = Health(hang_after)
    servers = [Server(sock, health) for sock in socks]
    loops = [
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1})
        for server in servers
    ]
    for loop in loops:
        loop.start()
    names = os.environ.get("LISTEN_FDNAMES", "")
    where = ", ".join(str(server.server_address) for server in servers)
    log(f"serving on {where} (LISTEN_FDNAMES={names!r}, instance {INSTANCE!r})")

    stop = threading.Event()
    helpers = []
    if flag("WATCHDOG"):
        helpers.append(threading.Thread(target=watchdog, args=(health, stop)))
    if flag("WAIT_READY") and not flag("NEVER_READY"):

        def ready() -> None:
            if not stop.wait(ready_delay):
                log("READY=1" if sd_notify("READY=1") else "could not send READY=1")

        helpers.append(threading.Thread(target=ready))
    for helper in helpers:
        helper.start()

    signum = signal.sigwait(stop_signals)
    log(f"{signal.Signals(signum).name}: stopping gracefully")
    stop.set()
    for server in servers:
        server.shutdown()  # the accept loop ends; queued connections stay in the socket
    for server in servers:
        server.close_idle()
    for server in servers:
        server.server_close()  # closes our fd of the socket, waits for requests in flight
    for thread in helpers + loops:
        thread.join()
    log("stopped")
    sys.exit(0)


if __name__ == "__main__":
    main()
