"""Where the master key comes from, how its file is created, and which key files are refused."""

from __future__ import annotations

import base64
import os
from pathlib import Path

import pytest

from corral.secrets.cipher import key_id
from corral.secrets.errors import SecretError
from corral.secrets.keys import create_key_file, load_keyring, next_key_path, read_key_file
from tests.secrets.conftest import mode

KEY = bytes(range(100, 132))
KEY_B64 = base64.b64encode(KEY).decode()


def write_key(path: Path, content: bytes, file_mode: int = 0o600) -> None:
    path.write_bytes(content)
    path.chmod(file_mode)


def test_key_from_the_environment(home: Path) -> None:
    ring = load_keyring(home, {"CORRAL_SECRET_KEY": KEY_B64}, create=True)
    assert ring is not None
    assert ring.source == "CORRAL_SECRET_KEY"
    assert ring.file is None
    assert ring.keys == {key_id(KEY): KEY}
    assert ring.current_kid == key_id(KEY)
    assert list(home.iterdir()) == []  # nothing created


def test_environment_key_wins_over_a_key_file(home: Path, tmp_path: Path) -> None:
    key_file = tmp_path / "k"
    write_key(key_file, base64.b64encode(os.urandom(32)))
    environ = {"CORRAL_SECRET_KEY": KEY_B64, "CORRAL_SECRET_KEY_FILE": str(key_file)}
    ring = load_keyring(home, environ, create=False)
    assert ring is not None and ring.current_kid == key_id(KEY)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("not base64 at all!", "is not standard base64"),
        (base64.b64encode(b"x" * 16).decode(), "holds 16 bytes; a key is 32"),
        ("", "holds 0 bytes"),
    ],
    ids=["not-base64", "too-short", "empty"],
)
def test_a_bad_environment_key_is_refused(home: Path, text: str, message: str) -> None:
    with pytest.raises(SecretError, match=f"CORRAL_SECRET_KEY {message}") as info:
        load_keyring(home, {"CORRAL_SECRET_KEY": text}, create=True)
    if text:
        assert text not in str(info.value)


def test_key_file_named_by_the_environment(home: Path, tmp_path: Path) -> None:
    key_file = tmp_path / "corral.key"
    write_key(key_file, KEY_B64.encode() + b"\n")
    ring = load_keyring(home, {"CORRAL_SECRET_KEY_FILE": str(key_file)}, create=False)
    assert ring is not None
    assert ring.keys == {key_id(KEY): KEY}
    assert ring.file == key_file
    assert ring.source == f"key file {key_file} (CORRAL_SECRET_KEY_FILE)"
    assert not (home / "secret.key").exists()


def test_named_key_file_is_created_at_first_use(home: Path, tmp_path: Path) -> None:
    key_file = tmp_path / "named.key"
    environ = {"CORRAL_SECRET_KEY_FILE": str(key_file)}
    assert load_keyring(home, environ, create=False) is None
    assert not key_file.exists()
    ring = load_keyring(home, environ, create=True)
    assert ring is not None and ring.file == key_file
    assert mode(key_file) == 0o600
    assert not (home / "secret.key").exists()


@pytest.mark.parametrize(
    ("given", "message"), [("", "is set but empty"), ("rel/key", "must be an absolute path")]
)
def test_a_bad_key_file_variable_is_refused(home: Path, given: str, message: str) -> None:
    with pytest.raises(SecretError, match=f"CORRAL_SECRET_KEY_FILE {message}"):
        load_keyring(home, {"CORRAL_SECRET_KEY_FILE": given}, create=True)


def test_default_key_file_only_when_asked_to_create(home: Path) -> None:
    assert load_keyring(home, {}, create=False) is None
    assert list(home.iterdir()) == []
    ring = load_keyring(home, {}, create=True)
    key_file = home / "secret.key"
    assert ring is not None and ring.file == key_file
    assert ring.source == f"key file {key_file}"
    assert mode(key_file) == 0o600
    lines = key_file.read_bytes().splitlines()
    assert len(lines) == 1 and len(base64.b64decode(lines[0], validate=True)) == 32
    assert [p.name for p in home.iterdir()] == ["secret.key"]  # no temporary file left
    again = load_keyring(home, {}, create=True)
    assert again is not None and again.keys == ring.keys  # read, not replaced


def test_created_key_file_is_0600_whatever_the_umask(home: Path) -> None:
    old = os.umask(0)
    try:
        load_keyring(home, {}, create=True)
    finally:
        os.umask(old)
    assert mode(home / "secret.key") == 0o600


def test_creating_over_an_existing_key_keeps_the_existing_one(home: Path) -> None:
    key_file = home / "secret.key"
    write_key(key_file, KEY_B64.encode())
    assert create_key_file(key_file) == KEY
    assert key_file.read_bytes() == KEY_B64.encode()


