"""The checks on repository URLs, branches and refs, and the `git:` mapping."""

from __future__ import annotations

import subprocess

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from corral.deploy.source import (
    GitSource,
    SourceError,
    check_branch,
    check_ref,
    check_repo_url,
    redact,
    source_from_mapping,
)
from tests.support.gitrepos import git_env

GOOD_URLS = [
    "https://git.example.com/team/api.git",
    "https://user:token@git.example.com:8443/team/api.git",
    "https://[fd00:1:2:3:4:5:6:7]:8443/api.git",
    "ssh://git@host:22/team/api.git",
    "ssh://host/api.git",
    "git@github.com:team/api.git",
    "deploy@10.0.0.2:repos/api",
]


@pytest.mark.parametrize("url", GOOD_URLS)
def test_good_urls_are_accepted(url: str) -> None:
    assert check_repo_url(url) == url


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("ext::sh -c touch% /tmp/pwned", "spaces or control characters"),
        ("ext::sh", "transport helpers like 'ext::'"),
        ("fd::3", "transport helpers like 'ext::'"),
        ("https::example.com/x", "transport helpers"),
        ("file:///srv/repo.git", "file:// (a repository on this server)"),
        ("http://git.example.com/api.git", "plain http:// is not allowed"),
        ("git://git.example.com/api.git", "the scheme git:// is not allowed"),
        ("ftp://git.example.com/api.git", "the scheme ftp:// is not allowed"),
        ("/srv/repo.git", "a local path is not allowed"),
        ("./repo", "a local path is not allowed"),
        ("~/repo", "a local path is not allowed"),
        ("repo.git", "not a repository URL"),
        ("https://git.example.com/a b.git", "spaces or control characters"),
        ("https://git.example.com/a\tb", "spaces or control characters"),
        ("https://git.example.com/a\nb", "spaces or control characters"),
        ("-uhttps://x/y", "must not start with '-'"),
        ("--upload-pack=touch", "must not start with '-'"),
        ("ssh://-oProxyCommand=touch/x", "the host must not start with '-'"),
        ("git@-oProxyCommand=x:repo", "the host must not start with '-'"),
        ("-oProxyCommand=x@host:repo", "must not start with '-'"),
        ("ssh://-l@host/x", "the user name must not start with '-'"),
        ("https:///path.git", "the host must not be empty"),
        ("https://host", "the repository path must not be empty"),
        ("https://host/", "the repository path must not be empty"),
        ("git@host:", "the path after ':' must not be empty"),
        ("git@host:-x", "the path must not start with '-'"),
        ("ssh://u:pw@host/x", "must not carry a password"),
        ("https://host/x?upload-pack=y", "query"),
        ("https://host:99999/x", "port"),
        ("", "must not be empty"),
        ("https://h/" + "a" * 2048, "at most 2048 characters"),
    ],
)
def test_bad_urls_are_refused_with_their_own_message(url: str, message: str) -> None:
    with pytest.raises(SourceError) as caught:
        check_repo_url(url)
    assert caught.value.key == "repo"
    assert message in str(caught.value)
    assert str(caught.value).startswith("git.repo: ")


@given(st.text(min_size=1, max_size=80))
@settings(max_examples=300, deadline=None)
def test_any_accepted_url_has_an_allowed_form(url: str) -> None:
    try:
        check_repo_url(url)
    except SourceError:
        return
    assert not url.startswith("-") and "::" not in url
    assert not any(ch.isspace() or ord(ch) < 32 for ch in url)
    assert url.startswith(("https://", "ssh://")) or ("@" in url and ":" in url)


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("-x", "must not start with '-'"),
        ("--upload-pack=touch /tmp/x", "must not start with '-'"),
        ("--upload-pack=x", "must not start with '-'"),
        ("a..b", "must not contain '..'"),
        ("a@{1}", "must not contain '@{'"),
        ("@", "must not be '@'"),
        ("HEAD", "must not be 'HEAD'"),
        ("main.lock", "may end with '.lock'"),
        ("feature/x.lock/y", "may end with '.lock'"),
        (".hidden", "may start with '.'"),
        ("a/.b", "may start with '.'"),
        ("a b", "must not contain space"),
        ("a~1", "must not contain '~'"),
        ("a^", "must not contain '^'"),
        ("a:b", "must not contain ':'"),
        ("a?", "must not contain '?'"),
        ("a*", "must not contain '*'"),
        ("a[", "must not contain '['"),
        ("a\\b", "must not contain '\\\\'"),
        ("a\x01", "control characters"),
        ("/a", "must not start or end with '/'"),
        ("a/", "must not start or end with '/'"),
        ("a//b", "'//'"),
        ("a.", "must not end with '.'"),
        ("", "must not be empty"),
    ],
)
def test_bad_branches_are_refused(name: str, message: str) -> None:
    with pytest.raises(SourceError) as caught:
        check_branch(name)
    assert caught.value.key == "branch"
    assert message in str(caught.value)


