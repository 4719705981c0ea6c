"""secrets.json on real files: set, list, remove, decrypt; tampering; malformed files."""

from __future__ import annotations

import base64
import json
import os
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from corral.secrets.errors import SecretError
from corral.secrets.store import MAX_VALUE_BYTES, SecretInfo, SecretStore
from tests.secrets.conftest import (
    StoreFactory,
    assert_hidden,
    mode,
    unique_value,
    value_forms,
)

OTHER_KEY_B64 = base64.b64encode(bytes(range(32))).decode()


def read_doc(home: Path) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((home / "secrets.json").read_text())
    return doc


def write_doc(home: Path, doc: dict[str, Any]) -> None:
    (home / "secrets.json").write_text(json.dumps(doc))


def flip_b64(text: str, index: int) -> str:
    raw = bytearray(base64.b64decode(text))
    raw[index] ^= 0x80
    return base64.b64encode(bytes(raw)).decode()


def test_set_list_has_environment_remove(new_store: StoreFactory, home: Path) -> None:
    store = new_store()
    first, second = unique_value(), unique_value()
    info = store.set("web", "DB_PASSWORD", first)
    assert isinstance(info, SecretInfo)
    assert (info.app, info.name) == ("web", "DB_PASSWORD")
    store.set("web", "API_TOKEN", second)
    store.set("worker", "QUEUE_KEY", "q")
    assert [(i.app, i.name) for i in store.names()] == [
        ("web", "API_TOKEN"),
        ("web", "DB_PASSWORD"),
        ("worker", "QUEUE_KEY"),
    ]
    assert [i.name for i in store.names("worker")] == ["QUEUE_KEY"]
    assert store.names("nothing") == []
    assert store.has("web", "API_TOKEN") and not store.has("web", "QUEUE_KEY")
    assert store.environment("web") == {"DB_PASSWORD": first, "API_TOKEN": second}
    assert store.environment("nothing") == {}

    assert store.remove("worker", "QUEUE_KEY") is True
    assert store.remove("worker", "QUEUE_KEY") is False
    assert "worker" not in read_doc(home)["secrets"]
    restarted = new_store()
    assert restarted.environment("web") == {"DB_PASSWORD": first, "API_TOKEN": second}
    assert restarted.names("worker") == []


def test_set_replaces_and_records_when(new_store: StoreFactory) -> None:
    store = new_store()
    old = store.set("web", "TOKEN", "one")
    new = store.set("web", "TOKEN", "two")
    assert new.set_at >= old.set_at
    assert new_store().names("web") == [new]
    assert new_store().environment("web") == {"TOKEN": "two"}


def test_empty_store_creates_nothing(new_store: StoreFactory, home: Path) -> None:
    store = new_store()
    assert store.names() == []
    assert store.environment("web") == {}
    assert not store.has("web", "X")
    assert store.remove("web", "X") is False
    assert store.key_problem is None  # no secrets: no key needed
    assert list(home.iterdir()) == []


def test_key_created_at_first_set_and_files_are_0600(new_store: StoreFactory, home: Path) -> None:
    old = os.umask(0)
    try:
        new_store().set("web", "TOKEN", "x")
    finally:
        os.umask(old)
    assert sorted(p.name for p in home.iterdir()) == ["secret.key", "secrets.json"]
    assert mode(home / "secret.key") == 0o600
    assert mode(home / "secrets.json") == 0o600


def test_the_file_never_holds_the_value(new_store: StoreFactory, home: Path) -> None:
    value = unique_value()
    store = new_store()
    store.set("web", "DB_PASSWORD", value)
    store.set("web", "SAME_AGAIN", value)
    data = (home / "secrets.json").read_bytes()
    assert_hidden(data, value)
    assert_hidden((home / "secret.key").read_bytes(), value)
    entry = read_doc(home)["secrets"]["web"]["DB_PASSWORD"]
    assert set(entry) == {"kid", "nonce", "ct", "set_at"}
    assert_hidden(repr(store.names()), value)


def test_the_same_value_twice_gives_different_ciphertexts(
    new_store: StoreFactory, home: Path
) -> None:
    store = new_store()
    store.set("web", "A", "same value")
    first = read_doc(home)["secrets"]["web"]["A"]
    store.set("web", "A", "same value")
    second = read_doc(home)["secrets"]["web"]["A"]
    store.set("web", "B", "same value")
    third = read_doc(home)["secrets"]["web"]["B"]
    assert len({first["nonce"], second["nonce"], third["nonce"]}) == 3
    assert len({first["ct"], second["ct"], third["ct"]}) == 3


