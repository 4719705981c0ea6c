"""`<home>/secrets.json`: the ciphertexts of every app's secrets, and the operations on them.

The daemon owns one store. Values are encrypted as soon as they arrive and decrypted only
by `environment()`, when a child's environment is built. Rotation is crash-safe: see
`rotate()` and docs/SECRETS.md.
"""

from __future__ import annotations

import json
import math
import re
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from corral.config.model import NAME_RE as APP_NAME_RE
from corral.core.atomic import write_json_atomic
from corral.secrets.cipher import Sealed, associated_data, seal, unseal
from corral.secrets.errors import SecretError
from corral.secrets.keys import (
    ENV_KEY,
    ENV_KEY_FILE,
    Keyring,
    key_file_path,
    load_keyring,
    prepare_next_key,
    promote_next_key,
)

FILE_NAME = "secrets.json"
FILE_VERSION = 1
# An environment variable name. \Z, not $: "NAME\n" is not a name.
NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}\Z")
MAX_VALUE_BYTES = 65536


@dataclass(frozen=True)
class SecretInfo:
    """What may be shown about a secret: never its value."""

    app: str
    name: str
    set_at: float


@dataclass(frozen=True)
class _Entry:
    sealed: Sealed
    set_at: float


_Secrets = dict[str, dict[str, _Entry]]


def check_name(name: object) -> str:
    """`name` if it is a valid environment variable name, else SecretError."""
    if not isinstance(name, str) or not NAME_RE.match(name):
        # NAME=VALUE given as a name must not echo the value.
        shown = f" {name[:130]!r}" if isinstance(name, str) and "=" not in name else ""
        raise SecretError(
            f"invalid secret name{shown}: an environment variable name is letters, digits"
            " and _, not starting with a digit, at most 128 characters"
        )
    return name


def check_app(app: object) -> str:
    if not isinstance(app, str) or not APP_NAME_RE.match(app):
        raise SecretError(f"invalid app name {app!r}")
    return app


def check_value(name: str, value: object) -> bytes:
    """The UTF-8 bytes of a valid secret value; the message never shows the value."""
    if not isinstance(value, str):
        raise SecretError(f"the value of secret {name} must be a string")
    if "\0" in value:
        raise SecretError(f"the value of secret {name} contains a NUL byte")
    try:
        data = value.encode("utf-8")
    except UnicodeEncodeError:
        raise SecretError(f"the value of secret {name} is not valid UTF-8 text") from None
    if len(data) > MAX_VALUE_BYTES:
        raise SecretError(
            f"the value of secret {name} is {len(data)} bytes; at most {MAX_VALUE_BYTES}"
        )
    return data


