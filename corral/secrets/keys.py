"""The master key: where it comes from, how its file is created, read and rotated.

Sources, first match wins: env `CORRAL_SECRET_KEY` (standard base64 of 32 bytes), env
`CORRAL_SECRET_KEY_FILE` (an absolute path), then `<home>/secret.key`. A key file holds one
line, the base64 of 32 bytes; it must be a regular file (not a symlink) that neither group
nor others can access. During a rotation the next key waits in `<key file>.next`.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import errno
import os
import secrets
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from corral.core.atomic import fsync_dir
from corral.secrets.cipher import KEY_BYTES, key_id
from corral.secrets.errors import SecretError

ENV_KEY = "CORRAL_SECRET_KEY"
ENV_KEY_FILE = "CORRAL_SECRET_KEY_FILE"
KEY_FILE_NAME = "secret.key"
NEXT_SUFFIX = ".next"
_CREATE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_MAX_KEY_FILE = 4096  # a key line is 45 bytes; anything much bigger is not a key file


@dataclass
class Keyring:
    """The keys a store may decrypt with, and the one it encrypts with (`current_kid`)."""

    current_kid: str
    keys: dict[str, bytes] = field(repr=False)  # never in a repr, a log line or a traceback
    source: str
    """Where the current key comes from, for messages: "key file /x/secret.key"."""
    file: Path | None
    """The current key's file; None for a key from CORRAL_SECRET_KEY."""
    next_kid: str | None = None
    """The id of the key in `<file>.next` while a rotation is under way."""


def next_key_path(key_file: Path) -> Path:
    return key_file.with_name(key_file.name + NEXT_SUFFIX)


def key_file_path(home_root: Path, environ: Mapping[str, str]) -> tuple[Path, str]:
    """The key file to use and its description for messages (ignores CORRAL_SECRET_KEY)."""
    given = environ.get(ENV_KEY_FILE)
    if given is None:
        path = home_root / KEY_FILE_NAME
        return path, f"key file {path}"
    if not given:
        raise SecretError(f"{ENV_KEY_FILE} is set but empty: give the key file's path")
    if not os.path.isabs(given):
        # The daemon's working folder is not the user's: a relative path would move.
        raise SecretError(f"{ENV_KEY_FILE} must be an absolute path, not {given!r}")
    return Path(given), f"key file {given} ({ENV_KEY_FILE})"


def load_keyring(home_root: Path, environ: Mapping[str, str], *, create: bool) -> Keyring | None:
    """The master key (and the next one during a rotation); None if none exists and not `create`.

    `create` makes the default or named key file when it does not exist yet.
    """
    if ENV_KEY in environ:
        env_key = parse_key(environ[ENV_KEY].encode("utf-8", "surrogateescape"), ENV_KEY)
        env_kid = key_id(env_key)
        return Keyring(env_kid, {env_kid: env_key}, ENV_KEY, None)
    path, source = key_file_path(home_root, environ)
    key = read_key_file(path)
    next_path = next_key_path(path)
    next_key = read_key_file(next_path)
    if key is None:
        if next_key is not None:
            # Rotation renames .next over the key file in one step: this is not a crash.
            raise SecretError(
                f"{next_path} exists but the key file {path} does not: restore the key file"
            )
        if not create:
            return None
        key = create_key_file(path)
    kid = key_id(key)
    ring = Keyring(kid, {kid: key}, source, path)
    if next_key is not None:
        ring.next_kid = key_id(next_key)
        ring.keys[ring.next_kid] = next_key
    return ring


def parse_key(text: bytes, where: str) -> bytes:
    """The 32-byte key in `text` (one line of standard base64); the message never shows it."""
    line = text.strip()
    if b"\n" in line or b"\r" in line:
        raise SecretError(f"{where} must hold a single line (the base64 of {KEY_BYTES} bytes)")
    try:
        key = base64.b64decode(line, validate=True)
    except (binascii.Error, ValueError):
        raise SecretError(f"{where} is not standard base64 (of {KEY_BYTES} bytes)") from None
    if len(key) != KEY_BYTES:
        raise SecretError(f"{where} holds {len(key)} bytes; a key is {KEY_BYTES} bytes")
    return key


