"""`configure` end to end: a real daemon, a real app. The stored config changes, the
running process is left alone, and the next start (`corral restart`) sees the new variable.
"""

from __future__ import annotations

import sys

import pytest

from corral.protocol.wire import ErrorCode, ProtocolError

from ..conftest import Corral, read_text, wait_for

READER = """\
import os, sys, time
out = sys.argv[1]
with open(out + ".tmp", "w") as f:
    f.write(os.environ.get("GREETING", "unset"))
os.replace(out + ".tmp", out)
time.sleep(600)
"""


@pytest.mark.slow
def test_configure_restarts_nothing_and_the_next_start_sees_the_new_variable(
    corral: Corral,
) -> None:
    script = corral.write("reader.py", READER)
    seen = corral.workdir / "api.seen"
    config = corral.write(
        "corral.yaml",
        "apps:\n"
        "  - name: api\n"
        f"    script: {script}\n"
        f"    interpreter: {sys.executable}\n"
        f"    args: [{seen}]\n"
        "    env: {GREETING: hello}\n",
    )
    corral.ok("start", str(config))
    wait_for(lambda: read_text(seen) == "hello", timeout=30)
    pid = corral.proc("api")["pid"]
    assert isinstance(pid, int)

    stored = corral.call("describe", target="api")[0]["config"]
    stored["env"] = {"GREETING": "bonjour", "ADDED": "1"}
    seen.unlink()
    records = corral.call("configure", apps=[stored])
    assert [(r["name"], r["pid"]) for r in records] == [("api", pid)]
    assert corral.call("describe", target="api")[0]["config"]["env"]["GREETING"] == "bonjour"
    # The running process was not touched: same pid, still online, nothing relaunched.
    after = corral.proc("api")
    assert after["pid"] == pid and after["status"] == "online"
    assert not seen.exists()

    with pytest.raises(ProtocolError) as refused:
        corral.call("configure", apps=[dict(stored, name="ghost")])
    assert refused.value.code is ErrorCode.UNKNOWN_TARGET and "'ghost'" in refused.value.message

    corral.ok("restart", "api")
    wait_for(lambda: read_text(seen) == "bonjour", timeout=30)
    assert corral.proc("api")["pid"] != pid
