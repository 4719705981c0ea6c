"""The wire protocol between the agent (in the daemon) and the monitoring hub (SPEC 5).

Sans-IO: pure functions and small state classes; the caller moves the text over a
WebSocket (one protocol message per WebSocket text message), inside TLS. In order:

1. Keys (`keys`): each bucket's secret gives, by HKDF-SHA256, an authentication key and
   one key per direction, bound to the public id and the version label. The hub stores
   these derived keys, never the secret; the secret never travels.
2. Handshake (`handshake`): hub challenge, agent response with an HMAC, hub confirm with
   its own HMAC (mutual), ephemeral X25519 for fresh, forward-secret session keys.
3. Frames (`frames.Session`): AES-256-GCM, counter nonces, direction/bucket/seq/type in
   the associated data; replayed, reordered, reflected, tampered or foreign frames are
   refused with a `FrameRejected` reason.
4. Messages (`messages`): hello, metrics, action, action_result; closed schemas.
5. Proofs (`proof`): the agent password's Ed25519 proof for sensitive actions.

docs/HUB_PROTOCOL.md describes all of it.
"""

from typing import TYPE_CHECKING, Any

# The names below are loaded on first use (PEP 562): the daemon imports the light parts
# (`errors`, `keys`) at start-up and must not pay for the ciphers, X25519 and argon2
# behind `frames`, `handshake` and `proof` unless it is linked to a hub.
if TYPE_CHECKING:
    from corral.protocol.hub.errors import (
        FrameRejected,
        HandshakeFailed,
        HubProtocolError,
        MessageInvalid,
        RejectReason,
    )
    from corral.protocol.hub.frames import MAX_PLAINTEXT, Received, Session
    from corral.protocol.hub.handshake import AgentHandshake, HubHandshake
    from corral.protocol.hub.keys import (
        PROTOCOL_VERSION,
        BucketKeys,
        derive_bucket_keys,
        new_public_id,
        new_secret,
    )
    from corral.protocol.hub.messages import SENSITIVE_VERBS, MessageType, Outcome, Verb
    from corral.protocol.hub.proof import (
        PasswordParams,
        PasswordVerifier,
        ProofKey,
        decide_action,
        derive_proof_key,
        make_verifier,
        seal_action,
    )

_WHERE: dict[str, str] = {
    "AgentHandshake": "handshake",
    "BucketKeys": "keys",
    "FrameRejected": "errors",
    "HandshakeFailed": "errors",
    "HubHandshake": "handshake",
    "HubProtocolError": "errors",
    "MAX_PLAINTEXT": "frames",
    "MessageInvalid": "errors",
    "MessageType": "messages",
    "Outcome": "messages",
    "PROTOCOL_VERSION": "keys",
    "PasswordParams": "proof",
    "PasswordVerifier": "proof",
    "ProofKey": "proof",
    "Received": "frames",
    "RejectReason": "errors",
    "SENSITIVE_VERBS": "messages",
    "Session": "frames",
    "Verb": "messages",
    "decide_action": "proof",
    "derive_bucket_keys": "keys",
    "derive_proof_key": "proof",
    "make_verifier": "proof",
    "new_public_id": "keys",
    "new_secret": "keys",
    "seal_action": "proof",
}


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


__all__ = [
    "MAX_PLAINTEXT",
    "PROTOCOL_VERSION",
    "SENSITIVE_VERBS",
    "AgentHandshake",
    "BucketKeys",
    "FrameRejected",
    "HandshakeFailed",
    "HubHandshake",
    "HubProtocolError",
    "MessageInvalid",
    "MessageType",
    "Outcome",
    "PasswordParams",
    "PasswordVerifier",
    "ProofKey",
    "Received",
    "RejectReason",
    "Session",
    "Verb",
    "decide_action",
    "derive_bucket_keys",
    "derive_proof_key",
    "make_verifier",
    "new_public_id",
    "new_secret",
    "seal_action",
]
