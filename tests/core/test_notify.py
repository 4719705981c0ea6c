"""The notify socket with a real event loop, real datagrams and real child processes."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import socket
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from corral.core.notify import MAX_DATAGRAM, NotifyMessage, NotifySocket, parse_payload

REPO = Path(__file__).resolve().parent.parent.parent


def run(main: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(main(), 30))


async def until(predicate: Callable[[], object], what: str) -> None:
    for _ in range(1000):
        if predicate():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")


def send(address: str, payload: bytes) -> None:
    """One datagram from this process, as an app would send it."""
    assert address.startswith("@")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.sendto(payload, "\0" + address[1:])


def always(pid: int, uid: int) -> bool:
    return True


def child_env(address: str) -> dict[str, str]:
    return {
        "PATH": os.environ.get("PATH", os.defpath),
        "PYTHONPATH": str(REPO),
        "PYTHONDONTWRITEBYTECODE": "1",
        "NOTIFY_SOCKET": address,
    }


def test_address_is_abstract_and_named_after_the_daemon() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        with (
            NotifySocket(loop, lambda m: None, always) as one,
            NotifySocket(loop, lambda m: None, always) as two,
        ):
            assert re.fullmatch(rf"@corral/{os.getpid()}/[0-9a-f]{{16}}", one.address)
            assert one.address != two.address
            # Nothing on the file system: the name lives in the abstract namespace.
            assert not Path(one.address).exists()
            assert not Path(one.address[1:]).exists()

    run(main)


def test_a_datagram_arrives_parsed_with_the_senders_credentials() -> None:
    got: list[NotifyMessage] = []
    asked: list[tuple[int, int]] = []

    def allowed(pid: int, uid: int) -> bool:
        asked.append((pid, uid))
        return True

    async def main() -> None:
        with NotifySocket(asyncio.get_running_loop(), got.append, allowed) as sock:
            send(
                sock.address,
                b"READY=1\nSTATUS=up: a=b\nno equals sign\n=empty key\n"
                b"ERRNO=5\nCORRAL_METRIC=gauge:queue=3\nBAD=\xff\xfe\n\n",
            )
            await until(lambda: got, "the message")
            assert sock.received == 1
            assert sock.refused == 0

    run(main)
    assert asked == [(os.getpid(), os.getuid())]
    assert got == [
        NotifyMessage(
            pid=os.getpid(),
            uid=os.getuid(),
            fields={
                "READY": "1",
                "STATUS": "up: a=b",
                "ERRNO": "5",
                "CORRAL_METRIC": "gauge:queue=3",
                "BAD": "\ufffd\ufffd",
            },
        )
    ]


def test_a_refused_sender_is_dropped_and_counted() -> None:
    got: list[NotifyMessage] = []

    async def main() -> None:
        with NotifySocket(asyncio.get_running_loop(), got.append, lambda p, u: False) as sock:
            send(sock.address, b"READY=1\n")
            send(sock.address, b"STATUS=spoofed\n")
            await until(lambda: sock.refused == 2, "two refusals")
            assert sock.received == 0

    run(main)
    assert got == []


def test_a_failing_sender_check_refuses(caplog: pytest.LogCaptureFixture) -> None:
    got: list[NotifyMessage] = []

    def broken(pid: int, uid: int) -> bool:
        raise ProcessLookupError(pid)

    async def main() -> None:
        with NotifySocket(asyncio.get_running_loop(), got.append, broken) as sock:
            send(sock.address, b"READY=1\n")
            await until(lambda: sock.refused == 1, "the refusal")

    run(main)
    assert got == []
    assert "sender check failed" in caplog.text


def test_an_oversized_datagram_is_dropped_and_counted() -> None:
    got: list[NotifyMessage] = []

    async def main() -> None:
        with NotifySocket(asyncio.get_running_loop(), got.append, always) as sock:
            send(sock.address, b"STATUS=" + b"x" * MAX_DATAGRAM)  # a little over 64 KiB
            limit = b"STATUS=" + b"y" * (MAX_DATAGRAM - len(b"STATUS="))  # exactly 64 KiB
            send(sock.address, limit)
            send(sock.address, b"READY=1")
            await until(lambda: len(got) == 2, "the two messages that fit")
            assert sock.oversized == 1
            assert sock.refused == 0

    run(main)
    assert got[0].fields == {"STATUS": "y" * (MAX_DATAGRAM - len("STATUS="))}
    assert got[1].fields == {"READY": "1"}


def test_messages_arrive_in_order() -> None:
    got: list[NotifyMessage] = []

    async def main() -> None:
        with NotifySocket(asyncio.get_running_loop(), got.append, always) as sock:
            for i in range(8):  # fewer than the kernel's default queue of 10: no blocking
                send(sock.address, f"STATUS=step {i}".encode())
            await until(lambda: len(got) == 8, "eight messages")

    run(main)
    assert [m.fields["STATUS"] for m in got] == [f"step {i}" for i in range(8)]


def test_more_messages_than_the_kernel_queues_all_arrive() -> None:
    """The sender blocks while the queue is full and resumes as the loop reads."""
    got: list[NotifyMessage] = []

    async def main() -> None:
        loop = asyncio.get_running_loop()
        with NotifySocket(loop, got.append, always) as sock:

            def flood() -> None:
                for i in range(200):
                    send(sock.address, b"N=%d" % i)

            await loop.run_in_executor(None, flood)
            await until(lambda: len(got) == 200, "200 messages")

    run(main)
    assert [m.fields["N"] for m in got] == [str(i) for i in range(200)]


def test_datagrams_without_assignments_are_not_delivered() -> None:
    got: list[NotifyMessage] = []

    async def main() -> None:
        with NotifySocket(asyncio.get_running_loop(), got.append, always) as sock:
            send(sock.address, b"")
            send(sock.address, b"just words\n\n")
            send(sock.address, b"WATCHDOG=1")
            await until(lambda: got, "the watchdog ping")
            assert sock.received == 1

    run(main)
    assert [m.fields for m in got] == [{"WATCHDOG": "1"}]


def test_a_failing_handler_does_not_stop_the_socket(caplog: pytest.LogCaptureFixture) -> None:
    got: list[NotifyMessage] = []

    def handler(message: NotifyMessage) -> None:
        got.append(message)
        if len(got) == 1:
            raise RuntimeError("handler bug")

    async def main() -> None:
        with NotifySocket(asyncio.get_running_loop(), handler, always) as sock:
            send(sock.address, b"STATUS=one")
            send(sock.address, b"STATUS=two")
            await until(lambda: len(got) == 2, "both messages")

    run(main)
    assert "handler failed" in caplog.text


def test_file_descriptors_sent_along_are_closed_after_the_message_is_handled() -> None:
    """A sender may attach fds (systemd-notify's barrier does): the daemon must not keep
    them, and closing them is what tells a barrier that the message was processed, so
    they are closed after the sender check and the handler, not before."""
    got: list[NotifyMessage] = []
    open_while_handled: list[bool] = []
    read_end, write_end = os.pipe()
    os.set_blocking(read_end, False)

    def handler(message: NotifyMessage) -> None:
        got.append(message)
        try:
            os.read(read_end, 1)
        except BlockingIOError:  # no data, no EOF: a write end is still open
            open_while_handled.append(True)

    async def main() -> None:
        with NotifySocket(asyncio.get_running_loop(), handler, always) as sock:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sender:
                sender.sendmsg(
                    [b"BARRIER=1"],
                    [(socket.SOL_SOCKET, socket.SCM_RIGHTS, write_end.to_bytes(4, "little"))],
                    0,
                    "\0" + sock.address[1:],
                )
            os.close(write_end)
            await until(lambda: got, "the barrier message")
            assert os.read(read_end, 1) == b""  # EOF: no write end is left open

    try:
        run(main)
    finally:
        os.close(read_end)
    assert got[0].fields == {"BARRIER": "1"}
    assert open_while_handled == [True]


def test_close_is_idempotent_and_the_address_goes_away() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        sock = NotifySocket(loop, lambda m: None, always)
        address = sock.address
        sock.close()
        sock.close()
        assert sock.closed
        with pytest.raises(ConnectionRefusedError):
            send(address, b"READY=1")

    run(main)


def test_close_from_the_handler_stops_reading() -> None:
    got: list[NotifyMessage] = []

    async def main() -> None:
        holder: list[NotifySocket] = []

        def handler(message: NotifyMessage) -> None:
            got.append(message)
            holder[0].close()

        sock = NotifySocket(asyncio.get_running_loop(), handler, always)
        holder.append(sock)
        send(sock.address, b"READY=1")
        send(sock.address, b"STATUS=after close")
        await until(lambda: sock.closed, "the close")
        await asyncio.sleep(0.05)

    run(main)
    assert [m.fields for m in got] == [{"READY": "1"}]


def test_close_after_the_loop_is_closed() -> None:
    loop = asyncio.new_event_loop()
    sock = NotifySocket(loop, lambda m: None, always)
    loop.close()
    sock.close()
    assert sock.closed


def test_a_child_using_corral_client_is_received_with_its_pid() -> None:
    got: list[NotifyMessage] = []

    async def main() -> None:
        loop = asyncio.get_running_loop()
        with NotifySocket(loop, got.append, always) as sock:
            code = "from corral import client; import sys; sys.exit(0 if client.ready('up') else 3)"
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-c", code, env=child_env(sock.address)
            )
            assert await proc.wait() == 0
            await until(lambda: got, "READY=1 from the child")
            assert got == [
                NotifyMessage(pid=proc.pid, uid=os.getuid(), fields={"READY": "1", "STATUS": "up"})
            ]

    run(main)


def in_group(leader: list[int]) -> Callable[[int, int], bool]:
    """The supervisor's kind of check: the sender is in the instance's process group."""

    def allowed(pid: int, uid: int) -> bool:
        try:
            return bool(leader) and os.getpgid(pid) == leader[0]
        except OSError:
            return False

    return allowed


async def start(proc: asyncio.subprocess.Process) -> None:
    """Let a shell that waits on `read go` proceed (once the test knows its pid)."""
    assert proc.stdin is not None
    proc.stdin.write(b"go\n")
    await proc.stdin.drain()
    proc.stdin.close()


def test_a_process_group_check_accepts_the_tree_and_refuses_outsiders() -> None:
    got: list[NotifyMessage] = []

    async def main() -> None:
        leader: list[int] = []
        with NotifySocket(asyncio.get_running_loop(), got.append, in_group(leader)) as sock:
            # The instance's shell, then a grandchild of the group, each say something;
            # the grandchild waits for the socket to be read before it exits.
            grandchild = (
                "from corral import client; import time; client.status('from the grandchild');"
                " time.sleep(0.5)"
            )
            proc = await asyncio.create_subprocess_exec(
                "/bin/sh",
                "-c",
                f'read go; {sys.executable} -c "{grandchild}"',
                env=child_env(sock.address),
                start_new_session=True,
                stdin=asyncio.subprocess.PIPE,
            )
            leader.append(proc.pid)
            await start(proc)
            send(sock.address, b"STATUS=from an outsider")  # this test process
            await until(lambda: got and sock.refused, "one accepted, one refused")
            await proc.wait()

    run(main)
    assert [m.fields for m in got] == [{"STATUS": "from the grandchild"}]


NOBODY = 65534


@pytest.mark.skipif(shutil.which("systemd-notify") is None, reason="no systemd-notify")
@pytest.mark.parametrize(
    "uid",
    [
        pytest.param(None, id="same-user"),
        pytest.param(
            NOBODY,
            id="another-user",
            marks=[
                pytest.mark.root,
                pytest.mark.skipif(os.geteuid() != 0, reason="needs root"),
            ],
        ),
    ],
)
def test_systemd_notify_from_a_shell_is_accepted(uid: int | None) -> None:
    """The shell fallback for apps without a client (Node): systemd-notify sends, then
    waits on a barrier (an fd the daemon closes), so it is still alive, and still in the
    group, when the daemon checks it. An app running as another user reaches the
    abstract socket just the same."""
    got: list[NotifyMessage] = []
    as_user = {} if uid is None else {"user": uid, "group": uid, "extra_groups": []}

    async def main() -> None:
        leader: list[int] = []
        with NotifySocket(asyncio.get_running_loop(), got.append, in_group(leader)) as sock:
            proc = await asyncio.create_subprocess_exec(
                "/bin/sh",
                "-c",
                "read go; systemd-notify --ready --status='warmed up'",
                env=child_env(sock.address),
                start_new_session=True,
                stdin=asyncio.subprocess.PIPE,
                cwd="/",
                **as_user,  # type: ignore[arg-type]
            )
            leader.append(proc.pid)
            await start(proc)
            assert await proc.wait() == 0
            assert sock.refused == 0

    run(main)
    ready = next(m for m in got if "READY" in m.fields)
    assert ready.fields["READY"] == "1"
    assert ready.fields["STATUS"] == "warmed up"
    assert ready.uid == (os.getuid() if uid is None else uid)


@pytest.mark.parametrize(
    ("payload", "fields"),
    [
        (b"", {}),
        (b"READY=1", {"READY": "1"}),
        (b"A=1\nA=2\n", {"A": "2"}),
        (b"A=\n", {"A": ""}),
        (b"A==b=c", {"A": "=b=c"}),
        (b"=x\nnoeq\n\n", {}),
        (b"S=with\rcr\n", {"S": "with\rcr"}),
        (b"K=\xc3\x28", {"K": "\ufffd("}),
    ],
)
def test_parse_payload(payload: bytes, fields: dict[str, str]) -> None:
    assert parse_payload(payload) == fields
