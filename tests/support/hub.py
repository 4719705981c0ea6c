"""A real `corral hub` process for end-to-end tests: served over TLS on loopback with a
certificate from a CA the test makes, its users and buckets made through its own CLI,
and an HTTPS client logged in as one of its users (session cookie + CSRF token + Origin,
as the hub requires of a browser)."""

from __future__ import annotations

import contextlib
import re
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psutil

from tests.support.tls import Pki

USER_PASSWORD = "hub user pass phrase 31"
START_TIMEOUT = 60.0


class HubFailed(AssertionError):
    pass


@dataclass(frozen=True)
class MadeBucket:
    public_id: str
    secret: str
    owner: str


@dataclass
class HubProcess:
    home: Path
    port: int
    pki: Pki
    log: Path

    @property
    def origin(self) -> str:
        return f"https://localhost:{self.port}"

    @property
    def agent_url(self) -> str:
        return f"wss://localhost:{self.port}"

    @property
    def database(self) -> Path:
        return self.home / "hub.db"

    def cli(self, *args: str, input: str | None = None) -> str:
        """Run `corral hub <args> --home <home>`; its stdout (fails the test on an error)."""
        proc = subprocess.run(
            [sys.executable, "-m", "corral", "hub", *args, "--home", str(self.home)],
            capture_output=True,
            text=True,
            input=input,
            timeout=120,
        )
        if proc.returncode != 0:
            raise HubFailed(f"corral hub {args[0]} failed: {proc.stderr}{proc.stdout}")
        return proc.stdout

    def create_user(self, name: str) -> None:
        # create-admin is the CLI's way to make a user; hub admins see no bucket they
        # are not a member of, so the isolation test loses nothing.
        self.cli("create-admin", name, "--password-stdin", input=USER_PASSWORD + "\n")

    def create_bucket(self, name: str, owner: str) -> MadeBucket:
        out = self.cli("create-bucket", name, "--owner", owner)
        public = re.search(r"public id:\s*(\S+)", out)
        secret = re.search(r"secret:\s*(\S+)", out)
        assert public and secret, out
        return MadeBucket(public[1], secret[1], owner)

    def log_text(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def login(self, name: str) -> HubClient:
        return HubClient.login(self, name)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _tls_answers(port: int, pki: Pki) -> bool:
    context = ssl.create_default_context(cafile=str(pki.ca_cert))
    try:
        with (
            socket.create_connection(("127.0.0.1", port), timeout=2) as raw,
            context.wrap_socket(raw, server_hostname="localhost"),
        ):
            return True
    except OSError:
        return False


def _stop(proc: subprocess.Popen[bytes]) -> None:
    # Our own child, not yet reaped: its pid cannot have been reused.
    try:
        tree = psutil.Process(proc.pid).children(recursive=True)
    except psutil.Error:
        tree = []
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
    for child in tree:
        with contextlib.suppress(psutil.Error):
            child.kill()  # psutil checks it is still the same process
    psutil.wait_procs(tree, timeout=5)


@contextlib.contextmanager
def running_hub(folder: Path, pki: Pki) -> Iterator[HubProcess]:
    """`corral hub --cert --key` on 127.0.0.1 (a free port); stopped even on failure."""
    folder.mkdir(parents=True, exist_ok=True)
    hub = HubProcess(folder / "home", free_port(), pki, folder / "hub.log")
    with hub.log.open("wb") as log:
        proc = subprocess.Popen(
            [
                *(sys.executable, "-m", "corral", "hub", "--home", str(hub.home)),
                *("--host", "127.0.0.1", "--port", str(hub.port)),
                *("--cert", str(pki.server_cert), "--key", str(pki.server_key)),
            ],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while not _tls_answers(hub.port, pki):
            if proc.poll() is not None:
                raise HubFailed(f"corral hub exited {proc.returncode}: {hub.log_text()}")
            if time.monotonic() > deadline:
                raise HubFailed(f"corral hub never answered over TLS: {hub.log_text()}")
            time.sleep(0.1)
        yield hub
    finally:
        _stop(proc)


class HubClient:
    """A user's HTTPS session with the hub: the JSON API with the session's CSRF token."""

    def __init__(self, hub: HubProcess, http: httpx.Client, csrf: str) -> None:
        self.hub = hub
        self.http = http
        self.csrf = csrf

    @classmethod
    def login(cls, hub: HubProcess, name: str) -> HubClient:
        context = ssl.create_default_context(cafile=str(hub.pki.ca_cert))
        http = httpx.Client(
            base_url=hub.origin, verify=context, headers={"Origin": hub.origin}, timeout=60
        )
        try:
            answer = http.post("/login", data={"username": name, "password": USER_PASSWORD})
            assert answer.status_code == 303, (answer.status_code, answer.text[:300])
            page = http.get("/")
            found = re.search(r'<meta name="csrf-token" content="([^"]+)"', page.text)
            assert found, page.text[:300]
        except BaseException:
            http.close()
            raise
        return cls(hub, http, found[1])

    def close(self) -> None:
        self.http.close()

    def get(self, path: str) -> httpx.Response:
        return self.http.get(path, headers={"Accept": "application/json"})

    def get_json(self, path: str) -> Any:
        answer = self.get(path)
        assert answer.status_code == 200, (path, answer.status_code, answer.text[:300])
        return answer.json()

    def post(self, path: str, body: dict[str, Any]) -> httpx.Response:
        return self.http.post(
            path, json=body, headers={"X-CSRF-Token": self.csrf, "Accept": "application/json"}
        )