def read_key_file(path: Path) -> bytes | None:
    """The key in `path`, None if there is no such file; SecretError if it cannot be trusted."""
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        return None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise SecretError(
                f"key file {path} is a symbolic link; corral only uses a regular file"
            ) from None
        raise SecretError(f"cannot read key file {path}: {exc.strerror}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise SecretError(f"key file {path} is not a regular file")
        if info.st_mode & 0o077:
            mode = stat.S_IMODE(info.st_mode)
            raise SecretError(
                f"key file {path} has mode {mode:04o}, which lets group or others access it;"
                f" run: chmod 600 {path}"
            )
        data = os.read(fd, _MAX_KEY_FILE + 1)
    except OSError as exc:
        raise SecretError(f"cannot read key file {path}: {exc.strerror}") from None
    finally:
        os.close(fd)
    if len(data) > _MAX_KEY_FILE:
        raise SecretError(f"key file {path} is too big to hold a key")
    return parse_key(data, f"key file {path}")


def create_key_file(path: Path) -> bytes:
    """A new random key in `path`, which must not exist; the key there if another made it first.

    The file is written in full and fsync'd under a temporary name (O_CREAT|O_EXCL, 0600),
    then hard-linked to `path`, which fails if `path` exists: a crash never leaves a
    half-written key file, and an existing key is never replaced.
    """
    key = os.urandom(KEY_BYTES)
    folder = path.parent
    tmp = folder / f".{path.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}"
    try:
        fd = os.open(tmp, _CREATE_FLAGS, 0o600)
    except OSError as exc:
        raise SecretError(f"cannot create key file {path}: {exc.strerror}") from None
    try:
        try:
            os.fchmod(fd, 0o600)  # exactly 0600 whatever the umask
            data = base64.b64encode(key) + b"\n"
            if os.write(fd, data) != len(data):
                raise SecretError(f"cannot create key file {path}: short write")
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.link(tmp, path, follow_symlinks=False)
        except FileExistsError:
            existing = read_key_file(path)
            if existing is None:
                raise SecretError(f"key file {path} vanished while being created") from None
            return existing
        fsync_dir(folder)
    except OSError as exc:
        raise SecretError(f"cannot create key file {path}: {exc.strerror}") from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    return key


def prepare_next_key(ring: Keyring) -> Keyring:
    """Rotation step 1: create `<key file>.next`, or reuse it (an interrupted rotation)."""
    if ring.file is None:
        raise SecretError(
            f"the secret key comes from {ENV_KEY} and cannot be rotated by corral:"
            f" keep it in a key file ({ENV_KEY_FILE} or {KEY_FILE_NAME} in the home) to rotate"
        )
    next_path = next_key_path(ring.file)
    next_key = read_key_file(next_path)
    if next_key is None:
        next_key = create_key_file(next_path)
    next_kid = key_id(next_key)
    keys = dict(ring.keys)
    keys[next_kid] = next_key
    return Keyring(ring.current_kid, keys, ring.source, ring.file, next_kid)


def promote_next_key(ring: Keyring) -> Keyring:
    """Rotation step 3: rename `.next` over the key file; the old key is gone from then on."""
    if ring.file is None or ring.next_kid is None:
        raise SecretError("no rotation is under way: there is no next key to promote")
    try:
        os.replace(next_key_path(ring.file), ring.file)
        fsync_dir(ring.file.parent)
    except OSError as exc:
        raise SecretError(f"cannot replace key file {ring.file}: {exc.strerror}") from None
    kid = ring.next_kid
    return Keyring(kid, {kid: ring.keys[kid]}, ring.source, ring.file)
