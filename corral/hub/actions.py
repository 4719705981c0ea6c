"""Remote actions from the hub's side: checked, recorded, sealed (with the agent
password's proof for sensitive verbs) and sent over the server's live link.

The typed password is used once, in the calling thread, to derive the proof key
(argon2id), and dropped: it is never stored, logged or put in the database; the action's
row records only that a proof was given.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import time
from dataclasses import dataclass
from typing import Any

from corral.hub.agents import AgentGone
from corral.hub.db.models import Action, Server
from corral.hub.services import Hub
from corral.protocol.hub import SENSITIVE_VERBS, Verb
from corral.protocol.hub.errors import HubProtocolError
from corral.protocol.hub.messages import MessageType, validate_body
from corral.protocol.hub.proof import PasswordParams, ProofKey, derive_proof_key

log = logging.getLogger("corral.hub.actions")
SEND_TIMEOUT = 10.0


class ActionError(ValueError):
    """The action cannot be sent (a message for the user)."""


@dataclass(frozen=True)
class Sent:
    id: str
    verb: str
    target: str


def parse_args(verb: Verb, data: dict[str, str]) -> dict[str, Any]:
    """The verb's args from form fields: scale `count`; env `set` (NAME=value lines) and
    `unset` (names); deploy `ref`."""
    if verb is Verb.SCALE:
        return {"count": data.get("count", "").strip()}
    if verb is Verb.DEPLOY:
        return {"ref": data.get("ref", "").strip() or None}
    if verb is Verb.ENV:
        pairs: dict[str, str] = {}
        for line in data.get("set", "").splitlines():
            if line.strip():
                name, sep, value = line.partition("=")
                if not sep:
                    raise ActionError(f"env: {name.strip()[:40]!r} is not NAME=value")
                pairs[name.strip()] = value
        return {"set": pairs, "unset": data.get("unset", "").split()}
    return {}


def request_action(
    hub: Hub,
    bucket_id: int,
    server_pk: int,
    verb_name: str,
    target: str,
    args: dict[str, Any],
    requested_by: str,
    password: str | None,
) -> Sent:
    """Send one action (sync: call from a worker thread, never on the event loop)."""
    try:
        verb = Verb(verb_name)
    except ValueError:
        raise ActionError(f"unknown action {verb_name[:20]!r}") from None
    body: dict[str, Any] = {
        "id": secrets.token_urlsafe(12),
        "verb": verb.value,
        "target": target,
        "args": args,
        "requested_by": requested_by,
        "proof": None,
    }
    try:
        body = validate_body(MessageType.ACTION, body)
    except HubProtocolError as exc:
        raise ActionError(str(exc)) from None
    with hub.database.session() as db:
        server = db.get(Server, server_pk)
        if server is None or server.bucket_id != bucket_id:
            raise ActionError("no such server")
        hostname = server.hostname
        params_text = server.password_params
    link = hub.links.get(bucket_id, server_pk)
    if link is None:
        raise ActionError(f"{hostname} is not connected")
    key: ProofKey | None = None
    if verb in SENSITIVE_VERBS:
        if params_text is None:
            raise ActionError(f"{hostname} has no agent password set: {verb} is refused there")
        if not password:
            raise ActionError(f"{verb} needs the agent password")
        try:
            key = derive_proof_key(password, PasswordParams.from_json(json.loads(params_text)))
        except HubProtocolError as exc:
            raise ActionError(str(exc)) from None
    proved = key is not None
    password = None  # dropped: only the proof key lives on, until the frame is sealed
    now = time.time()
    with hub.database.session() as db:
        db.add(
            Action(
                id=body["id"],
                bucket_id=bucket_id,
                server_id=server_pk,
                hostname=hostname,
                verb=verb.value,
                target=target,
                requested_by=requested_by,
                with_proof=proved,
                state="sent",
                created_at=now,
            )
        )
    try:
        future = asyncio.run_coroutine_threadsafe(link.send_action(body, key), link.loop)
        future.result(SEND_TIMEOUT)
    except (AgentGone, TimeoutError) as exc:
        with hub.database.session() as db:
            row = db.get(Action, body["id"])
            if row is not None and row.state == "sent":
                row.state = "undeliverable"
                row.message = str(exc) or "the agent did not take it in time"
                row.finished_at = time.time()
        raise ActionError(f"{hostname}: {exc or 'the agent did not take it in time'}") from None
    finally:
        key = None
    log.info(
        "action %s %s %s by %s sent to %s%s",
        body["id"], verb.value, target, requested_by, hostname,
        " with a password proof" if proved else "",
    )  # fmt: skip
    return Sent(body["id"], verb.value, target)
