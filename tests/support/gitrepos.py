"""Real git repositories for deploy tests: a bare "remote" with commits, served over HTTPS on
loopback (with a CA the test makes) and through an ssh shim, so no sshd and no network.

Fixtures (plain functions and context managers; use them from your own pytest fixtures):

`make_repo(root, files, path="team/app.git", branch="main") -> GitRepo`
    A bare repository at `root/"srv"/path` (the served tree, `GitRepo.served`) with one
    commit holding `files` ({relative name: str | bytes | Symlink(target) | None}), made
    from a working clone at `root/"work"/path`. `repo.commit(files, message)` changes files
    (None deletes), commits, pushes to the bare repo and returns the new commit id (40 hex);
    `repo.head()` is the branch's current commit, `repo.tag(name)` tags it and pushes the
    tag, `repo.branch_from(name)` pushes a new branch at the current commit.
    Commits use a fixed identity and ignore the user's and the system's git config.

`git_https_server(served, pki, auth=None) -> ContextManager[str]`
    Smart HTTP (`git http-backend` as CGI) over TLS on 127.0.0.1, certificate from
    `tests.support.tls.make_pki(folder)`; yields the base URL "https://localhost:PORT" so
    the repository is f"{base}/{repo.path}". Clients must trust `pki.ca_cert` (put it in
    the env as GIT_SSL_CAINFO or SSL_CERT_FILE). `auth=("user", "token")` requires HTTP
    basic auth (401 otherwise), so a URL like https://user:token@localhost:PORT/... can be
    tested. Stopped on exit even if the test fails.

`ssh_shim(folder, served, authorized_key=None) -> SshShim`
    Writes an executable script `folder/"ssh-shim"` (system python3, no dependencies) to be
    set as $CORRAL_DEPLOY_SSH. Git runs it like ssh: `shim [options] [user@]host
    "git-upload-pack '/team/app.git'"`; it runs `git-upload-pack` on `served/<path>` locally
    (absolute and scp-like relative paths both map to `served`; `..` refused), so
    "ssh://git@localhost/team/app.git" and "git@localhost:team/app.git" both work. It
    answers `-G` with exit 0 (git's probe for an OpenSSH-like program, needed for ports).
    With `authorized_key` (a public key line "ssh-ed25519 AAAA..."), the shim demands
    `-i KEY` whose public half (`ssh-keygen -y -f KEY`) matches it, else it prints
    "Permission denied (publickey)." and exits 255 like ssh. Every call's argv is appended
    as one JSON line to `shim.log` (`shim.calls()` reads them back), so tests can check the
    options the deploy code passed. The shim sets safe.directory=* for git-upload-pack
    (through GIT_CONFIG_COUNT), so it also works when run as another uid on a repo owned by
    root; for that put `folder` and `served` in a `world_dir()` (tests.support.otheruid)
    and make the repo readable.

`git_env(**extra) -> dict[str, str]`
    The environment used for the fixture's own git commands (no user/system config).
"""

from __future__ import annotations

import http.server
import json
import os
import shutil
import ssl
import subprocess
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.support.tls import Pki

SYSTEM_PYTHON = "/usr/bin/python3"


@dataclass(frozen=True)
class Symlink:
    """A file value for `make_repo`/`commit`: a symbolic link to `target`."""

    target: str


FileValue = str | bytes | Symlink | None


def git_env(**extra: str) -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("GIT_") and key not in ("SSH_ASKPASS",)
    }
    env.update(
        GIT_CONFIG_NOSYSTEM="1",
        GIT_CONFIG_GLOBAL="/dev/null",
        GIT_TERMINAL_PROMPT="0",
        GIT_AUTHOR_NAME="Corral Test",
        GIT_AUTHOR_EMAIL="test@corral.invalid",
        GIT_COMMITTER_NAME="Corral Test",
        GIT_COMMITTER_EMAIL="test@corral.invalid",
    )
    env.update(extra)
    return env


def _git(*args: str, cwd: Path | None = None) -> str:
    done = subprocess.run(
        ["git", *args], cwd=cwd, env=git_env(), capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"git {' '.join(args)} failed: {done.stderr.strip()}")
    return done.stdout.strip()


