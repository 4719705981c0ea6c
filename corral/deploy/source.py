"""An app's git source (config key `git:`) and the checks on what reaches git.

Only https://, ssh:// and scp-like user@host:path URLs are accepted: no local paths, no
file://, no transport helpers (`ext::` runs a command), no value git could read as an
option. Branches follow `git check-ref-format --branch` and never start with '-'.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from corral.config.units import parse_duration

MAX_URL = 2048
MAX_REF = 255
MAX_STEPS = 50
MAX_ARGS = 200
DEFAULT_TIMEOUT = 600.0
TIMEOUT_RANGE = (1.0, 86400.0)
SCHEMES_HINT = "use https://, ssh:// or user@host:path"

_HOST = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?|\[[0-9A-Fa-f:.]+\]")
_USER = re.compile(r"[A-Za-z0-9._~+-]+")
_SCP = re.compile(r"(?P<user>[^@/:]+)@(?P<host>[^/:]+):(?P<path>.*)", re.DOTALL)
_SCHEME = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*)://")
_HEX_ID = re.compile(r"[0-9a-f]{7,40}")
_REF_FORBIDDEN = set(" ~^:?*[\\")
# userinfo of https URLs, and the password of ssh ones, anywhere in a text
_HTTPS_CREDENTIALS = re.compile(r"(?i)\b(https?://)[^/\s@]+@")
_SSH_PASSWORD = re.compile(r"(?i)\b(ssh://)[^/\s@:]*:[^/\s@]*@")


class SourceError(ValueError):
    """A bad git source; str() names the key: "git.branch: must not start with '-'"."""

    def __init__(self, key: str | None, message: str) -> None:
        super().__init__(f"git.{key}: {message}" if key else message)
        self.key = key
        self.message = message


def _control_or_space(text: str) -> bool:
    return any(ch.isspace() or ord(ch) < 0x20 or ord(ch) == 0x7F for ch in text)


def check_repo_url(url: str) -> str:
    """The URL if git may be given it, else SourceError(key="repo") saying what is wrong."""

    def bad(message: str) -> SourceError:
        return SourceError("repo", message)

    if not isinstance(url, str) or not url:
        raise bad("must not be empty")
    if len(url) > MAX_URL:
        raise bad(f"must be at most {MAX_URL} characters")
    if _control_or_space(url):
        raise bad("must not contain spaces or control characters")
    if url.startswith("-"):
        raise bad("must not start with '-' (git would read it as an option)")
    if "::" in url:
        raise bad(f"transport helpers like 'ext::' or 'fd::' are not allowed: {SCHEMES_HINT}")
    scheme = _SCHEME.match(url)
    if scheme is not None:
        name = scheme["scheme"].lower()
        if name == "https":
            return _check_url(url, "https", bad)
        if name == "ssh":
            return _check_url(url, "ssh", bad)
        if name == "file":
            raise bad(f"file:// (a repository on this server) is not allowed: {SCHEMES_HINT}")
        if name == "http":
            raise bad("plain http:// is not allowed (no encryption): use https://")
        raise bad(f"the scheme {name}:// is not allowed: {SCHEMES_HINT}")
    if url.startswith(("/", ".", "~")):
        raise bad(f"a local path is not allowed: {SCHEMES_HINT}")
    scp = _SCP.fullmatch(url)
    if scp is None:
        raise bad(f"not a repository URL: {SCHEMES_HINT}")
    _check_user(scp["user"], bad)
    _check_host(scp["host"], bad)
    path = scp["path"]
    if not path or path == "/":
        raise bad("the path after ':' must not be empty")
    if path.startswith("-"):
        raise bad("the path must not start with '-'")
    return url


def _check_user(user: str, bad: Any) -> None:
    if user.startswith("-"):
        raise bad("the user name must not start with '-'")
    if not _USER.fullmatch(user):
        raise bad(f"the user name {user!r} has characters that are not allowed")


def _check_host(host: str, bad: Any) -> None:
    if not host:
        raise bad("the host must not be empty")
    if host.startswith("-"):
        raise bad("the host must not start with '-'")
    if not _HOST.fullmatch(host):
        raise bad(f"the host {host!r} is not a valid host name")


def _check_url(url: str, scheme: str, bad: Any) -> str:
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        if "port" in str(exc).lower():
            raise bad("the port must be between 1 and 65535") from None
        raise bad(f"not a valid URL ({exc})") from None
    netloc = parts.netloc
    userinfo, _, hostport = netloc.rpartition("@")
    host = hostport
    if hostport.startswith("["):
        host = hostport[: hostport.find("]") + 1]
    elif ":" in hostport:
        host = hostport.rsplit(":", 1)[0]
    _check_host(host, bad)
    if port is not None and not 0 < port < 65536:
        raise bad("the port must be between 1 and 65535")
    if userinfo and scheme == "ssh":
        user, has_password, _ = userinfo.partition(":")
        if has_password:
            raise bad("ssh:// URLs must not carry a password: use a deploy key")
        _check_user(user, bad)
    if parts.query or parts.fragment or "?" in url or "#" in url:
        raise bad("must not have a query (?) or a fragment (#)")
    if parts.path in ("", "/"):
        raise bad("the repository path must not be empty")
    return url


def _check_ref_name(name: str, key: str) -> str:
    def bad(message: str) -> SourceError:
        return SourceError(key, message)

    if not isinstance(name, str) or not name:
        raise bad("must not be empty")
    if len(name) > MAX_REF:
        raise bad(f"must be at most {MAX_REF} characters")
    if name.startswith("-"):
        raise bad("must not start with '-' (git would read it as an option)")
    if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in name):
        raise bad("must not contain control characters")
    forbidden = sorted({ch for ch in name if ch in _REF_FORBIDDEN})
    if forbidden:
        shown = " ".join("space" if ch == " " else repr(ch) for ch in forbidden)
        raise bad(f"must not contain {shown}")
    if ".." in name:
        raise bad("must not contain '..'")
    if "@{" in name:
        raise bad("must not contain '@{'")
    if name == "@":
        raise bad("must not be '@'")
    if name == "HEAD":
        raise bad("must not be 'HEAD'")
    if name.startswith("/") or name.endswith("/") or "//" in name:
        raise bad("must not start or end with '/' or contain '//'")
    if name.endswith("."):
        raise bad("must not end with '.'")
    for part in name.split("/"):
        if part.startswith("."):
            raise bad("no part between '/' may start with '.'")
        if part.endswith(".lock"):
            raise bad("no part between '/' may end with '.lock'")
    return name


def check_branch(name: str) -> str:
    """`git check-ref-format --branch` rules, and never a leading '-'."""
    return _check_ref_name(name, "branch")


def check_ref(ref: str) -> str:
    """A branch or tag name (branch rules) or a commit id of 7 to 40 hex digits."""
    if isinstance(ref, str) and _HEX_ID.fullmatch(ref):
        return ref
    return _check_ref_name(ref, "ref")


def is_commit_id(ref: str) -> bool:
    return _HEX_ID.fullmatch(ref) is not None


def redact(text: str) -> str:
    """Credentials in https:// (and ssh:// passwords) replaced by ***, anywhere in `text`."""
    text = _HTTPS_CREDENTIALS.sub(r"\1***@", text)
    return _SSH_PASSWORD.sub(r"\1***@", text)


