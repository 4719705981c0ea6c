"""Serving the panel with uvicorn (a production ASGI server), TLS when given a key pair."""

from __future__ import annotations

import ssl
from pathlib import Path

from corral.panel.config import PanelConfig


class ServeError(Exception):
    """A user mistake in how the panel is to be served (a message for the user)."""


def check_tls(config: PanelConfig) -> None:
    """Load the key pair once up front: a wrong path or mismatched key is a clear error."""
    if (config.cert_file is None) != (config.key_file is None):
        raise ServeError("--cert and --key go together: give both or neither")
    if config.cert_file is None or config.key_file is None:
        return
    for what, path in (("certificate", config.cert_file), ("key", config.key_file)):
        if not Path(path).is_file():
            raise ServeError(f"the TLS {what} file {path} does not exist")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(str(config.cert_file), str(config.key_file))
    except (ssl.SSLError, ValueError) as exc:
        raise ServeError(f"cannot use {config.cert_file} with {config.key_file}: {exc}") from None


def serve(config: PanelConfig, app: object, *, ws_max_size: int = 16 * 1024 * 1024) -> None:
    """`ws_max_size`: the largest WebSocket message read (bytes); bigger ones close the
    connection (1009) before the app sees them. Default: uvicorn's own, 16 MiB."""
    import uvicorn

    check_tls(config)
    uvicorn.run(
        app,  # type: ignore[arg-type]
        host=config.host,
        port=config.port,
        ssl_certfile=str(config.cert_file) if config.cert_file else None,
        ssl_keyfile=str(config.key_file) if config.key_file else None,
        proxy_headers=False,  # the client address is the peer's, not a header's
        server_header=False,
        date_header=True,
        log_level="info",
        ws="websockets-sansio",
        ws_max_size=ws_max_size,
        timeout_graceful_shutdown=5,
        h11_max_incomplete_event_size=64 * 1024,
    )
