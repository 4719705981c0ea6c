"""The webhook endpoint behind the real `corral panel` process (uvicorn, its access log on):
a token sent in the query string is refused, and neither uvicorn's access log nor anything
else the panel prints holds it (uvicorn logs `path?query`; the panel's filter cuts it)."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from corral.panel.webhooks import service
from tests.support.panel import add_tenant, make_app

PANEL = [sys.executable, "-m", "corral", "panel"]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _post(url: str, headers: dict[str, str], body: bytes = b"") -> int:
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return int(answer.status)
    except urllib.error.HTTPError as exc:
        return exc.code


@contextlib.contextmanager
def running_panel(home: Path) -> Iterator[tuple[str, Path]]:
    """`corral panel` serving on a free loopback port; (its base URL, its output file)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CORRAL")}
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    log = home / "server.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [*PANEL, "--home", str(home), "--port", str(port)],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )
    try:
        deadline = time.monotonic() + 60
        while True:
            with (
                contextlib.suppress(OSError),
                urllib.request.urlopen(base + "/healthz", timeout=2) as answer,
            ):
                if answer.status == 200:
                    break
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
        yield base, log
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


@pytest.mark.slow
def test_a_token_in_the_url_never_reaches_the_access_log() -> None:
    home = Path(tempfile.mkdtemp(prefix="cwl", dir="/tmp"))
    try:
        # The hook is made through the panel's own service on the same home (same database,
        # same webhook.key) before the server starts.
        _app, panel = make_app(home)
        tenant = add_tenant(panel, "a", home / "tenants" / "a")
        issued = service.enable(panel, tenant, "web", "tester")
        panel.database.close()
        with running_panel(home) as (base, log):
            url = f"{base}/hooks/deploy/{issued.public_id}"
            token = issued.token
            assert _post(f"{url}?token={token}", {"X-Corral-Token": token}) == 400
            assert _post(f"{url}?{token}", {}) == 400
            assert _post(url, {"X-Corral-Token": "wrong"}) == 403
            assert _post(url, {"X-Gitlab-Token": "wrong", "X-Gitlab-Event": "Push Hook"}) == 403
            deadline = time.monotonic() + 10
            while log.read_text().count("/hooks/deploy/") < 4 and time.monotonic() < deadline:
                time.sleep(0.05)
        output = log.read_text()
        assert output.count(f"/hooks/deploy/{issued.public_id}?<redacted>") == 2, output
        assert f'"POST /hooks/deploy/{issued.public_id} HTTP/1.1" 403' in output, output
        assert token not in output
    finally:
        shutil.rmtree(home, ignore_errors=True)
