"""The agent's small parts: the reconnect schedule, the bounded queue, the state file and
its URL rules, the agent.* settings, and the git revision of an app's current release."""

from __future__ import annotations

import asyncio
import itertools
import json
import random
import stat
from pathlib import Path

import pytest

from corral.agent import backoff
from corral.agent.collect import git_revision
from corral.agent.pushqueue import PushQueue
from corral.agent.state import LinkError, LinkState, check_hub_url, load, new_server_id, save
from corral.core.settings import Settings
from corral.deploy.layout import DeployLayout
from corral.protocol.hub import derive_bucket_keys, make_verifier, new_public_id, new_secret
from corral.protocol.hub.proof import PasswordParams


def test_backoff_ceiling_doubles_from_one_second_to_sixty() -> None:
    assert [backoff.ceiling(n) for n in range(8)] == [1, 2, 4, 8, 16, 32, 60, 60]
    assert backoff.ceiling(10_000) == 60


def test_backoff_delay_is_full_jitter_under_the_ceiling() -> None:
    rng = random.Random(1234)
    for attempt in range(12):
        waits = [backoff.delay(attempt, rng) for _ in range(400)]
        top = backoff.ceiling(attempt)
        assert all(0 <= w <= top for w in waits)
        # Full jitter: spread over the whole range, not bunched near the ceiling.
        assert min(waits) < top * 0.1
        assert max(waits) > top * 0.9
        assert len(set(waits)) == len(waits)


def test_backoff_grows_on_average() -> None:
    rng = random.Random(99)
    means = [sum(backoff.delay(n, rng) for _ in range(2000)) / 2000 for n in range(7)]
    assert all(later > earlier for earlier, later in itertools.pairwise(means))
    assert 25 < means[6] < 35  # uniform over [0, 60]


def test_push_queue_is_bounded_and_drops_the_oldest() -> None:
    async def scenario() -> None:
        queue = PushQueue(3)
        for n in range(5):
            queue.put({"n": n})
        assert len(queue) == 3
        assert queue.dropped == 2
        sent = []
        while (item := queue.peek()) is not None:
            sent.append(item["n"])
            queue.pop()
        assert sent == [2, 3, 4]
        waiter = asyncio.create_task(queue.wait())
        await asyncio.sleep(0.01)
        assert not waiter.done()
        queue.put({"n": 5})
        await asyncio.wait_for(waiter, 5)
        queue.limit = 1  # lowered while running: applies at the next put
        queue.put({"n": 6})
        assert len(queue) == 1 and queue.dropped == 3

    asyncio.run(scenario())


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("wss://hub.example.org", "wss://hub.example.org/agent/v1"),
        ("https://hub.example.org:8766/", "wss://hub.example.org:8766/agent/v1"),
        ("wss://hub.example.org/prefix/agent/v1", "wss://hub.example.org/prefix/agent/v1"),
        ("ws://127.0.0.1:9000", "ws://127.0.0.1:9000/agent/v1"),
        ("ws://[::1]:9000", "ws://[::1]:9000/agent/v1"),
    ],
)
def test_hub_urls_accepted(given: str, expected: str) -> None:
    assert check_hub_url(given) == expected


@pytest.mark.parametrize(
    ("given", "why"),
    [
        ("ws://hub.example.org", "loopback"),
        ("ws://localhost:80", "loopback"),
        ("http://10.0.0.1", "loopback"),
        ("ftp://hub", "wss://"),
        ("wss://", "no host"),
        ("wss://user:pw@hub", "user name"),
        ("wss://hub/?x=1", "query"),
        ("wss://hub:99999", "not a valid URL"),
        ("", "wss://"),
    ],
)
def test_hub_urls_refused(given: str, why: str) -> None:
    with pytest.raises(LinkError, match=why):
        check_hub_url(given)


def test_state_file_is_0600_and_holds_keys_not_the_secret(tmp_path: Path) -> None:
    public, secret = new_public_id(), new_secret()
    keys = derive_bucket_keys(public, secret)
    state = LinkState(check_hub_url("wss://hub.example.org"), keys, new_server_id(), "/ca.pem")
    save(tmp_path, state)
    path = tmp_path / "agent.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    text = path.read_text()
    assert secret not in text
    assert secret not in repr(state)
    loaded = load(tmp_path)
    assert loaded is not None
    assert loaded.keys == keys and loaded.server_id == state.server_id
    assert loaded.ca_file == "/ca.pem"
    data = json.loads(text)
    data["hub"] = "ws://hub.example.org"
    path.write_text(json.dumps(data))
    with pytest.raises(LinkError, match="loopback"):
        load(tmp_path)


def test_agent_settings(tmp_path: Path) -> None:
    settings = Settings(tmp_path / "settings.json")
    assert settings["agent.remote_actions"] is True
    assert settings["agent.interval"] == 5
    assert settings["agent.password"] is None
    assert settings["agent.queue"] == 720
    verifier = make_verifier("correct horse", PasswordParams(b"s" * 16, 1, 8192, 1))
    assert settings.parse("agent.password", verifier.to_text()) == verifier.to_text()
    assert settings.parse("agent.password", "") is None
    with pytest.raises(ValueError) as info:
        settings.parse("agent.password", "hunter2-the-password")
    assert "hunter2" not in str(info.value)
    assert settings.parse("agent.remote_actions", "off") is False
    for bad in ("0", "3601", "x"):
        with pytest.raises(ValueError, match="seconds"):
            settings.parse("agent.interval", bad)
    with pytest.raises(ValueError, match="pushes"):
        settings.parse("agent.queue", "0")


def test_git_revision_is_the_current_releases_commit(tmp_path: Path) -> None:
    assert git_revision(tmp_path, "web") is None
    layout = DeployLayout(tmp_path, "web")
    commit = "0123456789abcdef0123456789abcdef01234567"
    release, _ = layout.new_release(commit)
    assert git_revision(tmp_path, "web") is None  # not complete, not current
    layout.finish_release(release, commit, "main", 1.0, "https://example.org/repo.git")
    layout.activate(release)
    assert git_revision(tmp_path, "web") == commit


def test_link_parser_takes_a_secret_that_starts_with_a_dash() -> None:
    from corral.cli.parser import parse

    ns = parse(["link", "0123456789abcdef", "-hSecret_-x", "--hub", "wss://h", "--ca-file=ca"])
    assert (ns.public, ns.secret, ns.hub, ns.ca_file) == (
        "0123456789abcdef",
        "-hSecret_-x",
        "wss://h",
        "ca",
    )
    assert parse(["link", "--info", "--json"]).info is True
