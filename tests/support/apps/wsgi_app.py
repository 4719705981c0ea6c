"""A WSGI test app for gunicorn (sync worker), started the systemd way without --bind:

    LISTEN_FDS=1 LISTEN_PID=<gunicorn's pid> python -m gunicorn --workers 1 wsgi_app:app

Gunicorn takes fds 3.. when LISTEN_PID is its own pid (gunicorn/systemd.py; it then removes
LISTEN_FDS and LISTEN_PID from its environment) and sends READY=1 on $NOTIFY_SOCKET itself
(abstract `@` addresses too) as soon as its arbiter has booted: BEFORE any worker has
imported the app, so an app that fails to import is "ready" all the same (then gunicorn
exits with "Worker failed to boot"). With --preload the app is imported before READY=1.

    GET /        pid=<worker pid> master=<arbiter pid>  (the arbiter is the instance corral
                 started; the answering worker is its child)
    GET /slow    the same after 0.3 s (/slow?seconds=S for another delay)

Signals, as gunicorn 27 handles them (gunicorn/arbiter.py, gunicorn/workers/base.py):
- SIGTERM is a graceful stop: the arbiter closes its listening sockets, sends SIGTERM to the
  workers, which finish the request in hand and exit, waits up to --graceful-timeout (30 s)
  and SIGKILLs what is left; exit 0.
- SIGINT (and SIGQUIT) is a QUICK stop: workers get SIGQUIT and exit at once (sys.exit in
  the signal handler), so a request in flight is cut off (its client gets a 500 or a reset);
  exit 0. corral's default stop signal is SIGINT: a gunicorn app needs its stop signal set
  to SIGTERM to reload without losing requests (and a kill_timeout longer than its slowest
  request). A signal sent to the whole process group reaches the workers directly as well.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import parse_qs

StartResponse = Callable[[str, list[tuple[str, str]]], Any]


def app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
    path = environ.get("PATH_INFO", "/")
    if path not in ("/", "/slow"):
        start_response("404 Not Found", [("Content-Type", "text/plain"), ("Content-Length", "0")])
        return [b""]
    if path == "/slow":
        query = parse_qs(environ.get("QUERY_STRING", ""))
        time.sleep(float(query.get("seconds", ["0.3"])[0]))
    body = f"pid={os.getpid()} master={os.getppid()}\n".encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
