"""`watch` (SPEC 1.4): tell the supervisor when an app's files change, so it restarts it.

watchfiles' Rust notifier does the watching. It runs in a thread of its own per watcher,
not through `watchfiles.awatch`, for two reasons: creating the notifier walks the whole
tree to add inotify watches (seconds on a big `node_modules`), which must not happen on
the event loop; and `awatch` parks one anyio worker thread per watcher, and anyio lends
out only 40 of those to the whole daemon.

Debounce is a quiet period: `on_change` runs once `debounce` seconds have passed with no
new change, with every path changed since the previous call. A build or checkout that
writes files for a while thus causes one restart, at the end. (watchfiles' own debounce
only groups changes up to a maximum window, which would restart mid-build.)
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import logging
import os
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)

ALWAYS_IGNORED = (".git", "__pycache__", "node_modules", "*.pyc", "*.swp", "*~", ".DS_Store")

_STEP_MS = 50  # how long the notifier waits for more events before handing a batch over
_TIMEOUT_MS = 1000  # a wait ends at least this often, to notice a stop request


class IgnoreRules:
    """fnmatch globs (case-sensitive) matched against a changed path.

    A path is ignored if a pattern matches its path relative to the watched root, any
    leading part of that relative path (`build/out` ignores everything under it), any
    single component (`node_modules` ignores the folder wherever it is, `*.log` every log
    file), or the absolute path (for patterns written as absolute paths).
    """

    def __init__(self, roots: list[str], patterns: list[str]) -> None:
        self._roots = [os.path.abspath(r) for r in roots]
        cleaned = (p.strip().removeprefix("./").rstrip("/") for p in patterns)
        self._patterns = [p for p in dict.fromkeys([*ALWAYS_IGNORED, *cleaned]) if p]

    def ignored(self, path: str) -> bool:
        path = os.path.abspath(path)
        candidates = [path]
        rel = self._relative(path)
        if rel is not None:
            parts = rel.split(os.sep)
            candidates += parts
            candidates += ["/".join(parts[:i]) for i in range(2, len(parts) + 1)]
        else:
            candidates += path.split(os.sep)
        return any(fnmatch.fnmatchcase(c, p) for c in candidates for p in self._patterns)

    def _relative(self, path: str) -> str | None:
        for root in self._roots:
            if path == root:  # a watched file itself
                return os.path.basename(path)
            if path.startswith(root.rstrip(os.sep) + os.sep):
                return path[len(root.rstrip(os.sep)) + 1 :]
        return None


class AppWatcher:
    """Watches some paths recursively; calls `on_change(paths)` after a quiet period.

    `paths` are made absolute; `on_change` receives a sorted list of the changed
    *absolute* paths (created, modified or deleted), ignored ones left out. It runs on the
    event loop. A path that does not exist when watching starts is skipped with a warning.
    """

    def __init__(
        self,
        paths: list[str],
        ignore: list[str],
        debounce: float,
        on_change: Callable[[list[str]], None],
    ) -> None:
        self.paths = [os.path.abspath(p) for p in paths]
        self.rules = IgnoreRules(self.paths, ignore)
        self.debounce = max(0.0, debounce)
        self._on_change = on_change
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._ready: asyncio.Event | None = None
        self._done: asyncio.Future[None] | None = None
        self._pending: set[str] = set()
        self._timer: asyncio.TimerHandle | None = None
        self.watching: list[str] = []
        """The paths actually watched (those that existed), once ready."""

    def start(self) -> None:
        """Start watching in the background. Must be called from the event loop."""
        if self._thread is not None:
            return
        self._loop = asyncio.get_running_loop()
        self._ready = asyncio.Event()
        self._done = self._loop.create_future()
        self._thread = threading.Thread(
            target=self._run, name=f"corral-watch:{self.paths[0] if self.paths else ''}"
        )
        self._thread.daemon = True  # a stuck notifier must not hold the daemon's exit
        self._thread.start()

    async def wait_ready(self) -> None:
        """Return once changes are being noticed (or watching has given up)."""
        if self._ready is not None:
            await self._ready.wait()

    async def stop(self, timeout: float = 5.0) -> None:
        """Stop watching; pending changes are discarded. Safe to call more than once."""
        self._stop.set()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._pending.clear()
        if self._done is not None and not self._done.done():
            try:
                await asyncio.wait_for(asyncio.shield(self._done), timeout)
            except TimeoutError:
                log.warning("file watcher for %s did not stop in %.1fs", self.paths, timeout)
                return
        if self._thread is not None and self._thread.is_alive():
            # It has said it is done; this only waits for it to leave its last frame.
            await asyncio.to_thread(self._thread.join, timeout)

    # --- the watching thread ---

    def _run(self) -> None:
        try:
            self._watch()
        except Exception:
            log.exception("file watcher for %s failed; changes are no longer noticed", self.paths)
        finally:
            self._to_loop(self._finished)

    def _watch(self) -> None:
        existing = []
        for path in self.paths:
            if os.path.exists(path):
                existing.append(path)
            else:
                log.warning("watch: %s does not exist, not watching it", path)
        if not existing or self._stop.is_set():
            self._to_loop(self._set_ready, [])
            return
        # Imported here, in the watcher's thread: most daemons watch nothing and need not
        # pay for loading watchfiles (and anyio, which it imports) at every start.
        from watchfiles._rust_notify import RustNotify

        with RustNotify(existing, False, False, 300, True, True) as notify:
            self._to_loop(self._set_ready, existing)
            # Batches arrive at least twice per quiet period during a steady stream of
            # changes, so that the quiet timer on the loop is never outrun.
            batch_ms = max(int(self.debounce * 500), _STEP_MS)
            while not self._stop.is_set():
                raw = notify.watch(batch_ms, _STEP_MS, _TIMEOUT_MS, self._stop)
                if isinstance(raw, str):  # "timeout", "stop" or "signal"
                    continue
                changed = {path for _, path in raw if not self.rules.ignored(path)}
                if changed:
                    self._to_loop(self._add_changes, changed)

    def _to_loop(self, fn: Callable[..., None], *args: object) -> None:
        assert self._loop is not None
        # RuntimeError: the loop is closed, nobody is listening any more.
        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(fn, *args)

    # --- back on the event loop ---

    def _set_ready(self, watching: list[str]) -> None:
        self.watching = watching
        if self._ready is not None:
            self._ready.set()

    def _finished(self) -> None:
        self._set_ready(self.watching)
        if self._done is not None and not self._done.done():
            self._done.set_result(None)

    def _add_changes(self, changed: set[str]) -> None:
        if self._stop.is_set():
            return
        self._pending |= changed
        if self._timer is not None:
            self._timer.cancel()
        assert self._loop is not None
        self._timer = self._loop.call_later(self.debounce, self._fire)

    def _fire(self) -> None:
        self._timer = None
        paths, self._pending = sorted(self._pending), set()
        try:
            self._on_change(paths)
        except Exception:
            log.exception("watch callback for %s failed", self.paths)