@dataclass
class GitRepo:
    served: Path  # the tree the servers expose
    path: str  # the repository's path inside it, e.g. "team/app.git"
    work: Path  # a working clone where commits are made
    branch: str

    @property
    def bare(self) -> Path:
        return self.served / self.path

    def _write(self, files: Mapping[str, FileValue]) -> None:
        for name, value in files.items():
            target = self.work / name
            if target.is_symlink() or target.is_file():
                target.unlink()
            if value is None:
                _git("rm", "-q", "--cached", "--ignore-unmatch", name, cwd=self.work)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(value, Symlink):
                target.symlink_to(value.target)
            elif isinstance(value, bytes):
                target.write_bytes(value)
            else:
                target.write_text(value)
            _git("add", "--", name, cwd=self.work)

    def commit(self, files: Mapping[str, FileValue], message: str = "change") -> str:
        """Apply `files` on the branch, commit, push to the bare repo; the new commit id."""
        self._write(files)
        _git("commit", "-q", "--allow-empty", "-m", message, cwd=self.work)
        _git("push", "-q", "origin", f"HEAD:refs/heads/{self.branch}", cwd=self.work)
        _git("update-server-info", cwd=self.bare)
        return self.head()

    def head(self, branch: str | None = None) -> str:
        return _git("rev-parse", f"refs/heads/{branch or self.branch}", cwd=self.bare)

    def tag(self, name: str) -> str:
        _git("tag", name, cwd=self.work)
        _git("push", "-q", "origin", f"refs/tags/{name}", cwd=self.work)
        return self.head()

    def branch_from(self, name: str) -> str:
        _git("push", "-q", "origin", f"HEAD:refs/heads/{name}", cwd=self.work)
        return self.head(name)

    def make_readable(self) -> None:
        """Let every uid read the served repo (for a deploy running as another user)."""
        for item in (self.served, *self.served.rglob("*")):
            if not item.is_symlink():
                item.chmod(0o755 if item.is_dir() else 0o644)


def make_repo(
    root: Path,
    files: Mapping[str, FileValue],
    path: str = "team/app.git",
    branch: str = "main",
) -> GitRepo:
    served = root / "srv"
    bare = served / path
    work = root / "work" / path
    bare.mkdir(parents=True)
    work.mkdir(parents=True)
    _git("init", "-q", "--bare", f"--initial-branch={branch}", str(bare))
    _git("init", "-q", f"--initial-branch={branch}", str(work))
    _git("remote", "add", "origin", str(bare), cwd=work)
    repo = GitRepo(served=served, path=path, work=work, branch=branch)
    repo.commit(files, "initial")
    return repo


# --- smart HTTP over TLS ---------------------------------------------------------------


def _read_body(handler: http.server.BaseHTTPRequestHandler) -> bytes:
    if handler.headers.get("Transfer-Encoding", "").lower() == "chunked":
        chunks = []
        while True:
            size = int(handler.rfile.readline().split(b";")[0].strip(), 16)
            if size == 0:
                handler.rfile.readline()
                return b"".join(chunks)
            chunks.append(handler.rfile.read(size))
            handler.rfile.readline()
    length = int(handler.headers.get("Content-Length") or 0)
    return handler.rfile.read(length) if length else b""


def _handler(
    served: Path, auth: tuple[str, str] | None
) -> type[http.server.BaseHTTPRequestHandler]:
    import base64

    expected = (
        "Basic " + base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode() if auth else None
    )

    class GitHandler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _cgi(self) -> None:
            body = _read_body(self)
            if expected is not None and self.headers.get("Authorization") != expected:
                self.send_response(401)
                self.send_header("WWW-Authenticate", 'Basic realm="git"')
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            path, _, query = self.path.partition("?")
            env = git_env(
                GIT_PROJECT_ROOT=str(served),
                GIT_HTTP_EXPORT_ALL="1",
                REQUEST_METHOD=self.command,
                PATH_INFO=path,
                QUERY_STRING=query,
                CONTENT_TYPE=self.headers.get("Content-Type", ""),
                CONTENT_LENGTH=str(len(body)),
                REMOTE_ADDR="127.0.0.1",
            )
            for header, name in (
                ("Git-Protocol", "GIT_PROTOCOL"),
                ("Content-Encoding", "HTTP_CONTENT_ENCODING"),
            ):
                if self.headers.get(header):
                    env[name] = self.headers[header]
            done = subprocess.run(
                ["git", "http-backend"], input=body, env=env, capture_output=True, check=False
            )
            head, _, payload = done.stdout.partition(b"\r\n\r\n")
            status, headers = 200, []
            for line in head.decode("latin-1").split("\r\n"):
                key, _, value = line.partition(":")
                if key.lower() == "status":
                    status = int(value.split()[0])
                elif key:
                    headers.append((key, value.strip()))
            self.send_response(status)
            for key, value in headers:
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        do_GET = _cgi
        do_POST = _cgi

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return GitHandler


