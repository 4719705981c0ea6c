"""The hub's remote actions: the agent decides, then runs them through the daemon's own
control handlers (the same checks as a `corral` command on the socket).

`decide_action` (corral.protocol.hub.proof) refuses every action when remote actions are
off (`CORRAL_REMOTE_ACTIONS=off` in the daemon's environment, or `corral set
agent.remote_actions off`), and a sensitive verb without a valid proof made from the
agent password. Every action is logged on `corral.agent` with its id, verb, target,
requester and result; never the args of `env` (values may be secrets) nor the proof.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from corral.core.deploys import TRIGGER_MAX
from corral.protocol.hub.errors import HubProtocolError
from corral.protocol.hub.frames import Session
from corral.protocol.hub.messages import Outcome, Verb
from corral.protocol.hub.proof import PasswordVerifier, decide_action
from corral.protocol.wire import ErrorCode, ProtocolError

if TYPE_CHECKING:
    from corral.core.handlers import Handlers

log = logging.getLogger("corral.agent")

REMOTE_ACTIONS_ENV: Final = "CORRAL_REMOTE_ACTIONS"
_OFF: Final = frozenset({"off", "0", "false", "no"})
MAX_MESSAGE: Final = 4096

_REFUSALS: Final[dict[Outcome, str]] = {
    Outcome.REMOTE_ACTIONS_OFF: "remote actions are turned off on this server",
    Outcome.NO_PASSWORD_SET: (
        "this verb needs the agent password, and none is set on this server"
        " (corral set agent.password)"
    ),
    Outcome.PASSWORD_REQUIRED: "this verb needs the agent password",
    Outcome.BAD_PROOF: "the agent password's proof does not match this action",
}


def env_allows(environ: Mapping[str, str]) -> bool:
    """False when the daemon's environment turns remote actions off."""
    return environ.get(REMOTE_ACTIONS_ENV, "").strip().lower() not in _OFF


@dataclass(frozen=True)
class Result:
    ok: bool
    code: Outcome | None
    message: str

    def body(self, action_id: str) -> dict[str, Any]:
        return {
            "id": action_id,
            "ok": self.ok,
            "code": None if self.ok else str(self.code),
            "message": self.message[:MAX_MESSAGE],
            "finished_at": time.time(),
        }


class ActionRunner:
    def __init__(self, handlers: Handlers, environ: Mapping[str, str] | None = None) -> None:
        self.handlers = handlers
        self.environ = os.environ if environ is None else environ

    # ------------------------------------------------------------ switches

    def remote_actions(self) -> bool:
        settings = self.handlers.sup.settings
        return env_allows(self.environ) and bool(settings["agent.remote_actions"])

    def verifier(self) -> PasswordVerifier | None:
        text = self.handlers.sup.settings["agent.password"]
        if not text:
            return None
        try:
            return PasswordVerifier.from_text(str(text))
        except HubProtocolError:
            log.error("agent.password: the stored verifier is malformed; set it again")
            return None

    # ------------------------------------------------------------ one action

    def decide(self, session: Session, seq: int, action: dict[str, Any]) -> Result | None:
        """The refusal, or None when the action may run. Call it before any await: the
        proof is bound to this frame of this connection."""
        outcome = decide_action(session, seq, action, self.verifier(), self.remote_actions())
        if outcome is None:
            return None
        return Result(False, outcome, _REFUSALS.get(outcome, str(outcome)))

    async def run(self, action: dict[str, Any]) -> Result:
        try:
            message = await self._run(
                Verb(action["verb"]), action["target"], action["args"], action["requested_by"]
            )
        except ProtocolError as exc:
            code = {
                ErrorCode.UNKNOWN_TARGET: Outcome.UNKNOWN_TARGET,
                ErrorCode.INVALID_ARGUMENT: Outcome.INVALID,
                ErrorCode.BAD_REQUEST: Outcome.INVALID,
            }.get(exc.code, Outcome.FAILED)
            return Result(False, code, exc.message)
        except Exception as exc:  # a bug must not end the link: answer and log it
            log.exception("remote action %s failed", action.get("id"))
            return Result(False, Outcome.FAILED, f"unexpected {type(exc).__name__}")
        return Result(True, None, message)

    async def _run(self, verb: Verb, target: str, args: dict[str, Any], requester: str) -> str:
        h = self.handlers
        request: dict[str, Any] = {"target": target}
        if verb is Verb.RESTART:
            return _summary("restarted", await h.restart(request))
        if verb is Verb.RELOAD:
            return _summary("reloaded", await h.reload(request))
        if verb is Verb.RESET:
            return _summary("counters reset for", await h.reset(request))
        if verb is Verb.STOP:
            return _summary("stopped", await h.stop(request))
        if verb is Verb.DELETE:
            deleted = (await h.delete(request))["deleted"]
            return f"deleted {', '.join(deleted)}"
        if verb is Verb.SCALE:
            return _summary("scaled", await h.scale({**request, "count": args["count"]}))
        if verb is Verb.ENV:
            return await self._env(target, args)
        # Deploy: one app by name, queued like `corral deploy`.
        trigger = "".join(c for c in f"hub: {requester}" if c.isprintable())[:TRIGGER_MAX]
        record = (await h.deploy({"app": target, "ref": args["ref"], "trigger": trigger}))["deploy"]
        return f"deploy {record.get('id')} of {target} queued"

    async def _env(self, target: str, args: dict[str, Any]) -> str:
        """Change the apps' configured environment, then restart them to apply it."""
        h = self.handlers
        apps = h.sup.resolve([target])
        for app in apps:
            env = {k: v for k, v in app.config.env.items() if k not in args["unset"]}
            env.update(args["set"])
            h.sup.replace_config(
                app,
                dataclasses.replace(app.config, env=env),
                cli_env=app.cli_env,
                env_name=app.env_name,
                update_env=False,
            )
        running = [app.name for app in apps if app.desired == "running"]
        if running:
            await h.restart({"target": running})
        names = ", ".join(app.name for app in apps)
        return f"environment changed for {names}" + (" and restarted" if running else "")


def _summary(what: str, records: list[dict[str, Any]]) -> str:
    names = sorted({str(r["name"]) for r in records})
    return f"{what} {', '.join(names)}" if names else f"{what} nothing"
