"""Size-based rotation of log files (SPEC 1.7): built in, no plug-in needed.

`LogFile` is one log file as the writer thread (corral.core.logwriter) sees it: it appends,
tracks the size, and when a write would take the file past `max_size` it cuts the data
at a line end, renames the file to `<name>.<UTC stamp>` and opens a new one. Nothing is
lost or written twice at the cut: the rotated files in order, then the current file, hold
exactly the bytes written.

`Compressor` is the one background thread (for the whole daemon) that gzips rotated files
and deletes the oldest beyond `retain`, so that the writer thread, which every log of the
daemon goes through, never spends more than a rename on a rotation.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import errno
import gzip
import logging
import os
import re
import shutil
import stat
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

log = logging.getLogger(__name__)

FILE_MODE = 0o640
DIR_MODE = 0o750
DEFAULT_MAX_SIZE = 10 * 1024 * 1024
DEFAULT_RETAIN = 10
COMPRESS_LEVEL = 6
"""gzip's own default: the module's 9 costs much more CPU for a few percent."""
_COPY_SIZE = 1024 * 1024
_STAMP_FORMAT = "%Y%m%d-%H%M%S-%f"
# O_NOFOLLOW: a symlink planted at a log path (say in a shared folder) must not make a
# daemon, which may run as root, append to the file it points at.
_OPEN_FLAGS = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC | os.O_NONBLOCK | os.O_NOFOLLOW

WriteFd = Callable[[int, memoryview], int]
_Key = tuple[str, int]
"""A rotation: its stamp and a counter (0 unless two rotations got the same stamp)."""


@dataclass(frozen=True)
class RotationPolicy:
    """When and how a log file is rotated."""

    max_size: int = DEFAULT_MAX_SIZE
    """Rotate before the file would exceed this many bytes; 0 = never rotate."""
    retain: int = DEFAULT_RETAIN
    """How many rotated files are kept (the newest); 0 = none."""
    compress: bool = False
    """gzip rotated files (to `<rotated>.gz`, in the background)."""

    def __post_init__(self) -> None:
        if self.max_size < 0:
            raise ValueError(f"max_size must be >= 0, not {self.max_size}")
        if self.retain < 0:
            raise ValueError(f"retain must be >= 0, not {self.retain}")


DEFAULT_POLICY = RotationPolicy()


# --- rotated file names ---


def _pattern(base: Path) -> re.Pattern[str]:
    return re.compile(re.escape(base.name) + r"\.(\d{8}-\d{6}-\d{6})(?:\.(\d+))?(\.gz)?")


def _rotated_name(base: Path, key: _Key) -> Path:
    stamp, counter = key
    suffix = f"{stamp}.{counter}" if counter else stamp
    return base.with_name(f"{base.name}.{suffix}")


def _rotations(base: Path) -> dict[_Key, list[Path]]:
    """The rotated siblings of `base`, by rotation: a plain file, its .gz, or both (while
    it is being compressed). Only names that match exactly; never any other file."""
    pattern = _pattern(base)
    found: dict[_Key, list[Path]] = {}
    with os.scandir(base.parent) as entries:
        for entry in entries:
            match = pattern.fullmatch(entry.name)
            if match:
                key = (match[1], int(match[2] or 0))
                found.setdefault(key, []).append(base.parent / entry.name)
    return found


def rotated_files(path: Path) -> list[Path]:
    """The rotated files of the log file `path`, oldest first, one per rotation: the .gz
    or the plain file (the plain one while both exist, during compression)."""
    try:
        found = _rotations(path)
    except FileNotFoundError:
        return []
    return [
        sorted(paths, key=lambda p: p.name.endswith(".gz"))[0] for _, paths in sorted(found.items())
    ]


# --- the compressor thread ---


@dataclass(frozen=True)
class _Job:
    rotated: Path
    base: Path
    retain: int


class Compressor:
    """The one thread that gzips rotated files, and the keeper of `retain`.

    `submit` and `prune` may be called from any thread. The thread starts with the first
    file to compress, so a daemon that never compresses never has it.
    """

    def __init__(self, level: int = COMPRESS_LEVEL) -> None:
        self.level = level
        self._cond = threading.Condition()
        self._jobs: deque[_Job | concurrent.futures.Future[None]] = deque()
        self._busy: set[Path] = set()
        """Plain rotated files being compressed: `prune` leaves them alone."""
        self._thread: threading.Thread | None = None
        self._closed = False
        self._failing = False  # a compression failure was logged
        self._prune_failing = False  # a deletion failure was logged

    def submit(self, rotated: Path, base: Path, retain: int) -> None:
        """Compress `rotated` (a rotated file of `base`), then re-apply `retain`."""
        with self._cond:
            if self._closed:  # shutting down: the file simply stays uncompressed
                return
            self._jobs.append(_Job(rotated, base, retain))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="corral-logcompress")
                self._thread.daemon = True  # a hung disk must not keep the daemon alive
                self._thread.start()
            self._cond.notify()

    def barrier(self) -> concurrent.futures.Future[None]:
        """Resolves once every file submitted so far has been dealt with."""
        future: concurrent.futures.Future[None] = concurrent.futures.Future()
        with self._cond:
            if self._thread is not None and not self._closed:
                self._jobs.append(future)
                self._cond.notify()
                return future
        future.set_result(None)
        return future

    def prune(self, base: Path, retain: int) -> None:
        """Delete the oldest rotated files of `base` beyond the newest `retain`, except
        one being compressed (the compressor prunes again when it is done)."""
        try:
            found = _rotations(base)
        except OSError as exc:
            self._prune_failed(base, exc)
            return
        if len(found) <= retain:
            return
        # The lock makes "is it being compressed?" and the deletion one step.
        with self._cond:
            for key in sorted(found)[: len(found) - retain]:
                plain = _rotated_name(base, key)
                if plain in self._busy:
                    continue
                # A .gz.tmp is what a compression interrupted by a crash left behind.
                for victim in (plain, Path(f"{plain}.gz"), Path(f"{plain}.gz.tmp")):
                    try:
                        os.unlink(victim)
                    except FileNotFoundError:
                        pass
                    except OSError as exc:
                        self._prune_failed(victim, exc)

    def close(self, timeout: float = 5.0) -> bool:
        """Stop after the file being compressed, if any (files still queued stay plain);
        wait up to `timeout` seconds. False if the thread had not finished by then."""
        with self._cond:
            self._closed = True
            self._cond.notify()
            thread = self._thread
        if thread is None:
            return True
        thread.join(timeout)
        return not thread.is_alive()

    def _prune_failed(self, path: Path, exc: OSError) -> None:
        if not self._prune_failing:
            self._prune_failing = True
            log.warning("log rotation: cannot delete old file %s: %s", path, exc)

    def _run(self) -> None:
        # Lower this thread's priority (Linux nice is per thread): the apps come first.
        with contextlib.suppress(OSError, AttributeError):
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)
        while True:
            with self._cond:
                while not self._jobs and not self._closed:
                    self._cond.wait()
                if self._closed:
                    leftovers = list(self._jobs)
                    self._jobs.clear()
                    break
                job = self._jobs.popleft()
                if isinstance(job, _Job):
                    self._busy.add(job.rotated)
            if isinstance(job, concurrent.futures.Future):
                _resolve(job)
                continue
            try:
                self._compress(job.rotated)
            except Exception:  # a bug here must not stop every later compression
                log.exception("log rotation: unexpected error compressing %s", job.rotated)
            finally:
                with self._cond:
                    self._busy.discard(job.rotated)
            self.prune(job.base, job.retain)
        for item in leftovers:
            if isinstance(item, concurrent.futures.Future):
                _resolve(item)

    def _compress(self, src: Path) -> None:
        """gzip `src` to `src.gz` through a temporary file, then delete `src`."""
        final = Path(f"{src}.gz")
        tmp = Path(f"{src}.gz.tmp")
        try:
            with open(src, "rb") as source:
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, FILE_MODE)
                with os.fdopen(fd, "wb") as raw:
                    with gzip.GzipFile(
                        filename=src.name, mode="wb", compresslevel=self.level, fileobj=raw
                    ) as packed:
                        shutil.copyfileobj(source, packed, _COPY_SIZE)
                    raw.flush()
                    # On disk before the plain file goes: a crash must not lose both.
                    os.fsync(raw.fileno())
            os.rename(tmp, final)
        except FileNotFoundError as exc:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            if exc.filename is not None and Path(exc.filename) == src:
                return  # already deleted by `retain` while it waited: nothing to do
            self._compress_failed(src, exc)
            return
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            self._compress_failed(src, exc)
            return
        try:
            os.unlink(src)
        except FileNotFoundError:
            pass
        except OSError as exc:
            self._compress_failed(src, exc)
            return
        if self._failing:
            log.warning("log rotation: compressing again")
            self._failing = False

    def _compress_failed(self, src: Path, exc: OSError) -> None:
        # The plain file stays: it is still a valid rotated file, counted by `retain`.
        if not self._failing:
            self._failing = True
            log.warning("log rotation: cannot compress %s: %s", src, exc)


def _resolve(future: concurrent.futures.Future[None]) -> None:
    # The waiter may have cancelled it (asyncio.wrap_future does on cancellation).
    with contextlib.suppress(concurrent.futures.InvalidStateError):
        future.set_result(None)


# --- one log file ---


class LogFile:
    """One log file, used by the writer thread alone: appends, and rotates by size.

    The file is opened on the first write (creating it, 0640, and its folder, 0750).
    Only a regular file is rotated: never a FIFO, a terminal or /dev/null given as a
    log file, nor a symlink.
    """

    def __init__(
        self,
        path: Path,
        policy: RotationPolicy,
        compressor: Compressor,
        *,
        write_fd: WriteFd = os.write,
    ) -> None:
        self.path = path
        self.policy = policy
        self.size = 0
        """Bytes in the open file: fstat at open, then what was written."""
        self._compressor = compressor
        self._write_fd = write_fd
        self._fd: int | None = None
        self._rotatable = False
        self._failing = False  # a write failure was logged
        self._rotate_failing = False  # a rotation failure was logged
        self._last_key: _Key | None = None

    def set_policy(self, policy: RotationPolicy) -> None:
        """Applies from the next write."""
        self.policy = policy

    def write(self, data: bytes) -> int:
        """Append `data`, rotating on the way if needed; returns how many bytes could not
        be written (after a failure, logged once until writing works again)."""
        end = len(data)
        done = 0
        view = memoryview(data)
        try:
            while done < end:
                if self._fd is None:
                    self._open()
                limit = self.policy.max_size
                if limit <= 0 or not self._rotatable or self.size + end - done <= limit:
                    stop = end  # the usual case: no search, no extra syscall
                else:
                    stop = self._cut(data, done)  # may rotate
                fd = self._fd
                assert fd is not None
                while done < stop:
                    written = self._write_fd(fd, view[done:stop])
                    done += written
                    self.size += written
        except OSError as exc:
            if not self._failing:
                log.warning("log file %s: write failed, dropping output: %s", self.path, exc)
                self._failing = True
            # Reopened on the next write: recovers from a folder that was removed, etc.
            self.close()
            return end - done
        if self._failing:
            log.warning("log file %s: writing again", self.path)
            self._failing = False
        return 0

    def reopen(self) -> None:
        """Close and open the path again (it may have been moved or deleted)."""
        self.close()
        self._open()

    def truncate(self) -> None:
        if self._fd is None:
            self._open()
        assert self._fd is not None
        os.ftruncate(self._fd, 0)  # O_APPEND: the next write lands at the new end
        self.size = 0

    def close(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            try:
                os.close(fd)
            except OSError as exc:  # EIO on close: the data is lost, the fd is freed
                if exc.errno != errno.EBADF:
                    log.warning("log file %s: close failed: %s", self.path, exc)

    # --- internals ---

    def _open(self) -> None:
        self.path.parent.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
        # O_NONBLOCK matters only for a FIFO given as a log file: with nobody reading it
        # the open or write fails (the bytes are dropped) instead of hanging this thread.
        fd = os.open(self.path, _OPEN_FLAGS, FILE_MODE)
        try:
            st = os.fstat(fd)
            regular = stat.S_ISREG(st.st_mode) and os.path.samestat(st, os.lstat(self.path))
        except OSError:
            os.close(fd)
            raise
        self._fd = fd
        self.size = st.st_size
        self._rotatable = regular

    def _cut(self, data: bytes, pos: int) -> int:
        """Where the next write into the current file should stop, `data[pos:]` being too
        large for it; rotates first when the next line belongs in a new file."""
        end = len(data)
        limit = self.policy.max_size
        for attempt in range(2):
            if self.size + end - pos <= limit:
                return end
            room = limit - self.size
            if room > 0:
                cut = data.rfind(b"\n", pos, pos + room) + 1
                if cut > pos:
                    return cut  # the lines that fit; the rest goes after a rotation
            if self.size == 0:
                # A line longer than max_size: it gets a file of its own, whole.
                newline = data.find(b"\n", pos)
                return newline + 1 if newline >= 0 else end
            if attempt or not self._rotate():
                break
        return end  # could not make room: the file grows, rotation is tried next write

    def _rotate(self) -> bool:
        """Rename the file aside and open a new one; False (logged once) if it failed."""
        assert self._fd is not None
        target: Path | None = None
        try:
            st = os.fstat(self._fd)
            self.size = st.st_size
            if self.size == 0:
                return True  # emptied behind our back (copytruncate): nothing to rotate
            with contextlib.suppress(FileNotFoundError):
                if os.path.samestat(st, os.lstat(self.path)):
                    name = self._next_name()
                    self._rename(self.path, name)
                    target = name
        except OSError as exc:
            if not self._rotate_failing:
                self._rotate_failing = True
                log.warning("log file %s: rotation failed, it keeps growing: %s", self.path, exc)
            return False
        if self._rotate_failing:
            log.warning("log file %s: rotating again", self.path)
            self._rotate_failing = False
        self.close()
        if target is None:
            # Moved or deleted by someone else (without `reload-logs`): follow the path,
            # and never rename a file that is not the one we were writing.
            self._open()
            return True
        try:
            self._open()
        finally:
            self._rotated(target)
        return True

    def _next_name(self) -> Path:
        key = (datetime.now(UTC).strftime(_STAMP_FORMAT), 0)
        if self._last_key is not None and key <= self._last_key:
            key = (self._last_key[0], self._last_key[1] + 1)  # the clock went back
        while True:
            target = _rotated_name(self.path, key)
            if not (os.path.lexists(target) or os.path.lexists(f"{target}.gz")):
                break
            key = (key[0], key[1] + 1)
        self._last_key = key
        return target

    def _rotated(self, target: Path) -> None:
        policy = self.policy
        if policy.compress and policy.retain > 0:
            self._compressor.submit(target, self.path, policy.retain)
        self._compressor.prune(self.path, policy.retain)

    @staticmethod
    def _rename(src: Path, dst: Path) -> None:
        """A separate method so that tests can stand in a failing rename."""
        os.rename(src, dst)
