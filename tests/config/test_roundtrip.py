"""app_from_dict(cfg.to_dict()) == cfg for any config a user can write."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from corral.config.errors import ConfigError
from corral.config.model import NAME_RE, AppConfig
from corral.config.schema import app_from_dict, app_from_mapping

from .conftest import make_executable

ENV_NAMES = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,10}", fullmatch=True)
ENV_VALUES = st.one_of(
    st.text(max_size=20),
    st.integers(),
    st.floats(allow_nan=False, allow_infinity=False),
    st.booleans(),
)
ENVS = st.dictionaries(ENV_NAMES, ENV_VALUES, max_size=4)
DURATIONS = st.one_of(
    st.integers(0, 10**7),
    st.floats(0, 1e6),
    st.sampled_from(["500ms", "1.5s", "2m", "1h", "1m30s", "0s", "3000"]),
)
SIZES = st.one_of(
    st.integers(0, 2**40), st.sampled_from(["200M", "1.5G", "512K", "100MB", "64KiB"])
)
WORDS = st.lists(st.text(min_size=1, max_size=10), max_size=4)

FIELDS: dict[str, st.SearchStrategy[Any]] = {
    "name": st.from_regex(NAME_RE, fullmatch=True),
    "args": st.one_of(WORDS, st.just("--port 8000 'a b'")),
    "interpreter_args": WORDS,
    "instances": st.sampled_from([1, 2, 8, "max", 0, -1, "3"]),
    "exec_mode": st.sampled_from(["fork", "cluster", "fork_mode", "cluster_mode"]),
    "env": ENVS,
    "env_production": ENVS,
    "env_profiles": st.dictionaries(st.sampled_from(["staging", "dev"]), ENVS, max_size=2),
    "increment_var": st.one_of(st.none(), ENV_NAMES),
    "port": st.one_of(st.none(), st.integers(1, 65535)),
    "instance_var": ENV_NAMES,
    "secrets": st.one_of(ENV_NAMES, st.lists(ENV_NAMES, unique=True, max_size=3)),
    "autorestart": st.booleans(),
    "max_restarts": st.integers(0, 1000),
    "min_uptime": DURATIONS,
    "restart_delay": DURATIONS,
    "exp_backoff_restart_delay": st.one_of(st.none(), DURATIONS),
    "stop_exit_codes": st.one_of(st.integers(0, 255), st.lists(st.integers(0, 255))),
    "max_memory_restart": st.one_of(st.none(), SIZES),
    "cron_restart": st.sampled_from([None, "0 3 * * *", "*/5 * * * *"]),
    "watch": st.one_of(st.booleans(), st.just("src"), st.lists(st.sampled_from(["src", "/x"]))),
    "ignore_watch": st.one_of(st.just("*.log"), st.lists(st.text(min_size=1, max_size=8))),
    "watch_delay": DURATIONS,
    "kill_signal": st.sampled_from(["SIGINT", "TERM", "int", 15, "SIGIOT"]),
    "kill_timeout": DURATIONS,
    "wait_ready": st.booleans(),
    "listen_timeout": DURATIONS,
    "listen": st.lists(st.sampled_from(["127.0.0.1:8000", "unix:/tmp/s.sock"])),
    "merge_logs": st.booleans(),
    "log_date_format": st.one_of(st.none(), st.text(min_size=1, max_size=20)),
    "time": st.booleans(),
    "out_file": st.sampled_from(["out.log", "/var/log/x.log"]),
    "err_file": st.sampled_from(["err.log", "/var/log/x.err"]),
    "log_type": st.sampled_from(["raw", "json"]),
    "user": st.one_of(st.just("www-data"), st.integers(0, 65535)),
    "group": st.just("www-data"),
    "rlimits": st.dictionaries(
        st.sampled_from(["nofile", "nproc", "as", "core", "cpu"]),
        st.one_of(st.integers(-1, 10**6), st.just("unlimited")),
        max_size=3,
    ),
    "umask": st.sampled_from(["022", "0o027", 0o077, None]),
}
RAW_APPS = st.fixed_dictionaries(
    {"script": st.sampled_from(["app.py", "./run", "app.py --flag", "worker.js"])},
    optional=FIELDS,
)


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    root = tmp_path_factory.mktemp("roundtrip")
    for name in ("app.py", "worker.js"):
        (root / name).write_text("")
    make_executable(root / "run")
    (root / "src").mkdir()
    bin_dir = tmp_path_factory.mktemp("bin")
    for name in ("python3", "node"):
        make_executable(bin_dir / name)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PATH", str(bin_dir))
        yield root


@settings(max_examples=150, deadline=None)
@given(raw=RAW_APPS)
def test_round_trip(folder: Path, raw: dict[str, Any]) -> None:
    cfg = app_from_mapping(raw, source="corral.yaml", base_dir=folder, index=0)
    assert app_from_dict(cfg.to_dict()) == cfg


@settings(max_examples=50, deadline=None)
@given(raw=RAW_APPS)
def test_round_trip_through_json(folder: Path, raw: dict[str, Any]) -> None:
    """The control protocol carries configs as JSON."""
    cfg = app_from_mapping(raw, source="corral.yaml", base_dir=folder, index=0)
    assert app_from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg


@settings(max_examples=50, deadline=None)
@given(raw=RAW_APPS)
def test_to_dict_is_a_deep_copy_like_asdict(folder: Path, raw: dict[str, Any]) -> None:
    """to_dict is a hand-written (faster) dataclasses.asdict: same result, nothing shared."""
    cfg = app_from_mapping(raw, source="corral.yaml", base_dir=folder, index=0)
    plain = cfg.to_dict()
    assert plain == dataclasses.asdict(cfg)
    for name, value in plain.items():
        if isinstance(value, (list, dict)):
            assert value is not getattr(cfg, name)
    for profile, env in plain["env_profiles"].items():
        assert env is not cfg.env_profiles[profile]


def test_defaults_round_trip() -> None:
    cfg = AppConfig(name="x", script="/bin/true")
    assert app_from_dict(cfg.to_dict()) == cfg


JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner),
    max_leaves=5,
)
EXTRA_KEYS = ["env_production", "time", "cmd", "node_args", "uid", "bogus", "vizion"]
KEYS = st.sampled_from([*sorted(AppConfig.field_names()), *EXTRA_KEYS])


@settings(max_examples=200, deadline=None)
@given(raw=st.dictionaries(KEYS, JSONISH, max_size=6), script=st.sampled_from([None, "app.py"]))
def test_garbage_gives_config_errors_only(
    folder: Path, raw: dict[str, Any], script: str | None
) -> None:
    """Whatever a user writes, the answer is an AppConfig or a one-line ConfigError."""
    if script is not None:
        raw.setdefault("script", script)
    for canonical in (False, True):
        try:
            if canonical:
                app_from_dict(raw)
            else:
                app_from_mapping(raw, source="c.yaml", base_dir=folder, index=0)
        except ConfigError as exc:
            assert "\n" not in str(exc)
            assert str(exc).startswith(("c.yaml: ", "control request: "))
