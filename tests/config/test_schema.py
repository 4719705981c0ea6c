from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from corral.config.errors import ConfigError, UnknownKeyError
from corral.config.model import AppConfig
from corral.config.schema import (
    ALIASES,
    CANONICAL_KEYS,
    DEFAULT_TIME_FORMAT,
    IGNORED_KEYS,
    SPECIAL_KEYS,
    TABLE,
    app_from_dict,
    app_from_mapping,
    peek_name,
    resolve_script,
)

from .conftest import make_executable


def load(raw: dict[str, Any], base_dir: Path, index: int | None = 0) -> AppConfig:
    return app_from_mapping(raw, source="corral.yaml", base_dir=base_dir, index=index)


def fails(raw: dict[str, Any], base_dir: Path, index: int | None = 0) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load(raw, base_dir, index)
    assert "\n" not in str(info.value)
    return info.value


def test_every_field_has_a_converter() -> None:
    assert set(TABLE) | SPECIAL_KEYS == CANONICAL_KEYS


def test_aliases_point_at_fields() -> None:
    assert set(ALIASES.values()) <= CANONICAL_KEYS
    assert not (set(ALIASES) | IGNORED_KEYS) & CANONICAL_KEYS


# --- The minimum and the defaults ---


def test_minimal_app(project: Path) -> None:
    cfg = load({"script": "app.py"}, project)
    assert cfg.name == "app"
    assert cfg.script == str(project / "app.py")
    assert cfg.interpreter == "python3"
    assert cfg.cwd == str(project)
    assert cfg == AppConfig(
        name="app", script=str(project / "app.py"), interpreter="python3", cwd=str(project)
    )


