"""Key rotation: everything re-encrypted, and a rotation cut short at any step loses nothing.

A crash is simulated by making one file operation raise an exception that no code catches
(like the process dying there); then a new store is made on the same home, as a restarted
daemon would, and must decrypt everything and finish the rotation.
"""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from corral.secrets.cipher import key_id
from corral.secrets.errors import SecretError
from corral.secrets.store import SecretStore
from tests.secrets.conftest import StoreFactory, assert_hidden, unique_value

APPS = {"web": ["API_TOKEN", "DB_PASSWORD"], "worker": ["QUEUE_KEY"]}


class Crash(BaseException):
    """The process died here: not an error any code handles."""


def fill(store: SecretStore) -> dict[str, dict[str, str]]:
    values = {app: {name: unique_value() for name in names} for app, names in APPS.items()}
    for app, pairs in values.items():
        for name, value in pairs.items():
            store.set(app, name, value)
    return values


def assert_all_decrypt(store: SecretStore, values: dict[str, dict[str, str]]) -> None:
    for app, pairs in values.items():
        assert store.environment(app) == pairs


def kids_in_file(home: Path) -> set[str]:
    doc = json.loads((home / "secrets.json").read_text())
    return {entry["kid"] for names in doc["secrets"].values() for entry in names.values()}


def file_kid(path: Path) -> str:
    return key_id(base64.b64decode(path.read_bytes().strip()))


def test_rotate_re_encrypts_everything(new_store: StoreFactory, home: Path) -> None:
    store = new_store()
    values = fill(store)
    old_key_text = (home / "secret.key").read_bytes()
    old_kid = file_kid(home / "secret.key")
    old_doc = json.loads((home / "secrets.json").read_text())
    count, kid = store.rotate()
    assert count == 3
    assert kid != old_kid
    assert (home / "secret.key").read_bytes() != old_key_text
    assert file_kid(home / "secret.key") == kid
    assert not (home / "secret.key.next").exists()
    assert kids_in_file(home) == {kid}
    new_doc = json.loads((home / "secrets.json").read_text())
    for app, names in old_doc["secrets"].items():
        for name, entry in names.items():
            assert new_doc["secrets"][app][name]["set_at"] == entry["set_at"]
            assert new_doc["secrets"][app][name]["ct"] != entry["ct"]
    assert_all_decrypt(store, values)
    assert_all_decrypt(new_store(), values)
    # The old key opens nothing any more.
    old = new_store(environ={"CORRAL_SECRET_KEY": old_key_text.decode().strip()})
    with pytest.raises(SecretError, match="not among the available keys"):
        old.environment("web")
    assert_hidden((home / "secrets.json").read_bytes(), *values["web"].values())


def test_rotate_twice_and_set_after(new_store: StoreFactory) -> None:
    store = new_store()
    values = fill(store)
    _, first = store.rotate()
    _, second = store.rotate()
    assert first != second
    store.set("web", "LATER", "later")
    values["web"]["LATER"] = "later"
    assert_all_decrypt(new_store(), values)


def test_rotate_with_a_named_key_file(new_store: StoreFactory, tmp_path: Path) -> None:
    key_file = tmp_path / "keys" / "corral.key"
    key_file.parent.mkdir()
    environ = {"CORRAL_SECRET_KEY_FILE": str(key_file)}
    values = fill(new_store(environ=environ))
    count, kid = new_store(environ=environ).rotate()
    assert count == 3 and file_kid(key_file) == kid
    assert sorted(p.name for p in key_file.parent.iterdir()) == ["corral.key"]
    assert_all_decrypt(new_store(environ=environ), values)


def test_rotate_with_no_secrets_still_changes_the_key(new_store: StoreFactory, home: Path) -> None:
    store = new_store()
    store.set("web", "A", "x")
    store.remove("web", "A")
    old = file_kid(home / "secret.key")
    assert store.rotate()[0] == 0
    assert file_kid(home / "secret.key") != old


def test_rotate_without_any_key_is_refused(new_store: StoreFactory, home: Path) -> None:
    with pytest.raises(SecretError, match="no secret key to rotate yet"):
        new_store().rotate()
    assert list(home.iterdir()) == []


def test_rotate_refuses_a_key_from_the_environment(new_store: StoreFactory, home: Path) -> None:
    environ = {"CORRAL_SECRET_KEY": base64.b64encode(os.urandom(32)).decode()}
    store = new_store(environ=environ)
    values = fill(store)
    before = (home / "secrets.json").read_bytes()
    with pytest.raises(SecretError, match="comes from CORRAL_SECRET_KEY and cannot be rotated"):
        store.rotate()
    assert (home / "secrets.json").read_bytes() == before
    assert sorted(p.name for p in home.iterdir()) == ["secrets.json"]
    assert_all_decrypt(new_store(environ=environ), values)