class SecretStore:
    """One home's secrets. `load`, `set`, `remove`, `rotate` do file IO (run them in a thread);
    `names`, `has`, `environment` only use memory once `load()` has succeeded."""

    def __init__(self, home_root: Path, *, tenant: str, environ: Mapping[str, str]) -> None:
        self.home_root = home_root
        self.path = home_root / FILE_NAME
        self.tenant = tenant
        # Only what says where the key is: not a copy of the whole environment.
        self._environ = {k: environ[k] for k in (ENV_KEY, ENV_KEY_FILE) if k in environ}
        # The blocking methods may run in several threads at once (asyncio.to_thread): they
        # take turns. Readers need no lock: every change builds new dicts and swaps them in.
        self._lock = threading.Lock()
        self._secrets: _Secrets | None = None
        self._load_error: SecretError | None = None
        self._keyring: Keyring | None = None
        self._key_error: SecretError | None = None

    # -- blocking -------------------------------------------------------------------------

    def load(self) -> None:
        """Read secrets.json (and the key, if there are secrets); SecretError if unusable.

        A file that cannot be used is left as it is: nothing is written until a later
        `load()` succeeds, and until then every method raises the same error.
        """
        with self._lock:
            self._load()

    def _load(self) -> None:
        try:
            secrets = self._read_file()
        except SecretError as exc:
            self._secrets, self._load_error = None, exc
            raise
        ring: Keyring | None = None
        key_error: SecretError | None = None
        if any(secrets.values()):
            # Read now so environment() never touches the disk; a key problem is kept and
            # reported by environment() for the apps that have secrets.
            try:
                ring = load_keyring(self.home_root, self._environ, create=False)
            except SecretError as exc:
                key_error = exc
        self._keyring, self._key_error = ring, key_error
        self._secrets, self._load_error = secrets, None

    def set(self, app: str, name: str, value: str) -> SecretInfo:
        """Encrypt and save `value` as secret `name` of `app` (replacing any previous one)."""
        check_app(app)
        check_name(name)
        plaintext = check_value(name, value)
        with self._lock:
            return self._set(app, name, plaintext)

    def _set(self, app: str, name: str, plaintext: bytes) -> SecretInfo:
        secrets = self._loaded_for_write()
        ring = self._keyring_for_write(secrets)
        ad = associated_data(self.tenant, app, name)
        entry = _Entry(seal(ring.keys[ring.current_kid], plaintext, ad), time.time())
        updated = {a: dict(names) for a, names in secrets.items()}
        updated.setdefault(app, {})[name] = entry
        self._write(updated)
        self._secrets = updated
        return SecretInfo(app, name, entry.set_at)

    def remove(self, app: str, name: str) -> bool:
        """Forget secret `name` of `app`; False if there was none."""
        check_app(app)
        check_name(name)
        with self._lock:
            return self._remove(app, name)

    def _remove(self, app: str, name: str) -> bool:
        secrets = self._loaded_for_write()
        if name not in secrets.get(app, {}):
            return False
        updated = {a: dict(names) for a, names in secrets.items()}
        del updated[app][name]
        if not updated[app]:
            del updated[app]
        self._write(updated)
        self._secrets = updated
        return True

    def rotate(self) -> tuple[int, str]:
        """Re-encrypt every secret under a new key; (count re-encrypted, new key id).

        (1) create `<key file>.next`, or reuse it if a rotation was interrupted;
        (2) re-encrypt every entry under it and write secrets.json atomically;
        (3) rename `.next` over the key file. Loading always uses both files, so a crash
        between any two steps loses nothing, and calling `rotate()` again finishes.
        """
        with self._lock:
            return self._rotate()

    def _rotate(self) -> tuple[int, str]:
        secrets = self._loaded_for_write()
        ring = load_keyring(self.home_root, self._environ, create=False)
        if ring is None:
            if any(secrets.values()):
                raise SecretError(self._missing_key_message())
            raise SecretError(
                "there is no secret key to rotate yet: it is created when the first secret is set"
            )
        ring = prepare_next_key(ring)  # refuses a key from CORRAL_SECRET_KEY
        self._keyring, self._key_error = ring, None
        assert ring.next_kid is not None
        next_key = ring.keys[ring.next_kid]
        updated: _Secrets = {}
        count = 0
        for app, names in secrets.items():
            updated[app] = {}
            for name, entry in names.items():
                ad = associated_data(self.tenant, app, name)
                try:
                    plaintext = unseal(ring.keys, entry.sealed, ad)
                except SecretError as exc:
                    raise SecretError(
                        f"cannot rotate the key: secret {name} of app {app} cannot be"
                        f" decrypted: {exc}; nothing was re-encrypted (set or remove that"
                        " secret, then rotate again)"
                    ) from None
                updated[app][name] = _Entry(seal(next_key, plaintext, ad), entry.set_at)
                count += 1
        self._write(updated)
        self._secrets = updated
        self._keyring = promote_next_key(ring)
        return count, self._keyring.current_kid

    # -- memory only ----------------------------------------------------------------------

    def names(self, app: str | None = None) -> list[SecretInfo]:
        """The secrets of `app` (of every app if None), sorted by app then name."""
        secrets = self._loaded()
        apps = sorted(secrets) if app is None else [app]
        return [
            SecretInfo(a, name, entry.set_at)
            for a in apps
            for name, entry in sorted(secrets.get(a, {}).items())
        ]

    def has(self, app: str, name: str) -> bool:
        return name in self._loaded().get(app, {})

    @property
    def key_problem(self) -> str | None:
        """Why the key could not be read by the last `load()` although there are secrets
        (None when it was read or is not needed). `environment()` never reads the disk: after
        the key file is fixed, `load()` (or a `set`) reads it again."""
        secrets = self._secrets
        if secrets is None or not any(secrets.values()) or self._keyring is not None:
            return None
        return str(self._key_error or self._missing_key_message())

    def environment(self, app: str) -> dict[str, str]:
        """The decrypted secrets of `app`, all or nothing: SecretError naming the first one
        that cannot be decrypted (its name and app, never a value)."""
        entries = self._loaded().get(app, {})
        if not entries:
            return {}
        ring = self._keyring
        result: dict[str, str] = {}
        for name, entry in sorted(entries.items()):
            where = f"secret {name} of app {app} cannot be decrypted"
            if ring is None:
                reason = self._key_error or SecretError(self._missing_key_message())
                raise SecretError(f"{where}: {reason}")
            try:
                plaintext = unseal(ring.keys, entry.sealed, associated_data(self.tenant, app, name))
                result[name] = plaintext.decode("utf-8")
            except SecretError as exc:
                raise SecretError(f"{where}: {exc}") from None
            except UnicodeDecodeError:
                raise SecretError(f"{where}: it is not UTF-8 text") from None
        return result

    # -- internals ------------------------------------------------------------------------

    def _loaded(self) -> _Secrets:
        if self._secrets is None:
            if self._load_error is not None:
                raise SecretError(str(self._load_error))
            raise SecretError(f"the secrets file {self.path} has not been loaded")
        return self._secrets

    def _loaded_for_write(self) -> _Secrets:
        if self._secrets is None:
            self._load()
        return self._loaded()

    def _keyring_for_write(self, secrets: _Secrets) -> Keyring:
        if self._keyring is not None:
            return self._keyring
        # Never mint a new key while secrets exist: their key is missing, not unneeded.
        create = not any(secrets.values())
        try:
            ring = load_keyring(self.home_root, self._environ, create=create)
        except SecretError as exc:
            self._key_error = exc
            raise
        if ring is None:
            self._key_error = SecretError(self._missing_key_message())
            raise self._key_error
        self._keyring, self._key_error = ring, None
        return ring

    def _missing_key_message(self) -> str:
        try:
            _, source = key_file_path(self.home_root, self._environ)
        except SecretError as exc:
            return str(exc)
        return (
            f"no secret key found ({source} does not exist) although {self.path} holds"
            " secrets: restore the key file, or give the key with CORRAL_SECRET_KEY_FILE"
            " or CORRAL_SECRET_KEY"
        )

    def _read_file(self) -> _Secrets:
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return {}
        except OSError as exc:
            raise SecretError(f"cannot read secrets file {self.path}: {exc.strerror}") from None
        try:
            doc = json.loads(raw.decode("utf-8"))
        except UnicodeDecodeError:
            raise SecretError(f"secrets file {self.path} is not UTF-8 text") from None
        except json.JSONDecodeError as exc:
            raise SecretError(
                f"secrets file {self.path} is not valid JSON: {exc.msg}"
                f" (line {exc.lineno}, column {exc.colno})"
            ) from None
        return _parse_document(doc, self.path)

    def _write(self, secrets: _Secrets) -> None:
        doc = {
            "version": FILE_VERSION,
            "secrets": {
                app: {
                    name: {**entry.sealed.to_json(), "set_at": entry.set_at}
                    for name, entry in sorted(names.items())
                }
                for app, names in sorted(secrets.items())
            },
        }
        try:
            write_json_atomic(self.path, doc)
        except OSError as exc:
            raise SecretError(f"cannot write secrets file {self.path}: {exc.strerror}") from None


