"""Secrets end to end (SPEC 3): the real `corral` CLI, a real daemon, real apps.

Values go in through `corral secret set` on stdin. An app proves it sees its variable by
writing the SHA-256 of the value (never the value) to a file; each start rewrites it.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import pty
import signal
import sys
from pathlib import Path

import pytest

from ..conftest import Corral, read_text, wait_for
from ..support.leaks import LeakScan, leak_value

READER = """\
import hashlib, os, sys, time
name, out = sys.argv[1], sys.argv[2]
value = os.environ.get(name)
text = "unset" if value is None else hashlib.sha256(value.encode()).hexdigest()
with open(out + ".tmp", "w") as f:
    f.write(text)
os.replace(out + ".tmp", out)
time.sleep(600)
"""


def sha(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def write_config(corral: Corral, apps: list[tuple[str, str, bool]]) -> Path:
    """corral.yaml with one reader app per (name, variable, listed in `secrets:`)."""
    script = corral.write("reader.py", READER)
    lines = ["apps:"]
    for name, variable, listed in apps:
        lines += [
            f"  - name: {name}",
            f"    script: {script}",
            f"    interpreter: {sys.executable}",
            f"    args: [{variable}, {corral.workdir / (name + '.seen')}]",
        ]
        if listed:
            lines.append(f"    secrets: [{variable}]")
    return corral.write("corral.yaml", "\n".join(lines) + "\n")


def seen(corral: Corral, app: str, expected: str) -> None:
    """Wait until the app's last start wrote `expected` (a hash, or "unset")."""
    path = corral.workdir / f"{app}.seen"
    wait_for(lambda: read_text(path) == expected, timeout=30)


def set_secret(corral: Corral, app: str, name: str, value: str) -> str:
    result = corral.ok("secret", "set", app, name, input=value + "\n")
    return result.out


@pytest.mark.slow
def test_a_secret_set_on_stdin_reaches_the_app_and_nothing_else(corral: Corral) -> None:
    value = leak_value()
    out = set_secret(corral, "api", "DB_PASSWORD", value)
    assert out.strip() == (
        "secret DB_PASSWORD of api saved; it applies from the app's next start: corral reload api"
    )
    config = write_config(corral, [("api", "DB_PASSWORD", True)])
    corral.ok("start", str(config))
    seen(corral, "api", sha(value))

    scan = LeakScan([value])
    for args in (
        ("jlist",),
        ("describe", "api"),
        ("env", "api"),
        ("secret", "ls"),
        ("secret", "ls", "--json"),
        ("save",),
        ("ls",),
    ):
        result = corral.ok(*args)
        scan.text(f"corral {' '.join(args)}", result.out + result.err)
    env = corral.ok("env", "api").out
    assert "DB_PASSWORD=(secret)" in env.splitlines()
    assert "DB_PASSWORD" in corral.ok("describe", "api").out
    # Everything the daemon wrote: state, dump, settings, logs, its own log, secrets.json.
    searched = scan.tree(corral.home.root)
    names = {p.name for p in searched}
    assert {"state.json", "dump.json", "secrets.json", "corral.log"} <= names
    scan.assert_clean()
    log = read_text(corral.home.daemon_log)
    assert "secret DB_PASSWORD of api set" in log


@pytest.mark.slow
def test_set_again_applies_at_restart_and_rm_at_the_next_start(corral: Corral) -> None:
    first, second = leak_value(), leak_value()
    set_secret(corral, "api", "TOKEN", first)
    corral.ok("start", str(write_config(corral, [("api", "TOKEN", False)])))
    seen(corral, "api", sha(first))

    set_secret(corral, "api", "TOKEN", second)
    seen(corral, "api", sha(first))  # a running app keeps what it was started with
    corral.ok("restart", "api")
    seen(corral, "api", sha(second))

    removed = corral.ok("secret", "rm", "api", "TOKEN")
    assert "secret TOKEN of api removed" in removed.out
    corral.ok("restart", "api")
    seen(corral, "api", "unset")
    again = corral.cli("secret", "rm", "api", "TOKEN")
    assert again.code == 1 and "api has no secret TOKEN" in again.err
    assert "secret TOKEN of api removed" in read_text(corral.home.daemon_log)


