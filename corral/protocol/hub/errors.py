"""What the hub protocol raises: every refusal is a `HubProtocolError` with a reason."""

from __future__ import annotations

from enum import StrEnum


class HubProtocolError(Exception):
    """Something a peer sent (or we were asked to send) breaks the hub protocol.

    Never carries key material, secrets or passwords in its message.
    """


class RejectReason(StrEnum):
    MALFORMED = "malformed"
    """Not a canonical frame envelope (bad JSON, a missing or extra key, bad base64)."""
    TOO_LARGE = "too_large"
    VERSION = "version"
    """A protocol version this side does not speak."""
    UNKNOWN_TYPE = "unknown_type"
    """A message type that may not travel in this direction."""
    REFLECTED = "reflected"
    """A frame this side sent itself, sent back to it."""
    WRONG_KEY = "wrong_key"
    """Sealed under another key: another bucket, or another connection of this one."""
    REPLAYED = "replayed"
    """A sequence number already received (a captured frame sent again)."""
    OUT_OF_ORDER = "out_of_order"
    """A sequence number ahead of the next expected one (reordered, or one was dropped)."""
    TAMPERED = "tampered"
    """The AES-GCM tag does not verify: ciphertext, tag, sequence or type was changed."""
    CLOSED = "closed"
    """An earlier frame was refused: the connection is no longer trusted."""


class FrameRejected(HubProtocolError):
    """A frame that is refused before its content is believed; `reason` says why."""

    def __init__(self, reason: RejectReason, detail: str = "") -> None:
        super().__init__(f"frame refused ({reason}){': ' + detail if detail else ''}")
        self.reason = reason
        self.detail = detail


class HandshakeFailed(HubProtocolError):
    """The challenge-response did not authenticate the peer (or was malformed).

    `reply` is what the hub sends back before closing (a `denied` message), if anything.
    """

    def __init__(self, message: str, reply: str | None = None) -> None:
        super().__init__(message)
        self.reply = reply


class MessageInvalid(HubProtocolError):
    """An authenticated message whose content breaks its schema; the message names the
    field (``metrics.apps[2].cpu: ...``)."""
