"""A first round trip through the store on real files (the full suite is in the other files)."""

from __future__ import annotations

from pathlib import Path

from corral.secrets import SecretStore


def test_set_then_environment_in_a_new_store(tmp_path: Path) -> None:
    store = SecretStore(tmp_path, tenant="", environ={})
    store.load()
    store.set("web", "DB_PASSWORD", "s3cret value")
    again = SecretStore(tmp_path, tenant="", environ={})
    again.load()
    assert again.environment("web") == {"DB_PASSWORD": "s3cret value"}
    assert [info.name for info in again.names("web")] == ["DB_PASSWORD"]