def _parse_document(doc: Any, path: Path) -> _Secrets:
    def bad(where: str, what: str) -> SecretError:
        return SecretError(f"secrets file {path} is not valid: {where} {what}")

    if not isinstance(doc, dict):
        raise bad("the document", "is not a JSON object")
    if doc.get("version") != FILE_VERSION:
        raise bad("its version", f"is {doc.get('version')!r}; this corral reads {FILE_VERSION}")
    apps = doc.get("secrets")
    if not isinstance(apps, dict):
        raise bad("'secrets'", "is missing or not an object")
    secrets: _Secrets = {}
    for app, names in apps.items():
        if not APP_NAME_RE.match(app):
            raise bad(f"secrets.{app!r}", "is not a valid app name")
        if not isinstance(names, dict):
            raise bad(f"secrets.{app}", "is not an object")
        secrets[app] = {}
        for name, item in names.items():
            where = f"secrets.{app}.{name}"
            if not NAME_RE.match(name):
                raise bad(f"secrets.{app}.{name!r}", "is not a valid variable name")
            try:
                sealed = Sealed.from_json(item)
            except SecretError as exc:
                raise bad(where, f"is malformed: {exc}") from None
            set_at = item.get("set_at")
            if (
                isinstance(set_at, bool)
                or not isinstance(set_at, int | float)
                or not math.isfinite(set_at)
            ):
                raise bad(f"{where}.set_at", "is not a number of seconds")
            secrets[app][name] = _Entry(sealed, float(set_at))
    return secrets
