"""The control protocol spoken over the daemon's unix socket (CLI, panel and daemon share it).

Framing: one JSON object per line (UTF-8, ``\\n`` terminated), at most
`MAX_MESSAGE_BYTES` per line.

Request::

    {"id": 7, "cmd": "stop", "args": {"target": "api"}}

Reply (exactly one per request, except for streaming commands)::

    {"id": 7, "ok": true, "result": ...}
    {"id": 7, "ok": false, "error": {"code": "unknown_target", "message": "..."}}

Streaming commands (``subscribe``) first reply ``ok`` and then send any number of
``{"id": 7, "event": {...}}`` lines until the client closes the connection.

The commands, their arguments and results are listed in `corral.protocol.commands`
and in docs/PROTOCOL.md.
"""

from corral.protocol.wire import (
    MAX_MESSAGE_BYTES,
    ErrorCode,
    ProtocolError,
    decode_message,
    encode_message,
    error_reply,
    ok_reply,
)

__all__ = [
    "MAX_MESSAGE_BYTES",
    "ErrorCode",
    "ProtocolError",
    "decode_message",
    "encode_message",
    "error_reply",
    "ok_reply",
]
