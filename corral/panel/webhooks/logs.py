"""Keep the query string of webhook URLs out of uvicorn's access log.

uvicorn logs each request as `client - "METHOD path?query HTTP/x" status`, query string
included, before the panel can refuse a token sent there. This filter, on the
`uvicorn.access` logger, cuts the query off any `/hooks/` path. uvicorn's own logging
set-up (dictConfig, existing loggers kept) leaves a logger's filters in place.
"""

from __future__ import annotations

import logging

ACCESS_LOGGER = "uvicorn.access"
_PREFIX = "/hooks/"


class HookQueryRedactor(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) >= 3 and isinstance(args[2], str):
            path = args[2]
            if path.startswith(_PREFIX) and "?" in path:
                record.args = (*args[:2], path.split("?", 1)[0] + "?<redacted>", *args[3:])
        return True


def install() -> None:
    """Add the filter once (idempotent)."""
    logger = logging.getLogger(ACCESS_LOGGER)
    if not any(isinstance(f, HookQueryRedactor) for f in logger.filters):
        logger.addFilter(HookQueryRedactor())
