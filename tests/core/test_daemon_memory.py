"""The daemon's collector: off during its start-up imports, then on for good, with what
start-up built frozen out of its sight (corral.core.daemon)."""

from __future__ import annotations

import gc
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from corral.core import daemon


@pytest.fixture
def collector() -> Iterator[None]:
    """Whatever a test does to the collector of this (pytest) process is undone."""
    was_enabled = gc.isenabled()
    try:
        yield
    finally:
        gc.unfreeze()
        if was_enabled:
            gc.enable()


def test_after_start_up_the_collector_runs_again(collector: None) -> None:
    gc.disable()
    gc.unfreeze()
    daemon._settle_memory()
    assert gc.isenabled()
    assert gc.get_freeze_count() > 0


def test_a_daemon_run_in_process_leaves_the_collector_alone(collector: None) -> None:
    gc.unfreeze()
    gc.enable()
    daemon._settle_memory()
    assert gc.isenabled()
    assert gc.get_freeze_count() == 0


def test_importing_the_daemon_module_does_not_turn_the_collector_off(tmp_path: Path) -> None:
    """Only `python -m corral.core.daemon` starts with the collector off."""
    probe = subprocess.run(
        [sys.executable, "-c", "import gc, corral.core.daemon; print(gc.isenabled())"],
        env={**os.environ, "CORRAL_HOME": str(tmp_path / "home")},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert probe.stdout.strip() == "True"
