"""RealOs.spawn against real processes: the loop (vfork) path and the worker-thread path.

Every child is waited for through its pidfd by RealOs itself (the exit callback), so no
test ever signals a pid that may have been reused.
"""

from __future__ import annotations

import asyncio
import os
import sys
from dataclasses import dataclass, field

import pytest

from corral.core.osapi import Child, ExitStatus, LaunchSpec
from corral.core.realos import RealOs, vfork_eligible


class Sink:
    def __init__(self) -> None:
        self.fds: list[int] = []

    def attach(self, stdout_fd: int, stderr_fd: int) -> None:
        self.fds = [stdout_fd, stderr_fd]

    def read_out(self) -> bytes:
        os.set_blocking(self.fds[0], True)
        data = b""
        while chunk := os.read(self.fds[0], 65536):
            data += chunk
        return data

    def close(self) -> None:
        for fd in set(self.fds):
            os.close(fd)


@dataclass
class Outcome:
    calls: list[str] = field(default_factory=list)
    child: Child | None = None
    failed: str | None = None
    exited: asyncio.Future[ExitStatus] | None = None


def spawn(real: RealOs, spec: LaunchSpec, sink: Sink) -> Outcome:
    outcome = Outcome(exited=asyncio.get_running_loop().create_future())

    def on_spawned(child: Child) -> None:
        outcome.calls.append("spawned")
        outcome.child = child

    def on_failed(message: str) -> None:
        outcome.calls.append("failed")
        outcome.failed = message

    def on_exit(status: ExitStatus) -> None:
        outcome.calls.append("exit")
        assert outcome.exited is not None
        outcome.exited.set_result(status)

    real.spawn(spec, sink, on_spawned, on_failed, on_exit)
    return outcome


def spec(code: str, **overrides: object) -> LaunchSpec:
    fields: dict[str, object] = {
        "argv": [sys.executable, "-c", code],
        "env": {"PATH": os.defpath, "GREETING": "hi"},
        "cwd": "/",
    }
    fields.update(overrides)
    return LaunchSpec(**fields)  # type: ignore[arg-type]


def test_vfork_eligible_only_without_rlimits_identity_or_sockets() -> None:
    assert vfork_eligible(spec("pass"))
    assert vfork_eligible(spec("pass", umask=0o027))
    assert not vfork_eligible(spec("pass", rlimits={"nofile": 256}))
    assert not vfork_eligible(spec("pass", user="nobody"))
    assert not vfork_eligible(spec("pass", group="nogroup"))
    assert not vfork_eligible(spec("pass", listen_fds=(7,), listen_names=("web",)))


@pytest.mark.parametrize(
    "overrides",
    [{}, {"rlimits": {"nofile": 256}}],
    ids=["on-the-loop", "in-a-thread"],
)
def test_spawn_runs_the_child_and_reports_spawned_then_exit(
    overrides: dict[str, object],
) -> None:
    asyncio.run(_spawn_and_exit(overrides))


CHILD = """
import os, resource
nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
print(os.environ["GREETING"], os.getpgid(0) == os.getpid(), nofile)
raise SystemExit(3)
"""


async def _spawn_and_exit(overrides: dict[str, object]) -> None:
    loop = asyncio.get_running_loop()
    hops: list[object] = []
    to_thread = loop.run_in_executor

    def counted(*args: object) -> object:
        hops.append(args[1])
        return to_thread(*args)  # type: ignore[arg-type]

    loop.run_in_executor = counted  # type: ignore[method-assign,assignment]
    real = RealOs(loop)
    sink = Sink()
    outcome = spawn(real, spec(CHILD, **overrides), sink)
    assert len(hops) == (1 if overrides else 0)  # a thread only for the real fork
    assert outcome.calls == []  # callbacks come later, from the loop, never from spawn()
    assert outcome.exited is not None
    status = await asyncio.wait_for(outcome.exited, 30)
    assert outcome.calls == ["spawned", "exit"]
    assert status == ExitStatus(code=3, signal=None)
    assert outcome.child is not None and outcome.child.start_time > 0
    greeting, leader, nofile = sink.read_out().split()
    assert (greeting, leader) == (b"hi", b"True")  # its env, its own process group
    if overrides:
        assert nofile == b"256"
    sink.close()
    assert real.live_children() == []


def test_a_program_that_does_not_exist_fails_later_not_in_spawn() -> None:
    asyncio.run(_spawn_missing())


async def _spawn_missing() -> None:
    real = RealOs(asyncio.get_running_loop())
    sink = Sink()
    outcome = spawn(real, spec("pass", argv=["/nonexistent/program"]), sink)
    assert outcome.calls == []
    for _ in range(100):
        if outcome.calls:
            break
        await asyncio.sleep(0.01)
    assert outcome.calls == ["failed"]
    assert outcome.failed is not None and "no such file" in outcome.failed
    assert sink.fds == []  # nothing attached, no pipe left open
