"""The validated configuration of one app: what every other part of corral consumes.

Raw user input (config files, CLI flags, control-protocol messages) is turned into an
`AppConfig` only by `corral.config.schema`, which validates every key. Durations are
stored in seconds (float), sizes in bytes (int), signals as names ("SIGINT").
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from typing import Any, Literal

NAME_RE = re.compile(r"[A-Za-z0-9._:-]{1,80}\Z")  # \Z, not $: "web\n" is not a name
SECRET_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}\Z")
"""A secret's name: an environment variable name (the store's NAME_RE, without importing
the store and its cipher into every CLI command that reads a config)."""

ExecMode = Literal["fork", "cluster"]
LogType = Literal["raw", "json"]
ReloadMode = Literal["graceful", "restart"]


@dataclass
class AppConfig:
    name: str
    script: str
    """Absolute path of the script or program, or a program name looked up on PATH."""
    args: list[str] = field(default_factory=list)
    interpreter: str | None = None
    """None: chosen from the script's extension; "none": exec the script directly."""
    interpreter_args: list[str] = field(default_factory=list)
    cwd: str | None = None
    instances: int = 1
    exec_mode: ExecMode = "fork"

    # Environment (SPEC 1.5): `env` always, then `env_profiles[name]` for `--env name`.
    env: dict[str, str] = field(default_factory=dict)
    env_profiles: dict[str, dict[str, str]] = field(default_factory=dict)
    increment_var: str | None = None
    port: int | None = None
    instance_var: str = "NODE_APP_INSTANCE"
    secrets: list[str] = field(default_factory=list)
    """Names of the secrets the app needs (SPEC 3): set with `corral secret set`, merged
    last at launch; the app is not started while one is missing. Never values."""

    # Restart policy (SPEC 1.4).
    autorestart: bool = True
    max_restarts: int = 16
    min_uptime: float = 1.0
    restart_delay: float = 0.0
    exp_backoff_restart_delay: float | None = None
    stop_exit_codes: list[int] = field(default_factory=list)
    max_memory_restart: int | None = None
    cron_restart: str | None = None
    watch: list[str] = field(default_factory=list)
    """Paths to watch (absolute); empty means watching is off."""
    ignore_watch: list[str] = field(default_factory=list)
    watch_delay: float = 1.0
    kill_signal: str = "SIGINT"
    kill_timeout: float = 1.6

    # Readiness, sockets and reload (SPEC 1.6).
    wait_ready: bool = False
    """Ready means READY=1 on $NOTIFY_SOCKET (sd_notify), within listen_timeout."""
    listen_timeout: float = 3.0
    listen: list[str] = field(default_factory=list)
    """Addresses the daemon binds and passes as fds 3.. (`host:port`, `[::1]:port`,
    `unix:/path`)."""
    health_check: str | None = None
    """`tcp://127.0.0.1:8000` or `http://127.0.0.1:8000/health`: ready once it answers."""
    watchdog: float | None = None
    """Restart an instance that sends no WATCHDOG=1 for this long (WATCHDOG_USEC)."""
    reload_parallel: int = 1
    """Instances replaced at a time by `reload`."""
    reload_mode: ReloadMode = "graceful"
    """graceful: start the new instance, wait until ready, stop the old; restart: stop, start."""

    # Logs (SPEC 1.7, the logs issue).
    merge_logs: bool = False
    log_date_format: str | None = None
    out_file: str | None = None
    error_file: str | None = None
    log_type: LogType = "raw"
    """raw: bytes as written; json: one object per line (time, app, instance, stream, message)."""
    log_max_size: int | None = None
    """Rotate a log file past this size (0: never). None: the daemon's `logs.max_size`."""
    log_retain: int | None = None
    """Rotated files kept per log. None: the daemon's `logs.retain`."""
    log_compress: bool | None = None
    """gzip rotated files. None: the daemon's `logs.compress`."""

    # Users and limits (SPEC 1.11).
    user: str | None = None
    group: str | None = None
    rlimits: dict[str, int] = field(default_factory=dict)
    """Keys: nofile, nproc, as, core, fsize, stack, cpu, memlock. -1 means unlimited."""
    umask: int | None = None

    # Deploys (SPEC 4).
    git: dict[str, Any] | None = None
    """The app's git source (`corral.deploy.source.GitSource.to_dict()`: repo, branch, keep,
    install, steps, timeout in seconds). With it, a relative `script` and `cwd` are inside
    the current release (`<home>/deploys/<name>/current`), looked up at each launch."""

    def to_dict(self) -> dict[str, Any]:
        # Fields hold only plain values, lists and dicts (of dicts) of them: copying those
        # is what dataclasses.asdict would do, at a tenth of its cost, and the CLI and the
        # daemon convert every app's config at each start.
        return {name: _plain_copy(getattr(self, name)) for name in _FIELD_NAMES}

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]


_FIELD_NAMES = tuple(f.name for f in dataclasses.fields(AppConfig))


def _plain_copy(value: Any) -> Any:
    if isinstance(value, list):
        return [_plain_copy(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain_copy(v) for k, v in value.items()}
    return value
