"""The agent password's proof for sensitive remote actions (SPEC 5).

The agent password is set on the server (``corral set agent.password``) and must never
be stored by the hub. The scheme:

- The server stores a `PasswordVerifier`: an argon2id salt and cost parameters, and the
  Ed25519 *public* key whose private seed is argon2id(password, salt) (32 bytes,
  argon2-cffi's ``hash_secret_raw``). Like a PHC hash it only allows an offline
  guessing attack at argon2's price; unlike a raw hash it cannot be used to forge proofs.
- The agent's ``hello`` tells the hub the salt and parameters (public, like any salt),
  never the public key (which would let a hub database leak feed a guessing attack).
- For a sensitive verb the user types the password into the hub's action form. The hub
  runs argon2id (in a thread: it costs memory_cost KiB and about 0.1 s), makes the
  private key, signs the action and forgets both (`derive_proof_key`, `seal_action`).
  The signature covers the label, the bucket's public id, the connection's session id,
  the frame's sequence number, and the action's id, verb, target, args and requester.
- The agent checks the signature with the stored public key (`decide_action`): fast,
  no argon2 on the server per action, so a flood of bad proofs costs it nothing.

So the hub relays a proof but cannot replay it: the proof is good for one action in one
frame of one connection; a recorded frame, the same proof in a later frame (even sealed
by the hub itself), or for another target, verb or connection fails. Nothing in the hub's
database or logs, and no frame, holds the password or anything that checks it.

Compared with relaying the password itself inside the encrypted action frame (checked
by argon2-cffi's verify on the agent): that is simpler, but puts the password on the
agent link, where it is readable by whoever holds the session keys, and makes the
agent run argon2 for every attempt. Both schemes trust the hub while a user types the
password into it (only a browser computing the signature itself would not, and this
scheme allows that later without changing the agent).
"""

from __future__ import annotations

import base64
import json
import secrets
from dataclasses import dataclass
from typing import Any, Final

from argon2.low_level import Type, hash_secret_raw
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from corral.protocol.hub.errors import HubProtocolError, MessageInvalid
from corral.protocol.hub.frames import Session
from corral.protocol.hub.keys import LABEL, pack
from corral.protocol.hub.messages import (
    PASSWORD_PARAMS,
    SENSITIVE_VERBS,
    MessageType,
    Outcome,
    Verb,
)

SALT_BYTES: Final = 16
MAX_PASSWORD_LENGTH: Final = 1024
DEFAULT_TIME_COST: Final = 3
DEFAULT_MEMORY_COST: Final = 64 * 1024
DEFAULT_PARALLELISM: Final = 4
"""RFC 9106's low-memory profile, as argon2-cffi's defaults and the panel's passwords."""


@dataclass(frozen=True)
class PasswordParams:
    salt: bytes
    time_cost: int = DEFAULT_TIME_COST
    memory_cost: int = DEFAULT_MEMORY_COST
    parallelism: int = DEFAULT_PARALLELISM

    def to_json(self) -> dict[str, Any]:
        return {
            "salt": base64.b64encode(self.salt).decode("ascii"),
            "time_cost": self.time_cost,
            "memory_cost": self.memory_cost,
            "parallelism": self.parallelism,
        }

    @classmethod
    def from_json(cls, data: Any) -> PasswordParams:
        """Parameters within the bounds of the hello schema (MessageInvalid otherwise):
        a hostile agent cannot make the hub spend more than 256 MiB on one proof."""
        checked = PASSWORD_PARAMS.check(data, "password")
        salt = base64.b64decode(checked["salt"], validate=True)
        if len(salt) != SALT_BYTES:
            raise MessageInvalid(f"password.salt: must be {SALT_BYTES} bytes")
        return cls(salt, checked["time_cost"], checked["memory_cost"], checked["parallelism"])


def new_params() -> PasswordParams:
    return PasswordParams(secrets.token_bytes(SALT_BYTES))


def _private_key(password: str, params: PasswordParams) -> Ed25519PrivateKey:
    if not 1 <= len(password) <= MAX_PASSWORD_LENGTH:
        raise HubProtocolError(f"the agent password must be 1 to {MAX_PASSWORD_LENGTH} long")
    seed = hash_secret_raw(
        password.encode("utf-8", "surrogatepass"),
        params.salt,
        time_cost=params.time_cost,
        memory_cost=params.memory_cost,
        parallelism=params.parallelism,
        hash_len=32,
        type=Type.ID,
    )
    return Ed25519PrivateKey.from_private_bytes(seed)


