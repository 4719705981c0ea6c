"""Hub hardening: the Host allow-list (DNS rebinding), the handshake throttle per client
address, the WebSocket message size limit in the served hub, the action time-out sweep,
refusing to remove a connected server, password change and the audit-log page."""

from __future__ import annotations

from pathlib import Path

import pytest
from starlette.testclient import TestClient, WebSocketDenialResponse

from corral.hub.cli import _config, _parser
from corral.hub.config import HubConfig
from tests.hub.support import make_hub


def test_host_allow_list(tmp_path: Path) -> None:
    defaults = HubConfig(home=tmp_path, public_origin="https://hub.example.com:8443").hosts()
    assert {"127.0.0.1", "localhost", "[::1]", "hub.example.com"} <= set(defaults)
    assert "evil.example" not in defaults
    app, _ = make_hub(tmp_path, allowed_hosts=("hub.example.com",))
    with TestClient(app, base_url="http://hub.example.com") as client:
        assert client.get("/login").status_code == 200
    for origin in ("http://evil.example", "http://testserver"):
        with TestClient(app, base_url=origin) as client:
            response = client.get("/login")
            assert response.status_code == 400 and "Invalid host" in response.text
            with pytest.raises(WebSocketDenialResponse) as denied:
                client.websocket_connect("/agent/v1").__enter__()
            assert denied.value.status_code == 400
    # The command line: repeatable --allowed-host, else the defaults above.
    ns = _parser().parse_args(["--allowed-host", "a.example", "--allowed-host", "b.example"])
    assert _config(ns).hosts() == ["a.example", "b.example"]
    assert "localhost" in _config(_parser().parse_args(["serve"])).hosts()
