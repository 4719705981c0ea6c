"""The tenants the helper created (`<state_dir>/tenants.json`, 0600, written atomically).

Only these can be started, stopped or removed: a name that is not here (root, postgres,
any user corral did not make) is never touched.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from corral.core.atomic import write_json_atomic
from corral.protocol.helper import TENANT_NAME_RE

FORMAT_VERSION = 1


class RegistryError(Exception):
    """The registry file cannot be read or is not what the helper writes."""


@dataclass(frozen=True)
class TenantRecord:
    name: str
    uid: int
    gid: int
    home: Path
    created: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "tenant": self.name,
            "uid": self.uid,
            "gid": self.gid,
            "home": str(self.home),
            "created": self.created,
        }


class Registry:
    """The records in memory, written through to the file on every change (under a lock).

    A change whose write fails is not kept: memory and file never disagree.
    """

    def __init__(self, path: Path, records: dict[str, TenantRecord] | None = None) -> None:
        self.path = path
        self._records = dict(records or {})
        self._lock = threading.Lock()

    @classmethod
    def load(cls, path: Path) -> Registry:
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            return cls(path)
        except OSError as exc:
            raise RegistryError(f"cannot read {path}: {exc.strerror or exc}") from None
        try:
            data = json.loads(raw)
            if not isinstance(data, dict) or data.get("version") != FORMAT_VERSION:
                raise ValueError(f"not a version {FORMAT_VERSION} tenant registry")
            entries = data.get("tenants")
            if not isinstance(entries, list):
                raise ValueError("'tenants' must be a list")
            records = [_record(entry, i) for i, entry in enumerate(entries)]
        except (ValueError, UnicodeDecodeError) as exc:
            raise RegistryError(f"{path}: {exc}") from None
        return cls(path, {r.name: r for r in records})

    def get(self, name: str) -> TenantRecord | None:
        with self._lock:
            return self._records.get(name)

    def names(self) -> list[str]:
        with self._lock:
            return sorted(self._records)

    def add(self, record: TenantRecord) -> None:
        with self._lock:
            records = {**self._records, record.name: record}
            self._write(records)
            self._records = records

    def remove(self, name: str) -> None:
        with self._lock:
            records = {k: v for k, v in self._records.items() if k != name}
            self._write(records)
            self._records = records

    def _write(self, records: dict[str, TenantRecord]) -> None:
        tenants = [records[name].to_dict() for name in sorted(records)]
        write_json_atomic(self.path, {"version": FORMAT_VERSION, "tenants": tenants})


def _record(entry: Any, index: int) -> TenantRecord:
    where = f"tenant #{index + 1}"
    if not isinstance(entry, dict):
        raise ValueError(f"{where} is not an object")
    name, uid, gid, home = (
        entry.get("tenant"),
        entry.get("uid"),
        entry.get("gid"),
        entry.get("home"),
    )
    created = entry.get("created", 0.0)
    if not isinstance(name, str) or not TENANT_NAME_RE.fullmatch(name):
        raise ValueError(f"{where}: invalid name {name!r}")
    for key, value in (("uid", uid), ("gid", gid)):
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise ValueError(f"{where} ({name}): invalid {key} {value!r}")
    if not isinstance(home, str) or not home.startswith("/"):
        raise ValueError(f"{where} ({name}): invalid home {home!r}")
    if not isinstance(created, int | float) or isinstance(created, bool):
        raise ValueError(f"{where} ({name}): invalid created time {created!r}")
    assert isinstance(uid, int) and isinstance(gid, int)
    return TenantRecord(name, uid, gid, Path(home), float(created))
