"""`corral panel` administration commands, run as a user would (real processes)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from sqlalchemy import select

from corral.panel.db.engine import Database
from corral.panel.db.models import AuditEntry, Tenant, User

PASSWORD = "a long enough password 1"


def corral_panel(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "corral", "panel", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_home_before_or_after_the_subcommand_is_honoured(tmp_path: Path) -> None:
    before, after = tmp_path / "before", tmp_path / "after"
    first = corral_panel(
        "--home", str(before), "create-admin", "ann", "--password-stdin", stdin=PASSWORD + "\n"
    )
    second = corral_panel(
        "create-admin", "bob", "--home", str(after), "--password-stdin", stdin=PASSWORD + "\n"
    )
    assert first.returncode == 0, first.stderr
    assert second.returncode == 0, second.stderr
    for home, name in ((before, "ann"), (after, "bob")):
        database = Database.open(f"sqlite:///{home / 'panel.db'}")
        try:
            with database.session() as db:
                users = [(u.username, u.is_admin) for u in db.scalars(select(User))]
                actions = [e.action for e in db.scalars(select(AuditEntry))]
        finally:
            database.close()
        assert users == [(name, True)]
        assert actions == ["user.create"]


def test_bad_input_is_a_one_line_error_and_changes_nothing(tmp_path: Path) -> None:
    home = tmp_path / "panel"
    short = corral_panel(
        "--home", str(home), "create-admin", "ann", "--password-stdin", stdin="short\n"
    )
    assert short.returncode == 1
    assert short.stderr.startswith("corral panel: password:")
    assert "Traceback" not in short.stderr
    bad = corral_panel("--home", str(home), "add-tenant", "Bad Name!", "--dir", str(tmp_path))
    assert bad.returncode == 1 and "Traceback" not in bad.stderr
    assert "name" in bad.stderr
    database = Database.open(f"sqlite:///{home / 'panel.db'}")
    try:
        with database.session() as db:
            assert list(db.scalars(select(User))) == []
            assert list(db.scalars(select(Tenant))) == []
    finally:
        database.close()


def test_a_bad_database_url_is_a_clear_error(tmp_path: Path) -> None:
    result = corral_panel(
        "--home",
        str(tmp_path),
        "--db",
        "mysql://x/y",
        "create-admin",
        "ann",
        "--password-stdin",
        stdin=PASSWORD + "\n",
    )
    assert result.returncode == 1
    assert "unsupported database 'mysql'" in result.stderr
    assert "Traceback" not in result.stderr