def test_rotate_refuses_when_a_secret_does_not_decrypt(new_store: StoreFactory, home: Path) -> None:
    store = new_store()
    values = fill(store)
    doc = json.loads((home / "secrets.json").read_text())
    doc["secrets"]["worker"]["QUEUE_KEY"]["kid"] = "0" * 16
    (home / "secrets.json").write_text(json.dumps(doc))
    before = (home / "secrets.json").read_bytes()
    key_before = (home / "secret.key").read_bytes()
    store = new_store()
    with pytest.raises(SecretError, match="secret QUEUE_KEY of app worker cannot be") as info:
        store.rotate()
    assert "nothing was re-encrypted" in str(info.value)
    assert_hidden(str(info.value), *values["worker"].values())
    assert (home / "secrets.json").read_bytes() == before
    assert (home / "secret.key").read_bytes() == key_before
    # Once the broken secret is dealt with, the rotation completes (reusing .next).
    store.remove("worker", "QUEUE_KEY")
    count, _ = store.rotate()
    assert count == 2
    del values["worker"]
    assert_all_decrypt(new_store(), values)


# -- interrupted rotations ------------------------------------------------------------------


def crash_on(monkeypatch: pytest.MonkeyPatch, name: str, match: Callable[..., bool]) -> None:
    """Make `os.<name>` die (Crash) when `match(*args)` holds; other calls pass through."""
    real = getattr(os, name)

    def fake(*args: Any, **kwargs: Any) -> Any:
        if match(*args):
            raise Crash(f"simulated crash in os.{name}{args}")
        return real(*args, **kwargs)

    monkeypatch.setattr(os, name, fake)


def dst_named(name: str) -> Callable[..., bool]:
    return lambda src, dst, *rest: Path(dst).name == name


# (where it dies, os function, which call): every step boundary of rotate().
CRASH_POINTS = [
    ("creating .next", "link", dst_named("secret.key.next")),
    ("writing secrets.json", "replace", dst_named("secrets.json")),
    ("renaming .next", "replace", dst_named("secret.key")),
]


@pytest.mark.parametrize(
    ("step", "function", "match"), CRASH_POINTS, ids=[c[0] for c in CRASH_POINTS]
)
def test_an_interrupted_rotation_loses_nothing_and_finishes(
    new_store: StoreFactory,
    home: Path,
    monkeypatch: pytest.MonkeyPatch,
    step: str,
    function: str,
    match: Callable[..., bool],
) -> None:
    values = fill(new_store())
    old_kid = file_kid(home / "secret.key")
    with monkeypatch.context() as patch:
        crash_on(patch, function, match)
        with pytest.raises(Crash):
            new_store().rotate()

    next_file = home / "secret.key.next"
    if step == "creating .next":
        assert not next_file.exists()
        assert kids_in_file(home) == {old_kid}
    elif step == "writing secrets.json":
        assert next_file.exists()
        assert kids_in_file(home) == {old_kid}
    else:  # everything re-encrypted under .next, key file not yet replaced
        assert kids_in_file(home) == {file_kid(next_file)}
        assert file_kid(home / "secret.key") == old_kid
    expected_kid = file_kid(next_file) if next_file.exists() else None

    restarted = new_store()
    assert_all_decrypt(restarted, values)
    # Secrets set while the rotation is unfinished survive its completion too.
    restarted.set("web", "MEANWHILE", "set between")
    values["web"]["MEANWHILE"] = "set between"
    assert_all_decrypt(new_store(), values)

    count, kid = new_store().rotate()
    assert count == 4
    if expected_kid is not None:
        assert kid == expected_kid  # the interrupted rotation's key was reused
    assert kid != old_kid
    assert file_kid(home / "secret.key") == kid
    assert kids_in_file(home) == {kid}
    assert not next_file.exists()
    assert_all_decrypt(new_store(), values)
    leftovers = sorted(p.name for p in home.iterdir())
    assert leftovers == ["secret.key", "secrets.json"]


def test_a_crash_while_writing_the_next_key_leaves_no_half_key(
    new_store: StoreFactory, home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    values = fill(new_store())
    with monkeypatch.context() as patch:
        crash_on(patch, "fsync", lambda fd: True)
        with pytest.raises(Crash):
            new_store().rotate()
    assert not (home / "secret.key.next").exists()
    assert_all_decrypt(new_store(), values)
    assert new_store().rotate()[0] == 3
    assert_all_decrypt(new_store(), values)
