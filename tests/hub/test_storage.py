"""Hub storage on SQLite and PostgreSQL: migrations, sealed bucket keys, the CLI that
makes admins and buckets (the secret printed once, stored nowhere)."""

from __future__ import annotations

import io
import os
import re
import stat
import time
from pathlib import Path

import pytest
from sqlalchemy import inspect, select

from corral.cli.main import main as corral_main
from corral.hub import ingest
from corral.hub.buckets import bucket_keys
from corral.hub.db.engine import open_database
from corral.hub.db.models import Base, Bucket, Server
from corral.hub.sealing import Sealer, SealError, load_or_create_key
from corral.protocol.hub import derive_bucket_keys
from tests.hub.support import PASSWORD, add_bucket, add_user, dump_tables, make_hub


def test_migrations_make_every_table(tmp_path: Path, database_url: str) -> None:
    database = open_database(database_url)
    try:
        names = set(inspect(database.engine).get_table_names())
        assert {t.name for t in Base.metadata.sorted_tables} <= names
        assert "hub_alembic_version" in names
        open_database(database_url).close()  # a second start is a no-op
    finally:
        database.close()


def test_bucket_keys_sealed_and_secret_nowhere(tmp_path: Path, database_url: str) -> None:
    _, hub = make_hub(tmp_path, database_url)
    add_user(hub, "olive")
    made = add_bucket(hub, "prod", "olive")
    expected = derive_bucket_keys(made.public_id, made.secret)
    with hub.database.session() as db:
        found = bucket_keys(db, hub.sealer, made.public_id)
        assert found is not None
        assert found[1].to_json() == expected.to_json()
        assert bucket_keys(db, hub.sealer, "0123456789abcdef") is None
        row = db.get(Bucket, made.id)
        assert row is not None
        sealed = row.sealed_keys
    dumped = dump_tables(hub)
    assert made.secret not in dumped
    for part in ("auth", "agent_to_hub", "hub_to_agent"):
        assert expected.to_json()[part] not in dumped  # keys only sealed
    assert made.secret not in repr(made)
    # Another hub.key does not open them; nor does another bucket's public id.
    with pytest.raises(SealError):
        Sealer(os.urandom(32)).open(made.public_id, sealed)
    with pytest.raises(SealError):
        hub.sealer.open("fedcba9876543210", sealed)
    mode = stat.S_IMODE(hub.config.key_path.stat().st_mode)
    assert mode == 0o600


def test_bad_hub_key_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "hub.key"
    path.write_text("not a key\n")
    with pytest.raises(SealError, match=r"hub\.key is not a base64 32-byte key"):
        load_or_create_key(path)


def test_cli_create_admin_and_bucket(
    tmp_path: Path,
    database_url: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    home = tmp_path / "home"
    common = ["--home", str(home), "--database-url", database_url]
    monkeypatch.setattr("sys.stdin", io.StringIO(PASSWORD + "\n"))
    assert corral_main(["hub", "create-admin", "alice", "--password-stdin", *common]) == 0
    assert "alice" in capsys.readouterr().out
    assert corral_main(["hub", "create-bucket", "prod", "--owner", "alice", *common]) == 0
    out = capsys.readouterr().out
    public_id = re.search(r"public id: (\S+)", out)
    secret = re.search(r"secret:\s+(\S+)", out)
    assert public_id and secret
    _, hub = make_hub(home, database_url)
    with hub.database.session() as db:
        found = bucket_keys(db, hub.sealer, public_id[1])
    assert found is not None
    assert found[1].to_json() == derive_bucket_keys(public_id[1], secret[1]).to_json()
    assert secret[1] not in dump_tables(hub)
    if database_url.startswith("sqlite"):
        for path in home.iterdir():  # the database file, its WAL, hub.key
            assert secret[1].encode() not in path.read_bytes()


def test_cli_refusals(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    home = ["--home", str(tmp_path)]
    assert corral_main(["hub", "create-bucket", "prod", "--owner", "nobody", *home]) == 1
    err = capsys.readouterr().err
    assert "--owner: no user named 'nobody'" in err
    assert "Traceback" not in err
    rc = corral_main(["hub", "--cert", str(tmp_path / "c.pem"), *home])
    assert rc == 1
    assert "--cert and --key go together" in capsys.readouterr().err


def test_a_new_hub_process_starts_with_no_server_connected(tmp_path: Path) -> None:
    _, hub = make_hub(tmp_path)
    add_user(hub, "olive")
    made = add_bucket(hub, "prod", "olive")
    hello = {"agent_version": "t", "server_id": "f" * 32, "hostname": "h",
             "remote_actions": True, "password": None}  # fmt: skip
    with hub.database.session() as db:
        ingest.record_hello(db, made.id, hello, time.time())
    _, again = make_hub(tmp_path)  # as after a crash: the row said connected
    with again.database.session() as db:
        assert db.scalars(select(Server.connected)).all() == [False]
