"""The `git:` key of an app (SPEC 4): validated when the config is read, script and cwd
relative to the release and not looked up then."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from corral.config.errors import ConfigError
from corral.config.loader import load_file
from corral.config.schema import app_from_dict, app_from_mapping

REPO = "https://git.example.com/team/api.git"


def build(tmp_path: Path, **raw: Any) -> Any:
    raw.setdefault("name", "api")
    raw.setdefault("script", "app.py")
    raw.setdefault("git", {"repo": REPO})
    return app_from_mapping(raw, source="corral.yaml", base_dir=tmp_path, index=0)


def test_a_git_app_keeps_script_and_cwd_relative_to_the_release(tmp_path: Path) -> None:
    # Neither app.py nor src/ exists: they come with the first release.
    cfg = build(
        tmp_path,
        cwd="src/./",
        git={
            "repo": REPO,
            "branch": "release/v2",
            "keep": 3,
            "install": False,
            "steps": [["python", "manage.py", "collectstatic"]],
            "timeout": "90s",
        },
    )
    assert cfg.script == "app.py"
    assert cfg.cwd == "src"
    assert cfg.interpreter is None  # chosen at launch: the release's venv if it has one
    assert cfg.git == {
        "repo": REPO,
        "branch": "release/v2",
        "keep": 3,
        "install": False,
        "steps": [["python", "manage.py", "collectstatic"]],
        "timeout": 90.0,
    }
    again = app_from_dict(cfg.to_dict())  # what the daemon and the state file read
    assert again == cfg


def test_defaults_and_a_command_line_script(tmp_path: Path) -> None:
    cfg = build(tmp_path, script="bin/serve --port 8000", cwd=".")
    assert (cfg.script, cfg.args, cfg.cwd) == ("bin/serve", ["--port", "8000"], None)
    assert cfg.git == {
        "repo": REPO,
        "branch": "main",
        "keep": 5,
        "install": True,
        "steps": [],
        "timeout": 600.0,
    }


@pytest.mark.parametrize(
    ("git", "key", "words"),
    [
        ({"repo": REPO, "branch": "-x"}, "git.branch", "'-'"),
        ({"repo": REPO, "branch": "--upload-pack=touch /tmp/x"}, "git.branch", "'-'"),
        ({"repo": REPO, "branch": "a..b"}, "git.branch", ".."),
        ({"repo": "ext::sh -c touch% /tmp/pwned"}, "git.repo", ""),
        ({"repo": "file:///srv/git/api.git"}, "git.repo", ""),
        ({"repo": "https://git.example.com/team/my api.git"}, "git.repo", ""),
        ({"repo": REPO, "keep": 0}, "git.keep", "1 to 100"),
        ({"repo": REPO, "steps": ["make build"]}, "git.steps[0]", "argv list"),
        ({"repo": REPO, "timeout": "3d"}, "git.timeout", ""),
        ({"repo": REPO, "brnach": "main"}, "git.brnach", "unknown key"),
        ({"branch": "main"}, "git.repo", "required"),
        ("https://git.example.com/x.git", "git", "expected a mapping"),
    ],
)
def test_bad_git_sources_are_refused_naming_the_key(
    tmp_path: Path, git: Any, key: str, words: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        build(tmp_path, git=git)
    assert caught.value.key == key
    message = str(caught.value)
    assert message.startswith(f"corral.yaml: app 'api': key '{key}': ")
    assert words in message


@pytest.mark.parametrize(
    ("raw", "key", "words"),
    [
        ({"cwd": "/srv/api"}, "cwd", "relative to the release"),
        ({"cwd": "../other"}, "cwd", "leads out of the release"),
        ({"script": "../../bin/evil.py"}, "script", "leads out of the release"),
        ({"script": "."}, "script", "the release's folder"),
        ({"name": "web:1"}, "name", "cannot have deploys"),
    ],
)
def test_paths_must_stay_inside_the_release(
    tmp_path: Path, raw: dict[str, Any], key: str, words: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        build(tmp_path, **raw)
    assert caught.value.key == key
    assert words in str(caught.value)


def test_a_config_file_with_a_bad_branch_names_file_app_and_key(tmp_path: Path) -> None:
    path = tmp_path / "corral.yaml"
    path.write_text(
        "apps:\n"
        "  - name: api\n"
        "    script: app.py\n"
        "    git:\n"
        f"      repo: {REPO}\n"
        "      branch: '--upload-pack=touch /tmp/pwned'\n"
    )
    with pytest.raises(ConfigError) as caught:
        load_file(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: app 'api': key 'git.branch': ")


def test_an_app_without_git_is_unchanged(tmp_path: Path) -> None:
    (tmp_path / "app.py").write_text("")
    cfg = app_from_mapping(
        {"name": "api", "script": "app.py"}, source="x", base_dir=tmp_path, index=None
    )
    assert cfg.git is None and cfg.script == str(tmp_path / "app.py")
    with pytest.raises(ConfigError, match="no such file"):
        app_from_mapping({"name": "api", "script": "gone.py"}, source="x", base_dir=tmp_path)
