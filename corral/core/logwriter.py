"""The log writer: one background thread that owns every open log file (SPEC 1.7).

`submit` only appends to a bounded per-file queue, from any thread, and never waits for
the disk; when the disk cannot keep up and a queue is full, new bytes are dropped and
counted (shown by `describe`) instead of waiting. Writing, rotation, reopening and
truncation all happen in the writer thread, in the order they were asked for.
"""

from __future__ import annotations

import concurrent.futures
import errno
import logging
import os
import threading
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

log = logging.getLogger(__name__)

DEFAULT_MAX_BUFFER = 4 * 1024 * 1024
FILE_MODE = 0o640
DIR_MODE = 0o750


class _Completion:
    """Resolves a future once `count` queued operations have been carried out; with the
    first error if one of them failed."""

    def __init__(self, count: int) -> None:
        self.remaining = count
        self.error: OSError | None = None
        self.future: concurrent.futures.Future[None] = concurrent.futures.Future()
        if count == 0:
            self.future.set_result(None)

    def one_done(self, error: OSError | None) -> None:  # writer thread only
        self.remaining -= 1
        self.error = self.error or error
        if self.remaining == 0:
            if self.error is not None:
                self.future.set_exception(self.error)
            else:
                self.future.set_result(None)


_OpKind = Literal["truncate", "reopen", "release", "sync"]


@dataclass
class _Op:
    """A file operation, queued in order with the data around it."""

    kind: _OpKind
    completion: _Completion


@dataclass
class _Dest:
    """One log file. `items`, `queued` and `dropped` are guarded by the writer's lock;
    `fd` and `failing` belong to the writer thread alone."""

    path: Path
    items: deque[bytes | _Op] = field(default_factory=deque)
    queued: int = 0
    """Bytes accepted and not yet written (waiting in `items` or being written)."""
    dropped: int = 0
    fd: int | None = None
    failing: bool = False
    """A write failure was logged; stay quiet until writes succeed again."""