@dataclass(frozen=True)
class GitSource:
    repo: str
    branch: str = "main"
    keep: int = 5
    install: bool = True
    steps: tuple[tuple[str, ...], ...] = ()
    timeout: float = DEFAULT_TIMEOUT

    def to_dict(self) -> dict[str, Any]:
        return {
            "repo": self.repo,
            "branch": self.branch,
            "keep": self.keep,
            "install": self.install,
            "steps": [list(step) for step in self.steps],
            "timeout": float(self.timeout),
        }


_KEYS = ("repo", "branch", "keep", "install", "steps", "timeout")


def source_from_mapping(raw: Mapping[str, Any]) -> GitSource:
    """A GitSource from config data (YAML, JSON or `to_dict()`); SourceError(key=...) if bad.

    `timeout` is a duration ("10m", "90s") or a bare number of seconds.
    """
    if not isinstance(raw, Mapping):
        raise SourceError(None, "git: expected a mapping with at least `repo`")
    unknown = sorted(str(key) for key in raw if key not in _KEYS)
    if unknown:
        raise SourceError(unknown[0], f"unknown key (allowed: {', '.join(_KEYS)})")
    if "repo" not in raw:
        raise SourceError("repo", "is required")
    repo = raw["repo"]
    if not isinstance(repo, str):
        raise SourceError("repo", "expected a string")
    branch = raw.get("branch", "main")
    if not isinstance(branch, str):
        raise SourceError("branch", "expected a string")
    keep = raw.get("keep", 5)
    if isinstance(keep, bool) or not isinstance(keep, int) or not 1 <= keep <= 100:
        raise SourceError("keep", f"expected a whole number from 1 to 100, got {keep!r}")
    install = raw.get("install", True)
    if not isinstance(install, bool):
        raise SourceError("install", f"expected true or false, got {install!r}")
    return GitSource(
        repo=check_repo_url(repo),
        branch=check_branch(branch),
        keep=keep,
        install=install,
        steps=_steps(raw.get("steps", [])),
        timeout=_timeout(raw.get("timeout", DEFAULT_TIMEOUT)),
    )


def _steps(value: Any) -> tuple[tuple[str, ...], ...]:
    if value is None:
        return ()
    if not isinstance(value, list | tuple):
        raise SourceError("steps", "expected a list of commands, each a list of strings")
    if len(value) > MAX_STEPS:
        raise SourceError("steps", f"at most {MAX_STEPS} steps")
    steps = []
    for index, step in enumerate(value):
        key = f"steps[{index}]"
        if isinstance(step, str):
            raise SourceError(
                key, 'expected an argv list like ["npm", "run", "build"], not a string'
            )
        if not isinstance(step, list | tuple) or not step:
            raise SourceError(key, "expected a non-empty list of strings")
        if len(step) > MAX_ARGS:
            raise SourceError(key, f"at most {MAX_ARGS} arguments")
        for arg in step:
            if not isinstance(arg, str):
                raise SourceError(key, f"every argument must be a string, got {arg!r}")
            if "\0" in arg:
                raise SourceError(key, "arguments must not contain NUL characters")
        if not step[0]:
            raise SourceError(key, "the program must not be empty")
        steps.append(tuple(step))
    return tuple(steps)


def _timeout(value: Any) -> float:
    try:
        seconds = parse_duration(value, bare_seconds=True)
    except ValueError as exc:
        raise SourceError("timeout", str(exc)) from None
    low, high = TIMEOUT_RANGE
    if not low <= seconds <= high:
        raise SourceError("timeout", "must be between 1s and 24h")
    return seconds
