"""The log writer: one background thread that owns every open log file (SPEC 1.7).

`submit` only appends to a bounded per-file queue, from any thread, and never waits for
the disk; when the disk cannot keep up and a queue is full, new bytes are dropped and
counted (shown by `describe`) instead of waiting. Writing, rotation, reopening and
truncation all happen in the writer thread, in the order they were asked for. Rotation
is by size (corral.core.logrotate); compressing and deleting old rotated files happen in
one more thread, so that they never hold up the writing.

A reader that would rather wait than lose bytes can watch `queued_bytes` and pause until
`when_drained` calls back.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from corral.core.logrotate import DEFAULT_POLICY, Compressor, LogFile, RotationPolicy

log = logging.getLogger(__name__)

DEFAULT_MAX_BUFFER = 4 * 1024 * 1024


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
            # The waiter may have cancelled the future (asyncio.wrap_future does when it
            # is cancelled): that must not abort the rest of the batch.
            with contextlib.suppress(concurrent.futures.InvalidStateError):
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
    """One log file. `file` belongs to the writer thread alone; the rest is guarded by
    the writer's lock."""

    path: Path
    file: LogFile
    items: deque[bytes | _Op] = field(default_factory=deque)
    queued: int = 0
    """Bytes accepted and not yet written (waiting in `items` or being written)."""
    dropped: int = 0
    policy: RotationPolicy | None = None
    """Its own rotation policy; None = the writer's default."""
    waiter: tuple[int, Callable[[], object]] | None = None
    """`when_drained`: (low water, callback)."""


