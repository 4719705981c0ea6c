"""AppWatcher on a real folder, and the ignore rules on their own."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from corral.core.watcher import AppWatcher, IgnoreRules

DEBOUNCE = 0.5


class Calls:
    """Collects on_change calls; lets a test wait for the next one."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []
        self._event = asyncio.Event()

    def __call__(self, paths: list[str]) -> None:
        self.calls.append(paths)
        self._event.set()

    async def next(self, timeout: float = 10.0) -> list[str]:
        await asyncio.wait_for(self._event.wait(), timeout)
        self._event.clear()
        return self.calls[-1]


def test_burst_of_writes_gives_one_call(tmp_path: Path) -> None:
    async def main() -> list[list[str]]:
        calls = Calls()
        watcher = AppWatcher([str(tmp_path)], [], DEBOUNCE, calls)
        watcher.start()
        try:
            await watcher.wait_ready()
            assert watcher.watching == [str(tmp_path)]
            for i in range(10):
                (tmp_path / "app.py").write_text(f"x = {i}\n")
                await asyncio.sleep(0.03)  # spread out: longer than watchfiles' 50 ms step
            await calls.next()
            # Two more quiet periods: nothing else arrives.
            await asyncio.sleep(2 * DEBOUNCE)
        finally:
            await watcher.stop()
        return calls.calls

    calls = asyncio.run(main())
    assert calls == [[str(tmp_path / "app.py")]]


def test_ignored_changes_do_not_call(tmp_path: Path) -> None:
    (tmp_path / "node_modules" / "lib").mkdir(parents=True)
    (tmp_path / "logs").mkdir()
    (tmp_path / "src").mkdir()

    async def main() -> list[list[str]]:
        calls = Calls()
        watcher = AppWatcher([str(tmp_path)], ["*.log", "logs", "tmp/*"], DEBOUNCE, calls)
        watcher.start()
        try:
            await watcher.wait_ready()
            (tmp_path / "node_modules" / "lib" / "index.js").write_text("x")
            (tmp_path / "src" / "out.log").write_text("x")
            (tmp_path / "logs" / "anything.txt").write_text("x")
            (tmp_path / "__pycache__").mkdir()
            (tmp_path / "__pycache__" / "m.cpython-311.pyc").write_bytes(b"x")
            (tmp_path / ".git").mkdir()
            (tmp_path / ".git" / "HEAD").write_text("x")
            # Then one real change: the call that follows must contain it alone.
            (tmp_path / "src" / "main.py").write_text("x")
            await calls.next()
            await asyncio.sleep(2 * DEBOUNCE)
        finally:
            await watcher.stop()
        return calls.calls

    calls = asyncio.run(main())
    assert calls == [[str(tmp_path / "src" / "main.py")]]


def test_missing_path_is_skipped(tmp_path: Path) -> None:
    async def main() -> list[list[str]]:
        calls = Calls()
        missing = str(tmp_path / "nope")
        watcher = AppWatcher([missing, str(tmp_path)], [], DEBOUNCE, calls)
        watcher.start()
        try:
            await watcher.wait_ready()
            assert watcher.watching == [str(tmp_path)]
            (tmp_path / "a.txt").write_text("x")
            await calls.next()
        finally:
            await watcher.stop()
        return calls.calls

    assert asyncio.run(main()) == [[str(tmp_path / "a.txt")]]


def test_nothing_to_watch_still_stops(tmp_path: Path) -> None:
    async def main() -> list[str]:
        watcher = AppWatcher([str(tmp_path / "nope")], [], DEBOUNCE, lambda paths: None)
        watcher.start()
        await watcher.wait_ready()
        await watcher.stop()
        return watcher.watching

    assert asyncio.run(main()) == []


def test_stop_ends_the_thread_and_discards_pending(tmp_path: Path) -> None:
    async def main() -> tuple[bool, list[list[str]]]:
        calls = Calls()
        watcher = AppWatcher([str(tmp_path)], [], 5.0, calls)  # long debounce: still pending
        watcher.start()
        await watcher.wait_ready()
        (tmp_path / "a.txt").write_text("x")
        await asyncio.sleep(0.3)  # let the change reach the loop
        await watcher.stop()
        await watcher.stop()  # twice is fine
        thread = watcher._thread
        assert thread is not None
        return thread.is_alive(), calls.calls

    alive, calls = asyncio.run(main())
    assert not alive
    assert calls == []


def test_failing_callback_does_not_stop_watching(tmp_path: Path) -> None:
    async def main() -> int:
        seen: list[list[str]] = []
        got = asyncio.Event()

        def on_change(paths: list[str]) -> None:
            seen.append(paths)
            got.set()
            raise RuntimeError("boom")

        watcher = AppWatcher([str(tmp_path)], [], 0.05, on_change)
        watcher.start()
        try:
            await watcher.wait_ready()
            for name in ("a", "b"):
                got.clear()
                (tmp_path / name).write_text("x")
                await asyncio.wait_for(got.wait(), 10)
        finally:
            await watcher.stop()
        return len(seen)

    assert asyncio.run(main()) == 2


@pytest.mark.parametrize(
    ("path", "ignored"),
    [
        ("/app/src/main.py", False),
        ("/app/node_modules/x/index.js", True),
        ("/app/src/node_modules", True),
        ("/app/server.log", True),
        ("/app/logs/today.txt", True),
        ("/app/build/out/a.js", True),
        ("/app/build/keep.js", False),
        ("/app/.git/HEAD", True),
        ("/app/a/__pycache__/m.pyc", True),
        ("/app/notes.txt~", True),
        ("/app/.main.py.swp", True),
        ("/app/.DS_Store", True),
        ("/app/tmp/x", True),
        ("/app/src/tmp/x", False),  # tmp/* is relative to the root
        ("/app/secret/key.pem", True),  # absolute pattern
    ],
)
def test_ignore_rules(path: str, ignored: bool) -> None:
    rules = IgnoreRules(["/app"], ["*.log", "logs/", "./build/out", "tmp/*", "/app/secret/*"])
    assert rules.ignored(path) is ignored
