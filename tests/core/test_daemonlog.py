"""The daemon's own log: a thread writes queued records in batches, nothing is lost."""

from __future__ import annotations

import logging
import queue
import threading
from pathlib import Path

from corral.core.daemonlog import BatchWriter, setup_logging
from corral.paths import Home


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.messages: list[str] = []
        self.threads: set[str] = set()
        self.closed = False

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())
        self.threads.add(threading.current_thread().name)

    def close(self) -> None:
        self.closed = True
        super().close()


def _record(message: str) -> logging.LogRecord:
    return logging.LogRecord("t", logging.INFO, __file__, 1, message, None, None)


def test_every_record_is_written_in_order_by_the_writer_thread_before_stop_returns() -> None:
    records: queue.SimpleQueue[object] = queue.SimpleQueue()
    sink = _Collect()
    writer = BatchWriter(records, sink, delay=0.01)
    writer.start()
    for i in range(500):
        records.put(_record(f"line {i}"))
    writer.stop()
    assert sink.messages == [f"line {i}" for i in range(500)]
    assert sink.threads == {"corral-log"}
    assert sink.closed


def test_stop_with_nothing_queued_ends_the_thread() -> None:
    records: queue.SimpleQueue[object] = queue.SimpleQueue()
    sink = _Collect()
    writer = BatchWriter(records, sink, delay=5.0)  # a stop must not wait for the delay
    writer.start()
    writer.stop()
    assert sink.messages == []
    assert sink.closed


def test_setup_logging_writes_the_daemons_log_file_0600(tmp_path: Path) -> None:
    home = Home(tmp_path / "home")
    home.ensure()
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    try:
        writer = setup_logging(home)
        logging.getLogger("corral.test").info("hello %s", "there")
        logging.getLogger("corral.test").debug("not at INFO")
        writer.stop()
    finally:
        root.handlers[:], root.level = saved
    text = home.daemon_log.read_text()
    assert "INFO corral.test: hello there" in text
    assert "not at INFO" not in text
    assert home.daemon_log.stat().st_mode & 0o777 == 0o600