@pytest.mark.parametrize(
    ("app", "name", "message"),
    [
        ("web", "1ABC", "invalid secret name '1ABC'"),
        ("web", "A-B", "invalid secret name 'A-B'"),
        ("web", "NAME\n", "invalid secret name"),
        ("web", "", "invalid secret name ''"),
        ("web", "X" * 129, "invalid secret name"),
        ("we b", "NAME", "invalid app name 'we b'"),
        ("", "NAME", "invalid app name ''"),
    ],
)
def test_bad_names_are_refused(new_store: StoreFactory, app: str, name: str, message: str) -> None:
    store = new_store()
    with pytest.raises(SecretError, match=message):
        store.set(app, name, "value")
    assert store.names() == []


def test_longest_name_and_value_are_accepted(new_store: StoreFactory) -> None:
    store = new_store()
    name, value = "N" * 128, "é" * (MAX_VALUE_BYTES // 2)
    store.set("web", name, value)
    assert new_store().environment("web") == {name: value}


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("secret\0tail", "contains a NUL byte"),
        ("x" * (MAX_VALUE_BYTES + 1), f"is {MAX_VALUE_BYTES + 1} bytes; at most {MAX_VALUE_BYTES}"),
        ("lone \udc80 surrogate", "is not valid UTF-8 text"),
        (b"bytes", "must be a string"),
    ],
    ids=["nul", "too-long", "surrogate", "bytes"],
)
def test_bad_values_are_refused_without_showing_them(
    new_store: StoreFactory, home: Path, value: Any, message: str
) -> None:
    with pytest.raises(SecretError, match=f"the value of secret TOKEN {message}") as info:
        new_store().set("web", "TOKEN", value)
    if isinstance(value, str):
        assert value not in str(info.value)
    assert not (home / "secrets.json").exists()


# -- tampering ------------------------------------------------------------------------------


def tamper(home: Path, change: Any) -> None:
    doc = read_doc(home)
    change(doc["secrets"])
    write_doc(home, doc)


def setup_web(new_store: StoreFactory) -> str:
    value = unique_value()
    new_store().set("web", "DB_PASSWORD", value)
    return value


def assert_refused(store: SecretStore, app: str, name: str, reason: str, value: str) -> None:
    with pytest.raises(SecretError) as info:
        store.environment(app)
    message = str(info.value)
    assert message.startswith(f"secret {name} of app {app} cannot be decrypted: "), message
    assert reason in message
    assert_hidden(message, value)
    assert_hidden(repr(info.value), value)


def test_a_flipped_ciphertext_byte(new_store: StoreFactory, home: Path) -> None:
    value = setup_web(new_store)

    def change(s: Any) -> None:
        s["web"]["DB_PASSWORD"]["ct"] = flip_b64(s["web"]["DB_PASSWORD"]["ct"], 3)

    tamper(home, change)
    assert_refused(new_store(), "web", "DB_PASSWORD", "does not authenticate", value)


def test_a_flipped_nonce_byte(new_store: StoreFactory, home: Path) -> None:
    value = setup_web(new_store)

    def change(s: Any) -> None:
        s["web"]["DB_PASSWORD"]["nonce"] = flip_b64(s["web"]["DB_PASSWORD"]["nonce"], 0)

    tamper(home, change)
    assert_refused(new_store(), "web", "DB_PASSWORD", "does not authenticate", value)


def test_a_ciphertext_moved_to_another_app(new_store: StoreFactory, home: Path) -> None:
    value = setup_web(new_store)
    tamper(home, lambda s: s.update(api={"DB_PASSWORD": s["web"]["DB_PASSWORD"]}))
    store = new_store()
    assert store.environment("web") == {"DB_PASSWORD": value}
    assert_refused(store, "api", "DB_PASSWORD", "moved from another tenant, app", value)


def test_a_ciphertext_moved_to_another_name(new_store: StoreFactory, home: Path) -> None:
    value = setup_web(new_store)
    tamper(home, lambda s: s["web"].update(PUBLIC_LABEL=s["web"].pop("DB_PASSWORD")))
    assert_refused(new_store(), "web", "PUBLIC_LABEL", "moved from another tenant", value)