@pytest.mark.slow
def test_a_needed_secret_that_is_not_set_refuses_the_start(corral: Corral) -> None:
    config = write_config(corral, [("api", "DB_PASSWORD", True), ("web", "X", False)])
    result = corral.cli("start", str(config))
    assert result.code == 1
    assert result.err.count("\n") == 1 and "Traceback" not in result.err
    assert "'api'" in result.err and "DB_PASSWORD" in result.err and "not set" in result.err
    assert "corral secret set api DB_PASSWORD" in result.err
    assert corral.jlist() == []  # nothing was started, not even the other app
    assert not (corral.workdir / "api.seen").exists()
    assert not (corral.workdir / "web.seen").exists()

    value = leak_value()
    set_secret(corral, "api", "DB_PASSWORD", value)
    corral.ok("start", str(config))
    seen(corral, "api", sha(value))


@pytest.mark.slow
def test_a_tampered_ciphertext_errors_its_app_only(corral: Corral) -> None:
    api_value, web_value = leak_value(), leak_value()
    set_secret(corral, "api", "DB_PASSWORD", api_value)
    set_secret(corral, "web", "TOKEN", web_value)
    config = write_config(
        corral, [("api", "DB_PASSWORD", True), ("web", "TOKEN", True), ("plain", "X", False)]
    )
    corral.ok("start", str(config))
    seen(corral, "api", sha(api_value))
    corral.ok("kill")
    for app in ("api", "web", "plain"):
        (corral.workdir / f"{app}.seen").unlink()

    # One bit of api's ciphertext flipped while no daemon runs.
    path = corral.home.root / "secrets.json"
    doc = json.loads(path.read_text())
    entry = doc["secrets"]["api"]["DB_PASSWORD"]
    raw = bytearray(base64.b64decode(entry["ct"]))
    raw[len(raw) // 2] ^= 0x40
    entry["ct"] = base64.b64encode(bytes(raw)).decode()
    path.write_text(json.dumps(doc))

    corral.start_daemon()  # restores the three apps, which were running
    seen(corral, "web", sha(web_value))
    seen(corral, "plain", "unset")
    api = wait_for(lambda: corral.proc("api")["status"] == "errored" and corral.proc("api"))
    assert api["pid"] is None
    error = api["error"]
    assert "DB_PASSWORD" in error and "api" in error and "decrypt" in error
    assert not (corral.workdir / "api.seen").exists()  # nothing was spawned
    assert corral.proc("web")["status"] == "online"
    refused = corral.cli("restart", "api")
    assert refused.code == 1 and "DB_PASSWORD" in refused.err and "decrypt" in refused.err
    assert corral.cli("ping").code == 0  # the daemon is fine


@pytest.mark.slow
def test_secret_ls_shows_names_and_times_never_values(corral: Corral) -> None:
    values = {("api", "A"): leak_value(), ("api", "B"): leak_value(), ("web", "C"): leak_value()}
    for (app, name), value in values.items():
        set_secret(corral, app, name, value)
    table = corral.ok("secret", "ls").out
    lines = table.strip().splitlines()
    assert lines[0].split() == ["name", "app", "set", "at"]
    assert [line.split()[:2] for line in lines[1:]] == [["A", "api"], ["B", "api"], ["C", "web"]]
    listed = json.loads(corral.ok("secret", "ls", "api", "--json").out)
    assert [(e["app"], e["name"]) for e in listed] == [("api", "A"), ("api", "B")]
    assert all(set(e) == {"app", "name", "set_at"} for e in listed)
    assert corral.ok("secret", "ls", "nobody").out.strip() == "no secrets for nobody"
    scan = LeakScan(list(values.values()))
    scan.text("secret ls", table)
    scan.text("secret ls --json", json.dumps(listed))
    scan.assert_clean()


@pytest.mark.slow
def test_a_value_on_the_command_line_is_refused(corral: Corral) -> None:
    value = leak_value()
    result = corral.cli("secret", "set", "api", "DB_PASSWORD", value)
    assert result.code == 2
    assert value not in result.err + result.out
    assert "never taken from the command line" in result.err
    result = corral.cli("secret", "set", "api", f"DB_PASSWORD={value}")
    assert result.code == 2 and value not in result.err + result.out
    assert not corral.home.root.exists()  # no daemon was even started


@pytest.mark.slow
def test_rotate_key_through_the_cli_and_the_app_still_gets_its_value(corral: Corral) -> None:
    value = leak_value()
    set_secret(corral, "api", "DB_PASSWORD", value)
    key_file = corral.home.root / "secret.key"
    old_key = key_file.read_text()
    assert key_file.stat().st_mode & 0o777 == 0o600
    corral.ok("start", str(write_config(corral, [("api", "DB_PASSWORD", True)])))
    seen(corral, "api", sha(value))

    rotated = corral.ok("secret", "rotate-key")
    assert "1 secret re-encrypted" in rotated.out
    assert key_file.read_text() != old_key
    assert not (corral.home.root / "secret.key.next").exists()
    (corral.workdir / "api.seen").unlink()
    corral.ok("restart", "api")
    seen(corral, "api", sha(value))

    # And after a daemon restart, which reads the new key from its file.
    corral.ok("kill")
    (corral.workdir / "api.seen").unlink()
    corral.start_daemon()
    seen(corral, "api", sha(value))


def _read_until(fd: int, marker: bytes, seen: bytearray, timeout: float = 30) -> None:
    import select
    import time

    deadline = time.monotonic() + timeout
    while marker not in seen:
        remaining = deadline - time.monotonic()
        assert remaining > 0, f"no {marker!r} in {bytes(seen)!r}"
        ready, _, _ = select.select([fd], [], [], remaining)
        if ready:
            try:
                chunk = os.read(fd, 4096)
            except OSError:  # EIO: the child closed the terminal
                chunk = b""
            if not chunk:
                return
            seen += chunk


@pytest.mark.slow
def test_on_a_terminal_the_value_is_asked_twice_and_never_echoed(daemon: Corral) -> None:
    value = leak_value()
    pid, master = pty.fork()
    if pid == 0:  # the child: the CLI, with the pty as its controlling terminal
        try:
            argv = [sys.executable, "-m", "corral", "secret", "set", "api", "TOKEN"]
            os.chdir(daemon.workdir)
            os.execve(sys.executable, argv, daemon.env)
        finally:
            os._exit(127)
    seen = bytearray()
    try:
        _read_until(master, b"(not shown): ", seen)
        os.write(master, value.encode() + b"\n")
        _read_until(master, b"the same again: ", seen)
        os.write(master, value.encode() + b"\n")
        _read_until(master, b"\0never", seen)  # to the end of its output
        _, status = os.waitpid(pid, 0)
        pid = 0
    finally:
        if pid:
            os.kill(pid, signal.SIGKILL)  # our own unreaped child: the pid is still its
            os.waitpid(pid, 0)
        os.close(master)
    assert os.waitstatus_to_exitcode(status) == 0, bytes(seen)
    assert b"secret TOKEN of api saved" in seen
    scan = LeakScan([value])
    scan.text("the terminal", bytes(seen))
    scan.assert_clean()
    assert [e["name"] for e in daemon.call("secret_list", app="api")] == ["TOKEN"]


@pytest.mark.slow
def test_a_tenant_daemon_started_later_from_a_shell_still_decrypts(corral: Corral) -> None:
    """The tenant name is bound into every secret: a daemon the panel started (with
    CORRAL_TENANT) remembers it in the home, so one the tenant starts from a shell
    (without it) decrypts the same secrets."""
    value = leak_value()
    corral.env["CORRAL_TENANT"] = "acme"
    set_secret(corral, "api", "TOKEN", value)
    tenant_file = corral.home.root / "tenant"
    assert tenant_file.read_text() == "acme\n"
    assert tenant_file.stat().st_mode & 0o777 == 0o600
    corral.ok("kill")

    del corral.env["CORRAL_TENANT"]
    corral.ok("start", str(write_config(corral, [("api", "TOKEN", True)])))
    seen(corral, "api", sha(value))

    # Under another tenant name the same ciphertext is refused, not decrypted.
    corral.ok("kill")
    corral.env["CORRAL_TENANT"] = "other"
    refused = corral.cli("start", str(corral.workdir / "corral.yaml"))
    assert refused.code != 0 and "TOKEN" in refused.err and value not in refused.err
