"""The deploy history of one app (history.json) and the kept output of each deploy."""

from __future__ import annotations

import contextlib
import json
import os
import re
import threading
from pathlib import Path
from typing import Any

from corral.deploy.files import write_atomic
from corral.deploy.layout import DeployLayout

MAX_RECORDS = 200
MAX_OUTPUT = 1024 * 1024
_DEPLOY_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


def _output_path(layout: DeployLayout, deploy_id: str) -> Path:
    if not _DEPLOY_ID.fullmatch(deploy_id) or ".." in deploy_id:
        raise ValueError(f"not a deploy id: {deploy_id!r}")
    return layout.outputs / f"{deploy_id}.log"


class OutputLog:
    """Appends lines to a deploy's output file; past MAX_OUTPUT its start is cut (the end,
    with the error, is what matters)."""

    def __init__(self, path: Path, limit: int = MAX_OUTPUT) -> None:
        self.path = path
        self.limit = limit
        self._lock = threading.Lock()
        flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC
        self._fd: int | None = os.open(path, flags, 0o600)
        self._size = os.fstat(self._fd).st_size

    def write(self, line: str) -> None:
        data = (line.rstrip("\n") + "\n").encode("utf-8", "replace")
        with self._lock:
            if self._fd is None:
                return
            os.write(self._fd, data)
            self._size += len(data)
            if self._size > 2 * self.limit:  # trim now and then, not on every line
                self._trim()

    def _trim(self) -> None:
        data = self.path.read_bytes()
        if len(data) <= self.limit:
            return
        tail = data[-self.limit :]
        cut = tail.find(b"\n")
        if 0 <= cut < len(tail) - 1:
            tail = tail[cut + 1 :]  # start on a whole line
        assert self._fd is not None
        os.close(self._fd)
        write_atomic(self.path, tail, 0o600)
        flags = os.O_WRONLY | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC
        self._fd = os.open(self.path, flags)
        self._size = len(tail)

    def close(self) -> None:
        with self._lock:
            if self._fd is None:
                return
            if self._size > self.limit:
                self._trim()
            assert self._fd is not None
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> OutputLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class DeployHistory:
    def __init__(self, layout: DeployLayout) -> None:
        self.layout = layout
        self._lock = threading.Lock()

    def _load(self) -> list[dict[str, Any]]:
        try:
            fd = os.open(self.layout.history, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except FileNotFoundError:
            return []
        with os.fdopen(fd, "rb") as handle:
            try:
                records = json.loads(handle.read())
            except ValueError:
                return []
        if not isinstance(records, list):
            return []
        return [record for record in records if isinstance(record, dict)]

    def _save(self, records: list[dict[str, Any]]) -> None:
        self.layout.ensure()
        kept = records[-MAX_RECORDS:]
        dropped = records[: len(records) - len(kept)]
        data = (json.dumps(kept, indent=1) + "\n").encode()
        write_atomic(self.layout.history, data, 0o600)
        for record in dropped:  # their output goes with them
            with contextlib.suppress(ValueError):
                _output_path(self.layout, str(record.get("id", ""))).unlink(missing_ok=True)

    def add(self, record: dict[str, Any]) -> None:
        with self._lock:
            records = self._load()
            records.append(dict(record))
            self._save(records)

    def update(self, record: dict[str, Any]) -> None:
        """Replace the record with the same id (added when missing)."""
        with self._lock:
            records = self._load()
            for index, old in enumerate(records):
                if old.get("id") == record.get("id"):
                    records[index] = dict(record)
                    break
            else:
                records.append(dict(record))
            self._save(records)

    def list(self, limit: int = 50) -> list[dict[str, Any]]:
        """Newest first."""
        with self._lock:
            records = self._load()
        return list(reversed(records))[: max(limit, 0)]

    def get(self, deploy_id: str) -> dict[str, Any] | None:
        with self._lock:
            records = self._load()
        return next((r for r in reversed(records) if r.get("id") == deploy_id), None)

    def output_writer(self, deploy_id: str) -> OutputLog:
        self.layout.ensure()
        return OutputLog(_output_path(self.layout, deploy_id))

    def output(self, deploy_id: str) -> str:
        path = _output_path(self.layout, deploy_id)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except FileNotFoundError:
            return ""
        with os.fdopen(fd, "rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            if size > MAX_OUTPUT:  # a writer still running may be past the cap for a while
                handle.seek(size - MAX_OUTPUT)
                data = handle.read()
                data = data[data.find(b"\n") + 1 :]
            else:
                data = handle.read()
        return data.decode("utf-8", "replace")
