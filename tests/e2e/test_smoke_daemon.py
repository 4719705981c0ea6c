from __future__ import annotations

import sys

import pytest

from corral.config.model import AppConfig

from ..conftest import Corral, read_text, wait_for


@pytest.mark.slow
def test_start_list_stop_via_protocol(daemon: Corral) -> None:
    script = daemon.write("app.py", "import time\nprint('hello', flush=True)\ntime.sleep(300)\n")
    cfg = AppConfig(
        name="api", script=str(script), interpreter=sys.executable, cwd=str(daemon.workdir)
    )
    records = daemon.call("start", apps=[cfg.to_dict()], cli_env={"PATH": "/usr/bin:/bin"})
    assert records[0]["status"] == "online"
    pid = records[0]["pid"]
    assert pid
    out_log = records[0]["out_log"]
    wait_for(lambda: "hello" in read_text(out_log))
    stopped = daemon.call("stop", target="api")
    assert stopped[0]["status"] == "stopped"