@contextmanager
def git_https_server(served: Path, pki: Pki, auth: tuple[str, str] | None = None) -> Iterator[str]:
    """Serve `served` with `git http-backend` over HTTPS on loopback; yields the base URL."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _handler(served, auth))
    server.daemon_threads = True
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(pki.server_cert, pki.server_key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"https://localhost:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


# --- the ssh shim -----------------------------------------------------------------------

_SHIM = r"""#!{python}
# A stand-in for ssh in tests: runs git-upload-pack locally on the served tree.
import json, os, shlex, subprocess, sys
SERVED = {served!r}
AUTHORIZED = {authorized!r}
LOG = {log!r}
args = sys.argv[1:]
with open(LOG, "a") as log:
    log.write(json.dumps(args) + "\n")
if "-G" in args:
    sys.exit(0)
key, rest, i = None, [], 0
with_value = set("bcDEeFIiJLlmOopQRSWw")
while i < len(args):
    arg = args[i]
    if arg.startswith("-") and len(arg) == 2 and arg[1] in with_value:
        if arg == "-i":
            key = args[i + 1]
        i += 2
        continue
    if arg.startswith("-"):
        i += 1
        continue
    rest.append(arg)
    i += 1
if len(rest) != 2:
    sys.stderr.write("ssh-shim: expected HOST COMMAND, got %r\n" % rest)
    sys.exit(255)
if AUTHORIZED is not None:
    ok = False
    if key is not None:
        out = subprocess.run(["ssh-keygen", "-y", "-f", key], capture_output=True, text=True)
        ok = out.returncode == 0 and out.stdout.split()[:2] == AUTHORIZED.split()[:2]
    if not ok:
        sys.stderr.write("git@localhost: Permission denied (publickey).\n")
        sys.exit(255)
words = shlex.split(rest[1])
if len(words) != 2 or words[0] != "git-upload-pack":
    sys.stderr.write("ssh-shim: only git-upload-pack is served\n")
    sys.exit(255)
path = words[1].lstrip("/")
if ".." in path.split("/"):
    sys.stderr.write("ssh-shim: .. refused\n")
    sys.exit(255)
env = dict(os.environ, GIT_CONFIG_COUNT="1", GIT_CONFIG_KEY_0="safe.directory",
           GIT_CONFIG_VALUE_0="*")
os.execvpe("git", ["git", "upload-pack", os.path.join(SERVED, path)], env)
"""


@dataclass(frozen=True)
class SshShim:
    program: Path  # the value for $CORRAL_DEPLOY_SSH
    log: Path

    def calls(self) -> list[list[str]]:
        """Every argv the shim was run with, oldest first."""
        if not self.log.exists():
            return []
        return [json.loads(line) for line in self.log.read_text().splitlines() if line]


def ssh_shim(folder: Path, served: Path, authorized_key: str | None = None) -> SshShim:
    folder.mkdir(parents=True, exist_ok=True)
    python = SYSTEM_PYTHON if os.access(SYSTEM_PYTHON, os.X_OK) else shutil.which("python3")
    program = folder / "ssh-shim"
    log = folder / "shim.log"
    program.write_text(
        _SHIM.format(python=python, served=str(served), authorized=authorized_key, log=str(log))
    )
    program.chmod(0o755)
    log.touch()
    log.chmod(0o666)  # the shim may run as another uid
    return SshShim(program=program, log=log)
