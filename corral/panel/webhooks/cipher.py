"""The sealed copy of each webhook token (AES-256-GCM under `<panel home>/webhook.key`).

A GitHub signature is an HMAC keyed with the token itself, so its SHA-256 is not enough
to check one: the token is also kept sealed, bound to the hook's `public_id` (moved to
another row it does not open). The key file is made at first use, 0600, by the same code
as the daemons' secrets key (corral.secrets.keys): a regular file, never a symlink.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

from corral.secrets.cipher import Sealed, key_id, seal, unseal
from corral.secrets.errors import SecretError
from corral.secrets.keys import create_key_file, read_key_file

KEY_FILE_NAME = "webhook.key"


class HookCipher:
    """Seals and opens tokens; the key is read (or made) once, on first use."""

    def __init__(self, key_file: Path) -> None:
        self.key_file = key_file
        self._key: bytes | None = None
        self._lock = threading.Lock()

    @classmethod
    def for_home(cls, home: Path) -> HookCipher:
        return cls(home / KEY_FILE_NAME)

    def _current(self) -> bytes:
        with self._lock:
            if self._key is None:
                key = read_key_file(self.key_file)
                if key is None:
                    self.key_file.parent.mkdir(parents=True, exist_ok=True)
                    key = create_key_file(self.key_file)
                self._key = key
            return self._key

    def seal(self, token: str, public_id: str) -> str:
        sealed = seal(self._current(), token.encode("utf-8"), public_id.encode("utf-8"))
        return json.dumps(sealed.to_json(), separators=(",", ":"))

    def open(self, text: str, public_id: str) -> str | None:
        """The token, or None when `text` does not open under this key and `public_id`."""
        key = self._current()
        try:
            sealed = Sealed.from_json(json.loads(text))
            return unseal({key_id(key): key}, sealed, public_id.encode("utf-8")).decode("utf-8")
        except (SecretError, ValueError, UnicodeDecodeError):
            return None
