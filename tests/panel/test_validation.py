"""Form and API validation: single fields, the app form (every error at once, paths
confined to the tenant's home) and config texts for the editor."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from corral.config.schema import app_from_dict
from corral.panel.validation import (
    CONFIG_FIELD,
    FORM_FIELDS,
    MAX_CONFIG_CHARS,
    MAX_ENV_VALUE,
    MAX_INSTANCES,
    FieldError,
    FieldErrors,
    app_limit,
    app_name,
    boolean,
    config_text_to_apps,
    duration,
    env_name,
    env_value,
    instances,
    retention,
    size,
    tenant_name,
    username,
    validate_app_form,
)


def field_error(call: Any, *args: Any) -> FieldError:
    with pytest.raises(FieldError) as info:
        call(*args)
    return info.value


# --- single fields ---


def test_field_error_and_field_errors_carry_their_fields() -> None:
    error = FieldError("name", "required")
    assert (error.field, error.message, str(error)) == ("name", "required", "name: required")
    errors = FieldErrors({"a": "bad", "b": "worse"})
    assert errors.errors == {"a": "bad", "b": "worse"}
    assert "a: bad" in str(errors) and "b: worse" in str(errors)


@pytest.mark.parametrize("name", ["web", "api-2", "worker.v1", "a:b", "A_b", "x" * 80, "1st"])
def test_app_names_corral_accepts(name: str) -> None:
    assert app_name(name) == name
    assert app_name(f"  {name} ") == name


@pytest.mark.parametrize(
    ("name", "fragment"),
    [
        ("", "required"),
        ("   ", "required"),
        ("has space", "letters, digits"),
        ("slash/name", "letters, digits"),
        ("x" * 81, "letters, digits"),
        ("wéb", "letters, digits"),
        ("we\nb", "one line"),
        ("all", "reserved"),
        ("123", "app id"),
        (".", "not a usable name"),
        ("..", "not a usable name"),
        (None, "required"),
    ],
)
def test_app_names_refused(name: Any, fragment: str) -> None:
    error = field_error(app_name, name)
    assert error.field == "name"
    assert fragment in error.message


def test_a_validator_names_the_field_it_is_given() -> None:
    assert field_error(app_name, "all", "target").field == "target"
    assert field_error(duration, "x", "kill_timeout").field == "kill_timeout"


def test_env_names_and_values() -> None:
    assert env_name("NODE_ENV") == "NODE_ENV"
    assert env_name("_x1") == "_x1"
    for bad in ("1ABC", "A-B", "A B", "", "É"):
        assert "variable name" in field_error(env_name, bad).message or bad.strip() == ""
    assert env_value("  spaced  ") == "  spaced  "
    assert env_value("") == ""
    assert env_value(42) == "42"
    assert "NUL" in field_error(env_value, "a\x00b").message
    assert str(MAX_ENV_VALUE) in field_error(env_value, "x" * (MAX_ENV_VALUE + 1)).message
    field_error(env_value, ["list"])
    field_error(env_value, True)


@pytest.mark.parametrize(
    ("value", "expected"),
    [("max", "max"), ("MAX", "max"), ("4", 4), (4, 4), ("0", 0), (-1, -1), (MAX_INSTANCES, 256)],
)
def test_instances_accepted(value: Any, expected: Any) -> None:
    assert instances(value) == expected


@pytest.mark.parametrize("value", ["257", MAX_INSTANCES + 1, "-2", "two", "1.5", True, "", None])
def test_instances_refused(value: Any) -> None:
    assert field_error(instances, value).field == "instances"


@pytest.mark.parametrize(
    ("value", "seconds"),
    [("5s", 5.0), ("500ms", 0.5), ("1h30m", 5400.0), ("2m", 120.0), ("0", 0.0), (0, 0.0)],
)
def test_durations_with_units(value: Any, seconds: float) -> None:
    assert duration(value) == seconds


def test_a_bare_number_duration_asks_for_a_unit() -> None:
    message = field_error(duration, "3000").message
    assert "unit" in message and "3000ms" in message and "3000s" in message
    field_error(duration, 5)


@pytest.mark.parametrize("value", ["nope", "-5s", "5 parsecs", "", "400d", "1e400s"])
def test_bad_durations(value: str) -> None:
    field_error(duration, value)


def test_sizes() -> None:
    assert size("200M") == 200 * 1024**2
    assert size("1G") == 1024**3
    assert size("512") == 512
    assert size(4096) == 4096
    for bad in ("12X", "-1", "", "1 2", True):
        field_error(size, bad)


@pytest.mark.parametrize(
    ("value", "expected"),
    [("alice", "alice"), ("Alice", "alice"), (" bob.smith ", "bob.smith"), ("a_1-2", "a_1-2")],
)
def test_usernames(value: str, expected: str) -> None:
    assert username(value) == expected


@pytest.mark.parametrize("value", ["ab", "1abc", "_abc", "a" * 65, "al ice", "élodie", "a@b"])
def test_usernames_refused(value: str) -> None:
    assert field_error(username, value).field == "username"


def test_tenant_names_are_system_user_names() -> None:
    for good in ("acme", "_svc", "web-1", "a", "a" * 31):
        assert tenant_name(good) == good
    for bad in ("Acme", "1abc", "a" * 32, "a.b", "-x", "", "a b"):
        field_error(tenant_name, bad)


def test_app_limits() -> None:
    assert [app_limit(v) for v in (-1, 0, "5", " 12 ")] == [-1, 0, 5, 12]
    for bad in (-2, "x", "1.5", 10**7, True, ""):
        assert "-1: unlimited" in field_error(app_limit, bad).message or bad == ""


def test_retention_from_an_hour_to_a_year() -> None:
    assert retention("1h") == 3600.0
    assert retention("30d") == 30 * 86400.0
    assert retention("365d") == 365 * 86400.0
    for bad in ("59m", "366d", "3600", "0"):
        assert field_error(retention, bad).field == "retention"


def test_booleans() -> None:
    assert [boolean(v, "f") for v in ("on", "TRUE", "yes", "1", True)] == [True] * 5
    assert [boolean(v, "f") for v in ("off", "false", "No", "0", "", False)] == [False] * 6
    field_error(boolean, "maybe", "f")


# --- the app form ---


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """A tenant home: app.py at the top, srv/ with server.py and an executable run.sh,
    plus a folder outside the home."""
    root = tmp_path / "tenant"
    (root / "srv").mkdir(parents=True)
    (root / "app.py").write_text("print('hi')\n")
    (root / "srv" / "server.py").write_text("")
    (root / "srv" / "run.sh").write_text("#!/bin/sh\nexec sleep 60\n")
    (root / "srv" / "run.sh").chmod(0o755)
    (root / "srv" / "plain").write_text("")
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "evil.py").write_text("")
    return root


def form_errors(form: dict[str, Any], home: Path) -> dict[str, str]:
    with pytest.raises(FieldErrors) as info:
        validate_app_form(form, home)
    return info.value.errors


def test_a_minimal_form_gives_what_the_daemon_takes(home: Path) -> None:
    app = validate_app_form({"script": "app.py"}, home)
    assert app["name"] == "app"
    assert app["script"] == str(home / "app.py")
    assert app["cwd"] == str(home)
    assert app["interpreter"] == "python3"
    assert app_from_dict(app).to_dict() == app  # canonical: what `start` accepts


def test_a_full_form(home: Path) -> None:
    form = {
        "name": "api",
        "cwd": "srv",
        "script": "server.py",
        "args": "--port 8000 'two words'",
        "interpreter": "python3",
        "interpreter_args": "-u",
        "instances": "2",
        "exec_mode": "fork",
        "env": "NODE_ENV=production\r\n# a comment\n\nGREETING=hello world=1\n",
        "max_memory_restart": "200M",
        "cron_restart": "0 3 * * *",
        "autorestart": "off",
        "merge_logs": "on",
        "wait_ready": "off",
        "watch": "on",
        "ignore_watch": "node_modules\n*.log",
        "listen": "127.0.0.1:8000, unix:" + str(home / "api.sock"),
        "kill_timeout": "5s",
        "restart_delay": "500ms",
        "min_uptime": "2s",
        "listen_timeout": "10s",
        "exp_backoff_restart_delay": "100ms",
        "max_restarts": "3",
        "kill_signal": "term",
        "port": "8000",
        "stop_exit_codes": "0, 3",
        "out_file": "logs/out.log",
        "error_file": "/dev/null",
        "health_check": "http://127.0.0.1:8000/health",
        "log_date_format": "%H:%M",
        "csrf_token": "ignored",
        "user": "root",
        "group": "root",
    }
    app = validate_app_form(form, home)
    srv = home / "srv"
    assert app["name"] == "api"
    assert app["cwd"] == str(srv)
    assert app["script"] == str(srv / "server.py")
    assert app["args"] == ["--port", "8000", "two words"]
    assert app["interpreter_args"] == ["-u"]
    assert app["instances"] == 2
    assert app["env"] == {"NODE_ENV": "production", "GREETING": "hello world=1"}
    assert app["max_memory_restart"] == 200 * 1024**2
    assert app["cron_restart"] == "0 3 * * *"
    assert (app["autorestart"], app["merge_logs"], app["wait_ready"]) == (False, True, False)
    assert app["watch"] == [str(srv)]
    assert app["ignore_watch"] == ["node_modules", "*.log"]
    assert app["listen"] == ["127.0.0.1:8000", f"unix:{home / 'api.sock'}"]
    assert (app["kill_timeout"], app["restart_delay"], app["min_uptime"]) == (5.0, 0.5, 2.0)
    assert (app["listen_timeout"], app["exp_backoff_restart_delay"]) == (10.0, 0.1)
    assert (app["max_restarts"], app["kill_signal"], app["port"]) == (3, "SIGTERM", 8000)
    assert app["stop_exit_codes"] == [0, 3]
    assert app["out_file"] == str(srv / "logs" / "out.log")
    assert app["error_file"] == "/dev/null"
    assert app["health_check"] == "http://127.0.0.1:8000/health"
    assert (app["user"], app["group"]) == (None, None)  # never from a form
    assert app_from_dict(app).to_dict() == app


def test_every_mistake_is_reported_at_once(home: Path) -> None:
    errors = form_errors(
        {
            "name": "bad name",
            "script": "app.py",
            "instances": "many",
            "exec_mode": "threads",
            "env": "1X=2",
            "max_memory_restart": "lots",
            "cron_restart": "every day",
            "autorestart": "perhaps",
            "listen": "nowhere",
            "kill_timeout": "5",
            "restart_delay": "soon",
            "max_restarts": "-1",
            "kill_signal": "SIGNOPE",
            "port": "70000",
            "stop_exit_codes": "0, 300",
            "out_file": "../../x.log",
            "args": "'unbalanced",
        },
        home,
    )
    assert set(errors) == {
        "name",
        "instances",
        "exec_mode",
        "env",
        "max_memory_restart",
        "cron_restart",
        "autorestart",
        "listen",
        "kill_timeout",
        "restart_delay",
        "max_restarts",
        "kill_signal",
        "port",
        "stop_exit_codes",
        "out_file",
        "args",
    }
    assert "unit" in errors["kill_timeout"]
    assert "outside your home" in errors["out_file"]


def test_the_script_is_required_and_must_exist(home: Path) -> None:
    assert "required" in form_errors({"name": "x"}, home)["script"]
    assert "does not exist" in form_errors({"script": "nope.py"}, home)["script"]
    message = form_errors({"script": "app.py --port 80"}, home)["script"]
    assert "args field" in message
    assert "not a regular file" in form_errors({"script": "srv"}, home)["script"]


@pytest.mark.parametrize(
    "script", ["../outside/evil.py", "/bin/sh", "/etc/passwd", "srv/../../outside/evil.py"]
)
def test_a_script_outside_the_home_is_refused(home: Path, script: str) -> None:
    assert "outside your home" in form_errors({"script": script}, home)["script"]


def test_a_script_symlinked_out_is_refused_and_in_is_resolved(home: Path) -> None:
    (home / "evil.py").symlink_to(home.parent / "outside" / "evil.py")
    assert "outside your home" in form_errors({"script": "evil.py"}, home)["script"]
    (home / "current").symlink_to("srv")
    app = validate_app_form({"script": "current/server.py", "name": "s"}, home)
    assert app["script"] == str(home / "srv" / "server.py")


def test_the_script_is_taken_from_cwd(home: Path) -> None:
    app = validate_app_form({"cwd": "srv", "script": "run.sh"}, home)
    assert (app["script"], app["interpreter"]) == (str(home / "srv" / "run.sh"), "bash")
    app = validate_app_form({"cwd": str(home / "srv"), "script": str(home / "app.py")}, home)
    assert app["script"] == str(home / "app.py")
    assert "does not exist" in form_errors({"cwd": "srv", "script": "app.py"}, home)["script"]


def test_cwd_must_be_a_directory_inside(home: Path) -> None:
    assert "outside your home" in form_errors({"cwd": "..", "script": "app.py"}, home)["cwd"]
    assert "outside" in form_errors({"cwd": "/tmp", "script": "/tmp/x"}, home)["cwd"]
    errors = form_errors({"cwd": "app.py", "script": "app.py"}, home)
    assert errors == {"cwd": "'app.py' is not a directory"}  # no second error for script
    assert "does not exist" in form_errors({"cwd": "nope", "script": "app.py"}, home)["cwd"]


def test_log_files_watch_paths_and_sockets_stay_inside(home: Path) -> None:
    (home / "logs").symlink_to(home.parent / "outside")
    base = {"script": "app.py"}
    assert "outside" in form_errors({**base, "out_file": "logs/out.log"}, home)["out_file"]
    assert "outside" in form_errors({**base, "error_file": "/var/log/x"}, home)["error_file"]
    assert "outside" in form_errors({**base, "watch": "srv\n../outside"}, home)["watch"]
    listen = "unix:" + str(home.parent / "outside" / "s.sock")
    assert "outside" in form_errors({**base, "listen": listen}, home)["listen"]
    app = validate_app_form({**base, "watch": "srv\n# not this\napp.py"}, home)
    assert app["watch"] == [str(home / "srv"), str(home / "app.py")]
    assert validate_app_form({**base, "out_file": "NULL"}, home)["out_file"] == "/dev/null"


def test_env_lines_with_line_numbers(home: Path) -> None:
    base = {"script": "app.py"}
    assert "line 2" in form_errors({**base, "env": "A=1\nno equals"}, home)["env"]
    assert "line 3" in form_errors({**base, "env": "A=1\n\nA=2"}, home)["env"]
    assert "set twice" in form_errors({**base, "env": "A=1\nA=2"}, home)["env"]
    assert "NUL" in form_errors({**base, "env": "A=x\x00y"}, home)["env"]
    app = validate_app_form({**base, "env": "EMPTY=\n  SPACED = a b \n"}, home)
    assert app["env"] == {"EMPTY": "", "SPACED": " a b "}


def test_json_values_are_accepted_too(home: Path) -> None:
    form: dict[str, Any] = {
        "script": "app.py",
        "args": ["--flag", "x y"],
        "env": {"A": "1", "B": 2},
        "instances": 3,
        "autorestart": False,
        "listen": ["127.0.0.1:9000"],
        "stop_exit_codes": [0, 2],
        "watch": False,
    }
    app = validate_app_form(form, home)
    assert app["args"] == ["--flag", "x y"]
    assert app["env"] == {"A": "1", "B": "2"}
    assert (app["instances"], app["autorestart"], app["watch"]) == (3, False, [])
    assert (app["listen"], app["stop_exit_codes"]) == (["127.0.0.1:9000"], [0, 2])
    assert "variable name" in form_errors({**form, "env": {"1X": "a"}}, home)["env"]
    assert "list of strings" in form_errors({**form, "args": [1, None]}, home)["args"]


def test_empty_fields_mean_the_default(home: Path) -> None:
    app = validate_app_form(
        {"script": "app.py", "name": "", "instances": " ", "kill_timeout": "", "env": ""}, home
    )
    assert (app["name"], app["instances"], app["kill_timeout"], app["env"]) == ("app", 1, 1.6, {})


def test_errors_from_corral_itself_land_on_their_field(home: Path) -> None:
    base = {"script": "app.py"}
    errors = form_errors({**base, "health_check": "tcp://8.8.8.8:53"}, home)
    assert "loopback" in errors["health_check"]
    errors = form_errors({"script": "srv/plain"}, home)  # no extension, not executable
    assert "not executable" in errors["script"]
    errors = form_errors({**base, "interpreter": "no-such-interpreter"}, home)
    assert "not on PATH" in errors["interpreter"]
    assert "'~'" in form_errors({**base, "interpreter": "~/bin/python"}, home)["interpreter"]


def test_a_derived_name_is_checked_like_a_given_one(home: Path) -> None:
    (home / "all.py").write_text("")
    assert "reserved" in form_errors({"script": "all.py"}, home)["name"]


# --- config texts ---

YAML_OK = """\
apps:
  - name: web
    script: app.py
    out_file: logs/web.log
  - name: api
    cwd: srv
    script: server.py
    env:
      PORT: 8000
