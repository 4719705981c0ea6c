"""Atomic writes, the state file and the save/resurrect dump (SPEC 1.8)."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest

from corral.core.atomic import write_atomic, write_json_atomic
from corral.core.state_store import (
    DumpError,
    DumpMissing,
    DumpRefused,
    DumpStore,
    StateStore,
)


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def listing(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


# --- write_atomic -------------------------------------------------------------------


def test_write_atomic_creates_with_mode(tmp_path: Path) -> None:
    target = tmp_path / "f"
    write_atomic(target, b"hello")
    assert target.read_bytes() == b"hello"
    assert mode_of(target) == 0o600
    assert listing(tmp_path) == ["f"]


def test_write_atomic_replaces_and_sets_exact_mode(tmp_path: Path) -> None:
    target = tmp_path / "f"
    target.write_bytes(b"old")
    old_umask = os.umask(0o077)
    try:
        write_atomic(target, b"new", mode=0o644)
    finally:
        os.umask(old_umask)
    assert target.read_bytes() == b"new"
    assert mode_of(target) == 0o644


def test_write_atomic_failure_keeps_old_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "f"
    target.write_bytes(b"old")

    def broken_fsync(fd: int) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "fsync", broken_fsync)
    with pytest.raises(OSError, match="Input/output"):
        write_atomic(target, b"new")
    assert target.read_bytes() == b"old"
    assert listing(tmp_path) == ["f"]


def test_write_atomic_missing_folder_leaves_nothing(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        write_atomic(tmp_path / "nope" / "f", b"x")
    assert listing(tmp_path) == []


@pytest.mark.parametrize("indent", [True, False])
def test_write_json_atomic_round_trips_surrogates(tmp_path: Path, indent: bool) -> None:
    target = tmp_path / "s.json"
    obj = {"env": {"X": b"caf\xe9".decode("utf-8", "surrogateescape")}, "n": [1, 2.5]}
    write_json_atomic(target, obj, indent=indent)
    assert json.loads(target.read_text()) == obj
    assert target.read_bytes().isascii()
    lines = target.read_text().count("\n")
    assert lines > 1 if indent else lines == 1


# --- StateStore ---------------------------------------------------------------------


def test_state_missing_is_none(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "state.json")
    assert store.load() is None
    assert store.last_error is None


def test_state_round_trip(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "state.json")
    store.save({"apps": [{"name": "web", "instances": [{"pid": 12, "start_time": 1.5}]}]})
    loaded = store.load()
    assert loaded == {
        "version": 1,
        "apps": [{"name": "web", "instances": [{"pid": 12, "start_time": 1.5}]}],
    }
    assert mode_of(store.path) == 0o600
    # Rewritten on every change: one line, which json's C encoder writes (not indented).
    assert store.path.read_text().count("\n") == 1


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"", "Expecting value: line 1 column 1"),
        (b'{"version": 1, "apps": [', "line 1 column 25"),
        (b"[1, 2]", "expected an object, found list"),
        (b'{"version": 7}', "unsupported version 7"),
        (b"\xff\xfe", "not UTF-8"),
    ],
)
def test_corrupt_state_is_set_aside(tmp_path: Path, content: bytes, reason: str) -> None:
    path = tmp_path / "state.json"
    path.write_bytes(content)
    store = StateStore(path)
    assert store.load() is None
    assert store.last_error is not None
    assert reason in store.last_error
    (moved,) = tmp_path.iterdir()
    assert moved.name.startswith("state.json.corrupt-")
    assert moved.name in store.last_error
    assert moved.read_bytes() == content
    # The next save starts fresh and leaves the corrupt copy alone.
    store.save({"apps": []})
    assert store.load() == {"version": 1, "apps": []}
    assert moved.exists()


def test_corrupt_state_copies_never_overwrite_each_other(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    store = StateStore(path)
    for content in (b"one", b"two", b"three"):
        path.write_bytes(content)
        assert store.load() is None
    kept = sorted(p.read_bytes() for p in tmp_path.iterdir())
    assert kept == [b"one", b"three", b"two"]


# --- DumpStore ----------------------------------------------------------------------

WEB: dict[str, Any] = {"name": "web", "script": "app.py", "instances": 2}
WORKER: dict[str, Any] = {"name": "worker", "script": "work.py"}


@pytest.fixture
def dumps(tmp_path: Path) -> DumpStore:
    return DumpStore(tmp_path / "dump.json")


def test_dump_round_trip(dumps: DumpStore) -> None:
    dumps.write([WEB, WORKER], force=False)
    result = dumps.read()
    assert result.apps == [WEB, WORKER]
    assert result.source == dumps.path
    assert result.warning is None
    doc = json.loads(dumps.path.read_text())
    assert doc["version"] == 1
    assert isinstance(doc["saved_at"], str) and "T" in doc["saved_at"]
    assert mode_of(dumps.path) == 0o600


def test_dump_keeps_previous_as_backup(dumps: DumpStore) -> None:
    dumps.write([WEB], force=False)
    first = dumps.path.read_bytes()
    assert not dumps.backup.exists()
    dumps.write([WEB, WORKER], force=False)
    assert dumps.backup.read_bytes() == first
    assert mode_of(dumps.backup) == 0o600


def test_empty_list_refused_over_non_empty_dump(dumps: DumpStore) -> None:
    dumps.write([WEB, WORKER], force=False)
    before = dumps.path.read_bytes()
    with pytest.raises(DumpRefused, match=r"holds 2 apps.*--force"):
        dumps.write([], force=False)
    assert dumps.path.read_bytes() == before
    assert not dumps.backup.exists()


def test_empty_list_with_force(dumps: DumpStore) -> None:
    dumps.write([WEB], force=False)
    dumps.write([], force=True)
    assert dumps.read().apps == []
    assert json.loads(dumps.backup.read_text())["apps"] == [WEB]


def test_empty_list_allowed_when_nothing_saved(dumps: DumpStore) -> None:
    dumps.write([], force=False)
    dumps.write([], force=False)
    assert dumps.read().apps == []


def test_empty_list_refused_when_only_backup_holds_apps(dumps: DumpStore) -> None:
    dumps.write([WEB], force=False)
    dumps.write([WORKER], force=False)
    dumps.path.write_text("{oops")
    with pytest.raises(DumpRefused, match="holds 1 app;"):
        dumps.write([], force=False)


def test_corrupt_dump_falls_back_to_backup(dumps: DumpStore) -> None:
    dumps.write([WEB], force=False)
    dumps.write([WEB, WORKER], force=False)
    dumps.path.write_text("")
    result = dumps.read()
    assert result.apps == [WEB]
    assert result.source == dumps.backup
    assert result.warning == (
        "dump.json is corrupt (Expecting value: line 1 column 1); restored from dump.json.bak"
    )


@pytest.mark.parametrize(
    ("doc", "reason"),
    [
        ({"version": 1}, "'apps' should be a list, found null"),
        ({"version": 1, "apps": {"web": {}}}, "'apps' should be a list, found dict"),
        ({"version": 1, "apps": [WEB, "worker"]}, "apps[1] should be an object, found str"),
        ({"version": 2, "apps": []}, "unsupported version 2"),
        ([WEB], "expected an object, found list"),
    ],
)
def test_wrong_shape_falls_back(dumps: DumpStore, doc: Any, reason: str) -> None:
    dumps.write([WEB], force=False)
    dumps.write([WORKER], force=False)
    dumps.path.write_text(json.dumps(doc))
    result = dumps.read()
    assert result.apps == [WEB]
    assert result.warning is not None
    assert reason in result.warning


def test_missing_dump_falls_back_to_backup(dumps: DumpStore) -> None:
    dumps.write([WEB], force=False)
    dumps.write([WORKER], force=False)
    dumps.path.unlink()
    result = dumps.read()
    assert result.apps == [WEB]
    assert result.warning == "dump.json is missing; restored from dump.json.bak"


def test_corrupt_dump_does_not_replace_good_backup(dumps: DumpStore) -> None:
    dumps.write([WEB], force=False)
    dumps.write([WORKER], force=False)
    dumps.path.write_text("garbage")
    dumps.write([WEB, WORKER], force=False)
    assert json.loads(dumps.backup.read_text())["apps"] == [WEB]
    assert dumps.read().apps == [WEB, WORKER]


def test_no_dump_at_all(dumps: DumpStore) -> None:
    with pytest.raises(DumpMissing, match="nothing was saved"):
        dumps.read()


def test_both_unusable(dumps: DumpStore) -> None:
    dumps.path.write_text("{")
    dumps.backup.write_text('{"version": 1}')
    with pytest.raises(DumpError) as info:
        dumps.read()
    assert not isinstance(info.value, DumpMissing)
    message = str(info.value)
    assert "dump.json is corrupt" in message
    assert "dump.json.bak is unusable too" in message


def test_corrupt_dump_without_backup(dumps: DumpStore) -> None:
    dumps.path.write_text("nope")
    with pytest.raises(DumpError, match=r"dump.json is corrupt .*no dump.json.bak"):
        dumps.read()
