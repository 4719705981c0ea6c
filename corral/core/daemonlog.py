"""The daemon's own log (`<home>/corral.log`): written by a thread, in batches.

The event loop only puts records on a queue; a thread writes them, so the loop never
waits on the disk. The thread wakes at most once per BATCH_DELAY and writes everything
queued by then: when 100 apps start at once (four lines each), handing the GIL to a writer
for every line costs the loop more than the lines themselves.
"""

from __future__ import annotations

import logging
import logging.handlers
import os
import queue
import threading
import time

from corral.paths import Home

DAEMON_LOG_MAX = 10 * 2**20
DAEMON_LOG_KEEP = 5  # the daemon runs for months: its own log rotates too (corral.log.1 ... .5)
BATCH_DELAY = 0.05  # seconds a line may wait in the queue at most (plus the write itself)


class BatchWriter:
    """Drains a queue of log records into a handler from one thread, a batch at a time."""

    _STOP = object()

    def __init__(
        self, records: queue.SimpleQueue[object], handler: logging.Handler, delay: float
    ) -> None:
        self._records = records
        self._handler = handler
        self._delay = delay
        self._thread = threading.Thread(target=self._run, name="corral-log", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Write what is queued, then end the thread and close the file."""
        self._records.put(self._STOP)
        self._thread.join()
        self._handler.close()

    def _run(self) -> None:
        while True:
            first = self._records.get()
            if first is not self._STOP:
                time.sleep(self._delay)  # let the rest of a burst arrive
            batch = [first]
            while True:
                try:
                    batch.append(self._records.get_nowait())
                except queue.Empty:
                    break
            stopping = False
            for record in batch:
                if record is self._STOP:
                    stopping = True
                elif isinstance(record, logging.LogRecord):
                    self._handler.handle(record)
            if stopping:
                return


def setup_logging(home: Home) -> BatchWriter:
    """Route every logger of the daemon to `<home>/corral.log` through a BatchWriter."""
    file_handler = logging.handlers.RotatingFileHandler(
        home.daemon_log, maxBytes=DAEMON_LOG_MAX, backupCount=DAEMON_LOG_KEEP, encoding="utf-8"
    )
    os.chmod(home.daemon_log, 0o600)
    file_handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    records: queue.SimpleQueue[object] = queue.SimpleQueue()
    writer = BatchWriter(records, file_handler, BATCH_DELAY)
    root = logging.getLogger()
    root.handlers[:] = [logging.handlers.QueueHandler(records)]
    root.setLevel(logging.INFO)
    writer.start()
    return writer