def test_relative_base_dir_is_made_absolute(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(project.parent)
    cfg = load({"script": "app.py"}, Path("project"))
    assert cfg.cwd == str(project)
    assert cfg.script == str(project / "app.py")


def test_full_app(project: Path) -> None:
    raw = {
        "name": "api",
        "script": "app.py",
        "args": "--port 8000 --title 'my app'",
        "interpreter_args": ["-u"],
        "instances": 3,
        "exec_mode": "cluster",
        "env": {"PORT": 8000, "DEBUG": True, "RATIO": 1.5, "NAME": "x"},
        "env_production": {"APP_ENV": "production"},
        "increment_var": "PORT",
        "port": 8000,
        "instance_var": "INSTANCE_ID",
        "autorestart": False,
        "max_restarts": 5,
        "min_uptime": "5s",
        "restart_delay": 3000,
        "exp_backoff_restart_delay": "100ms",
        "stop_exit_codes": [0, 3],
        "max_memory_restart": "300M",
        "cron_restart": "0 3 * * *",
        "watch": ["src"],
        "ignore_watch": "*.log",
        "watch_delay": "2s",
        "kill_signal": "TERM",
        "kill_timeout": "10s",
        "wait_ready": True,
        "listen_timeout": "8s",
        "listen": ["127.0.0.1:8000", "unix:/tmp/api.sock"],
        "merge_logs": True,
        "log_date_format": "%H:%M",
        "out_file": "logs/out.log",
        "error_file": "/var/log/api.err",
        "log_type": "json",
        "user": "www-data",
        "group": "www-data",
        "rlimits": {"nofile": 4096, "as": "1G", "core": "unlimited"},
        "umask": "022",
    }
    cfg = load(raw, project)
    assert cfg.args == ["--port", "8000", "--title", "my app"]
    assert cfg.interpreter_args == ["-u"]
    assert (cfg.instances, cfg.exec_mode) == (3, "cluster")
    assert cfg.env == {"PORT": "8000", "DEBUG": "true", "RATIO": "1.5", "NAME": "x"}
    assert cfg.env_profiles == {"production": {"APP_ENV": "production"}}
    assert (cfg.increment_var, cfg.port, cfg.instance_var) == ("PORT", 8000, "INSTANCE_ID")
    assert cfg.autorestart is False
    assert cfg.max_restarts == 5
    assert cfg.min_uptime == 5.0
    assert cfg.restart_delay == 3.0
    assert cfg.exp_backoff_restart_delay == 0.1
    assert cfg.stop_exit_codes == [0, 3]
    assert cfg.max_memory_restart == 300 * 1024**2
    assert cfg.cron_restart == "0 3 * * *"
    assert cfg.watch == [str(project / "src")]
    assert cfg.ignore_watch == ["*.log"]
    assert cfg.watch_delay == 2.0
    assert (cfg.kill_signal, cfg.kill_timeout) == ("SIGTERM", 10.0)
    assert (cfg.wait_ready, cfg.listen_timeout) == (True, 8.0)
    assert cfg.listen == ["127.0.0.1:8000", "unix:/tmp/api.sock"]
    assert (cfg.merge_logs, cfg.log_date_format, cfg.log_type) == (True, "%H:%M", "json")
    assert cfg.out_file == str(project / "logs" / "out.log")
    assert cfg.error_file == "/var/log/api.err"
    assert (cfg.user, cfg.group) == ("www-data", "www-data")
    assert cfg.rlimits == {"nofile": 4096, "as": 1024**3, "core": -1}
    assert cfg.umask == 0o022


# --- PM2 aliases and PM2-only keys ---


@pytest.mark.parametrize(
    ("key", "value", "field", "expected"),
    [
        ("node_args", "--max-old-space-size=512", "interpreter_args", ["--max-old-space-size=512"]),
        ("interpreterArgs", ["-X"], "interpreter_args", ["-X"]),
        ("exec_interpreter", "ruby", "interpreter", "ruby"),
        ("err_file", "e.log", "error_file", "E"),
        ("err_log", "e.log", "error_file", "E"),
        ("error_file", "e.log", "error_file", "E"),
        ("out_log", "o.log", "out_file", "O"),
        ("output", "o.log", "out_file", "O"),
        ("combine_logs", True, "merge_logs", True),
        ("uid", "www", "user", "www"),
        ("uid", 33, "user", "33"),
        ("gid", "www", "group", "www"),
        ("cron", "*/5 * * * *", "cron_restart", "*/5 * * * *"),
        ("stop_signal", "SIGTERM", "kill_signal", "SIGTERM"),
        ("exec_mode", "cluster_mode", "exec_mode", "cluster"),
        ("exec_mode", "fork_mode", "exec_mode", "fork"),
    ],
)
def test_pm2_aliases(project: Path, key: str, value: Any, field: str, expected: Any) -> None:
    cfg = load({"name": "api", "script": "app.py", key: value}, project)
    if expected == "E":
        expected = str(project / "e.log")
    elif expected == "O":
        expected = str(project / "o.log")
    assert getattr(cfg, field) == expected


@pytest.mark.parametrize("key", ["cmd", "command"])
def test_script_aliases(project: Path, key: str) -> None:
    assert load({key: "app.py"}, project).script == str(project / "app.py")


def test_pm2_only_keys_are_ignored(project: Path) -> None:
    raw: dict[str, Any] = {"script": "app.py"} | {key: True for key in IGNORED_KEYS}
    assert load(raw, project) == load({"script": "app.py"}, project)


def test_alias_and_canonical_together_is_an_error(project: Path) -> None:
    err = fails({"name": "api", "script": "app.py", "err_file": "a", "error_file": "b"}, project)
    assert err.app == "api"
    assert "keep one" in str(err)


@pytest.mark.parametrize(("value", "expected"), [(2, 2), ("4", 4), ("max", 2), (0, 2), (-1, 1)])
def test_instances(
    project: Path, monkeypatch: pytest.MonkeyPatch, value: object, expected: int
) -> None:
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    assert load({"script": "app.py", "instances": value}, project).instances == expected


def test_instances_minus_one_on_one_cpu_is_one(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(os, "cpu_count", lambda: 1)
    assert load({"script": "app.py", "instances": -1}, project).instances == 1


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (True, ["."]),
        (False, []),
        ("", []),
        ([], []),
        (None, []),
        ("src", ["src"]),
        (["src", "/abs"], ["src", "/abs"]),
    ],
)
def test_watch(project: Path, value: object, expected: list[str]) -> None:
    cfg = load({"script": "app.py", "watch": value}, project)
    assert cfg.watch == [os.path.normpath(project / p) for p in expected]


def test_watch_true_watches_the_apps_cwd(project: Path) -> None:
    cfg = load({"script": "main.py", "cwd": "src", "watch": True}, project)
    assert cfg.watch == [str(project / "src")]


def test_env_profiles_from_env_keys_and_mapping(project: Path) -> None:
    raw = {
        "script": "app.py",
        "env_production": {"A": "1"},
        "env_profiles": {"staging": {"B": 2}},
    }
    assert load(raw, project).env_profiles == {"production": {"A": "1"}, "staging": {"B": "2"}}


