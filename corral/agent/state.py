"""The agent's state file, `<home>/agent.json` (0600, written atomically).

It holds what the link needs and nothing more: the hub's URL, the CA file to trust, this
server's id (128 random bits, so a renamed host stays one server in its bucket) and the
bucket's derived keys (`BucketKeys`). The bucket secret is never stored: the CLI derives
the keys and the daemon only ever sees those. The keys are as powerful as the secret for
this protocol version, hence the file's mode.
"""

from __future__ import annotations

import ipaddress
import json
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit, urlunsplit

from corral.core.atomic import write_json_atomic
from corral.protocol.hub.errors import HubProtocolError
from corral.protocol.hub.keys import BucketKeys

STATE_FILE: Final = "agent.json"
AGENT_PATH: Final = "/agent/v1"
"""The hub's WebSocket endpoint, used when the URL given names no path."""
MAX_URL: Final = 2048


class LinkError(ValueError):
    """A link request or state file that cannot be used (the message says why)."""


def state_path(home_root: Path) -> Path:
    return home_root / STATE_FILE


def new_server_id() -> str:
    return secrets.token_hex(16)


def check_hub_url(url: str) -> str:
    """The WebSocket URL to connect to: wss:// (https:// is taken as wss://) anywhere;
    ws:// (or http://) only to a loopback address, for tests without TLS. A URL without a
    path gets /agent/v1."""
    if not isinstance(url, str) or not url or len(url) > MAX_URL:
        raise LinkError(f"the hub URL must be a wss:// URL of at most {MAX_URL} characters")
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError as exc:
        raise LinkError(f"the hub URL {url!r} is not a valid URL: {exc}") from None
    scheme = {"https": "wss", "http": "ws"}.get(parts.scheme.lower(), parts.scheme.lower())
    if scheme not in ("wss", "ws"):
        raise LinkError(f"the hub URL must start with wss:// (got {url!r})")
    host = parts.hostname
    if not host:
        raise LinkError(f"the hub URL {url!r} names no host")
    if parts.username or parts.password:
        raise LinkError("the hub URL must not hold a user name or password")
    if parts.query or parts.fragment:
        raise LinkError("the hub URL must not hold a query or a fragment")
    if scheme == "ws" and not _is_loopback(host):
        raise LinkError(
            f"plain ws:// is only allowed to a loopback address (127.0.0.1 or ::1), not to"
            f" {host!r}: use wss://"
        )
    path = parts.path if parts.path not in ("", "/") else AGENT_PATH
    netloc = f"[{host}]" if ":" in host else host
    if port is not None:
        netloc += f":{port}"
    return urlunsplit((scheme, netloc, path, "", ""))


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True, repr=False)
class LinkState:
    hub: str
    keys: BucketKeys
    server_id: str
    ca_file: str | None = None

    def __repr__(self) -> str:
        return f"LinkState(hub={self.hub!r}, public_id={self.keys.public_id!r}, <keys hidden>)"

    @property
    def public_id(self) -> str:
        return self.keys.public_id

    def to_json(self) -> dict[str, Any]:
        return {
            "v": 1,
            "hub": self.hub,
            "ca_file": self.ca_file,
            "server_id": self.server_id,
            "keys": self.keys.to_json(),
        }

    @classmethod
    def from_json(cls, data: Any) -> LinkState:
        if not isinstance(data, dict) or data.get("v") != 1:
            raise LinkError("not a version 1 agent state")
        server_id = data.get("server_id")
        if not isinstance(server_id, str) or len(server_id) != 32:
            raise LinkError("server_id is missing or malformed")
        ca_file = data.get("ca_file")
        if ca_file is not None and not isinstance(ca_file, str):
            raise LinkError("ca_file must be a path or null")
        try:
            keys = BucketKeys.from_json(data.get("keys"))
        except HubProtocolError as exc:
            raise LinkError(str(exc)) from None
        return cls(check_hub_url(str(data.get("hub", ""))), keys, server_id, ca_file)


def load(home_root: Path) -> LinkState | None:
    """The saved link, None if there is none (blocking: call it in a thread)."""
    path = state_path(home_root)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise LinkError(f"{path}: cannot read it: {exc}") from None
    try:
        return LinkState.from_json(json.loads(text))
    except ValueError as exc:
        raise LinkError(f"{path}: {exc}") from None


def save(home_root: Path, state: LinkState) -> None:
    """Blocking: call it in a thread."""
    write_json_atomic(state_path(home_root), state.to_json(), 0o600)


def remove(home_root: Path) -> bool:
    try:
        state_path(home_root).unlink()
    except FileNotFoundError:
        return False
    return True
