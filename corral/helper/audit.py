"""The helper's audit log: one JSON line per request and per refused connection (0600)."""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from pathlib import Path
from typing import Literal

log = logging.getLogger("corral.helper")

Result = Literal["ok", "refused", "failed"]


class AuditLog:
    """Appends entries to `path`; opened for each entry, so a rotated log is followed."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()

    def record(
        self,
        *,
        peer_uid: int,
        peer_pid: int,
        verb: str | None,
        tenant: str | None,
        result: Result,
        detail: str,
    ) -> None:
        entry = {
            "time": time.time(),
            "peer_uid": peer_uid,
            "peer_pid": peer_pid,
            "verb": verb,
            "tenant": tenant,
            "result": result,
            "detail": detail,
        }
        line = json.dumps(entry, ensure_ascii=True, separators=(",", ":")) + "\n"
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
        with self._lock:
            try:
                fd = os.open(self.path, flags, 0o600)
                try:
                    os.fchmod(fd, 0o600)
                    os.write(fd, line.encode("ascii"))  # one write: lines never interleave
                finally:
                    os.close(fd)
            except OSError as exc:
                # The request is already done: say so where the service's output goes.
                log.error("cannot write the audit log %s (%s): %s", self.path, exc, line.strip())
