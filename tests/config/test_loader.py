from __future__ import annotations

import json
from pathlib import Path

import pytest

from corral.config.errors import ConfigError, UnknownKeyError
from corral.config.filenames import is_config_file
from corral.config.loader import check_env_name, load_file

YAML = """\
apps:
  - name: api
    script: app.py
    instances: 2
    env: {PORT: 8000}
    env_production: {APP_ENV: production}
  - name: worker
    script: worker.js
    restart_delay: 3000
"""

TOML = """\
[[apps]]
name = "api"
script = "app.py"
instances = 2
env = { PORT = 8000 }
env_production = { APP_ENV = "production" }

[[apps]]
name = "worker"
script = "worker.js"
restart_delay = 3000
"""

JSON = json.dumps(
    {
        "apps": [
            {
                "name": "api",
                "script": "app.py",
                "instances": 2,
                "env": {"PORT": 8000},
                "env_production": {"APP_ENV": "production"},
            },
            {"name": "worker", "script": "worker.js", "restart_delay": 3000},
        ]
    }
)


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("filename", "text"),
    [("corral.yaml", YAML), ("corral.yml", YAML), ("corral.toml", TOML), ("corral.json", JSON)],
)
def test_formats_load_the_same_apps(project: Path, filename: str, text: str) -> None:
    api, worker = load_file(write(project / filename, text))
    assert (api.name, api.instances, api.env) == ("api", 2, {"PORT": "8000"})
    assert api.script == str(project / "app.py")
    assert api.cwd == str(project)
    assert api.env_profiles == {"production": {"APP_ENV": "production"}}
    assert (worker.name, worker.interpreter, worker.restart_delay) == ("worker", "node", 3.0)


@pytest.mark.parametrize(
    ("filename", "text"),
    [
        ("apps.yaml", "- script: app.py\n- script: worker.js\n"),
        ("apps.json", '[{"script": "app.py"}, {"script": "worker.js"}]'),
    ],
)
def test_a_top_level_list_of_apps(project: Path, filename: str, text: str) -> None:
    assert [a.name for a in load_file(write(project / filename, text))] == ["app", "worker"]


def test_pm2_ecosystem_json(project: Path) -> None:
    ecosystem = {
        "apps": [
            {
                "name": "web",
                "script": "worker.js",
                "exec_mode": "cluster_mode",
                "instances": "max",
                "node_args": "--max-old-space-size=512",
                "error_file": "logs/err.log",
                "out_file": "logs/out.log",
                "combine_logs": True,
                "time": True,
                "max_memory_restart": "300M",
                "kill_timeout": 3000,
                "watch": False,
                "vizion": False,
                "pmx": True,
                "env": {"NODE_ENV": "development"},
                "env_production": {"NODE_ENV": "production"},
            }
        ],
        "deploy": {"production": {"user": "node", "host": "example.com"}},
    }
    (web,) = load_file(write(project / "ecosystem.config.json", json.dumps(ecosystem)))
    assert web.exec_mode == "cluster"
    assert web.instances >= 1
    assert web.interpreter_args == ["--max-old-space-size=512"]
    assert web.error_file == str(project / "logs" / "err.log")
    assert web.merge_logs is True
    assert web.log_date_format is not None
    assert (web.max_memory_restart, web.kill_timeout) == (300 * 1024**2, 3.0)
    assert web.env_profiles == {"production": {"NODE_ENV": "production"}}


def test_pm2_ecosystem_yaml(project: Path) -> None:
    text = """\
apps:
  - script: app.py
    name: api
    exec_interpreter: python3
    interpreterArgs: -u
    err_log: err.log
    out_log: out.log
    cron: "0 0 * * *"
    autorestart: false
    treekill: true
    namespace: default
"""
    (api,) = load_file(write(project / "ecosystem.yaml", text))
    assert (api.interpreter, api.interpreter_args) == ("python3", ["-u"])
    assert api.error_file == str(project / "err.log")
    assert api.cron_restart == "0 0 * * *"


