"""The command line grammar, and how `start` flags become app settings."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

import pytest

from corral.cli import parser as cli_parser
from corral.cli.main import main
from corral.cli.parser import (
    APP_FLAGS,
    CANONICAL,
    VERBS,
    app_mapping,
    filtered_env,
    given_app_flags,
    parse,
)

CWD = "/work/dir"


def mapping(*argv: str, cwd: str = CWD) -> dict[str, Any]:
    ns = parse(["start", *argv])
    return app_mapping(ns, script=ns.script, args=ns.app_args, cwd=cwd)


def usage_error(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit) as info:
        parse(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err


# --- Every start flag lands in its key ---

FLAG_CASES: list[tuple[list[str], str, Any]] = [
    (["--name", "api"], "name", "api"),
    (["-i", "4"], "instances", "4"),
    (["--instances", "2"], "instances", "2"),
    (["-i", "max"], "instances", "max"),
    (["-i", "-1"], "instances", "-1"),
    (["--interpreter", "python3.12"], "interpreter", "python3.12"),
    (["--interpreter-args=--max-old-space-size=100 -X"], "interpreter_args", None),
    (["--node-args", "--harmony"], "interpreter_args", None),
    (["--cwd", "/srv/app"], "cwd", "/srv/app"),
    (["--cwd", "sub"], "cwd", f"{CWD}/sub"),
    (["--watch"], "watch", True),
    (["--watch", "src", "lib"], "watch", ["src", "lib"]),
    (["--ignore-watch", "node_modules", "*.log"], "ignore_watch", ["node_modules", "*.log"]),
    (["--watch-delay", "500"], "watch_delay", 500),
    (["--watch-delay", "2s"], "watch_delay", "2s"),
    (["--max-memory-restart", "200M"], "max_memory_restart", "200M"),
    (["--max-memory-restart", "1048576"], "max_memory_restart", 1048576),
    (["--cron-restart", "0 3 * * *"], "cron_restart", "0 3 * * *"),
    (["--cron", "*/5 * * * *"], "cron_restart", "*/5 * * * *"),
    (["--restart-delay", "3000"], "restart_delay", 3000),
    (["--restart-delay", "3s"], "restart_delay", "3s"),
    (["--exp-backoff-restart-delay", "100"], "exp_backoff_restart_delay", 100),
    (["--max-restarts", "5"], "max_restarts", 5),
    (["--min-uptime", "1m"], "min_uptime", "1m"),
    (["--kill-timeout", "3000"], "kill_timeout", 3000),
    (["--wait-ready"], "wait_ready", True),
    (["--listen-timeout", "8s"], "listen_timeout", "8s"),
    (["--no-autorestart"], "autorestart", False),
    (["--stop-exit-codes", "0", "2"], "stop_exit_codes", [0, 2]),
    (["--stop-exit-codes", "0,3"], "stop_exit_codes", [0, 3]),
    (["--merge-logs"], "merge_logs", True),
    (["--log-date-format", "YYYY-MM-DD"], "log_date_format", "YYYY-MM-DD"),
    (["--time"], "time", True),
    (["-o", "out.log"], "out_file", "out.log"),
    (["--output", "out.log"], "out_file", "out.log"),
    (["-e", "err.log"], "error_file", "err.log"),
    (["--error", "err.log"], "error_file", "err.log"),
    (["--log-type", "json"], "log_type", "json"),
    (["--user", "www"], "user", "www"),
    (["--uid", "33"], "user", "33"),
    (["--group", "www"], "group", "www"),
    (["--gid", "33"], "group", "33"),
]


@pytest.mark.parametrize(("flags", "key", "value"), FLAG_CASES)
def test_start_flag_sets_key(flags: list[str], key: str, value: Any) -> None:
    result = mapping("app.py", *flags)
    if value is None:  # interpreter args: the raw string, split by the schema
        value = flags[0].partition("=")[2] or flags[1]
    assert result[key] == value
    # Nothing else but the script and the cwd.
    assert set(result) == {key, "script", "cwd"} | ({key} if key == "cwd" else set())


def test_flag_table_covers_every_case() -> None:
    assert {key for _, key, _ in FLAG_CASES} == set(APP_FLAGS)


def test_flags_after_the_script() -> None:
    assert mapping("--name", "x", "app.py", "-i", "2") == mapping(
        "app.py", "--name", "x", "-i", "2"
    )


def test_no_flags_gives_script_and_cwd() -> None:
    assert mapping("app.py") == {"script": "app.py", "cwd": CWD}


def test_double_dash_args_go_to_the_app() -> None:
    ns = parse(["start", "app.py", "--name", "x", "--", "--port", "3000", "-v", "--"])
    assert ns.script == "app.py" and ns.name == "x"
    assert ns.app_args == ["--port", "3000", "-v", "--"]
    assert app_mapping(ns, script=ns.script, args=ns.app_args, cwd=CWD)["args"] == [
        "--port",
        "3000",
        "-v",
        "--",
    ]


def test_double_dash_only_for_start(capsys: pytest.CaptureFixture[str]) -> None:
    assert "only apply to start" in usage_error(["stop", "api", "--", "x"], capsys)


def test_command_line_script_is_kept_whole() -> None:
    assert mapping("python3 -m http.server 8000")["script"] == "python3 -m http.server 8000"


def test_existing_script_becomes_absolute(tmp_path: Path) -> None:
    (tmp_path / "app.py").write_text("")
    result = mapping("app.py", "--cwd", "/elsewhere", cwd=str(tmp_path))
    assert result["script"] == str(tmp_path / "app.py")
    assert result["cwd"] == "/elsewhere"


def test_watch_swallowing_the_script_gives_it_back() -> None:
    ns = parse(["start", "--watch", "app.py"])
    assert ns.script == "app.py" and ns.watch == []
    ns = parse(["start", "--watch", "src", "app.py"])
    assert ns.script == "app.py" and ns.watch == ["src"]
    ns = parse(["start", "--ignore-watch", "node_modules", "app.py"])
    assert ns.script == "app.py" and ns.ignore_watch == ["node_modules"]
    ns = parse(["start", "app.py", "--watch"])
    assert ns.script == "app.py" and ns.watch == []


def test_filter_env_parsing() -> None:
    assert parse(["start", "app.py"]).filter_env is None
    assert parse(["start", "app.py", "--filter-env"]).filter_env == []
    assert parse(["start", "app.py", "--filter-env", "AWS_", "SECRET"]).filter_env == [
        "AWS_",
        "SECRET",
    ]


def test_non_app_options_of_start() -> None:
    ns = parse(["start", "corral.yaml", "--env", "production", "--only", "api,worker"])
    assert ns.env == "production"
    assert ns.only == ["api", "worker"]
    assert given_app_flags(ns) == []
    ns = parse(["start", "x.yaml", "--only", "a", "--only", "b,c", "-f", "--update-env"])
    assert ns.only == ["a", "b", "c"] and ns.force and ns.update_env


def test_given_app_flags() -> None:
    ns = parse(["start", "app.py", "--name", "x", "--no-autorestart", "-i", "2"])
    assert given_app_flags(ns) == ["--name", "--instances", "--no-autorestart"]


def test_bad_choice_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    err = usage_error(["start", "app.py", "--log-type", "xml"], capsys)
    assert err.startswith("corral: start: ") and err.count("\n") == 1


# --- Environment filtering ---


def test_filtered_env() -> None:
    env = {"PATH": "/bin", "AWS_KEY": "k", "AWS_SECRET": "s", "HOME": "/root"}
    assert filtered_env(env, None) == env
    assert filtered_env(env, None) is not env
    assert filtered_env(env, []) is None
    assert filtered_env(env, ["AWS_"]) == {"PATH": "/bin", "HOME": "/root"}
    assert filtered_env(env, ["AWS_", "HO"]) == {"PATH": "/bin"}


# --- Verbs and aliases ---


@pytest.mark.parametrize(
    ("alias", "verb"),
    [
        ("list", "ls"),
        ("status", "ls"),
        ("l", "ls"),
        ("del", "delete"),
        ("desc", "describe"),
        ("show", "describe"),
        ("info", "describe"),
        ("dump", "save"),
        ("sendSignal", "send-signal"),
    ],
)
def test_aliases(alias: str, verb: str) -> None:
    argv = {"delete": ["api"], "describe": ["api"], "send-signal": ["SIGUSR1", "api"]}
    assert parse([alias, *argv.get(verb, [])]).verb == verb
    assert CANONICAL[alias] == verb


@pytest.mark.parametrize(
    "verb", ["stop", "restart", "reload", "delete", "reset", "describe", "env"]
)
def test_several_targets(verb: str) -> None:
    assert parse([verb, "api", "3", "/^w/", "all"]).targets == ["api", "3", "/^w/", "all"]


@pytest.mark.parametrize("verb", ["stop", "restart", "delete", "describe", "env"])
def test_a_target_is_required(verb: str, capsys: pytest.CaptureFixture[str]) -> None:
    usage_error([verb], capsys)


def test_restart_options() -> None:
    ns = parse(["restart", "api", "--update-env", "--env", "prod", "--filter-env", "AWS_"])
    assert ns.update_env and ns.env == "prod" and ns.filter_env == ["AWS_"]
    ns = parse(["reload", "all"])
    assert not ns.update_env and ns.env is None and ns.filter_env is None


def test_scale() -> None:
    ns = parse(["scale", "api", "-2"])
    assert (ns.target, ns.count) == ("api", "-2")
    assert parse(["scale", "api", "+3"]).count == "+3"


def test_logs_options(capsys: pytest.CaptureFixture[str]) -> None:
    ns = parse(["logs"])
    assert ns.target is None and ns.lines == 15 and not ns.follow
    ns = parse(["logs", "api", "--lines", "3", "--follow", "--err", "--raw", "--json"])
    assert (ns.target, ns.lines, ns.follow, ns.err, ns.raw, ns.json) == (
        "api",
        3,
        True,
        True,
        True,
        True,
    )
    usage_error(["logs", "--err", "--out"], capsys)
    usage_error(["logs", "--lines", "-1"], capsys)
    usage_error(["logs", "--lines", "many"], capsys)


def test_flush_targets_are_optional() -> None:
    assert parse(["flush"]).targets == []
    assert parse(["flush", "a", "b"]).targets == ["a", "b"]


def test_save_and_init() -> None:
    assert parse(["save"]).force is False
    assert parse(["dump", "--force"]).force is True
    ns = parse(["init"])
    assert (ns.file, ns.force) == ("corral.yaml", False)
    ns = parse(["init", "--force", "x.yaml"])
    assert (ns.file, ns.force) == ("x.yaml", True)


def test_startup_options(capsys: pytest.CaptureFixture[str]) -> None:
    ns = parse(["startup"])
    assert ns.system is None and ns.unit_dir is None and ns.platform == "systemd"
    assert parse(["startup", "systemd", "--system"]).system is True
    assert parse(["startup", "--user", "--unit-dir", "/tmp/u"]).system is False
    assert parse(["unstartup", "--system"]).system is True
    usage_error(["startup", "--system", "--user"], capsys)
    usage_error(["startup", "launchd"], capsys)


def test_send_signal() -> None:
    ns = parse(["send-signal", "SIGUSR2", "api"])
    assert (ns.signal, ns.target) == ("SIGUSR2", "api")


def test_every_verb_parses_alone_or_with_a_target() -> None:
    needs = {
        "scale": ["a", "2"],
        "send-signal": ["USR1", "a"],
        "stop": ["a"],
        "restart": ["a"],
        "reload": ["a"],
        "delete": ["a"],
        "reset": ["a"],
        "describe": ["a"],
        "env": ["a"],
        "set": ["logs.retain", "3"],
        "secret": ["ls"],
        "deploy": ["a"],
    }
    for verb in VERBS:
        assert parse([verb, *needs.get(verb, [])]).verb == verb


def test_full_parser_knows_every_verb() -> None:
    full = cli_parser.build_parser()
    for alias, verb in CANONICAL.items():
        argv = [alias] + (["a", "1"] if verb in ("scale", "send-signal") else ["a"])
        if verb in ("ls", "jlist", "prettylist", "reload-logs", "resurrect", "kill", "ping"):
            argv = [alias]
        if verb in ("save", "init", "startup", "unstartup", "flush", "logs", "get", "metrics"):
            argv = [alias]
        if verb == "set":
            argv = [alias, "logs.retain", "3"]
        if verb == "secret":
            argv = [alias, "rotate-key"]
        assert full.parse_args(argv).verb == verb


def test_unknown_verb_and_no_verb(capsys: pytest.CaptureFixture[str]) -> None:
    err = usage_error(["frobnicate"], capsys)
    assert err.strip().splitlines()[-1].startswith("corral: ")
    usage_error([], capsys)


# --- main: exit statuses of the parsing stage ---


def test_main_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == "corral 0.1.0"


def test_main_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for verb in ("start", "ls", "logs", "send-signal", "init"):
        assert verb in out
    assert main(["start", "--help"]) == 0
    assert "--max-memory-restart" in capsys.readouterr().out


def test_main_usage_error_is_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["stop"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("corral: stop: ") and "Traceback" not in err


def test_parsing_ls_does_not_build_the_other_verbs(monkeypatch: pytest.MonkeyPatch) -> None:
    built: list[str] = []
    original = cli_parser.VERBS["start"]

    def spy(p: argparse.ArgumentParser) -> None:
        built.append("start")
        original[1](p)

    monkeypatch.setitem(cli_parser.VERBS, "start", (original[0], spy))
    parse(["ls"])
    assert built == []
    parse(["start", "x"])
    assert built == ["start"]


# --- The mapping is what the schema accepts ---


def test_mapping_validates_with_the_schema(tmp_path: Path) -> None:
    from corral.config.schema import app_from_mapping

    script = tmp_path / "app.py"
    script.write_text("print('hi')\n")
    (tmp_path / "src").mkdir()
    flags = [
        "--name",
        "api",
        "-i",
        "3",
        "--watch",
        "--ignore-watch",
        "*.log",
        "--watch-delay",
        "250",
        "--max-memory-restart",
        "200M",
        "--cron",
        "0 3 * * *",
        "--restart-delay",
        "3000",
        "--exp-backoff-restart-delay",
        "100",
        "--max-restarts",
        "5",
        "--min-uptime",
        "2s",
        "--kill-timeout",
        "3000",
        "--wait-ready",
        "--listen-timeout",
        "8s",
        "--no-autorestart",
        "--stop-exit-codes",
        "0",
        "3",
        "--merge-logs",
        "--time",
        "-o",
        "out.log",
        "-e",
        "err.log",
        "--log-type",
        "json",
    ]
    ns = parse(["start", "app.py", *flags, "--", "--port", "1"])
    raw = app_mapping(ns, script=ns.script, args=ns.app_args, cwd=str(tmp_path))
    cfg = app_from_mapping(raw, source="command line", base_dir=tmp_path)
    assert cfg.name == "api"
    assert cfg.script == str(script)
    assert cfg.args == ["--port", "1"]
    assert cfg.instances == 3
    assert cfg.cwd == str(tmp_path)
    assert cfg.watch == [str(tmp_path)]
    assert cfg.ignore_watch == ["*.log"]
    assert cfg.watch_delay == pytest.approx(0.25)
    assert cfg.max_memory_restart == 200 * 1024 * 1024
    assert cfg.cron_restart == "0 3 * * *"
    assert cfg.restart_delay == pytest.approx(3.0)
    assert cfg.exp_backoff_restart_delay == pytest.approx(0.1)
    assert cfg.max_restarts == 5
    assert cfg.min_uptime == pytest.approx(2.0)
    assert cfg.kill_timeout == pytest.approx(3.0)
    assert cfg.wait_ready is True
    assert cfg.listen_timeout == pytest.approx(8.0)
    assert cfg.autorestart is False
    assert cfg.stop_exit_codes == [0, 3]
    assert cfg.merge_logs is True
    assert cfg.log_date_format
    assert cfg.out_file == str(tmp_path / "out.log")
    assert cfg.error_file == str(tmp_path / "err.log")
    assert cfg.log_type == "json"


def test_mapping_max_instances(tmp_path: Path) -> None:
    from corral.config.schema import app_from_mapping

    (tmp_path / "app.py").write_text("")
    for value, expected in (
        ("max", os.cpu_count() or 1),
        ("-1", max(1, (os.cpu_count() or 1) - 1)),
    ):
        ns = parse(["start", "app.py", "-i", value])
        raw = app_mapping(ns, script=ns.script, args=[], cwd=str(tmp_path))
        assert app_from_mapping(raw, source="command line", base_dir=tmp_path).instances == expected


@pytest.mark.parametrize(
    ("raw", "value"),
    [("3000", 3000), ("-1", -1), ("--5", "--5"), ("²", "²"), ("1.5", "1.5"), ("5s", "5s")],
)
def test_numbers_become_ints_only_when_plain(raw: str, value: Any) -> None:
    assert cli_parser._number(raw) == value