def test_env_profile_set_twice(project: Path) -> None:
    raw = {"script": "app.py", "env_production": {}, "env_profiles": {"production": {}}}
    err = fails(raw, project)
    assert err.key == "env_production"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ({"time": True}, DEFAULT_TIME_FORMAT),
        ({"time": False}, None),
        ({"time": True, "log_date_format": "%H"}, "%H"),
        ({"log_date_format": "YYYY-MM-DD HH:mm:ss Z"}, "%Y-%m-%d %H:%M:%S %z"),
        ({"log_date_format": "DD/MMM/YYYY [at] hh:mm A"}, "%d/%b/%Y at %I:%M %p"),
        ({"log_date_format": "%Y %% keep"}, "%Y %% keep"),
    ],
)
def test_time_and_log_date_format(project: Path, raw: dict[str, Any], expected: str) -> None:
    assert load({"script": "app.py"} | raw, project).log_date_format == expected


def test_args_from_script_come_first(project: Path) -> None:
    cfg = load({"script": "app.py --verbose", "args": ["--port", "1"]}, project)
    assert cfg.script == str(project / "app.py")
    assert cfg.args == ["--verbose", "--port", "1"]
    assert cfg.name == "app"


# --- Script resolution ---


@pytest.mark.parametrize(
    ("script", "interpreter"),
    [
        ("app.py", "python3"),
        ("worker.js", "node"),
        ("server.mjs", "node"),
        ("job.rb", "ruby"),
        ("start.sh", "bash"),
        ("run", "none"),
        ("./run", "none"),
    ],
)
def test_interpreter_by_extension(project: Path, script: str, interpreter: str) -> None:
    path, args, interp = resolve_script(script, project, None)
    assert path == os.path.normpath(project / script)
    assert (args, interp) == ([], interpreter)


def test_explicit_interpreter_wins(project: Path) -> None:
    assert resolve_script("data.txt", project, "python3")[2] == "python3"


def test_program_on_path(project: Path, fake_bin: Path) -> None:
    assert resolve_script("gunicorn", project, None) == (str(fake_bin / "gunicorn"), [], "none")


def test_command_with_arguments(project: Path, fake_bin: Path) -> None:
    path, args, interp = resolve_script("npm run 'start dev'", project, None)
    assert (path, args, interp) == (str(fake_bin / "npm"), ["run", "start dev"], "none")


def test_file_with_arguments(project: Path) -> None:
    assert resolve_script("app.py --port 8000", project, None) == (
        str(project / "app.py"),
        ["--port", "8000"],
        "python3",
    )


def test_file_with_a_space_in_its_name(project: Path) -> None:
    make_executable(project / "my tool")
    assert resolve_script("my tool", project, None) == (str(project / "my tool"), [], "none")


@pytest.mark.parametrize("command", ["echo $HOME", "a | b", "FOO=1 node x.js", "x > out.txt"])
def test_shell_commands_run_under_sh(project: Path, fake_bin: Path, command: str) -> None:
    assert resolve_script(command, project, None) == (str(fake_bin / "sh"), ["-c", command], "none")


@pytest.mark.parametrize(
    ("script", "interpreter", "fragment"),
    [
        ("nope.py", None, "no such file or program: 'nope.py'"),
        ("nope --flag", None, "no such file or program: 'nope'"),
        ("data.txt", None, "is not executable; set interpreter"),
        ("data.txt", "none", "is not executable; set interpreter"),
        ("src", None, "is a directory"),
        ("./gunicorn", None, "no such file or program"),
        ("app.py 'unbalanced", None, "balanced quotes"),
        ("echo $X", "python3", "cannot have an interpreter"),
    ],
)
def test_resolve_script_errors(
    project: Path, script: str, interpreter: str | None, fragment: str
) -> None:
    with pytest.raises(ConfigError) as info:
        resolve_script(script, project, interpreter, source="x.yaml", app="api")
    assert (info.value.source, info.value.app, info.value.key) == ("x.yaml", "api", "script")
    assert fragment in str(info.value)


def test_missing_interpreter_is_an_error(project: Path, fake_bin: Path) -> None:
    (fake_bin / "node").unlink()
    err = fails({"script": "worker.js"}, project)
    assert (err.app, err.key) == ("worker", "script")
    assert "interpreter 'node' is not on PATH" in str(err)


