"""What an instance says back to the daemon: its notify socket and its health check.

Each launch gets a fresh NOTIFY_SOCKET (sd_notify). READY=1 or a passing health check
makes a launching instance online; WATCHDOG=1 keeps the watchdog quiet; STATUS= is kept
for `describe`. Only the instance's own process group may speak on its socket.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Callable

from corral.core.health import wait_healthy
from corral.core.lifecycle import Instance, State
from corral.core.notify import NotifyMessage, NotifySocket

log = logging.getLogger("corral.channels")
MAX_EARLY = 16


class InstanceChannels:
    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        on_metric: Callable[[Instance, str], None] | None = None,
    ) -> None:
        self._loop = loop
        self._on_metric = on_metric
        self._sockets: dict[int, NotifySocket] = {}  # by id(Instance)
        self._probes: dict[int, tuple[asyncio.Task[None], asyncio.Event]] = {}
        # Messages that arrived before the daemon learnt the child's pid (the spawn
        # completes in a thread; a fast child may say READY=1 first). Checked on spawn.
        self._early: dict[int, list[NotifyMessage]] = {}

    def open(self, inst: Instance) -> dict[str, str]:
        """A new notify socket for the launch about to happen; returns env for the child."""
        self.close(inst)
        sock = NotifySocket(
            self._loop,
            lambda message: self._on_message(inst, message),
            lambda pid, uid: inst.pid is None or _in_group(pid, inst),
        )
        self._sockets[id(inst)] = sock
        env = {"NOTIFY_SOCKET": sock.address}
        if inst.config.watchdog:
            env["WATCHDOG_USEC"] = str(int(inst.config.watchdog * 1_000_000))
        return env

    def spawned(self, inst: Instance) -> None:
        """The process runs: check what it said early, start its health check if any."""
        for message in self._early.pop(id(inst), []):
            if _in_group(message.pid, inst):
                self._on_message(inst, message)
        url = inst.config.health_check
        if url is None:
            return
        self._stop_probe(inst)
        stop = asyncio.Event()
        task = self._loop.create_task(self._probe(inst, url, stop))
        self._probes[id(inst)] = (task, stop)

    def exited(self, inst: Instance) -> None:
        """The process is gone (stopped, crashed, errored): nothing more to hear from it."""
        self.close(inst)

    def close(self, inst: Instance) -> None:
        self._early.pop(id(inst), None)
        sock = self._sockets.pop(id(inst), None)
        if sock is not None:
            sock.close()
        self._stop_probe(inst)

    def close_all(self) -> None:
        self._early.clear()
        for sock in self._sockets.values():
            sock.close()
        self._sockets.clear()
        for task, stop in self._probes.values():
            stop.set()
            task.cancel()
        self._probes.clear()

    def _stop_probe(self, inst: Instance) -> None:
        probe = self._probes.pop(id(inst), None)
        if probe is not None:
            probe[1].set()

    async def _probe(self, inst: Instance, url: str, stop: asyncio.Event) -> None:
        child = inst.child
        if await wait_healthy(url, stop) and inst.child is child:
            inst.mark_ready()
        self._probes.pop(id(inst), None)

    def _on_message(self, inst: Instance, message: NotifyMessage) -> None:
        if inst.pid is None:  # the sender is checked once the pid is known
            early = self._early.setdefault(id(inst), [])
            if len(early) < MAX_EARLY:
                early.append(message)
            return
        fields = message.fields
        if fields.get("READY") == "1":
            inst.mark_ready()
        if "STATUS" in fields:
            inst.status_text = fields["STATUS"][:200]
        if fields.get("WATCHDOG") == "1":
            inst.watchdog_ping()
        if "CORRAL_METRIC" in fields and self._on_metric is not None:
            self._on_metric(inst, fields["CORRAL_METRIC"])
        if fields.get("STOPPING") == "1" and inst.state is State.ONLINE:
            log.info("%s[%d] says it is stopping", inst.app, inst.number)


def _in_group(pid: int, inst: Instance) -> bool:
    """The sender is the instance's main process or one of its process group."""
    leader = inst.pid
    if leader is None:
        return False
    if pid == leader:
        return True
    with contextlib.suppress(OSError):
        return os.getpgid(pid) == leader
    return False
