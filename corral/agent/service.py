"""The agent as the daemon holds it: the saved link, its task, and the control commands
`link`, `unlink` and `link_info` (corral.protocol.commands).

`link` receives the bucket's derived keys, never the secret (the CLI derives them), checks
the hub URL and the CA file, keeps this server's id across re-links, saves agent.json
(0600, atomic) and (re)starts the link; its answer says whether the first connection
worked. The daemon starts the saved link at start-up (`start`) and stops it on shutdown.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from corral.agent import state as agent_state
from corral.agent.state import LinkError, LinkState
from corral.protocol.commands import Command
from corral.protocol.hub.errors import HubProtocolError
from corral.protocol.hub.keys import BucketKeys
from corral.protocol.wire import ErrorCode, ProtocolError

# The link, the actions and the collector (ciphers, X25519, argon2, websockets) are
# imported when a link runs or is asked about: an unlinked daemon starts without them.
if TYPE_CHECKING:
    from corral.agent.actions import ActionRunner
    from corral.agent.link import HubLink
    from corral.core.handlers import Handlers

log = logging.getLogger("corral.agent")

FIRST_ATTEMPT_WAIT: Final = 8.0
"""How long `link` waits for its first connection before answering."""


def _bad(message: str) -> ProtocolError:
    return ProtocolError(ErrorCode.INVALID_ARGUMENT, message)


class AgentService:
    def __init__(self, handlers: Handlers) -> None:
        self.handlers = handlers
        self.home_root: Path = handlers.home.root
        self._runner: ActionRunner | None = None
        self.link: HubLink | None = None
        self._lock = asyncio.Lock()

    @property
    def runner(self) -> ActionRunner:
        if self._runner is None:
            from corral.agent.actions import ActionRunner

            self._runner = ActionRunner(self.handlers)
        return self._runner

    def commands(self) -> dict[str, Callable[[dict[str, Any]], Awaitable[Any]]]:
        return {
            Command.LINK: self.cmd_link,
            Command.LINK_INFO: self.cmd_link_info,
            Command.UNLINK: self.cmd_unlink,
        }

    # ------------------------------------------------------------ life

    async def start(self) -> None:
        """Start the saved link, if any (at the daemon's start)."""
        try:
            saved = await asyncio.to_thread(agent_state.load, self.home_root)
        except LinkError as exc:
            log.error("hub link: %s; not linked", exc)
            return
        if saved is not None:
            self._run(saved)

    async def close(self) -> None:
        if self.link is not None:
            await self.link.close()
            self.link = None

    def _run(self, saved: LinkState) -> None:
        from corral.agent.collect import hostname, metrics_body
        from corral.agent.link import HubLink

        sup = self.handlers.sup
        name = hostname()

        async def sample() -> dict[str, Any]:
            return await metrics_body(sup, self.home_root, name)

        self.link = HubLink(
            saved,
            self.runner,
            sample,
            lambda: sup.settings["agent.interval"],
            lambda: sup.settings["agent.queue"],
        )
        self.link.start()
        log.info("hub link: linking to %s (bucket %s)", saved.hub, saved.public_id)

    # ------------------------------------------------------------ commands

    async def cmd_link(self, args: dict[str, Any]) -> Any:
        hub = args.get("hub")
        if not isinstance(hub, str):
            raise _bad("'hub' must be the hub's URL")
        try:
            url = agent_state.check_hub_url(hub)
            keys = BucketKeys.from_json(args.get("keys"))
        except (LinkError, HubProtocolError) as exc:
            raise _bad(str(exc)) from None
        ca_file = args.get("ca_file")
        if ca_file is not None:
            ca_file = await _check_ca_file(ca_file)
        async with self._lock:
            try:
                previous = await asyncio.to_thread(agent_state.load, self.home_root)
            except LinkError:
                previous = None  # a broken file is replaced
            server_id = previous.server_id if previous else agent_state.new_server_id()
            saved = LinkState(url, keys, server_id, ca_file)
            try:
                await asyncio.to_thread(agent_state.save, self.home_root, saved)
            except OSError as exc:
                raise ProtocolError(
                    ErrorCode.INTERNAL, f"cannot save the link: {exc.strerror or exc}"
                ) from None
            await self.close()
            self._run(saved)
            assert self.link is not None
            await self.link.first_attempt(FIRST_ATTEMPT_WAIT)
        return self.info()

    async def cmd_unlink(self, args: dict[str, Any]) -> Any:
        async with self._lock:
            was = self.link.state.hub if self.link is not None else None
            await self.close()
            try:
                removed = await asyncio.to_thread(agent_state.remove, self.home_root)
            except OSError as exc:
                raise ProtocolError(
                    ErrorCode.INTERNAL, f"cannot remove the link: {exc.strerror or exc}"
                ) from None
        if removed or was:
            log.info("hub link: unlinked from %s", was or "the hub")
        return {"unlinked": bool(removed or was), "hub": was}

    async def cmd_link_info(self, args: dict[str, Any]) -> Any:
        return self.info()

    def info(self) -> dict[str, Any]:
        from corral.agent.actions import env_allows

        settings = self.handlers.sup.settings
        common = {
            "remote_actions": self.runner.remote_actions(),
            "remote_actions_env": env_allows(os.environ),
            "remote_actions_setting": bool(settings["agent.remote_actions"]),
            "password_set": bool(settings["agent.password"]),
            "interval": settings["agent.interval"],
        }
        link = self.link
        if link is None:
            return {"linked": False, **common}
        return {
            "linked": True,
            "hub": link.state.hub,
            "public_id": link.state.public_id,
            "server_id": link.state.server_id,
            "ca_file": link.state.ca_file,
            "connected": link.connected,
            "connections": link.connections,
            "last_push": link.last_push,
            "last_error": link.last_error,
            "queue": len(link.queue),
            "queue_limit": link.queue.limit,
            "dropped": link.queue.dropped,
            **common,
        }


async def _check_ca_file(value: Any) -> str:
    if not isinstance(value, str) or not value or not os.path.isabs(value) or "\0" in value:
        raise _bad("'ca_file' must be an absolute path")
    from corral.agent.link import ssl_context

    try:
        await asyncio.to_thread(ssl_context, value)
    except FileNotFoundError:
        raise _bad(f"the CA file {value} does not exist") from None
    except OSError as exc:  # ssl.SSLError is an OSError
        raise _bad(f"the CA file {value} holds no usable certificate: {exc}") from None
    return value
