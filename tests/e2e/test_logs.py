"""Logs (SPEC 1.7): rotation, framing, follow, reopen, and no blocking under a flood or a
full disk."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import resource
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from ..conftest import Corral, read_text, wait_for

LINES = """
import sys
for i in range({count}):
    print(f"line {{i:07d}} " + "x" * (i % 97), flush=False)
sys.stdout.flush()
print("done", file=sys.stderr, flush=True)
import time; time.sleep(600)
"""


def rotated(path: Path) -> list[Path]:
    """The rotated siblings of a log file, oldest first."""
    return sorted(p for p in path.parent.iterdir() if p.name.startswith(path.name + "."))


def all_text(path: Path) -> str:
    parts = []
    for file in [*rotated(path), path]:
        data = file.read_bytes()
        parts.append(gzip.decompress(data) if file.name.endswith(".gz") else data)
    return b"".join(parts).decode()


@pytest.mark.slow
def test_rotation_by_size_keeps_every_line_across_gzipped_files(daemon: Corral) -> None:
    count = 60_000  # ~4 MB
    record = daemon.start_app(
        "rot",
        LINES.format(count=count),
        log_max_size=256 * 1024,
        log_retain=100,
        log_compress=True,
    )[0]
    out = Path(record["out_log"])
    wait_for(lambda: "done" in read_text(record["err_log"]), timeout=60)
    wait_for(lambda: rotated(out) and all(p.name.endswith(".gz") for p in rotated(out)))
    lines = all_text(out).splitlines()
    assert len(lines) == count
    assert lines == [f"line {i:07d} " + "x" * (i % 97) for i in range(count)]
    assert len(rotated(out)) >= 10
    for file in rotated(out):
        assert len(gzip.decompress(file.read_bytes())) <= 256 * 1024


@pytest.mark.slow
def test_retain_keeps_only_the_newest_rotated_files(daemon: Corral) -> None:
    record = daemon.start_app(
        "rot", LINES.format(count=60_000), log_max_size=128 * 1024, log_retain=3
    )[0]
    out = Path(record["out_log"])
    wait_for(lambda: "done" in read_text(record["err_log"]), timeout=60)
    wait_for(lambda: len(rotated(out)) == 3)
    # The newest lines are all there: the current file ends with the last line.
    assert all_text(out).splitlines()[-1].startswith("line 0059999")


@pytest.mark.slow
def test_daemon_wide_rotation_settings_apply_to_apps_without_their_own(daemon: Corral) -> None:
    assert "logs.max_size = 10485760" in daemon.ok("get").out
    assert daemon.cli("set", "logs.max_size", "banana").code != 0
    wrong_key = daemon.cli("set", "logs.max_sise", "1M")
    assert wrong_key.code != 0 and "logs.max_size" in wrong_key.err
    daemon.ok("set", "logs.max_size", "64K")
    daemon.ok("set", "logs.retain", "2")
    assert json.loads(daemon.home.settings.read_text())["logs.max_size"] == 64 * 1024
    record = daemon.start_app("rot", LINES.format(count=20_000))[0]
    out = Path(record["out_log"])
    wait_for(lambda: "done" in read_text(record["err_log"]), timeout=60)
    wait_for(lambda: len(rotated(out)) == 2)
    assert out.stat().st_size <= 64 * 1024


STAMPED = """
import sys, time
print("hello", flush=True)
print("oops", file=sys.stderr, flush=True)
sys.stdout.buffer.write(b"bytes \\xff\\xfe end\\n"); sys.stdout.flush()
sys.stdout.write("no newline yet"); sys.stdout.flush()
time.sleep(0.3)
print(" ... now", flush=True)
time.sleep(600)
"""


@pytest.mark.slow
def test_timestamps_prefix_every_line(daemon: Corral) -> None:
    record = daemon.start_app("stamped", STAMPED, log_date_format="%Y-%m-%d %H:%M:%S")[0]
    out = Path(record["out_log"])
    wait_for(lambda: "now" in read_text(out))
    lines = out.read_bytes().splitlines()
    assert len(lines) == 3
    for line in lines:
        stamp, _, _rest = line.partition(b": ")
        time.strptime(stamp.decode(), "%Y-%m-%d %H:%M:%S")
    assert lines[0].endswith(b": hello")
    assert lines[1].endswith(b": bytes \xff\xfe end")  # raw bytes, unchanged
    assert lines[2].endswith(b": no newline yet ... now")  # one line, one prefix


@pytest.mark.slow
def test_json_lines_mode(daemon: Corral) -> None:
    record = daemon.start_app("jsony", STAMPED, log_type="json")[0]
    out, err = Path(record["out_log"]), Path(record["err_log"])
    wait_for(lambda: "now" in read_text(out))
    objects = [json.loads(line) for line in out.read_text().splitlines()]
    assert [o["message"] for o in objects] == [
        "hello",
        "bytes \ufffd\ufffd end",
        "no newline yet ... now",
    ]
    for o in objects:
        assert o["app"] == "jsony" and o["instance"] == 0 and o["stream"] == "out"
        assert "T" in o["time"]
    assert json.loads(err.read_text().splitlines()[0])["stream"] == "err"


@pytest.mark.slow
def test_null_discards_a_stream(daemon: Corral) -> None:
    record = daemon.start_app("quiet", STAMPED, out_file="/dev/null")[0]
    assert record["out_log"] == "/dev/null"
    wait_for(lambda: "oops" in read_text(record["err_log"]))
    assert daemon.proc("quiet")["status"] == "online"


GIANT = """
import sys, time
sys.stdout.write("A" * (100 * 1024 * 1024)); sys.stdout.write("\\n"); sys.stdout.flush()
print("after", flush=True)
time.sleep(600)
"""


@pytest.mark.slow
def test_a_100_mb_line_is_written_in_bounded_pieces(daemon: Corral) -> None:
    record = daemon.start_app("giant", GIANT, log_type="json", log_max_size=0)[0]
    out = Path(record["out_log"])
    wait_for(lambda: '"after"' in read_text(out), timeout=120)
    objects = [json.loads(line) for line in out.read_text().splitlines()]
    pieces = objects[:-1]
    assert objects[-1]["message"] == "after"
    assert all(len(o["message"]) <= 1024 * 1024 for o in pieces)
    assert sum(len(o["message"]) for o in pieces) == 100 * 1024 * 1024
    assert all(o.get("partial") for o in pieces)
    assert daemon.proc("giant")["log_dropped"] == 0


TICKER = """
import signal, sys, time
def mark(*_):
    print("MARK-" + str(time.time()), flush=True)