def test_explicit_interpreter_must_exist(project: Path) -> None:
    err = fails({"script": "app.py", "interpreter": "python9"}, project)
    assert err.key == "interpreter"
    err = fails({"script": "app.py", "exec_interpreter": "./venv/bin/python"}, project)
    assert err.key == "exec_interpreter"


def test_interpreter_path_is_made_absolute(project: Path) -> None:
    make_executable(project / "python")
    cfg = load({"script": "app.py", "interpreter": "./python"}, project)
    assert cfg.interpreter == str(project / "python")


def test_interpreter_looked_up_on_the_apps_path(project: Path, tmp_path: Path) -> None:
    other = tmp_path / "other"
    other.mkdir()
    make_executable(other / "deno")
    cfg = load({"script": "app.py", "interpreter": "deno", "env": {"PATH": str(other)}}, project)
    assert cfg.interpreter == "deno"


def test_cwd_relative_to_base_dir_and_script_relative_to_cwd(project: Path) -> None:
    cfg = load({"script": "main.py", "cwd": "src", "out_file": "o.log"}, project)
    assert cfg.cwd == str(project / "src")
    assert cfg.script == str(project / "src" / "main.py")
    assert cfg.out_file == str(project / "src" / "o.log")
    assert cfg.name == "main"


def test_home_is_expanded(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(project))
    assert load({"script": "~/app.py"}, Path("/")).script == str(project / "app.py")


# --- Errors name the source, the app and the key ---


@pytest.mark.parametrize(
    ("raw", "key", "fragment"),
    [
        ({"max_restarts": "abc"}, "max_restarts", "expected an integer >= 0, got 'abc'"),
        ({"max_restarts": -1}, "max_restarts", "expected an integer >= 0"),
        ({"max_restarts": True}, "max_restarts", "expected an integer >= 0, got True"),
        ({"instances": -2}, "instances", "expected a number of instances"),
        ({"instances": "many"}, "instances", "expected a number of instances"),
        ({"port": 70000}, "port", "expected an integer from 1 to 65535"),
        ({"exec_mode": "swarm"}, "exec_mode", "expected 'fork' or 'cluster'"),
        ({"log_type": "xml"}, "log_type", "expected 'raw' or 'json'"),
        ({"autorestart": "yes"}, "autorestart", "expected true or false, got 'yes'"),
        ({"min_uptime": "soon"}, "min_uptime", "expected a duration like 500ms, 5s or 2m"),
        ({"restart_delay": -5}, "restart_delay", "expected a duration"),
        ({"watch_delay": []}, "watch_delay", "expected a duration"),
        ({"max_memory_restart": "lots"}, "max_memory_restart", "expected a size like"),
        ({"kill_signal": "SIGFOO"}, "kill_signal", "expected a signal"),
        ({"stop_signal": "SIGFOO"}, "stop_signal", "expected a signal"),
        ({"kill_timeout": "1x"}, "kill_timeout", "expected a duration"),
        ({"stop_exit_codes": [0, 256]}, "stop_exit_codes", "expected an exit code"),
        ({"stop_exit_codes": "zero"}, "stop_exit_codes", "expected an exit code"),
        ({"cron_restart": "every day"}, "cron_restart", "expected a cron expression"),
        ({"cron": "61 * * * *"}, "cron", "expected a cron expression"),
        ({"args": 5}, "args", "expected a string or a list of strings"),
        ({"args": ["a", 1]}, "args", "expected a string or a list of strings"),
        ({"node_args": {"a": 1}}, "node_args", "expected a string or a list of strings"),
        ({"env": ["A=1"]}, "env", "expected a mapping of variable names"),
        ({"env": {"A": {"B": 1}}}, "env", "variable 'A': expected a string, number or boolean"),
        ({"env": {"A": None}}, "env", "variable 'A': expected a string"),
        ({"env": {"1A": "x"}}, "env", "variable name '1A' is not valid"),
        ({"env": {"A-B": "x"}}, "env", "variable name 'A-B' is not valid"),
        ({"env_production": {"A B": 1}}, "env_production", "variable name 'A B'"),
        ({"env_profiles": {"a b": {}}}, "env_profiles", "profile names"),
        ({"env_": {}}, "env_", "env_<profile>"),
        ({"increment_var": "1X"}, "increment_var", "expected a variable name"),
        ({"instance_var": ""}, "instance_var", "expected a variable name"),
        ({"watch": 5}, "watch", "expected a string or a list of strings"),
        ({"ignore_watch": [1]}, "ignore_watch", "expected a string or a list of strings"),
        ({"listen": [""]}, "listen", "expected a string or a list of strings"),
        ({"out_file": ""}, "out_file", "expected a path"),
        ({"output": 3}, "output", "expected a path"),
        ({"user": ""}, "user", "expected a user or group"),
        ({"gid": -1}, "gid", "expected a user or group"),
        ({"rlimits": 5}, "rlimits", "expected a mapping like"),
        ({"rlimits": {"nofiles": 1}}, "rlimits", "unknown limit 'nofiles' (did you mean 'nofile'"),
        ({"rlimits": {"nofile": "many"}}, "rlimits", "limit 'nofile': expected an integer"),
        ({"rlimits": {"as": "huge"}}, "rlimits", "limit 'as': expected a size"),
        ({"umask": "999"}, "umask", "expected a umask"),
        ({"time": "yes"}, "time", "expected true or false"),
        ({"log_date_format": ""}, "log_date_format", "expected a non-empty string"),
        ({"interpreter": ""}, "interpreter", "expected a non-empty string"),
        ({"cwd": "nowhere"}, "cwd", "no such directory"),
        ({"cwd": 5}, "cwd", "expected a path"),
        ({"script": "nope.py", "name": "api"}, "script", "no such file or program"),
        ({"script": 5, "name": "api"}, "script", "expected a file, program or command"),
    ],
)
def test_errors_name_source_app_and_key(
    project: Path, raw: dict[str, Any], key: str, fragment: str
) -> None:
    err = fails({"script": "app.py"} | raw, project)
    assert err.source == "corral.yaml"
    assert err.app in ("app", "api")
    assert err.key == key
    assert fragment in err.message
    assert str(err).startswith(f"corral.yaml: app {err.app!r}: key {key!r}: ")


