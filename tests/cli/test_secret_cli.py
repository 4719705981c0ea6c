"""`corral secret set|ls|rm|rotate-key`: parsing, reading the value, and refusing it in argv.

Everything here stops before the daemon (the home is never even created); the real
round trip through a daemon is in tests/e2e/test_secrets.py.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest

from corral.cli import render
from corral.cli.commands import SECRET_MAX_BYTES, CliError, read_secret_value
from corral.cli.main import main
from corral.cli.parser import SECRET_KEY_ENV, filtered_env, parse

VALUE = "hunter2-must-never-be-echoed"


class Tty(io.BytesIO):
    def isatty(self) -> bool:
        return True


def asker(*answers: str | BaseException) -> Any:
    queue = list(answers)
    prompts: list[str] = []

    def ask(prompt: str) -> str:
        prompts.append(prompt)
        answer = queue.pop(0)
        if isinstance(answer, BaseException):
            raise answer
        return answer

    ask.prompts = prompts  # type: ignore[attr-defined]
    return ask


def never_asked(prompt: str) -> str:
    raise AssertionError("no prompt when stdin is not a terminal")


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "home"
    monkeypatch.setenv("CORRAL_HOME", str(path))
    return path


# --- Parsing ---


@pytest.mark.parametrize(
    ("argv", "verb"),
    [
        (["secret", "set", "api", "DB"], "set"),
        (["secret", "ls"], "ls"),
        (["secret", "list", "api"], "ls"),
        (["secret", "rm", "api", "DB"], "rm"),
        (["secret", "remove", "api", "DB"], "rm"),
        (["secret", "delete", "api", "DB"], "rm"),
        (["secret", "rotate-key"], "rotate-key"),
    ],
)
def test_actions_and_their_aliases(argv: list[str], verb: str) -> None:
    ns = parse(argv)
    assert (ns.verb, ns.secret_verb) == ("secret", verb)


def test_ls_takes_an_optional_app_and_json() -> None:
    ns = parse(["secret", "ls", "api", "--json"])
    assert (ns.app, ns.json) == ("api", True)
    ns = parse(["secret", "ls"])
    assert (ns.app, ns.json) == (None, False)


@pytest.mark.parametrize(
    "argv",
    [
        ["secret", "set", "api", "DB", VALUE],
        ["secret", "set", "api", "DB", "--", VALUE],
        ["secret", "set", "api", "DB", f"--value={VALUE}"],
        ["secret", "set", f"--value={VALUE}", "api", "DB"],
        ["secret", "set", "api", "DB", "-v", VALUE],
    ],
)
def test_a_value_on_the_command_line_is_refused_and_not_echoed(
    argv: list[str], home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert VALUE not in captured.err + captured.out
    assert captured.err.count("\n") == 1
    if "--" not in argv:
        assert "never taken from the command line" in captured.err
        assert "ps" in captured.err and "history" in captured.err
    assert not home.exists()  # refused before reaching (or starting) a daemon


def test_name_equals_value_is_refused_and_not_echoed(
    home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["secret", "set", "api", f"DB={VALUE}"]) == 2
    err = capsys.readouterr().err
    assert VALUE not in err and "never taken from the command line" in err
    assert not home.exists()


@pytest.mark.parametrize("name", ["1DB", "DB-PASS", "DB PASS", "x" * 129])
def test_a_bad_name_is_refused_locally(
    name: str, home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["secret", "set", "api", name]) == 2
    err = capsys.readouterr().err
    assert "NAME must be an environment variable name" in err and name not in err
    assert main(["secret", "rm", "api", name]) == 2
    assert not home.exists()


def test_a_bad_app_is_refused_locally(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["secret", "set", "a b", "DB"]) == 2
    assert "not an app name" in capsys.readouterr().err
    assert not home.exists()


def test_other_actions_refuse_extra_words_without_echoing_them(
    home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["secret", "rm", "api", "DB", VALUE]) == 2
    err = capsys.readouterr().err
    assert VALUE not in err and "unexpected arguments" in err
    assert main(["secret", "rotate-key", "--now"]) == 2
    assert "unexpected arguments" in capsys.readouterr().err


def test_help_lists_the_verb_and_explains_it(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    assert "secret" in capsys.readouterr().out
    assert main(["secret", "--help"]) == 0
    out = capsys.readouterr().out
    for word in ("set", "ls", "rm", "rotate-key", "secrets:"):
        assert word in out
    assert main(["secret", "set", "--help"]) == 0
    out = capsys.readouterr().out
    assert "hidden prompt" in out and "stdin" in out and "Never on the command line" in out


# --- Reading the value ---


@pytest.mark.parametrize(
    ("data", "value"),
    [
        (b"s3cret\n", "s3cret"),
        (b"s3cret", "s3cret"),
        (b"s3cret\r\n", "s3cret"),
        (b"two\nlines\n\n", "two\nlines\n"),
        (b" spaces kept \n", " spaces kept "),
        ("héllo\n".encode(), "héllo"),
    ],
)
def test_stdin_minus_one_trailing_newline(data: bytes, value: str) -> None:
    assert read_secret_value(io.BytesIO(data), never_asked, "DB of api") == value


def test_a_value_of_the_maximum_size_is_taken() -> None:
    data = b"x" * SECRET_MAX_BYTES + b"\n"
    assert len(read_secret_value(io.BytesIO(data), never_asked, "X")) == SECRET_MAX_BYTES


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        (b"", "empty value"),
        (b"\n", "empty value"),
        (b"hunter2\0x", "NUL"),
        (b"hunter2\xff", "not UTF-8"),
        (b"x" * (SECRET_MAX_BYTES + 1), "longer than"),
        (b"x" * (SECRET_MAX_BYTES * 3), "longer than"),
    ],
)
def test_bad_stdin_values(data: bytes, fragment: str) -> None:
    with pytest.raises(CliError) as info:
        read_secret_value(io.BytesIO(data), never_asked, "X")
    assert fragment in info.value.message and "hunter2" not in info.value.message


def test_a_terminal_asks_twice_without_echo() -> None:
    ask = asker(VALUE, VALUE)
    assert read_secret_value(Tty(b"unused"), ask, "DB of api") == VALUE
    assert ask.prompts == ["value of DB of api (not shown): ", "the same again: "]


@pytest.mark.parametrize(
    ("answers", "fragment"),
    [
        ((VALUE, VALUE + "x"), "differ"),
        (("", ""), "empty value"),
        ((EOFError(),), "no value given"),
    ],
)
def test_a_terminal_mistake_saves_nothing(answers: tuple[Any, ...], fragment: str) -> None:
    with pytest.raises(CliError) as info:
        read_secret_value(Tty(b""), asker(*answers), "DB of api")
    assert fragment in info.value.message and VALUE not in info.value.message


def test_the_limits_are_the_store_s() -> None:
    from corral.secrets.keys import ENV_KEY
    from corral.secrets.store import MAX_VALUE_BYTES

    assert SECRET_MAX_BYTES == MAX_VALUE_BYTES
    assert SECRET_KEY_ENV == ENV_KEY


def test_the_master_key_is_never_sent_as_cli_environment() -> None:
    environ = {"PATH": "/bin", "CORRAL_SECRET_KEY": "k", "CORRAL_SECRET_KEY_FILE": "/k"}
    assert "CORRAL_SECRET_KEY" not in (filtered_env(environ, None) or {})
    assert "CORRAL_SECRET_KEY" not in (filtered_env(environ, ["X"]) or {})
    assert (filtered_env(environ, None) or {})["PATH"] == "/bin"


# --- Rendering ---


def test_secret_table_shows_names_apps_and_times() -> None:
    style = render.Style(tty=False, color=False)
    text = render.secret_table(
        [
            {"app": "web", "name": "TOKEN", "set_at": 1_700_000_000.0},
            {"app": "api", "name": "DB", "set_at": 1_700_000_100.0},
        ],
        style,
    )
    lines = text.splitlines()
    assert lines[0].split() == ["name", "app", "set", "at"]
    assert lines[1].split()[:2] == ["DB", "api"] and lines[2].split()[:2] == ["TOKEN", "web"]


def test_describe_shows_secret_names_and_what_is_missing() -> None:
    style = render.Style(tty=False, color=False)
    text = render.describe_app(
        {
            "id": 0,
            "name": "api",
            "config": {},
            "instances": [],
            "secrets": [{"name": "DB", "set_at": 1_700_000_000.0}, {"name": "X", "set_at": None}],
        },
        style,
    )
    (line,) = [line for line in text.splitlines() if line.strip().startswith("secrets")]
    assert "DB (set " in line and "X (not set)" in line
