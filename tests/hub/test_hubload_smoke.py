"""The hub load benchmark (bench/hubload.py) on a tiny scale: a real `corral hub` process,
buckets made by its CLI, a few protocol agents. Every push must be stored; times are
reported, never asserted."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.hubload import LoadSettings, main, run_load

TINY = LoadSettings(agents=5, buckets=2, apps=3, interval=0.5, duration=1.0)
LATENCY_KEYS = {"p50", "p90", "p99", "max"}


def check_report(report: dict[str, object], settings: LoadSettings) -> None:
    pushes = settings.agents * settings.pushes_per_agent
    assert report["agents_connected"] == settings.agents
    assert report["connect_error_count"] == 0
    assert report["servers_registered"] == settings.agents
    assert report["pushes_sent"] == pushes
    assert report["pushes_stored"] == pushes
    assert report["app_samples_stored"] == report["app_samples_expected"] == pushes * settings.apps
    assert report["push_errors"] == []
    assert report["connections_closed_by_hub"] == 0
    assert report["stored_not_seen_by_poller"] == 0
    assert report["hub_alive_at_end"] is True
    assert report["hub_log_problems"] == []
    for key in ("latency_stored_ms", "latency_received_ms"):
        latency = report[key]
        assert isinstance(latency, dict) and set(latency) == LATENCY_KEYS
        assert all(isinstance(v, float) for v in latency.values())
    hub = report["hub"]
    assert isinstance(hub, dict)
    assert {"cpu_seconds", "cpu_percent", "rss_max_mib", "seconds"} <= set(hub)
    assert hub["rss_max_mib"] > 0


@pytest.mark.slow
def test_every_push_is_stored(database_url: str, tmp_path: Path) -> None:
    """On SQLite and on PostgreSQL (the hub tests' throw-away server)."""
    check_report(run_load(TINY, database_url, tmp_path), TINY)


@pytest.mark.slow
def test_command_prints_a_table_and_writes_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "hubload.json"
    argv = ["--agents", "3", "--buckets", "2", "--interval", "0.5", "--duration", "1"]
    assert main([*argv, "--db", "sqlite", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "stored p50 / p99 (ms)" in printed and "hub CPU (% of a core)" in printed
    saved = json.loads(out.read_text())
    assert saved["transport"].startswith("ws://")
    assert saved["settings"]["agents"] == 3
    check_report(
        saved["results"]["sqlite"],
        LoadSettings(agents=3, buckets=2, apps=5, interval=0.5, duration=1.0),
    )
