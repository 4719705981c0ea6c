"""`secrets: [NAME, ...]`: the names of the secrets an app needs (SPEC 3), never values."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from corral.config.errors import ConfigError
from corral.config.loader import load_file
from corral.config.model import SECRET_NAME_RE, AppConfig
from corral.config.schema import app_from_dict, app_from_mapping


def load(raw: dict[str, Any], base_dir: Path) -> AppConfig:
    return app_from_mapping(raw, source="corral.yaml", base_dir=base_dir, index=0)


def refused(raw: dict[str, Any], base_dir: Path) -> str:
    with pytest.raises(ConfigError) as info:
        load(raw, base_dir)
    message = str(info.value)
    assert "\n" not in message
    assert "key 'secrets'" in message
    return message


def test_default_is_no_secrets(project: Path) -> None:
    assert load({"script": "app.py"}, project).secrets == []


def test_a_list_of_names_and_a_lone_name(project: Path) -> None:
    cfg = load({"script": "app.py", "secrets": ["DB_PASSWORD", "_TOKEN2"]}, project)
    assert cfg.secrets == ["DB_PASSWORD", "_TOKEN2"]
    assert load({"script": "app.py", "secrets": "API_KEY"}, project).secrets == ["API_KEY"]


def test_round_trip_through_the_canonical_form(project: Path) -> None:
    cfg = load({"script": "app.py", "secrets": ["B", "A"]}, project)
    assert cfg.to_dict()["secrets"] == ["B", "A"]
    assert app_from_dict(cfg.to_dict()) == cfg


@pytest.mark.parametrize(
    "bad",
    ["1ABC", "A-B", "", "A B", "A\n", "x" * 129, 3, None, ["OK", 4]],
)
def test_bad_names_are_refused(project: Path, bad: object) -> None:
    raw = {"script": "app.py", "secrets": bad if isinstance(bad, list) else [bad]}
    assert "secret name" in refused(raw, project)


def test_a_name_of_128_characters_is_fine(project: Path) -> None:
    name = "S" * 128
    assert load({"script": "app.py", "secrets": [name]}, project).secrets == [name]


def test_a_name_listed_twice_is_refused(project: Path) -> None:
    assert "listed twice" in refused({"script": "app.py", "secrets": ["A", "A"]}, project)


def test_a_value_written_by_mistake_is_refused_without_echoing_it(project: Path) -> None:
    value = "hunter2-do-not-echo"
    message = refused({"script": "app.py", "secrets": {"DB_PASSWORD": value}}, project)
    assert "corral secret set" in message and value not in message
    message = refused({"script": "app.py", "secrets": [f"DB_PASSWORD={value}"]}, project)
    assert value not in message and "entry 0" in message


def test_not_a_list(project: Path) -> None:
    assert "list of them" in refused({"script": "app.py", "secrets": 12}, project)


def test_the_same_names_as_the_secrets_store() -> None:
    from corral.secrets.store import NAME_RE

    for name in ["A", "_", "a_1", "Z" * 128, "Z" * 129, "1A", "A-B", "A\n", "", "É"]:
        ours = SECRET_NAME_RE.match(name) is not None
        theirs = NAME_RE.fullmatch(name) is not None
        assert ours == theirs, name


@pytest.mark.parametrize(
    ("filename", "text"),
    [
        ("corral.yaml", "apps:\n  - script: app.py\n    secrets: [DB_PASSWORD, API_KEY]\n"),
        ("corral.toml", '[[apps]]\nscript = "app.py"\nsecrets = ["DB_PASSWORD", "API_KEY"]\n'),
        (
            "corral.json",
            '{"apps": [{"script": "app.py", "secrets": ["DB_PASSWORD", "API_KEY"]}]}',
        ),
        (
            "ecosystem.config.json",
            '{"apps": [{"script": "app.py", "secrets": ["DB_PASSWORD", "API_KEY"]}]}',
        ),
    ],
)
def test_every_config_format_takes_the_list(project: Path, filename: str, text: str) -> None:
    path = project / filename
    path.write_text(text)
    (app,) = load_file(path)
    assert app.secrets == ["DB_PASSWORD", "API_KEY"]