def test_unknown_key_suggests_the_closest(project: Path) -> None:
    err = fails({"name": "api", "script": "app.py", "max_restart": 3}, project)
    assert isinstance(err, UnknownKeyError)
    assert (
        str(err)
        == "corral.yaml: app 'api': unknown key 'max_restart' (did you mean 'max_restarts'?)"
    )
    assert err.key == "max_restart"


@pytest.mark.parametrize(
    ("key", "suggested"),
    [("maxMemoryRestart", "max_memory_restart"), ("error_log", "err_log"), ("scirpt", "script")],
)
def test_unknown_key_suggestions(project: Path, key: str, suggested: str) -> None:
    err = fails({"script": "app.py", key: 1}, project)
    assert f"(did you mean {suggested!r}?)" in str(err)


def test_unknown_key_without_suggestion(project: Path) -> None:
    err = fails({"script": "app.py", "zzzzzz": 1}, project)
    assert str(err) == "corral.yaml: app 'app': unknown key 'zzzzzz'"


def test_non_string_key(project: Path) -> None:
    err = fails({"script": "app.py", 5: 1}, project)  # type: ignore[dict-item]
    assert "unknown key 5" in str(err)


def test_app_is_named_by_index_until_its_name_is_known(project: Path) -> None:
    err = fails({"name": "bad name", "script": "app.py"}, project, index=2)
    assert (err.app, err.key) == ("apps[2]", "name")
    assert str(err).startswith("corral.yaml: apps[2]: key 'name': expected a name of letters")


def test_without_index_nor_name(project: Path) -> None:
    err = fails({"name": 5, "script": "app.py"}, project, index=None)
    assert err.app is None
    assert str(err).startswith("corral.yaml: key 'name': ")


def test_missing_script(project: Path) -> None:
    err = fails({"name": "api"}, project)
    assert (err.app, err.key) == ("api", "script")
    assert "missing" in str(err)
    err = fails({"instances": 2}, project, index=1)
    assert (err.app, err.key) == ("apps[1]", "script")


def test_derived_name_must_be_valid(project: Path) -> None:
    make_executable(project / "my tool")
    err = fails({"script": "'my tool'"}, project)
    assert err.key == "name"
    assert "set name" in str(err)


def test_not_a_mapping(project: Path) -> None:
    with pytest.raises(ConfigError, match=r"apps\[3\]: expected a mapping of app settings"):
        load(["app.py"], project, index=3)  # type: ignore[arg-type]