class LogWriter:
    """The single thread that writes every log file of the daemon.

    All methods may be called from any thread; none of them waits for the disk except
    `close`. Operations on one file happen in the order they were requested. Files are
    rotated by size, by `default_policy` or their own (`set_policy`).
    """

    def __init__(
        self,
        max_buffer: int = DEFAULT_MAX_BUFFER,
        default_policy: RotationPolicy = DEFAULT_POLICY,
    ) -> None:
        self.max_buffer = max_buffer
        self._default_policy = default_policy
        self._compressor = Compressor()
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

    def queued_bytes(self, path: Path) -> int:
        """Bytes accepted for `path` and not written yet."""
        with self._cond:
            dest = self._dests.get(path)
            return dest.queued if dest is not None else 0

    def when_drained(self, path: Path, low_water: int, callback: Callable[[], object]) -> None:
        """Call `callback` once at most `low_water` bytes are queued for `path`.

        At once, in this thread, if that is already the case; otherwise later, from the
        writer thread (wrap it with `loop.call_soon_threadsafe`). One callback per file:
        a new one replaces the one still pending.
        """
        with self._cond:
            dest = self._dests.get(path)
            if dest is not None:
                if dest.queued > low_water:
                    dest.waiter = (low_water, callback)
                    return
                dest.waiter = None
        callback()

    def set_default_policy(self, policy: RotationPolicy) -> None:
        """The rotation policy of files without their own, from their next write."""
        with self._cond:
            self._default_policy = policy

    def set_policy(self, path: Path, policy: RotationPolicy | None) -> None:
        """The rotation policy of `path` from its next write; None = the default.
        `release` forgets it."""
        with self._cond:
            self._dest(path).policy = policy

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

    def settled(self) -> concurrent.futures.Future[None]:
        """Like `drained`, and also every rotated file compressed (or given up on)."""
        settled: concurrent.futures.Future[None] = concurrent.futures.Future()

        def then_compressed(_: concurrent.futures.Future[None]) -> None:
            self._compressor.barrier().add_done_callback(lambda _: _resolve(settled))

        self.drained().add_done_callback(then_compressed)
        return settled

    def close(self, timeout: float = 5.0) -> bool:
        """Write what is queued, close every file and stop the threads (the compressor
        after the file it is compressing; files still waiting stay uncompressed).

        Blocks up to `timeout` seconds (call it through `asyncio.to_thread` from the
        loop); returns False if the threads had not finished by then. Data submitted
        afterwards is dropped, and other operations do nothing.
        """
        deadline = time.monotonic() + timeout
        with self._cond:
            self._closing = True
            self._cond.notify()
        self._thread.join(timeout)
        # After the writer: its last rotations may still hand files to the compressor.
        compressor_done = self._compressor.close(max(0.0, deadline - time.monotonic()))
        return not self._thread.is_alive() and compressor_done

    # --- helpers, called with the lock held ---

    def _dest(self, path: Path) -> _Dest:
        dest = self._dests.get(path)
        if dest is None:
            # LogFile touches nothing before its first write: cheap to make under the lock.
            file = LogFile(path, self._default_policy, self._compressor, write_fd=self._write_fd)
            dest = self._dests[path] = _Dest(path, file)
        return dest

    @staticmethod
    def _take_waiter(dest: _Dest) -> Callable[[], object] | None:
        waiter = dest.waiter
        if waiter is None or dest.queued > waiter[0]:
            return None
        dest.waiter = None
        return waiter[1]

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
                default = self._default_policy
                batch = [
                    (dest, dest.items, default if dest.policy is None else dest.policy)
                    for dest in self._dirty.values()
                ]
                for dest in self._dirty.values():
                    dest.items = deque()
                self._dirty.clear()
            # The disk is only touched here, without the lock: submit never waits on it.
            for dest, items, policy in batch:
                dest.file.set_policy(policy)
                try:
                    self._process(dest, items)
                except Exception:  # a bug here must not silence every log file
                    log.exception("log writer: unexpected error on %s", dest.path)
        with self._cond:
            dests = list(self._dests.values())
        for dest in dests:
            dest.file.close()

    def _process(self, dest: _Dest, items: deque[bytes | _Op]) -> None:
        run: list[bytes] = []
        ops = False
        for item in items:
            if isinstance(item, bytes):
                run.append(item)
                continue
            self._write_run(dest, run)
            run = []
            ops = True
            error: OSError | None = None
            try:
                self._apply(dest, item.kind)
            except OSError as exc:
                log.warning("log file %s: %s failed: %s", dest.path, item.kind, exc)
                error = exc
            except Exception as exc:  # a bug: fail this operation, carry on with the queue
                log.exception("log writer: unexpected error on %s", dest.path)
                error = OSError(f"internal error: {exc!r}")
            finally:
                item.completion.one_done(error)
        self._write_run(dest, run)
        if ops:  # a truncate may have emptied the queue without any write
            with self._cond:
                callback = self._take_waiter(dest)
            self._call(callback)

    def _write_run(self, dest: _Dest, run: list[bytes]) -> None:
        if not run:
            return
        # One write(2) for the whole run, which is what keeps a chatty process cheap.
        data = run[0] if len(run) == 1 else b"".join(run)
        try:
            lost = dest.file.write(data)
        except Exception:  # a bug: count the bytes as lost, the buffer must not stay full
            log.exception("log writer: unexpected error writing %s", dest.path)
            lost = len(data)
        with self._cond:
            dest.queued -= len(data)
            dest.dropped += lost
            callback = self._take_waiter(dest)
        self._call(callback)

    @staticmethod
    def _call(callback: Callable[[], object] | None) -> None:
        if callback is not None:
            try:
                callback()
            except Exception:
                log.exception("log writer: when_drained callback failed")

    def _write_fd(self, fd: int, data: memoryview) -> int:
        """One write(2). A separate method so that tests can stand in a slow disk."""
        return os.write(fd, data)

    def _apply(self, dest: _Dest, kind: _OpKind) -> None:
        # "sync" does nothing: it only marks a point in the queue.
        if kind == "truncate":
            dest.file.truncate()
        elif kind == "reopen":
            dest.file.reopen()
        elif kind == "release":
            dest.file.close()
            with self._cond:
                if not dest.items and dest.path not in self._dirty:
                    self._dests.pop(dest.path, None)


def _resolve(future: concurrent.futures.Future[None]) -> None:
    with contextlib.suppress(concurrent.futures.InvalidStateError):  # cancelled
        future.set_result(None)
