"""How `corral deploy` and `describe` show deploys: status lines, tables, the git source
without its credentials."""

from __future__ import annotations

from typing import Any

from corral.cli import render
from corral.cli.deploy import history_table, releases_table, status_line

RECORD: dict[str, Any] = {
    "id": "20261124T031500Z-1a2b3c",
    "app": "api",
    "kind": "deploy",
    "status": "succeeded",
    "trigger": "webhook: github",
    "ref": None,
    "commit": "0123456789abcdef0123456789abcdef01234567",
    "release": "20261124T031501Z-0123456789ab",
    "previous": None,
    "step": None,
    "error": None,
    "queued": 1.0,
    "started": 2.0,
    "ended": 5.25,
    "duration": 3.25,
}


def test_status_lines() -> None:
    assert status_line(RECORD) == (
        "deploy 20261124T031500Z-1a2b3c succeeded after 3.2 s: api runs release "
        "20261124T031501Z-0123456789ab (0123456789ab)"
    )
    failed = RECORD | {"status": "failed", "step": "install", "error": "pip said no"}
    assert status_line(failed) == (
        "deploy 20261124T031500Z-1a2b3c failed at step install after 3.2 s: pip said no"
    )
    assert status_line(RECORD | {"status": "queued", "duration": None}) == (
        "deploy 20261124T031500Z-1a2b3c queued"
    )


def test_tables() -> None:
    lines = history_table([RECORD], render.PLAIN).splitlines()
    assert lines[0].split() == [
        "id",
        "kind",
        "status",
        "trigger",
        "ref",
        "commit",
        "release",
        "took",
        "queued",
        "error",
    ]
    assert lines[1].split()[:4] == ["20261124T031500Z-1a2b3c", "deploy", "succeeded", "webhook:"]
    assert "0123456789ab " in lines[1] and "3.2s" in lines[1]
    release = {
        "id": RECORD["release"],
        "commit": RECORD["commit"],
        "ref": "main",
        "created": 1.0,
        "current": True,
    }
    rows = releases_table([release], render.PLAIN).splitlines()
    assert rows[1].split()[:4] == ["*", RECORD["release"], "main", "0123456789ab"]


def test_describe_shows_the_git_source_without_credentials() -> None:
    app = {
        "id": 0,
        "name": "api",
        "config": {
            "name": "api",
            "script": "app.py",
            "git": {
                "repo": "https://bot:s3cr3t@git.example.com/a.git",
                "branch": "main",
                "keep": 5,
            },
        },
        "instances": [],
    }
    text = render.describe([app], render.PLAIN)
    assert "https://***@git.example.com/a.git (branch main, keep 5)" in text
    assert "s3cr3t" not in text