def test_peek_name() -> None:
    assert peek_name({"name": "api", "script": "x.py"}) == "api"
    assert peek_name({"script": "/srv/x.py --flag"}) == "x"
    assert peek_name({"cmd": "gunicorn app:app"}) == "gunicorn"
    assert peek_name({"name": 5}) is None
    assert peek_name({}) is None
    assert peek_name("x") is None


# --- app_from_dict: canonical data ---


def test_app_from_dict_takes_bare_numbers_as_seconds(project: Path) -> None:
    cfg = load({"script": "app.py", "kill_timeout": 5000, "max_memory_restart": "1G"}, project)
    data = cfg.to_dict()
    assert data["kill_timeout"] == 5.0
    again = app_from_dict(data)
    assert again.kill_timeout == 5.0
    assert again.max_memory_restart == 1024**3
    assert again == cfg


def test_app_from_dict_does_not_look_scripts_up() -> None:
    cfg = app_from_dict({"name": "x", "script": "/gone/app.py", "cwd": "/gone"})
    assert (cfg.script, cfg.cwd, cfg.interpreter) == ("/gone/app.py", "/gone", None)


def test_app_from_dict_keeps_cwd_none() -> None:
    assert app_from_dict({"name": "x", "script": "/bin/true"}).cwd is None


@pytest.mark.parametrize(
    ("data", "key", "fragment"),
    [
        (
            {"node_args": []},
            "node_args",
            "unknown key 'node_args' (did you mean 'interpreter_args'?)",
        ),
        ({"time": True}, "time", "unknown key 'time'"),
        ({"env_production": {}}, "env_production", "(did you mean 'env_profiles'?)"),
        ({"out_file": "rel.log"}, "out_file", "expected an absolute path"),
        ({"watch": ["rel"]}, "watch", "expected an absolute path"),
        ({"max_restarts": None}, "max_restarts", "expected an integer"),
    ],
)
def test_app_from_dict_is_strict(data: dict[str, Any], key: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        app_from_dict({"name": "x", "script": "/bin/true"} | data)
    assert (info.value.source, info.value.app, info.value.key) == ("control request", "x", key)
    assert fragment in str(info.value)


def test_app_from_dict_needs_name_and_script() -> None:
    with pytest.raises(ConfigError, match="key 'script': missing"):
        app_from_dict({"name": "x"})
    with pytest.raises(ConfigError, match="key 'name': missing"):
        app_from_dict({"script": ""}, source="state.json")


def test_cli_flags_as_strings(project: Path) -> None:
    """The CLI may pass flag values as it got them: strings."""
    raw = {
        "script": "app.py",
        "name": "api",
        "instances": "4",
        "max_restarts": "3",
        "stop_exit_codes": ["0", "3"],
        "restart_delay": "3000",
        "kill_timeout": "5s",
        "max_memory_restart": "200M",
        "watch": True,
        "time": True,
        "args": ["--port", "8000"],
    }
    cfg = app_from_mapping(raw, source="command line", base_dir=project)
    assert (cfg.instances, cfg.max_restarts, cfg.stop_exit_codes) == (4, 3, [0, 3])
    assert (cfg.restart_delay, cfg.kill_timeout) == (3.0, 5.0)
    assert cfg.watch == [str(project)]
    assert cfg.log_date_format == DEFAULT_TIME_FORMAT


def test_cli_errors_say_command_line(project: Path) -> None:
    with pytest.raises(ConfigError) as info:
        app_from_mapping({"script": "nope.py"}, source="command line", base_dir=project)
    assert str(info.value).startswith("command line: app 'nope': key 'script': no such file")
    with pytest.raises(ConfigError, match=r"^command line: key 'script': no such file"):
        resolve_script("nope.py", project, None)


def test_base_dir_is_normalised(project: Path) -> None:
    cfg = load({"script": "app.py"}, project / "src" / "..")
    assert cfg.cwd == str(project)


@pytest.mark.parametrize("bad", ["web\n", "web\r\n"])
def test_a_trailing_newline_is_not_part_of_a_valid_name(bad: str) -> None:
    # `$` matches before a final newline; names and env names use \Z so "web\n" is refused.
    with pytest.raises(ConfigError, match="key 'name'"):
        app_from_dict({"name": bad, "script": "/bin/true"})
    with pytest.raises(ConfigError, match="variable name"):
        app_from_dict({"name": "web", "script": "/bin/true", "env": {bad.upper(): "1"}})
