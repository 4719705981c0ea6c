"""The commands of the control protocol, with their arguments and results.

A *target* is a string: an app id (``"3"``), a name, ``"all"`` or ``"/regex/"``.
A *process record* is one object per running instance, in the schema of
``jlist.schema.json`` beside this file (the stable `corral jlist` format).
"""

from __future__ import annotations

from enum import StrEnum


class Command(StrEnum):
    PING = "ping"
    """{} -> {"pid": int, "version": str, "home": str, "app_limit": int}"""
    START = "start"
    """{"apps": [AppConfig dict], "cli_env": {str: str} | null, "env_name": str | null,
    "force": bool} or {"target": str} -> [process record]"""
    STOP = "stop"
    """{"target": str} -> [process record]"""
    RESTART = "restart"
    """{"target": str} or {"apps": [...]}, "update_env": bool, "cli_env", "env_name"
    -> [process record]"""
    RELOAD = "reload"
    """Same arguments as restart."""
    CONFIGURE = "configure"
    """{"apps": [AppConfig dict]} -> [process record]: replaces the stored config of each
    existing app (by name) and restarts nothing; every instance launches with the new
    config next time. An unknown name is `unknown_target`, a bad config
    `invalid_argument`, both checked before anything changes."""
    DELETE = "delete"
    """{"target": str} -> {"deleted": [name]}"""
    SCALE = "scale"
    """{"target": name, "count": "N" | "+N" | "-N"} -> [process record]"""
    RESET = "reset"
    """{"target": str} -> [process record]"""
    LIST = "list"
    """{} -> [process record]"""
    DESCRIBE = "describe"
    """{"target": str} -> [app description]; its "secrets" lists the app's secrets as
    [{"name", "set_at"}] (set_at null: named in the config's `secrets:` but not set)."""
    ENV = "env"
    """{"target": str} -> [{"name": str, "instance": int, "env": {str: str}}]; a secret's
    value is shown as "(secret)"."""
    SEND_SIGNAL = "send_signal"
    """{"target": str, "signal": "SIGUSR1" | int} -> [process record]"""
    FLUSH = "flush"
    """{"target": str | null} -> {"flushed": [path]}"""
    RELOAD_LOGS = "reload_logs"
    """{} -> {"reopened": int}"""
    LOG_FILES = "log_files"
    """{"target": str | null} -> [{"name", "instance", "out", "err"}]"""
    TAIL = "tail"
    """{"target": str, "lines": int (1..10000, default 100), "stream": "out" | "err" |
    "both" (default)} -> [{"name", "instance", "stream", "line"}]: the last `lines` lines
    of each current log file of the target's instances, oldest first, file by file (out
    before err). Read from the end of each file; a line over 64 KiB keeps its start and
    ends with a "[… line cut: N bytes]" marker; the oldest lines are left out when the
    answer would not fit in one message."""
    SAVE = "save"
    """{"force": bool} -> {"path": str, "apps": int}"""
    RESURRECT = "resurrect"
    """{} -> {"restored": [process record], "warning": str | null}"""
    HOST = "host"
    """{} -> {"load1", "load5", "load15", "mem_total", "mem_available", "swap_used",
    "cpu_count", "cpu_percent", "app_limit"}"""
    METRICS = "metrics"
    """{} -> {"text": str}: the Prometheus text exposition (as served on metrics.port)."""
    SET = "set"
    """{"key": str, "value": str} -> {"key", "value"}: a daemon-wide setting, persisted."""
    GET = "get"
    """{"key": str | null} -> {key: value, ...}"""
    SECRET_SET = "secret_set"
    """{"app": str, "name": str, "value": str} -> {"app", "name", "set_at"}: encrypts and
    stores one secret (SPEC 3); it applies from the app's next start. The value is never
    sent back, logged, or put in an error."""
    SECRET_LIST = "secret_list"
    """{"app": str | null} -> [{"app", "name", "set_at"}]: names and times, never values."""
    SECRET_REMOVE = "secret_remove"
    """{"app": str, "name": str} -> {"removed": bool}"""
    SECRET_ROTATE = "secret_rotate"
    """{} -> {"rotated": int, "key_id": str}: re-encrypts every secret under a new key."""
    SET_APP_LIMIT = "set_app_limit"
    """{"limit": int >= -1} -> {"limit": int}: the number of apps (names, not instances)
    the daemon may hold (-1 unlimited, 0 none). Only root or CORRAL_PANEL_UID may call it
    (`permission_denied`); lowering it stops nothing, it refuses new apps. Requests that
    would exceed it (start or restart/reload with configs, resurrect) are refused whole
    with `limit_reached`."""
    RESOLVE_PATHS = "resolve_paths"
    """{"home": str | null, "paths": [{"path": str, "kind": "file" | "dir" | "any",
    "must_exist": bool, "base": str | null}]} (at most 64 entries, paths at most 4096 bytes)
    -> [{"ok": true, "path": str} | {"ok": false, "error": str}], one per entry in order.
    Each path is resolved with the daemon's (the tenant's) rights, symlinks followed, and
    must lead inside the daemon's tenant home (the parent of CORRAL_HOME); a relative path
    is taken from `base` (itself inside the home; default the home). `home`, if given,
    must be that directory. Used by the panel in isolated mode."""
    CHECK_APPS = "check_apps"
    """{"apps": [raw app mapping], "source": str | null} (at most 64 apps) -> [AppConfig
    dict], one per app in order: each mapping validated by `config.schema` in the daemon,
    so files (script, interpreter, cwd, log paths) are judged with the daemon's (the
    tenant's) rights. A bad one is `invalid_argument` naming the app and the key. Used by
    the panel in isolated mode, where its own uid cannot see inside a tenant's folders."""
    DEPLOY = "deploy"
    """{"app": name, "ref": str | null, "trigger": str | null} -> {"deploy": deploy record}:
    queues a deploy of the app's git source (SPEC 4) and answers at once; deploys of one app
    run one at a time. Progress comes as "deploy" events (see `subscribe`); the record's
    `id` names it in `deploy_output`. An app without a `git:` source is `invalid_argument`."""
    ROLLBACK = "rollback"
    """{"app": name, "release": str | null, "trigger": str | null} -> {"deploy": deploy
    record}: switches `current` back to the given release (default: the one before the
    current) and reloads; queued and reported like a deploy (kind "rollback")."""
    DEPLOY_HISTORY = "deploy_history"
    """{"app": name, "limit": int (1..200, default 50)} -> [deploy record], newest first."""
    DEPLOY_OUTPUT = "deploy_output"
    """{"app": name, "id": str} -> {"deploy": deploy record, "output": str}: the kept output
    of one deploy (at most 1 MiB; its start is cut first)."""
    RELEASES = "releases"
    """{"app": name} -> [{"id": str, "commit": str, "ref": str, "created": float,
    "current": bool}], newest first."""
    DEPLOY_KEY = "deploy_key"
    """{"app": name, "create": bool} -> {"public_key": str | null}: the public half of the
    app's SSH deploy key (ed25519), made first when `create` is true. The private half
    never leaves the daemon's home."""
    LINK = "link"
    """{"hub": wss URL, "keys": BucketKeys JSON (corral.protocol.hub.keys), "ca_file":
    absolute path | null} -> link info (see `link_info`): links this daemon to a monitoring
    hub (SPEC 5). The client derives the bucket's keys from its secret; the secret itself
    is never sent here nor stored. ws:// only to a loopback address. Saves
    <home>/agent.json (0600) and (re)starts the link; answers after the first connection
    attempt (at most a few seconds), with `connected` and `last_error`."""
    LINK_INFO = "link_info"
    """{} -> {"linked": bool, "hub", "public_id", "server_id", "ca_file", "connected",
    "connections", "last_push" (unix time | null), "last_error", "queue", "queue_limit",
    "dropped" (pushes dropped while the hub was away), "remote_actions" (effective),
    "remote_actions_env", "remote_actions_setting", "password_set", "interval"}; the
    link's fields are absent when not linked."""
    UNLINK = "unlink"
    """{} -> {"unlinked": bool, "hub": str | null}: closes the link and forgets it
    (agent.json removed)."""
    KILL = "kill"
    """{} -> {"stopped": int}; the daemon stops every app and exits after replying."""
    SUBSCRIBE = "subscribe"
    """{"events": bool, "logs": target | null, "deploys": target | null} ->
    {"subscribed": true}, then {"event": {...}} lines (see docs/PROTOCOL.md). "deploys"
    adds the "deploy" events of the target's apps: {"type": "deploy", "app", "id", "line"}
    for each output line and {"type": "deploy", "app", "id", "status", "deploy": record}
    when a deploy changes status (queued, running, succeeded, failed)."""
