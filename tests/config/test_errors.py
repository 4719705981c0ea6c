from __future__ import annotations

import pickle

import pytest

from corral.config.errors import ConfigError, UnknownKeyError, did_you_mean, short_repr


def test_str_is_one_line_with_source_app_and_key() -> None:
    err = ConfigError(
        "corral.yaml", "expected an integer >= 0, got 'abc'", app="api", key="max_restarts"
    )
    assert str(err) == (
        "corral.yaml: app 'api': key 'max_restarts': expected an integer >= 0, got 'abc'"
    )
    assert (err.source, err.app, err.key) == ("corral.yaml", "api", "max_restarts")


def test_str_with_an_index_and_without_key() -> None:
    assert str(ConfigError("x.json", "boom", app="apps[2]")) == "x.json: apps[2]: boom"
    assert str(ConfigError("command line", "boom")) == "command line: boom"


def test_unknown_key_names_the_key_in_its_message() -> None:
    err = UnknownKeyError("corral.yaml", "unknown key 'x' (did you mean 'y'?)", app="api", key="x")
    assert str(err) == "corral.yaml: app 'api': unknown key 'x' (did you mean 'y'?)"
    assert err.key == "x"


def test_pickles() -> None:
    err = UnknownKeyError("f", "unknown key 'x'", app="a", key="x")
    copy = pickle.loads(pickle.dumps(err))
    assert type(copy) is UnknownKeyError
    assert str(copy) == str(err)
    assert copy.key == "x"


@pytest.mark.parametrize(
    ("word", "best"),
    [
        ("max_restart", "max_restarts"),
        ("maxRestarts", "max_restarts"),
        ("max-restarts", "max_restarts"),
        ("autorestrat", "autorestart"),
        ("zzzz", None),
    ],
)
def test_did_you_mean(word: str, best: str | None) -> None:
    candidates = ["max_restarts", "autorestart", "min_uptime", "restart_delay"]
    assert did_you_mean(word, candidates) == best


def test_short_repr_truncates_and_stays_on_one_line() -> None:
    text = short_repr("a\n" * 100)
    assert "\n" not in text
    assert len(text) <= 60
    assert text.endswith("...")
