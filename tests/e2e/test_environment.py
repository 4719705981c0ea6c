"""The child's environment is computed by the daemon and handed to execve (SPEC 1.5)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import psutil
import pytest

from ..conftest import Corral, read_text, wait_for
from ..support.tls import https_server, make_pki

PY_FETCH = """
import os, sys, urllib.request
try:
    body = urllib.request.urlopen("https://localhost:%d/", timeout=10).read().decode()
    print("RESULT ok", body, flush=True)
except Exception as exc:
    print("RESULT fail", exc, flush=True)
import time; time.sleep(600)
"""

NODE_FETCH = """
const https = require("https");
https.get("https://localhost:%d/", (res) => {
  let body = "";
  res.on("data", (d) => (body += d));
  res.on("end", () => console.log("RESULT ok " + body));
}).on("error", (e) => console.log("RESULT fail " + e.message));
setInterval(() => {}, 1000);
"""


def result_line(corral: Corral, name: str) -> str:
    out = corral.proc(name)["out_log"]
    text = wait_for(lambda: "RESULT" in read_text(out) and read_text(out), timeout=30)
    return next(line for line in text.splitlines() if line.startswith("RESULT"))


def daemon_environ(corral: Corral) -> dict[str, str]:
    pid = corral.daemon_pid()
    assert pid is not None
    return psutil.Process(pid).environ()


@pytest.mark.slow
def test_ssl_cert_file_from_config_reaches_a_python_child(daemon: Corral, tmp_path: Path) -> None:
    pki = make_pki(tmp_path / "pki")
    assert "SSL_CERT_FILE" not in daemon_environ(daemon)
    with https_server(pki) as port:
        daemon.start_app("py", PY_FETCH % port, env={"SSL_CERT_FILE": str(pki.ca_cert)})
        assert result_line(daemon, "py") == "RESULT ok private-ca-ok"
        # And without it the same child fails: the test can tell the difference.
        daemon.start_app("py-no-ca", PY_FETCH % port)
        assert result_line(daemon, "py-no-ca").startswith("RESULT fail")


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
def test_node_extra_ca_certs_from_config_reaches_a_node_child(
    daemon: Corral, tmp_path: Path
) -> None:
    pki = make_pki(tmp_path / "pki")
    assert "NODE_EXTRA_CA_CERTS" not in daemon_environ(daemon)
    with https_server(pki) as port:
        script = daemon.write("fetch.js", NODE_FETCH % port)
        from corral.config.model import AppConfig

        for name, env in (("node", {"NODE_EXTRA_CA_CERTS": str(pki.ca_cert)}), ("node-no-ca", {})):
            cfg = AppConfig(
                name=name,
                script=str(script),
                interpreter="node",
                cwd=str(daemon.workdir),
                env=env,
                instances=2,
            )
            daemon.call("start", apps=[cfg.to_dict()], cli_env={"PATH": daemon.env["PATH"]})
        assert result_line(daemon, "node") == "RESULT ok private-ca-ok"
        assert result_line(daemon, "node-no-ca").startswith("RESULT fail")


DUMP_ENV = """
import json, os, time
print("ENV " + json.dumps(dict(os.environ)), flush=True)
time.sleep(600)
"""


def child_env(corral: Corral, name: str, instance: int = 0, after: int = 0) -> dict[str, str]:
    out = corral.proc(name, instance)["out_log"]

    def find() -> dict[str, str] | None:
        lines = [ln for ln in read_text(out).splitlines() if ln.startswith("ENV ")]
        return json.loads(lines[-1][4:]) if len(lines) > after else None

    return dict(wait_for(find))


@pytest.mark.slow
def test_merge_order_and_instance_variables(daemon: Corral) -> None:
    daemon.start_app(
        "envy",
        DUMP_ENV,
        cli_env={"PATH": daemon.env["PATH"], "FROM_CLI": "cli", "OVERRIDDEN": "cli"},
        env_name="production",
        env={"OVERRIDDEN": "env", "BASE_PORT": "7000", "PROFILED": "env"},
        env_profiles={"production": {"PROFILED": "production"}},
        instances=2,
        increment_var="BASE_PORT",
        port=9000,
    )
    first, second = child_env(daemon, "envy", 0), child_env(daemon, "envy", 1)
    assert first["FROM_CLI"] == "cli"
    assert first["OVERRIDDEN"] == "env"
    assert first["PROFILED"] == "production"
    assert (first["CORRAL_INSTANCE"], second["CORRAL_INSTANCE"]) == ("0", "1")
    assert (first["BASE_PORT"], second["BASE_PORT"]) == ("7000", "7001")
    assert first["PORT"] == "9000"
    assert "NODE_APP_INSTANCE" not in first  # only for Node apps
    assert "CORRAL_HOME" not in first  # nothing of the daemon's own environment leaks


@pytest.mark.slow
def test_update_env_replaces_and_removes_variables(daemon: Corral) -> None:
    daemon.start_app(
        "envy", DUMP_ENV, cli_env={"PATH": daemon.env["PATH"], "OLD": "1", "KEEP": "a"}
    )
    assert child_env(daemon, "envy")["OLD"] == "1"
    new_env = {"PATH": daemon.env["PATH"], "KEEP": "b", "NEW": "2"}
    # A plain restart keeps the stored environment.
    daemon.call("restart", target="envy", cli_env=new_env)
    env = child_env(daemon, "envy", after=1)
    assert env["OLD"] == "1" and env["KEEP"] == "a" and "NEW" not in env
    daemon.call("restart", target="envy", cli_env=new_env, update_env=True)
    env = child_env(daemon, "envy", after=2)
    assert "OLD" not in env
    assert env["KEEP"] == "b" and env["NEW"] == "2"
