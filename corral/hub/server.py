"""Serving the hub: the panel's uvicorn set-up and TLS check, by import.

They are typed for PanelConfig but read only host, port, cert_file and key_file, which
HubConfig has with the same meaning (a shared Protocol there would drop the cast).
"""

from __future__ import annotations

from typing import cast

from corral.hub.config import HubConfig
from corral.panel import server as panel_server
from corral.panel.config import PanelConfig
from corral.panel.server import ServeError
from corral.protocol.hub.frames import MAX_FRAME_CHARS

__all__ = ["ServeError", "check_tls", "serve"]


def check_tls(config: HubConfig) -> None:
    panel_server.check_tls(cast(PanelConfig, config))


def serve(config: HubConfig, app: object) -> None:
    # No protocol frame is longer: a bigger message is refused by uvicorn unread (1009).
    panel_server.serve(cast(PanelConfig, config), app, ws_max_size=MAX_FRAME_CHARS)
