"""Cluster-mode keys: listen addresses and health checks are checked before any bind or probe."""

from __future__ import annotations

from pathlib import Path

import pytest

from corral.config.errors import ConfigError
from corral.config.schema import app_from_mapping


def load(tmp_path: Path, **keys: object) -> object:
    (tmp_path / "app.py").write_text("pass\n")
    return app_from_mapping(
        {"name": "web", "script": "app.py", **keys}, source="corral.yaml", base_dir=tmp_path
    )


@pytest.mark.parametrize(
    "address", ["127.0.0.1:8000", "[::1]:8000", "localhost:8000", "unix:/run/web.sock"]
)
def test_listen_addresses_accepted(tmp_path: Path, address: str) -> None:
    load(tmp_path, listen=[address])


@pytest.mark.parametrize(
    "address", ["8000", "127.0.0.1", "::1:8000", "unix:relative.sock", "h:99999"]
)
def test_bad_listen_addresses_name_the_key(tmp_path: Path, address: str) -> None:
    with pytest.raises(ConfigError) as error:
        load(tmp_path, listen=[address])
    assert "listen" in str(error.value) and "corral.yaml" in str(error.value)


@pytest.mark.parametrize(
    "url",
    ["http://10.0.0.1:80/", "tcp://192.168.1.5:22", "http://example.com:80/", "ftp://127.0.0.1:21"],
)
def test_health_checks_must_stay_on_loopback(tmp_path: Path, url: str) -> None:
    with pytest.raises(ConfigError) as error:
        load(tmp_path, health_check=url)
    assert "health_check" in str(error.value)


def test_loopback_health_checks_and_reload_keys(tmp_path: Path) -> None:
    cfg = load(
        tmp_path,
        health_check="http://127.0.0.1:8000/health",
        watchdog="10s",
        reload_parallel=2,
        reload_mode="restart",
    )
    assert cfg.watchdog == 10.0
    assert cfg.reload_parallel == 2