@dataclass(frozen=True, repr=False)
class PasswordVerifier:
    """What the server stores for the agent password (mode 0600 with its settings)."""

    params: PasswordParams
    public_key: bytes

    def __repr__(self) -> str:
        return "PasswordVerifier(<hidden>)"

    def to_text(self) -> str:
        data = {"v": 1, **self.params.to_json()}
        data["public_key"] = base64.b64encode(self.public_key).decode("ascii")
        return json.dumps(data, separators=(",", ":"))

    @classmethod
    def from_text(cls, text: str) -> PasswordVerifier:
        try:
            data = json.loads(text)
            if not isinstance(data, dict) or data.pop("v", None) != 1:
                raise ValueError
            public_key = base64.b64decode(data.pop("public_key"), validate=True)
            Ed25519PublicKey.from_public_bytes(public_key)
            return cls(PasswordParams.from_json(data), public_key)
        except (ValueError, KeyError, TypeError, MessageInvalid):
            raise HubProtocolError("the stored agent password verifier is malformed") from None


def make_verifier(password: str, params: PasswordParams | None = None) -> PasswordVerifier:
    """The verifier to store for `password` (slow: one argon2id run)."""
    params = params or new_params()
    public = _private_key(password, params).public_key()
    return PasswordVerifier(params, public.public_bytes(Encoding.Raw, PublicFormat.Raw))


class ProofKey:
    """The signing key made from a typed password; keep it only for one action."""

    def __init__(self, key: Ed25519PrivateKey) -> None:
        self._key = key

    def __repr__(self) -> str:
        return "ProofKey(<hidden>)"

    def sign(self, message: bytes) -> bytes:
        return self._key.sign(message)


def derive_proof_key(password: str, params: PasswordParams) -> ProofKey:
    """The hub's side (slow: one argon2id run; call it in a thread)."""
    return ProofKey(_private_key(password, params))


def proof_message(session: Session, seq: int, action: dict[str, Any]) -> bytes:
    """What a proof signs: this action, in frame `seq` of this connection of this bucket."""
    args = json.dumps(action["args"], sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return pack(
        LABEL,
        "action proof",
        session.public_id,
        session.session_id,
        seq,
        action["id"],
        action["verb"],
        action["target"],
        args,
        action["requested_by"],
    )


def seal_action(session: Session, action: dict[str, Any], proof_key: ProofKey | None) -> str:
    """The hub's `action` frame, with the proof for its sequence number when a key is
    given (its `proof` field is filled in here)."""
    body = dict(action)
    body["proof"] = None
    if proof_key is not None:
        signature = proof_key.sign(proof_message(session, session.next_send_seq, body))
        body["proof"] = base64.b64encode(signature).decode("ascii")
    return session.seal(MessageType.ACTION, body)


def verify_proof(
    verifier: PasswordVerifier, session: Session, seq: int, action: dict[str, Any]
) -> bool:
    proof = action.get("proof")
    if not isinstance(proof, str):
        return False
    try:
        signature = base64.b64decode(proof, validate=True)
        public = Ed25519PublicKey.from_public_bytes(verifier.public_key)
        public.verify(signature, proof_message(session, seq, action))
    except (ValueError, InvalidSignature):
        return False
    return True


def decide_action(
    session: Session,
    seq: int,
    action: dict[str, Any],
    verifier: PasswordVerifier | None,
    remote_actions: bool,
) -> Outcome | None:
    """Why the agent refuses this (already opened) action, or None when it may run.

    `remote_actions` False (CORRAL_REMOTE_ACTIONS=off or the config) refuses everything.
    """
    if not remote_actions:
        return Outcome.REMOTE_ACTIONS_OFF
    if Verb(action["verb"]) not in SENSITIVE_VERBS:
        return None
    if verifier is None:
        return Outcome.NO_PASSWORD_SET
    if action.get("proof") is None:
        return Outcome.PASSWORD_REQUIRED
    if not verify_proof(verifier, session, seq, action):
        return Outcome.BAD_PROOF
    return None