"""


def config_errors(text: str, home: Path, fmt: Any = "yaml") -> dict[str, str]:
    with pytest.raises(FieldErrors) as info:
        config_text_to_apps(text, fmt, home)
    return info.value.errors


def test_a_yaml_config(home: Path) -> None:
    web, api = config_text_to_apps(YAML_OK, "yaml", home)
    assert (web["name"], web["script"], web["cwd"]) == ("web", str(home / "app.py"), str(home))
    assert web["out_file"] == str(home / "logs" / "web.log")
    assert (api["cwd"], api["script"]) == (str(home / "srv"), str(home / "srv" / "server.py"))
    assert api["env"] == {"PORT": "8000"}
    assert app_from_dict(api).to_dict() == api


def test_json_and_toml_configs(home: Path) -> None:
    document = {"apps": [{"name": "web", "script": "app.py", "instances": 2}]}
    (app,) = config_text_to_apps(json.dumps(document), "json", home)
    assert (app["name"], app["instances"]) == ("web", 2)
    toml = '[[apps]]\nname = "api"\ncwd = "srv"\nscript = "run.sh"\nkill_timeout = "3s"\n'
    (app,) = config_text_to_apps(toml, "toml", home)
    assert (app["script"], app["kill_timeout"]) == (str(home / "srv" / "run.sh"), 3.0)


def test_parse_errors_say_where(home: Path) -> None:
    errors = config_errors("apps:\n  - name: web\n    script: [\n", home)
    assert set(errors) == {CONFIG_FIELD} and "line" in errors[CONFIG_FIELD]
    errors = config_errors('{"apps": [\n  {"name": "web",}\n]}', home, "json")
    assert "line 2" in errors[CONFIG_FIELD]
    errors = config_errors('[[apps]]\nname = "web\n', home, "toml")
    assert "line 2" in errors[CONFIG_FIELD]
    assert "twice" in config_errors("apps:\n  - name: a\n    name: b\n", home)[CONFIG_FIELD]


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("", "empty"),
        ("apps: []\n", "at least one app"),
        ("script: app.py\n", "'apps'"),
        ("apps:\n  - script: app.py\n  - script: app.py\n", "duplicate"),
        ("a\x00b", "NUL"),
    ],
)
def test_config_level_mistakes(home: Path, text: str, fragment: str) -> None:
    assert fragment in config_errors(text, home)[CONFIG_FIELD]


def test_an_unknown_format_or_an_oversized_text(home: Path) -> None:
    assert "format" in config_errors("apps: []", home, "ini")[CONFIG_FIELD]
    big = "#" * (MAX_CONFIG_CHARS + 1)
    assert "KiB" in config_errors(big, home)[CONFIG_FIELD]


def test_every_app_error_is_reported_with_its_line(home: Path) -> None:
    text = """\