signal.signal(signal.SIGUSR1, mark)
print("ready", flush=True)
while True:
    time.sleep(1)
"""


@pytest.mark.slow
def test_logs_follow_streams_lines_written_after_it_started(daemon: Corral) -> None:
    record = daemon.start_app("ticker", TICKER)[0]
    wait_for(lambda: "ready" in read_text(record["out_log"]))
    proc = subprocess.Popen(
        [sys.executable, "-m", "corral", "logs", "ticker", "--follow", "--lines", "5"],
        env=daemon.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        assert "ready" in first  # the tail
        daemon.ok("send-signal", "USR1", "ticker")
        line = proc.stdout.readline()
        assert "MARK-" in line and line.startswith("ticker|0|")
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=10)
    assert proc.returncode == 0


@pytest.mark.slow
def test_sigusr2_reopens_a_deleted_log_file(daemon: Corral) -> None:
    record = daemon.start_app("ticker", TICKER)[0]
    out = Path(record["out_log"])
    wait_for(lambda: "ready" in read_text(out))
    out.unlink()
    pid = daemon.daemon_pid()
    assert pid is not None
    os.kill(pid, signal.SIGUSR2)
    time.sleep(0.2)
    daemon.ok("send-signal", "USR1", "ticker")
    wait_for(lambda: "MARK-" in read_text(out))


FLOOD = """
import hashlib, sys
block = hashlib.sha256(b"corral").digest() * (1024 * 1024 // 32)
out = sys.stdout.buffer
for i in range({blocks}):
    out.write(i.to_bytes(8, "big") + block[8:])
out.flush()
print("flood done", file=sys.stderr, flush=True)
import time; time.sleep(600)
"""


def expected_flood_digest(blocks: int) -> str:
    block = hashlib.sha256(b"corral").digest() * (1024 * 1024 // 32)
    digest = hashlib.sha256()
    for i in range(blocks):
        digest.update(i.to_bytes(8, "big") + block[8:])
    return digest.hexdigest()


def file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(4 * 1024 * 1024):
            digest.update(chunk)
    return digest.hexdigest()


class PeakRss:
    def __init__(self, pid: int) -> None:
        self.proc = psutil.Process(pid)
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.peak = max(self.peak, self.proc.memory_info().rss)
            except psutil.Error:
                return
            time.sleep(0.02)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


@pytest.mark.slow
def test_a_1_gib_flood_reaches_the_file_whole_and_in_order_with_bounded_daemon_memory(
    daemon: Corral,
) -> None:
    blocks = 1024  # 1 GiB in 1 MiB blocks
    pid = daemon.daemon_pid()
    assert pid is not None
    with PeakRss(pid) as rss:
        record = daemon.start_app("flood", FLOOD.format(blocks=blocks), log_max_size=0)[0]
        out = Path(record["out_log"])
        wait_for(lambda: "flood done" in read_text(record["err_log"]), timeout=300)
        wait_for(lambda: out.stat().st_size == blocks * 1024 * 1024, timeout=120)
    assert daemon.proc("flood")["log_dropped"] == 0
    assert file_digest(out) == expected_flood_digest(blocks)
    assert rss.peak < 120 * 1024 * 1024, f"daemon peaked at {rss.peak / 2**20:.0f} MiB"


class FullDisk:
    """A place whose log writes can be made to fail for lack of space, then recover."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def fill(self, corral: Corral) -> None:
        raise NotImplementedError

    def free(self, corral: Corral) -> None:
        raise NotImplementedError


class TmpfsDisk(FullDisk):
    """A real 4 MiB tmpfs, filled up with a file (ENOSPC)."""

    def fill(self, corral: Corral) -> None:
        (self.folder / "filler").write_bytes(b"\0" * (4 * 1024 * 1024 - 64 * 1024))

    def free(self, corral: Corral) -> None:
        (self.folder / "filler").unlink()


class FileSizeLimit(FullDisk):
    """RLIMIT_FSIZE on the daemon (EFBIG), for machines where mounting is not allowed."""

    def fill(self, corral: Corral) -> None:
        pid = corral.daemon_pid()
        assert pid is not None
        limit = 256 * 1024  # above the state file, below what the app writes
        _, hard = resource.prlimit(pid, resource.RLIMIT_FSIZE)
        resource.prlimit(pid, resource.RLIMIT_FSIZE, (limit, hard))  # soft only: undoable

    def free(self, corral: Corral) -> None:
        pid = corral.daemon_pid()
        assert pid is not None
        _, hard = resource.prlimit(pid, resource.RLIMIT_FSIZE)
        resource.prlimit(pid, resource.RLIMIT_FSIZE, (hard, hard))


@pytest.fixture(params=["tmpfs", "rlimit-fsize"])
def full_disk(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[FullDisk]:
    folder = tmp_path / "small"
    folder.mkdir()
    if request.param == "rlimit-fsize":
        yield FileSizeLimit(folder)
        return
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(folder)],
        capture_output=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield TmpfsDisk(folder)
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


# The handler only sets a flag: printing from inside it could land in the middle of the
# loop's own print (a write blocked on a full pipe is where signals get handled), and
# Python refuses that reentrant call with a RuntimeError that kills the app.
CHATTER = """
import signal, time
marks = []
signal.signal(signal.SIGUSR1, lambda *_: marks.append(1))
while True:
    if marks:
        marks.clear()
        print("BACK-AGAIN", flush=True)
    print("chatter " + "y" * 200, flush=True)
    time.sleep(0.001)
"""


@pytest.mark.slow
def test_a_full_disk_drops_and_counts_never_blocks_and_recovers(
    daemon: Corral, full_disk: FullDisk
) -> None:
    record = daemon.start_app(
        "chatty", CHATTER, out_file=str(full_disk.folder / "chatty.log"), log_max_size=0
    )[0]
    app_pid = record["pid"]
    log_file = Path(record["out_log"])
    assert log_file.parent == full_disk.folder
    full_disk.fill(daemon)
    wait_for(lambda: daemon.proc("chatty")["log_dropped"] > 0, timeout=30)
    # Still running, still answering, the app never restarted (its pid is the same one).
    record = daemon.proc("chatty")
    assert record["status"] == "online" and record["pid"] == app_pid
    assert daemon.ok("ls").code == 0
    assert "log dropped" in daemon.ok("describe", "chatty").out
    # The app kept going while its output was dropped: it is still producing.
    dropped = record["log_dropped"]
    wait_for(lambda: daemon.proc("chatty")["log_dropped"] > dropped)
    # Space comes back: logging resumes.
    full_disk.free(daemon)
    log_file.write_bytes(b"")
    daemon.ok("send-signal", "USR1", "chatty")
    wait_for(lambda: "BACK-AGAIN" in read_text(log_file), timeout=30)
    assert daemon.proc("chatty")["pid"] == app_pid


@pytest.mark.slow
def test_logs_lines_err_out_json_and_raw(daemon: Corral) -> None:
    record = daemon.start_app("stamped", STAMPED)[0]
    wait_for(lambda: "now" in read_text(record["out_log"]))
    out_only = daemon.ok("logs", "stamped", "--out", "--lines", "1").out.strip().splitlines()
    assert out_only == ["stamped|0| no newline yet ... now"]
    err_raw = daemon.ok("logs", "stamped", "--err", "--raw").out.strip().splitlines()
    assert err_raw == ["oops"]
    as_json = [
        json.loads(line)
        for line in daemon.ok("logs", "stamped", "--json", "--lines", "1").out.splitlines()
    ]
    assert {"app": "stamped", "instance": 0, "stream": "err", "message": "oops"} in as_json