@pytest.mark.parametrize("name", ["main", "release/1.2", "feature/x-y_z", "v1.0.0", "a@b", "ü"])
def test_good_branches(name: str) -> None:
    assert check_branch(name) == name


def _git_accepts(name: str) -> bool:
    done = subprocess.run(
        ["git", "check-ref-format", "--branch", name], env=git_env(), capture_output=True
    )
    return done.returncode == 0


@given(
    st.text(
        alphabet=st.sampled_from(list("ab-./@{}~^:?*[\\ \x7f.lockHED")), min_size=1, max_size=12
    )
)
@settings(max_examples=400, deadline=None)
def test_branches_we_accept_git_accepts_too(name: str) -> None:
    """Never laxer than `git check-ref-format --branch`; a leading '-' always refused."""
    try:
        check_branch(name)
    except SourceError:
        return
    assert not name.startswith("-")
    assert _git_accepts(name), name


def test_refs_accept_commit_ids_and_tags() -> None:
    assert check_ref("1a2b3c4") == "1a2b3c4"
    assert check_ref("a" * 40) == "a" * 40
    assert check_ref("v1.2.3") == "v1.2.3"
    with pytest.raises(SourceError, match=r"git\.ref: must not start with '-'"):
        check_ref("--output=/tmp/x")


def test_redact_hides_credentials_anywhere() -> None:
    assert redact("https://user:tok3n@host/x.git") == "https://***@host/x.git"
    assert redact("https://tok3n@host/x.git") == "https://***@host/x.git"
    text = "fatal: unable to access 'https://u:s3cret@h:1/x/': error"
    assert "s3cret" not in redact(text) and "https://***@h:1/x/" in redact(text)
    assert redact("ssh://git@host/x.git") == "ssh://git@host/x.git"
    assert redact("git@host:x.git") == "git@host:x.git"


def test_source_from_mapping_defaults_and_round_trip() -> None:
    source = source_from_mapping({"repo": "git@host:team/api.git"})
    assert source == GitSource(repo="git@host:team/api.git")
    full = source_from_mapping(
        {
            "repo": "https://h/x.git",
            "branch": "prod",
            "keep": 3,
            "install": False,
            "steps": [["python", "manage.py", "migrate"]],
            "timeout": "90s",
        }
    )
    assert full.timeout == 90.0 and full.steps == (("python", "manage.py", "migrate"),)
    assert source_from_mapping(full.to_dict()) == full
    assert full.to_dict()["steps"] == [["python", "manage.py", "migrate"]]


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"repo": "https://h/x", "brnach": "x"}, "git.brnach: unknown key"),
        ({}, "git.repo: is required"),
        ({"repo": 3}, "git.repo: expected a string"),
        ({"repo": "https://h/x", "branch": "-x"}, "git.branch: must not start with '-'"),
        ({"repo": "https://h/x", "keep": 0}, "git.keep: expected a whole number from 1 to 100"),
        ({"repo": "https://h/x", "keep": 101}, "git.keep"),
        ({"repo": "https://h/x", "keep": True}, "git.keep"),
        ({"repo": "https://h/x", "install": "yes"}, "git.install: expected true or false"),
        ({"repo": "https://h/x", "steps": "make"}, "git.steps: expected a list"),
        ({"repo": "https://h/x", "steps": ["make all"]}, "git.steps[0]: expected an argv list"),
        ({"repo": "https://h/x", "steps": [[]]}, "git.steps[0]: expected a non-empty list"),
        ({"repo": "https://h/x", "steps": [["a"], ["b", 1]]}, "git.steps[1]: every argument"),
        ({"repo": "https://h/x", "timeout": "0s"}, "git.timeout: must be between 1s and 24h"),
        ({"repo": "https://h/x", "timeout": "25h"}, "git.timeout: must be between 1s and 24h"),
        ({"repo": "https://h/x", "timeout": "soon"}, "git.timeout: expected a duration"),
        ({"repo": "file:///x"}, "git.repo: file://"),
    ],
)
def test_bad_mappings_name_the_key(raw: dict[str, object], message: str) -> None:
    with pytest.raises(SourceError) as caught:
        source_from_mapping(raw)
    assert message in str(caught.value)