def test_yaml_octal_umask_and_size_units(project: Path) -> None:
    text = "apps:\n  - script: app.py\n    umask: 022\n    max_memory_restart: 1G\n"
    (app,) = load_file(write(project / "c.yaml", text))
    assert (app.umask, app.max_memory_restart) == (0o022, 1024**3)


def test_paths_are_relative_to_the_files_folder(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir("/")
    (app,) = load_file(write(project / "c.yaml", "apps: [{script: main.py, cwd: src}]"))
    assert app.cwd == str(project / "src")
    assert app.script == str(project / "src" / "main.py")
    (app,) = load_file(write(project / "c.yaml", "apps: [{script: app.py}]"))
    assert app.script == str(project / "app.py")


# --- --only ---


def test_only(project: Path) -> None:
    path = write(project / "c.yaml", YAML)
    assert [a.name for a in load_file(path, only=["worker"])] == ["worker"]
    assert [a.name for a in load_file(path, only=["worker", "api"])] == ["api", "worker"]
    assert [a.name for a in load_file(path, only=["api,worker"])] == ["api", "worker"]
    assert [a.name for a in load_file(path, only=[])] == ["api", "worker"]


def test_only_an_unknown_name(project: Path) -> None:
    path = write(project / "c.yaml", YAML)
    with pytest.raises(ConfigError) as info:
        load_file(path, only=["wroker"])
    assert str(info.value) == (
        f"{path}: --only: no app named 'wroker' in this file (did you mean 'worker'?);"
        " apps: api, worker"
    )


def test_only_skips_validating_other_apps(project: Path) -> None:
    text = "apps:\n  - script: app.py\n  - name: later\n    script: not-built-yet.py\n"
    path = write(project / "c.yaml", text)
    assert [a.name for a in load_file(path, only=["app"])] == ["app"]
    with pytest.raises(ConfigError, match="app 'later': key 'script': no such file"):
        load_file(path)


# --- Errors ---


def test_duplicate_names(project: Path) -> None:
    text = "apps:\n  - script: app.py\n  - name: app\n    script: worker.js\n"
    with pytest.raises(ConfigError) as info:
        load_file(write(project / "c.yaml", text))
    assert (info.value.app, info.value.key) == ("app", "name")
    assert "duplicate app name (apps[0] and apps[1])" in str(info.value)


def test_errors_name_the_file_and_the_app(project: Path) -> None:
    text = "apps:\n  - name: api\n    script: app.py\n    max_restarts: abc\n"
    path = write(project / "corral.yaml", text)
    with pytest.raises(ConfigError) as info:
        load_file(path)
    assert str(info.value) == (
        f"{path}: app 'api': key 'max_restarts': expected an integer >= 0, got 'abc'"
    )


def test_unknown_key_in_a_file(project: Path) -> None:
    path = write(
        project / "corral.yaml", "apps:\n  - name: api\n    script: app.py\n    max_restart: 3\n"
    )
    with pytest.raises(UnknownKeyError) as info:
        load_file(path)
    assert (
        str(info.value)
        == f"{path}: app 'api': unknown key 'max_restart' (did you mean 'max_restarts'?)"
    )


def test_app_index_in_errors(project: Path) -> None:
    path = write(project / "c.json", '{"apps": [{"script": "app.py"}, {"instances": 2}]}')
    with pytest.raises(ConfigError, match=r"c\.json: apps\[1\]: key 'script': missing"):
        load_file(path)


@pytest.mark.parametrize(
    ("filename", "text", "fragment"),
    [
        ("c.yaml", "apps:\n  - name: api\n   script: x\n", "invalid YAML at line 3, column"),
        ("c.yaml", "apps: [\n", "invalid YAML at line 2"),
        (
            "c.yaml",
            "apps:\n  - name: a\n    name: b\n",
            "line 3, column 5: key 'name' is given twice",
        ),
        ("c.toml", "[[apps]]\nname = \n", "invalid TOML: "),
        ("c.toml", "[[apps]]\nname = \n", "line 2"),
        ("c.json", '{"apps": [\n  {"name": "a",}\n]}', "invalid JSON at line 2, column"),
        ("c.json", '{"apps": [{"name": "a", "name": "b"}]}', "key 'name' is given twice"),
    ],
)
def test_parse_errors_give_the_line(project: Path, filename: str, text: str, fragment: str) -> None:
    path = write(project / filename, text)
    with pytest.raises(ConfigError) as info:
        load_file(path)
    assert info.value.source == str(path)
    assert fragment in str(info.value)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("filename", "text", "fragment"),
    [
        ("c.yaml", "", "the file is empty"),
        ("c.yaml", "# only a comment\n", "the file is empty"),
        ("c.toml", "", "the file is empty"),
        ("c.yaml", "apps: []\n", "c.yaml: key 'apps': expected a list of at least one app, got []"),
        ("c.yaml", "apps: {script: app.py}\n", "key 'apps': expected a list of at least one app"),
        ("c.yaml", "just text\n", "c.yaml: expected an 'apps' list, got 'just text'"),
        ("c.yaml", "[]\n", "c.yaml: expected an 'apps' list, got []"),
        ("c.yaml", "apps: [5]\n", "apps[0]: expected a mapping of app settings, got 5"),
        ("c.yaml", "aps: []\n", "unknown top-level key 'aps' (did you mean 'apps'?)"),
        ("c.yaml", "script: app.py\n", "(app settings go in a list under 'apps')"),
        ("c.toml", 'name = "x"\n', "unknown top-level key 'name'"),
        ("c.json", "{}", "the file is empty"),
        ("c.json", '{"deploy": {}}', "expected a top-level 'apps' list"),
        ("c.json", "5", "c.json: expected an 'apps' list, got 5"),
    ],
)
def test_bad_documents(project: Path, filename: str, text: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_file(write(project / filename, text))
    assert fragment in str(info.value)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_file(tmp_path / "nope.yaml")
    assert str(info.value) == f"{tmp_path / 'nope.yaml'}: no such file"


def test_directory(tmp_path: Path) -> None:
    (tmp_path / "d.yaml").mkdir()
    with pytest.raises(ConfigError, match="is a directory"):
        load_file(tmp_path / "d.yaml")


def test_not_utf8(tmp_path: Path) -> None:
    (tmp_path / "c.yaml").write_bytes(b"apps: \xff\n")
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_file(tmp_path / "c.yaml")


@pytest.mark.parametrize(
    "filename", ["ecosystem.config.js", "ecosystem.config.cjs", "pm2.config.mjs"]
)
def test_javascript_config_is_refused_clearly(tmp_path: Path, filename: str) -> None:
    path = write(tmp_path / filename, "module.exports = {apps: []}")
    with pytest.raises(ConfigError, match=r"JavaScript config files are not supported.*JSON"):
        load_file(path)


def test_unknown_extension(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown config file type"):
        load_file(write(tmp_path / "c.ini", ""))


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("corral.yaml", True),
        ("x/corral.yml", True),
        ("C.TOML", True),
        ("ecosystem.config.json", True),
        ("Procfile", True),
        ("Procfile.dev", True),
        ("web.procfile", True),
        ("ecosystem.config.js", True),  # so that load_file can refuse it clearly
        ("ecosystem.js", True),
        ("app.js", False),
        ("app.py", False),
        ("server.config", False),
        ("gunicorn", False),
    ],
)
def test_is_config_file(path: str, expected: bool) -> None:
    assert is_config_file(path) is expected


# --- --env ---


def test_check_env_name(project: Path) -> None:
    apps = load_file(write(project / "c.yaml", YAML))
    check_env_name(apps, "production", source="c.yaml")
    with pytest.raises(ConfigError) as info:
        check_env_name(apps, "prodution", source="c.yaml")
    assert str(info.value) == (
        "c.yaml: --env 'prodution': no app defines env_prodution (did you mean 'production'?);"
        " profiles: env_production"
    )


def test_check_env_name_when_no_profile_exists(project: Path) -> None:
    apps = load_file(write(project / "c.yaml", "apps: [{script: app.py}]"))
    with pytest.raises(ConfigError, match="profiles: none"):
        check_env_name(apps, "production", source="c.yaml")