@pytest.mark.parametrize("file_mode", [0o644, 0o640, 0o604, 0o620, 0o700 | 0o010])
def test_a_key_file_others_can_access_is_refused(home: Path, file_mode: int) -> None:
    key_file = home / "secret.key"
    write_key(key_file, KEY_B64.encode(), file_mode)
    with pytest.raises(SecretError, match=f"has mode {file_mode:04o}.*chmod 600 {key_file}"):
        load_keyring(home, {}, create=True)
    assert key_file.read_bytes() == KEY_B64.encode()  # left alone


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (base64.b64encode(b"k" * 31), "holds 31 bytes; a key is 32"),
        (base64.b64encode(b"k" * 33), "holds 33 bytes"),
        (b"", "holds 0 bytes"),
        (b"%%%% not base64 %%%%", "is not standard base64"),
        (KEY_B64.encode() + b"\n" + KEY_B64.encode(), "must hold a single line"),
        (b"A" * 5000, "is too big to hold a key"),
    ],
    ids=["31-bytes", "33-bytes", "empty", "not-base64", "two-lines", "huge"],
)
def test_a_key_file_without_a_key_is_refused(home: Path, content: bytes, message: str) -> None:
    write_key(home / "secret.key", content)
    with pytest.raises(SecretError, match=f"key file {home / 'secret.key'} {message}") as info:
        load_keyring(home, {}, create=True)
    if content:
        assert content[:40].decode() not in str(info.value)


def test_a_directory_is_refused(home: Path) -> None:
    (home / "secret.key").mkdir(mode=0o700)
    with pytest.raises(SecretError, match="is not a regular file"):
        load_keyring(home, {}, create=True)


def test_a_fifo_is_refused_without_blocking(home: Path) -> None:
    os.mkfifo(home / "secret.key", 0o600)
    with pytest.raises(SecretError, match="is not a regular file"):
        load_keyring(home, {}, create=True)


@pytest.mark.parametrize("named", [False, True], ids=["default", "CORRAL_SECRET_KEY_FILE"])
def test_a_symlink_is_refused(home: Path, tmp_path: Path, named: bool) -> None:
    # Chosen: every key file must be a regular file, even one named by the environment,
    # so that rotation replaces the file itself and nobody can point corral elsewhere.
    target = tmp_path / "elsewhere.key"
    write_key(target, KEY_B64.encode())
    link = tmp_path / "link.key" if named else home / "secret.key"
    link.symlink_to(target)
    environ = {"CORRAL_SECRET_KEY_FILE": str(link)} if named else {}
    with pytest.raises(SecretError, match=f"key file {link} is a symbolic link"):
        load_keyring(home, environ, create=True)


def test_an_unreadable_key_file_is_a_clear_error(home: Path) -> None:
    if os.geteuid() == 0:
        pytest.skip("root reads any file")
    key_file = home / "secret.key"
    write_key(key_file, KEY_B64.encode(), 0o000)
    with pytest.raises(SecretError, match=f"cannot read key file {key_file}: Permission denied"):
        load_keyring(home, {}, create=True)


def test_next_key_is_loaded_with_the_current_one(home: Path) -> None:
    key_file = home / "secret.key"
    write_key(key_file, KEY_B64.encode())
    next_key = os.urandom(32)
    write_key(next_key_path(key_file), base64.b64encode(next_key))
    ring = load_keyring(home, {}, create=False)
    assert ring is not None
    assert ring.current_kid == key_id(KEY)
    assert ring.next_kid == key_id(next_key)
    assert ring.keys == {key_id(KEY): KEY, key_id(next_key): next_key}


def test_next_key_follows_the_same_rules(home: Path) -> None:
    write_key(home / "secret.key", KEY_B64.encode())
    write_key(home / "secret.key.next", base64.b64encode(os.urandom(32)), 0o644)
    with pytest.raises(SecretError, match=r"secret\.key\.next has mode 0644"):
        load_keyring(home, {}, create=False)


def test_next_key_without_a_key_file_is_refused(home: Path) -> None:
    write_key(home / "secret.key.next", KEY_B64.encode())
    with pytest.raises(SecretError, match=r"exists but the key file .* does not: restore"):
        load_keyring(home, {}, create=True)
    assert not (home / "secret.key").exists()


def test_a_keyring_repr_never_shows_a_key(home: Path) -> None:
    ring = load_keyring(home, {"CORRAL_SECRET_KEY": KEY_B64}, create=False)
    assert KEY_B64 not in repr(ring)
    assert repr(KEY) not in repr(ring)
    assert KEY.hex() not in repr(ring)


def test_read_key_file_of_a_missing_file_is_none(home: Path) -> None:
    assert read_key_file(home / "absent.key") is None
