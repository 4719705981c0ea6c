"""Same-origin checks for state-changing requests and WebSockets (SPEC 2.4).

An origin is compared as scheme, host and port, after normalisation: scheme and host
in lower case, the default port (80 for http, 443 for https) left out. Anything that
does not parse as an http(s) origin (`null`, user info, a bad port) matches nothing.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from urllib.parse import urlsplit

_DEFAULT_PORTS = {"http": 80, "https": 443}
_WEBSOCKET_SCHEMES = {"ws": "http", "wss": "https"}
_HOST_NAME_RE = re.compile(r"[a-z0-9_.-]+")
_HOST_HEADER_RE = re.compile(r"[A-Za-z0-9.:\[\]-]+")


def normalise_origin(text: str, *, allow_path: bool = False) -> str | None:
    """`scheme://host[:port]` in canonical form, or None when `text` is not an origin.

    With `allow_path` (a Referer, a configured URL) the path, query and fragment are
    dropped; without it (an Origin header) their presence makes `text` invalid.
    """
    try:
        parts = urlsplit(text.strip())
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS or not parts.netloc or "@" in parts.netloc:
        return None
    if not allow_path and (parts.path or any(c in text for c in "?#")):
        return None
    if parts.netloc.endswith(":"):
        return None
    host = _host(parts.hostname or "")
    if host is None or (port is not None and not 0 < port < 65536):
        return None
    if port is None or port == _DEFAULT_PORTS[scheme]:
        return f"{scheme}://{host}"
    return f"{scheme}://{host}:{port}"


def _host(name: str) -> str | None:
    """The host as it appears in an origin (IPv6 in brackets), or None if malformed."""
    if ":" in name:
        if "%" in name:  # a zone id (`%eth0`): meaningless in an origin
            return None
        try:
            return f"[{ipaddress.IPv6Address(name).compressed}]"
        except ValueError:
            return None
    return name if _HOST_NAME_RE.fullmatch(name) else None


def own_origin(scheme: str, host_header: str | None, configured: str | None) -> str | None:
    """The panel's own origin: the configured one when set (the safe choice behind a
    proxy), else the request's scheme and Host header. None when neither is usable."""
    if configured:
        return normalise_origin(configured, allow_path=True)
    if not host_header or not _HOST_HEADER_RE.fullmatch(host_header):
        return None
    scheme = _WEBSOCKET_SCHEMES.get(scheme.lower(), scheme.lower())
    return normalise_origin(f"{scheme}://{host_header}")


def _header(headers: Mapping[str, str], name: str) -> str | None:
    value = headers.get(name)
    if value is None:  # a plain dict need not use lower-case names
        value = next((v for k, v in headers.items() if k.lower() == name), None)
    return value


def origin_allowed(headers: Mapping[str, str], expected_origin: str) -> bool:
    """Whether a state-changing request comes from `expected_origin`: its Origin header,
    or when absent its Referer's origin, must equal it. Neither present: refused."""
    expected = normalise_origin(expected_origin, allow_path=True)
    if expected is None:
        return False
    origin = _header(headers, "origin")
    if origin is not None:
        return normalise_origin(origin) == expected
    referer = _header(headers, "referer")
    if referer is None:
        return False
    return normalise_origin(referer, allow_path=True) == expected


def websocket_origin_allowed(headers: Mapping[str, str], expected_origin: str) -> bool:
    """A WebSocket handshake must carry an Origin equal to `expected_origin` (browsers
    always send one; its absence means a non-browser client, or a forgery)."""
    expected = normalise_origin(expected_origin, allow_path=True)
    origin = _header(headers, "origin")
    return expected is not None and origin is not None and normalise_origin(origin) == expected
