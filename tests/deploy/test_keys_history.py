"""Deploy keys (OpenSSH ed25519, 0600) and the capped history and output."""

from __future__ import annotations

import shlex
import subprocess
from pathlib import Path

import pytest

from corral.deploy import keys
from corral.deploy.history import MAX_OUTPUT, MAX_RECORDS, DeployHistory
from corral.deploy.layout import DeployLayout


def test_key_is_openssh_ed25519_private_0600_and_stable(tmp_path: Path) -> None:
    layout = DeployLayout(tmp_path, "api")
    assert keys.public_key(layout) is None and keys.ssh_command(layout) is None
    line = keys.ensure_key(layout, "corral api@host\nx")
    assert line.startswith("ssh-ed25519 AAAA") and line.endswith(" corral-api@host-x")
    assert layout.key.stat().st_mode & 0o777 == 0o600
    assert layout.key.read_text().startswith("-----BEGIN OPENSSH PRIVATE KEY-----")
    derived = subprocess.run(
        ["ssh-keygen", "-y", "-f", str(layout.key)], capture_output=True, text=True, check=True
    )
    assert derived.stdout.split()[:2] == line.split()[:2]
    assert keys.ensure_key(layout, "other") == line  # made once
    assert keys.public_key(layout) == line
    assert not list(layout.root.glob(".*.tmp-*"))


def test_ssh_command_uses_the_key_and_no_user_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    layout = DeployLayout(tmp_path / "a b", "api")
    monkeypatch.delenv(keys.SSH_PROGRAM_ENV, raising=False)
    keys.ensure_key(layout, "c")
    argv = shlex.split(keys.ssh_command(layout) or "")
    assert argv[:3] == ["ssh", "-F", "/dev/null"]
    assert argv[argv.index("-i") + 1] == str(layout.key)
    for option in (
        "IdentitiesOnly=yes",
        "BatchMode=yes",
        "StrictHostKeyChecking=accept-new",
        f"UserKnownHostsFile={layout.known_hosts}",
    ):
        assert option in argv
    monkeypatch.setenv(keys.SSH_PROGRAM_ENV, "/opt/shim prog")
    assert shlex.split(keys.ssh_command(layout) or "")[0] == "/opt/shim prog"


def record(n: int) -> dict[str, object]:
    return {"id": f"d{n}", "app": "api", "kind": "deploy", "status": "queued", "queued": n}


def test_history_is_newest_first_updatable_and_capped(tmp_path: Path) -> None:
    layout = DeployLayout(tmp_path, "api")
    history = DeployHistory(layout)
    for n in range(MAX_RECORDS + 10):
        history.add(record(n))
        if n < 12:
            with history.output_writer(f"d{n}") as out:
                out.write(f"line of d{n}")
    history.update({**record(205), "status": "succeeded"})
    listed = history.list(limit=500)
    assert len(listed) == MAX_RECORDS
    assert listed[0]["id"] == f"d{MAX_RECORDS + 9}" and listed[-1]["id"] == "d10"
    assert history.get("d205") == {**record(205), "status": "succeeded"}
    assert history.get("d3") is None
    assert history.output("d3") == ""  # dropped with its record
    assert history.output("d11") == "line of d11\n"
    assert len(history.list()) == 50
    assert layout.history.stat().st_mode & 0o777 == 0o600


def test_output_is_capped_keeping_the_end(tmp_path: Path) -> None:
    history = DeployHistory(DeployLayout(tmp_path, "api"))
    line = "x" * 99
    with history.output_writer("d1") as out:
        for n in range(30_000):  # about 3 MiB
            out.write(f"{n:06d} {line}")
        out.write("the error at the end")
    text = history.output("d1")
    assert len(text.encode()) <= MAX_OUTPUT
    assert text.endswith("the error at the end\n")
    assert text.startswith(text.splitlines()[0]) and len(text.splitlines()[0]) == 106
    assert "000000 " not in text


def test_output_ids_cannot_leave_the_folder(tmp_path: Path) -> None:
    history = DeployHistory(DeployLayout(tmp_path, "api"))
    for bad in ("../x", "a/b", "", ".."):
        with pytest.raises(ValueError):
            history.output_writer(bad)
        with pytest.raises(ValueError):
            history.output(bad)
