"""What the daemon's start-up (which a cold `corral start` waits for) does and does not
do: its collector is off during the imports, then on for good with what start-up built
frozen out of its sight; psutil is not imported until the first sampling pass."""

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


def _probe(code: str, tmp_path: Path) -> str:
    """What `code` prints in a fresh interpreter."""
    probe = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, "CORRAL_HOME": str(tmp_path / "home")},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return probe.stdout.strip()


def test_importing_the_daemon_module_does_not_turn_the_collector_off(tmp_path: Path) -> None:
    """Only `python -m corral.core.daemon` starts with the collector off."""
    assert _probe("import gc, corral.core.daemon; print(gc.isenabled())", tmp_path) == "True"


def test_the_daemon_module_does_not_import_psutil(tmp_path: Path) -> None:
    code = "import sys, corral.core.daemon; print('psutil' in sys.modules)"
    assert _probe(code, tmp_path) == "False"


def test_host_figures_load_psutil_on_first_use(tmp_path: Path) -> None:
    code = (
        "import sys\n"
        "from corral.core.sampler import TreeSampler\n"
        "before = 'psutil' in sys.modules\n"
        "sample = TreeSampler().host_sample()\n"
        "print(before, 'psutil' in sys.modules, sample.mem_total > 0, sample.cpu_count > 0)"
    )
    assert _probe(code, tmp_path) == "False True True True"
