"""The HTTP app of the reload workload (Python, standard library only: a user's app).

    python http_app.py                  the listening socket is fd 3 (LISTEN_FDS=1, corral)
    python http_app.py --fd N           the listening socket is fd N (circus: use_sockets)
    python http_app.py --reuseport P    binds 127.0.0.1:P itself with SO_REUSEPORT
                                        (supervisor: every process binds its own)

Every request gets `200 pid=<pid>` and the connection is closed after the answer. It
sends READY=1 to $NOTIFY_SOCKET once it accepts (if set). On SIGTERM or SIGINT it stops
gracefully: it stops accepting, answers what it has accepted, then exits 0; connections
still queued on a shared socket stay there for the other processes.
"""

from __future__ import annotations

import os
import selectors
import signal
import socket
import sys
import threading

PID = os.getpid()
BODY = f"pid={PID}\n".encode()
ANSWER = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\n"
    + f"Content-Length: {len(BODY)}\r\n\r\n".encode()
    + BODY
)


def listening_socket(argv: list[str]) -> socket.socket:
    if len(argv) == 2 and argv[0] == "--fd":
        sock = socket.socket(fileno=int(argv[1]))
    elif len(argv) == 2 and argv[0] == "--reuseport":
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(("127.0.0.1", int(argv[1])))
        sock.listen(1024)
    elif not argv and os.environ.get("LISTEN_PID") == str(PID):
        sock = socket.socket(fileno=3)
    else:
        sys.exit("http_app: no socket: use LISTEN_FDS, --fd N or --reuseport PORT")
    sock.setblocking(False)  # shared with other processes: losing a race is EAGAIN
    return sock


def serve(conn: socket.socket) -> None:
    try:
        conn.settimeout(10)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = conn.recv(4096)
            if not chunk:
                return
            data += chunk
        conn.sendall(ANSWER)
        conn.shutdown(socket.SHUT_WR)
    except OSError:
        pass
    finally:
        conn.close()


def notify_ready() -> None:
    address = os.environ.get("NOTIFY_SOCKET", "")
    if not address:
        return
    if address.startswith("@"):
        address = "\0" + address[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.sendto(b"READY=1", address)


def main() -> None:
    sock = listening_socket(sys.argv[1:])
    stop_r, stop_w = os.pipe()
    os.set_blocking(stop_w, False)
    signal.set_wakeup_fd(stop_w)
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: None)
    selector = selectors.DefaultSelector()
    selector.register(sock, selectors.EVENT_READ)
    selector.register(stop_r, selectors.EVENT_READ)
    notify_ready()
    workers: list[threading.Thread] = []
    while True:
        events = selector.select()
        if any(key.fileobj == stop_r for key, _ in events):
            break
        try:
            conn, _ = sock.accept()
        except BlockingIOError:
            continue
        worker = threading.Thread(target=serve, args=(conn,))
        worker.start()
        workers = [w for w in workers if w.is_alive()]
        workers.append(worker)
    sock.close()  # our fd only: the socket stays open in the manager and other processes
    for worker in workers:
        worker.join()
    sys.exit(0)


if __name__ == "__main__":
    main()
