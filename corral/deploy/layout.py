"""Where an app's deploys live: <CORRAL_HOME>/deploys/<app>/.

repo.git/            bare cache the fetches go to
releases/<id>/       one exported commit each, complete once .corral-release.json exists
current -> releases/<id>   relative symlink, switched atomically
history.json, outputs/<deploy id>.log, id_ed25519(.pub), known_hosts
"""

from __future__ import annotations

import json
import os
import re
import secrets
import stat
import time
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from corral.deploy.files import fsync_dir, remove_tree, write_atomic

RELEASE_META = ".corral-release.json"
_RELEASE_ID = re.compile(r"\d{8}T\d{6}Z-[0-9a-f]{12}(?:-\d+)?")
_APP_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


class ReleaseError(LookupError):
    """A release that does not exist or is not complete."""


@dataclass(frozen=True)
class ReleaseInfo:
    id: str
    commit: str
    ref: str
    created: float
    current: bool

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "commit": self.commit,
            "ref": self.ref,
            "created": self.created,
            "current": self.current,
        }


def is_release_id(value: str) -> bool:
    return isinstance(value, str) and _RELEASE_ID.fullmatch(value) is not None


class DeployLayout:
    def __init__(self, home_root: Path, app: str) -> None:
        if not _APP_NAME.fullmatch(app) or app in (".", ".."):
            raise ValueError(f"not a valid app name for a deploy folder: {app!r}")
        self.app = app
        self.root = Path(home_root) / "deploys" / app
        self.cache = self.root / "repo.git"
        self.releases = self.root / "releases"
        self.current = self.root / "current"
        self.history = self.root / "history.json"
        self.outputs = self.root / "outputs"
        self.key = self.root / "id_ed25519"
        self.public_key = self.root / "id_ed25519.pub"
        self.known_hosts = self.root / "known_hosts"
        self.scratch = self.root / ".cache"

    def ensure(self) -> None:
        """Create the folders (0755 root so an app's user can reach its release)."""
        self.root.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
        self.root.mkdir(mode=0o755, exist_ok=True)
        self.releases.mkdir(mode=0o755, exist_ok=True)
        self.outputs.mkdir(mode=0o700, exist_ok=True)

    def release_path(self, release_id: str) -> Path:
        if not is_release_id(release_id):
            raise ReleaseError(f"not a release id: {release_id!r}")
        return self.releases / release_id

    def new_release(self, commit: str, now: float | None = None) -> tuple[str, Path]:
        """A fresh, empty release folder for `commit` (its id made unique with -2, -3...)."""
        self.ensure()
        stamp = time.strftime(
            "%Y%m%dT%H%M%SZ", time.gmtime(now if now is not None else time.time())
        )
        base = f"{stamp}-{commit[:12]}"
        for n in range(1, 1000):
            release_id = base if n == 1 else f"{base}-{n}"
            path = self.releases / release_id
            try:
                path.mkdir(mode=0o755)
            except FileExistsError:
                continue
            return release_id, path
        raise RuntimeError(f"too many releases named {base}")

    def finish_release(
        self, release_id: str, commit: str, ref: str, created: float, source: str
    ) -> None:
        """Mark a release complete: only complete releases are listed or activated."""
        meta = {"commit": commit, "ref": ref, "created": created, "source": source}
        data = (json.dumps(meta, indent=1) + "\n").encode()
        write_atomic(self.release_path(release_id) / RELEASE_META, data, 0o644)

    def read_release(self, release_id: str) -> dict[str, Any] | None:
        """The release's metadata, None if it is not complete. The app's user owns the
        release, so the file is read without following links and only if regular."""
        path = self.release_path(release_id) / RELEASE_META
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError:
            return None
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                return None
            meta = json.loads(os.read(fd, 65536))
        except (OSError, ValueError):
            return None
        finally:
            os.close(fd)
        return meta if isinstance(meta, dict) else None

    def current_release(self) -> str | None:
        try:
            target = os.readlink(self.current)
        except OSError:
            return None
        head, _, name = target.rpartition("/")
        if head != "releases" or not is_release_id(name) or not (self.releases / name).is_dir():
            return None
        return name

    def list_releases(self) -> list[ReleaseInfo]:
        """Complete releases, newest first."""
        current = self.current_release()
        found = []
        try:
            names = os.listdir(self.releases)
        except FileNotFoundError:
            return []
        for name in names:
            if not is_release_id(name):
                continue
            meta = self.read_release(name)
            if meta is None:
                continue
            try:
                created = float(meta.get("created", 0.0))
            except (TypeError, ValueError):
                continue
            found.append(
                ReleaseInfo(
                    id=name,
                    commit=str(meta.get("commit", "")),
                    ref=str(meta.get("ref", "")),
                    created=created,
                    current=name == current,
                )
            )
        found.sort(key=lambda info: (info.created, info.id), reverse=True)
        return found

    def activate(self, release_id: str) -> str | None:
        """Point `current` at a complete release atomically; the previous release id."""
        if self.read_release(release_id) is None:
            raise ReleaseError(f"no complete release {release_id!r} of {self.app}")
        previous = self.current_release()
        tmp = self.root / f".current.tmp-{os.getpid()}-{secrets.token_hex(4)}"
        os.symlink(f"releases/{release_id}", tmp)
        try:
            os.replace(tmp, self.current)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        fsync_dir(self.root)
        return previous

    def prune(self, keep: int, protect: Collection[str] = ()) -> list[str]:
        """Remove all but the `keep` newest releases, never the current one or `protect`."""
        current = self.current_release()
        removed = []
        for info in self.list_releases()[max(keep, 0) :]:
            if info.id == current or info.id in protect:
                continue
            remove_tree(self.releases / info.id)
            removed.append(info.id)
        return removed