def test_a_ciphertext_moved_to_another_tenant(new_store: StoreFactory, home: Path) -> None:
    value = unique_value()
    new_store(tenant="acme").set("web", "DB_PASSWORD", value)
    assert new_store(tenant="acme").environment("web") == {"DB_PASSWORD": value}
    for other in ("", "evil"):
        assert_refused(new_store(tenant=other), "web", "DB_PASSWORD", "another tenant", value)


def test_a_wrong_key(new_store: StoreFactory, home: Path) -> None:
    value = setup_web(new_store)
    store = new_store(environ={"CORRAL_SECRET_KEY": OTHER_KEY_B64})
    assert_refused(store, "web", "DB_PASSWORD", "which is not among the available keys", value)
    (home / "secret.key").write_text(OTHER_KEY_B64 + "\n")  # replaced key file, same path
    assert_refused(new_store(), "web", "DB_PASSWORD", "is not among the available keys", value)


def test_an_unknown_key_id(new_store: StoreFactory, home: Path) -> None:
    value = setup_web(new_store)
    tamper(home, lambda s: s["web"]["DB_PASSWORD"].update(kid="0123456789abcdef"))
    assert_refused(new_store(), "web", "DB_PASSWORD", "key id 0123456789abcdef", value)


def test_environment_is_all_or_nothing(new_store: StoreFactory, home: Path) -> None:
    store = new_store()
    values = {name: unique_value() for name in ("A_FIRST", "B_BROKEN", "C_LAST")}
    for name, value in values.items():
        store.set("web", name, value)

    def change(s: Any) -> None:
        s["web"]["B_BROKEN"]["ct"] = flip_b64(s["web"]["B_BROKEN"]["ct"], 0)

    tamper(home, change)
    broken = new_store()
    with pytest.raises(SecretError, match="secret B_BROKEN of app web cannot be decrypted") as info:
        broken.environment("web")
    assert_hidden(str(info.value), *values.values())
    assert [i.name for i in broken.names("web")] == sorted(values)  # still listed


def test_missing_key_with_secrets_is_clear_and_no_new_key_is_made(
    new_store: StoreFactory, home: Path
) -> None:
    value = setup_web(new_store)
    (home / "secret.key").unlink()
    store = new_store()
    assert_refused(store, "web", "DB_PASSWORD", "no secret key found", value)
    assert store.key_problem is not None and "no secret key found" in store.key_problem
    with pytest.raises(SecretError, match="restore the key file"):
        store.set("web", "OTHER", "x")
    assert not (home / "secret.key").exists()
    assert store.names("web")[0].name == "DB_PASSWORD"


def test_a_key_problem_is_reported_then_retried(new_store: StoreFactory, home: Path) -> None:
    value = setup_web(new_store)
    (home / "secret.key").chmod(0o644)
    store = new_store()  # loading the file still works: names can be listed
    assert [i.name for i in store.names()] == ["DB_PASSWORD"]
    assert_refused(store, "web", "DB_PASSWORD", "has mode 0644", value)
    assert store.key_problem is not None and "has mode 0644" in store.key_problem
    (home / "secret.key").chmod(0o600)
    assert_refused(store, "web", "DB_PASSWORD", "has mode 0644", value)  # memory only
    store.load()
    assert store.key_problem is None
    assert store.environment("web") == {"DB_PASSWORD": value}
    (home / "secret.key").chmod(0o644)
    store.load()
    with pytest.raises(SecretError, match="has mode 0644"):
        store.set("web", "OTHER", "x")
    (home / "secret.key").chmod(0o600)
    store.set("web", "OTHER", "x")  # a write reads the key again
    assert store.environment("web") == {"DB_PASSWORD": value, "OTHER": "x"}


# -- malformed secrets.json -----------------------------------------------------------------