apps:
  - name: web
    script: app.py
    out_file: /etc/corral.log
  - name: api
    script: python3 app.py
  - name: root
    script: app.py
    uid: 0
  - name: slow
    script: app.py
    kill_timeout: nope
  - name: fine
    script: app.py
"""
    errors = config_errors(text, home)
    assert set(errors) == {
        "apps[0].out_file",
        "apps[1].script",
        "apps[2].uid",
        "apps[3].kill_timeout",
    }
    assert errors["apps[0].out_file"].startswith("line 4: app 'web': ")
    assert "outside your home" in errors["apps[0].out_file"]
    assert errors["apps[1].script"].startswith("line 6: app 'api': ")
    assert "not a file inside your home" in errors["apps[1].script"]
    assert errors["apps[2].uid"].startswith("line 9: ")
    assert "another user" in errors["apps[2].uid"]
    assert errors["apps[3].kill_timeout"].startswith("line 12: app 'slow': ")


@pytest.mark.parametrize(
    ("app", "key"),
    [
        ({"script": "../outside/evil.py"}, "script"),
        ({"script": "/etc/passwd"}, "script"),
        ({"script": "/etc/no-such-file"}, "script"),
        ({"cmd": "/bin/sleep"}, "cmd"),
        ({"script": "app.py", "cwd": "/"}, "cwd"),
        ({"script": "app.py", "cwd": "../outside"}, "cwd"),
        ({"script": "app.py", "err_file": "/tmp/x.log"}, "error_file"),
        ({"script": "app.py", "log_file": "../x.log"}, "log_file"),
        ({"script": "app.py", "watch": ["/etc"]}, "watch"),
        ({"script": "app.py", "listen": "unix:/tmp/x.sock"}, "listen"),
        ({"script": "app.py", "user": "root"}, "user"),
        ({"script": "app.py", "group": "root"}, "group"),
        ({"script": "app.py", "gid": 0}, "gid"),
        ({"script": "~/app.py"}, "script"),
        ({"script": "app.py", "cwd": "~"}, "cwd"),
        ({"script": "app.py", "out_file": "~/x.log"}, "out_file"),
        ({"script": "all.py"}, "name"),
    ],
)
def test_config_apps_are_confined(home: Path, app: dict[str, Any], key: str) -> None:
    (home / "all.py").write_text("")
    named = app if key == "name" else {"name": "x", **app}  # all.py: the derived name
    errors = config_errors(json.dumps({"apps": [named]}), home, "json")
    assert list(errors) == [f"apps[0].{key}"], errors


def test_a_file_outside_is_refused_the_same_whether_it_exists_or_not(home: Path) -> None:
    def message(path: str) -> str:
        text = json.dumps({"apps": [{"name": "x", "script": path}]})
        return config_errors(text, home, "json")["apps[0].script"].replace(path, "P")

    assert os.path.exists("/etc/passwd")
    assert message("/etc/passwd") == message("/etc/no-such-file")


def test_a_symlinked_cwd_is_stored_resolved(home: Path) -> None:
    (home / "current").symlink_to("srv")
    text = "apps:\n  - name: a\n    cwd: current\n    script: server.py\n"
    (app,) = config_text_to_apps(text, "yaml", home)
    assert (app["cwd"], app["script"]) == (str(home / "srv"), str(home / "srv" / "server.py"))


# --- Anything at all ---

# listen is left out: a host name there is resolved (DNS), and tests stay on loopback.
_FUZZED = sorted(FORM_FIELDS - {"listen"})
_PATH_RESULTS = ("script", "cwd", "out_file", "error_file")


@settings(
    suppress_health_check=[HealthCheck.function_scoped_fixture], max_examples=300, deadline=None
)
@given(
    st.dictionaries(
        st.sampled_from(_FUZZED),
        st.one_of(
            st.text(max_size=30),
            st.sampled_from(["..", "../outside/evil.py", "/etc", "srv", "app.py", "on", "5s"]),
        ),
        max_size=6,
    )
)
def test_any_form_gives_field_errors_or_an_app_inside_the_home(
    home: Path, form: dict[str, str]
) -> None:
    form.setdefault("script", "app.py")
    try:
        app = validate_app_form(form, home)
    except FieldErrors as exc:
        assert exc.errors and all(isinstance(m, str) and m for m in exc.errors.values())
        return
    root = home.resolve()
    for key in _PATH_RESULTS:
        if app[key] not in (None, "/dev/null"):
            assert Path(app[key]).is_relative_to(root), (key, app[key])
    assert all(Path(p).is_relative_to(root) for p in app["watch"])
    assert app_from_dict(app).to_dict() == app