class LogWriter:
    """The single thread that writes every log file of the daemon.

    All methods may be called from any thread; none of them waits for the disk except
    `close`. Operations on one file happen in the order they were requested.
    """

    def __init__(self, max_buffer: int = DEFAULT_MAX_BUFFER) -> None:
        self.max_buffer = max_buffer
        self._cond = threading.Condition()
        self._dests: dict[Path, _Dest] = {}
        self._dirty: dict[Path, _Dest] = {}  # files with queued items, in arrival order
        self._closing = False
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name="corral-logwriter")
        # Daemonic: a disk that hangs for good must not keep the daemon from exiting.
        self._thread.daemon = True
        self._thread.start()

    # --- API (any thread) ---

    def submit(self, path: Path, data: bytes) -> bool:
        """Queue `data` for appending to `path`; False if it was dropped (queue full)."""
        if not data:
            return True
        with self._cond:
            dest = self._dest(path)
            # A chunk that does not fit is dropped whole: the file keeps whole chunks.
            if self._closing or dest.queued + len(data) > self.max_buffer:
                dest.dropped += len(data)
                return False
            dest.items.append(data)
            dest.queued += len(data)
            self._mark(dest)
        return True

    def dropped_bytes(self, path: Path) -> int:
        with self._cond:
            dest = self._dests.get(path)
            return dest.dropped if dest is not None else 0

    def truncate(self, path: Path) -> concurrent.futures.Future[None]:
        """Empty the file (`corral flush`), after the data already written to it.

        Data still queued for it is discarded right away (it would be erased anyway).
        Await the result with `asyncio.wrap_future` to know when it is done; it fails with
        the OSError if the file could not be truncated.
        """
        with self._cond:
            dest = self._dest(path)
            kept: deque[bytes | _Op] = deque()
            for item in dest.items:
                if isinstance(item, _Op):
                    kept.append(item)
                else:
                    dest.queued -= len(item)
            dest.items = kept
            return self._queue_op(dest, "truncate", _Completion(1))

    def reopen_all(self) -> concurrent.futures.Future[None]:
        """Close and reopen every file (`reload-logs`, SIGUSR2), after the data queued so
        far, which still goes to the old file. A file that was moved away or deleted is
        created anew. The future fails with the first OSError if a file could not be
        reopened (its next write tries again)."""
        with self._cond:
            dests = list(self._dests.values())
            completion = _Completion(len(dests))
            for dest in dests:
                self._queue_op(dest, "reopen", completion)
            return completion.future

    def drained(self) -> concurrent.futures.Future[None]:
        """Resolves once everything submitted so far has been written (or dropped)."""
        with self._cond:
            dests = list(self._dests.values())
            completion = _Completion(len(dests))
            for dest in dests:
                self._queue_op(dest, "sync", completion)
            return completion.future

    def release(self, path: Path) -> concurrent.futures.Future[None]:
        """Close the file and forget it (with its drop counter) once its queue is written.

        For when an app is deleted, so that the daemon does not keep one entry per log
        file it ever wrote. Writing to it again later simply opens it again.
        """
        with self._cond:
            return self._queue_op(self._dest(path), "release", _Completion(1))

    def close(self, timeout: float = 5.0) -> bool:
        """Write what is queued, close every file and stop the thread.

        Blocks up to `timeout` seconds (call it through `asyncio.to_thread` from the
        loop); returns False if the thread had not finished by then. Data submitted
        afterwards is dropped, and other operations do nothing.
        """
        with self._cond:
            self._closing = True
            self._cond.notify()
        self._thread.join(timeout)
        return not self._thread.is_alive()

    # --- helpers, called with the lock held ---

    def _dest(self, path: Path) -> _Dest:
        dest = self._dests.get(path)
        if dest is None:
            dest = self._dests[path] = _Dest(path)
        return dest

    def _mark(self, dest: _Dest) -> None:
        if dest.path not in self._dirty:
            self._dirty[dest.path] = dest
            self._cond.notify()

    def _queue_op(
        self, dest: _Dest, kind: _OpKind, done: _Completion
    ) -> concurrent.futures.Future[None]:
        if self._stopped:  # nobody left to carry it out: the files are closed
            done.one_done(None)
        else:
            dest.items.append(_Op(kind, done))
            self._mark(dest)
        return done.future

    # --- the writer thread ---

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._dirty and not self._closing:
                    self._cond.wait()
                if not self._dirty:  # closing, and everything is written
                    self._stopped = True
                    break
                batch = [(dest, dest.items) for dest in self._dirty.values()]
                for dest in self._dirty.values():
                    dest.items = deque()
                self._dirty.clear()
            # The disk is only touched here, without the lock: submit never waits on it.
            for dest, items in batch:
                try:
                    self._process(dest, items)
                except Exception:  # a bug here must not silence every log file
                    log.exception("log writer: unexpected error on %s", dest.path)
        with self._cond:
            dests = list(self._dests.values())
        for dest in dests:
            self._close_fd(dest)

    def _process(self, dest: _Dest, items: deque[bytes | _Op]) -> None:
        run: list[bytes] = []
        for item in items:
            if isinstance(item, bytes):
                run.append(item)
                continue
            self._write_run(dest, run)
            run = []
            error: OSError | None = None
            try:
                self._apply(dest, item.kind)
            except OSError as exc:
                log.warning("log file %s: %s failed: %s", dest.path, item.kind, exc)
                error = exc
            finally:
                item.completion.one_done(error)
        self._write_run(dest, run)

    def _write_run(self, dest: _Dest, run: list[bytes]) -> None:
        if not run:
            return
        data = run[0] if len(run) == 1 else b"".join(run)
        lost = self._write(dest, data)
        with self._cond:
            dest.queued -= len(data)
            dest.dropped += lost

    def _write(self, dest: _Dest, data: bytes) -> int:
        """Append `data`; returns how many bytes could not be written."""
        view = memoryview(data)
        try:
            if dest.fd is None:
                dest.fd = self._open(dest.path)
            while view:
                view = view[self._write_fd(dest.fd, view) :]
        except OSError as exc:
            if not dest.failing:
                log.warning("log file %s: write failed, dropping output: %s", dest.path, exc)
                dest.failing = True
            # Reopened on the next write: recovers from a folder that was removed, etc.
            self._close_fd(dest)
            return len(view)
        if dest.failing:
            log.warning("log file %s: writing again", dest.path)
            dest.failing = False
        return 0

    def _write_fd(self, fd: int, data: memoryview) -> int:
        """One write(2). A separate method so that tests can stand in a slow disk."""
        return os.write(fd, data)

    def _apply(self, dest: _Dest, kind: _OpKind) -> None:
        # "sync" does nothing: it only marks a point in the queue.
        if kind == "truncate":
            if dest.fd is None:
                dest.fd = self._open(dest.path)
            os.ftruncate(dest.fd, 0)  # O_APPEND: the next write lands at the new end
        elif kind == "reopen":
            self._close_fd(dest)
            dest.fd = self._open(dest.path)
        elif kind == "release":
            self._close_fd(dest)
            with self._cond:
                if not dest.items and dest.path not in self._dirty:
                    self._dests.pop(dest.path, None)

    @staticmethod
    def _open(path: Path) -> int:
        path.parent.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
        # O_NONBLOCK matters only for a FIFO given as a log file: with nobody reading it
        # the open or write fails (the bytes are dropped) instead of hanging this thread.
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC | os.O_NONBLOCK
        return os.open(path, flags, FILE_MODE)

    @staticmethod
    def _close_fd(dest: _Dest) -> None:
        if dest.fd is not None:
            fd, dest.fd = dest.fd, None
            try:
                os.close(fd)
            except OSError as exc:  # EIO on close: the data is lost, the fd is freed
                if exc.errno != errno.EBADF:
                    log.warning("log file %s: close failed: %s", dest.path, exc)