GOOD_ENTRY = {
    "kid": "0123456789abcdef",
    "nonce": base64.b64encode(b"n" * 12).decode(),
    "ct": base64.b64encode(b"c" * 20).decode(),
    "set_at": 1.5,
}


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"{not json", "is not valid JSON: Expecting property name"),
        (b"\xff\xfe", "is not UTF-8 text"),
        (b"[]", "the document is not a JSON object"),
        (b'{"version": 2, "secrets": {}}', "its version is 2; this corral reads 1"),
        (b'{"version": 1}', "'secrets' is missing or not an object"),
        (b'{"version": 1, "secrets": {"web": []}}', "secrets.web is not an object"),
        (b'{"version": 1, "secrets": {"../x": {}}}', "is not a valid app name"),
        ({"web": {"1BAD": GOOD_ENTRY}}, "secrets.web.'1BAD' is not a valid variable name"),
        ({"web": {"A": {**GOOD_ENTRY, "kid": 5}}}, r"secrets.web.A is malformed: its key id"),
        ({"web": {"A": {**GOOD_ENTRY, "nonce": "!!"}}}, "nonce is not valid base64"),
        ({"web": {"A": {**GOOD_ENTRY, "ct": None}}}, "its ct is missing"),
        ({"web": {"A": {**GOOD_ENTRY, "set_at": True}}}, "secrets.web.A.set_at is not a number"),
        ({"web": {"A": {k: v for k, v in GOOD_ENTRY.items() if k != "set_at"}}}, "set_at"),
        ({"web": {"A": "a string"}}, "must be an object"),
    ],
)
def test_a_malformed_file_is_refused_and_never_overwritten(
    new_store: StoreFactory, home: Path, content: Any, message: str
) -> None:
    path = home / "secrets.json"
    if isinstance(content, dict):
        content = json.dumps({"version": 1, "secrets": content}).encode()
    path.write_bytes(content)
    store = SecretStore(home, tenant="", environ={})
    with pytest.raises(SecretError, match=message) as info:
        store.load()
    assert str(path) in str(info.value)
    for attempt in (
        lambda: store.set("web", "NEW", "x"),
        lambda: store.remove("web", "A"),
        lambda: store.rotate(),
        lambda: store.names(),
        lambda: store.environment("web"),
    ):
        with pytest.raises(SecretError, match=message):
            attempt()
    assert path.read_bytes() == content
    assert not (home / "secret.key").exists()


def test_methods_before_load(home: Path) -> None:
    store = SecretStore(home, tenant="", environ={})
    with pytest.raises(SecretError, match="has not been loaded"):
        store.names()
    store.set("web", "A", "x")  # a blocking method loads by itself
    assert store.has("web", "A")


def test_concurrent_sets_from_threads_all_land(new_store: StoreFactory) -> None:
    store = new_store()
    names = [f"VAR_{i}" for i in range(16)]
    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(lambda name: store.set("web", name, name.lower()), names))
    assert new_store().environment("web") == {name: name.lower() for name in names}


_apps = st.from_regex(r"[A-Za-z0-9._:-]{1,20}", fullmatch=True)
_names = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,20}", fullmatch=True)
_values = st.text(st.characters(codec="utf-8", exclude_characters="\0"), max_size=200)


@settings(max_examples=40, deadline=None)
@given(
    tenant=st.text(st.characters(exclude_characters="\0"), max_size=10),
    entries=st.dictionaries(st.tuples(_apps, _names), _values, min_size=1, max_size=6),
)
def test_any_valid_secrets_survive_a_restart_and_never_reach_the_file(
    tenant: str, entries: dict[tuple[str, str], str]
) -> None:
    with tempfile.TemporaryDirectory() as folder:
        home = Path(folder)
        store = SecretStore(home, tenant=tenant, environ={})
        store.load()
        for (app, name), value in entries.items():
            store.set(app, name, value)
        restarted = SecretStore(home, tenant=tenant, environ={})
        restarted.load()
        for app in {app for app, _ in entries}:
            expected = {n: v for (a, n), v in entries.items() if a == app}
            assert restarted.environment(app) == expected
        data = (home / "secrets.json").read_bytes()
        # The file's public part (names, keys, times) may hold a value by coincidence, and a
        # short value's forms may occur in random base64 by chance: check the others.
        doc = json.loads(data)
        for names in doc["secrets"].values():
            for entry in names.values():
                del entry["kid"], entry["nonce"], entry["ct"]
        public = json.dumps(doc, indent=1).encode()
        for value in entries.values():
            if len(value) >= 8 and not any(form in public for form in value_forms(value)):
                assert_hidden(data, value)
