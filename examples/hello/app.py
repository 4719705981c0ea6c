#!/usr/bin/env python3
"""A tiny HTTP app to run under corral (standard library only).

It listens on 127.0.0.1:$PORT (default 8080), answers every GET with
"hello from instance $CORRAL_INSTANCE", logs one line per request to stdout, and exits
cleanly (status 0) on SIGINT or SIGTERM, which is how corral stops it.

    PORT=8080 python3 examples/hello/app.py
    curl http://127.0.0.1:8080/
"""

from __future__ import annotations

import os
import signal
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType

INSTANCE = os.environ.get("CORRAL_INSTANCE", "?")


class Hello(BaseHTTPRequestHandler):
    server_version = "corral-hello/1"

    def do_GET(self) -> None:
        body = f"hello from instance {INSTANCE}\n".encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_HEAD(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        # One line per request, on stdout (corral writes it to the app's -out log).
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        print(f"{stamp} instance={INSTANCE} {self.address_string()} {format % args}", flush=True)


class Stop(Exception):
    pass


def on_signal(signum: int, frame: FrameType | None) -> None:
    raise Stop(signal.Signals(signum).name)


def main() -> int:
    port = int(os.environ.get("PORT", "8080"))
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    server = ThreadingHTTPServer(("127.0.0.1", port), Hello)
    server.daemon_threads = True
    print(
        f"hello: instance {INSTANCE} listening on http://127.0.0.1:{port}/ (pid {os.getpid()})",
        flush=True,
    )
    try:
        server.serve_forever()
    except Stop as stop:
        print(f"hello: instance {INSTANCE} got {stop}, shutting down", flush=True)
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
