"""Releases on disk: ids, listing, atomic activate, prune, tar extraction limits."""

from __future__ import annotations

import io
import os
import tarfile
import threading
from pathlib import Path

import pytest

from corral.deploy.extract import HAS_DATA_FILTER, extract_release
from corral.deploy.layout import RELEASE_META, DeployLayout, ReleaseError, is_release_id
from corral.deploy.process import StepFailed


def make_release(layout: DeployLayout, commit: str, created: float) -> str:
    release, path = layout.new_release(commit, created)
    (path / "app.py").write_text(commit)
    layout.finish_release(release, commit, "main", created, "https://***@h/x.git")
    return release


def test_release_ids_are_unique_and_well_formed(tmp_path: Path) -> None:
    layout = DeployLayout(tmp_path, "api")
    first, _ = layout.new_release("a" * 40, 1_000_000.0)
    second, _ = layout.new_release("a" * 40, 1_000_000.0)
    assert first == "19700112T134640Z-aaaaaaaaaaaa"
    assert second == first + "-2"
    assert is_release_id(first) and is_release_id(second)
    assert not is_release_id("../x") and not is_release_id("current")


def test_bad_app_names_are_refused(tmp_path: Path) -> None:
    for name in ("..", "a/b", "", "-x"):
        with pytest.raises(ValueError):
            DeployLayout(tmp_path, name)


def test_incomplete_releases_are_not_listed_nor_activated(tmp_path: Path) -> None:
    layout = DeployLayout(tmp_path, "api")
    partial, _ = layout.new_release("b" * 40, 2.0)
    done = make_release(layout, "c" * 40, 1.0)
    assert [r.id for r in layout.list_releases()] == [done]
    with pytest.raises(ReleaseError):
        layout.activate(partial)
    with pytest.raises(ReleaseError):
        layout.activate("../../etc")
    assert layout.current_release() is None


def test_metadata_is_never_read_through_a_link(tmp_path: Path) -> None:
    """The app's user owns its release: a link or junk in place of the metadata makes the
    release unlisted, it is never followed."""
    layout = DeployLayout(tmp_path / "home", "api")
    secret = tmp_path / "secret.json"
    secret.write_text('{"commit": "secret", "ref": "x", "created": 1}')
    linked = make_release(layout, "1" * 40, 1.0)
    junk = make_release(layout, "2" * 40, 2.0)
    meta = layout.releases / linked / RELEASE_META
    meta.unlink()
    meta.symlink_to(secret)
    (layout.releases / junk / RELEASE_META).write_text('{"created": "soon"}')
    assert layout.list_releases() == []
    with pytest.raises(ReleaseError):
        layout.activate(linked)


def test_activate_returns_the_previous_and_is_relative(tmp_path: Path) -> None:
    layout = DeployLayout(tmp_path, "api")
    one = make_release(layout, "1" * 40, 1.0)
    two = make_release(layout, "2" * 40, 2.0)
    assert layout.activate(one) is None
    assert layout.activate(two) == one
    assert os.readlink(layout.current) == f"releases/{two}"
    assert (layout.current / "app.py").read_text() == "2" * 40
    listed = layout.list_releases()
    assert [(r.id, r.current) for r in listed] == [(two, True), (one, False)]
    assert listed[0].to_dict()["commit"] == "2" * 40
    assert not list(layout.root.glob(".current.tmp-*"))


def test_current_always_points_to_a_complete_release(tmp_path: Path) -> None:
    """Readers racing the switch never see a missing or half-made `current`."""
    layout = DeployLayout(tmp_path, "api")
    ids = [make_release(layout, str(n) * 40, float(n)) for n in (1, 2)]
    layout.activate(ids[0])
    stop = threading.Event()

    def switch() -> None:
        n = 0
        while not stop.is_set():
            layout.activate(ids[n % 2])
            n += 1

    thread = threading.Thread(target=switch)
    thread.start()
    seen = set()
    try:
        for _ in range(3000):
            seen.add((layout.current / "app.py").read_text())
    finally:
        stop.set()
        thread.join()
    assert seen <= {"1" * 40, "2" * 40}


def test_prune_keeps_n_and_never_current_or_protected(tmp_path: Path) -> None:
    layout = DeployLayout(tmp_path, "api")
    ids = [make_release(layout, f"{n:x}" * 40, float(n)) for n in range(1, 8)]
    layout.activate(ids[0])  # oldest, e.g. after a rollback
    removed = layout.prune(3, protect={ids[1]})
    assert sorted(removed) == sorted(ids[2:4])
    left = {r.id for r in layout.list_releases()}
    assert left == {ids[0], ids[1], *ids[4:]}
    assert layout.prune(1) == sorted(set(ids[1:6]) & left, reverse=True)
    assert {r.id for r in layout.list_releases()} == {ids[0], ids[6]}
    assert layout.current_release() == ids[0]


def _tar(*members: tuple[tarfile.TarInfo, bytes | None]) -> io.BytesIO:
    data = io.BytesIO()
    with tarfile.open(fileobj=data, mode="w") as tar:
        for info, content in members:
            if content is not None:
                info.size = len(content)
            tar.addfile(info, io.BytesIO(content) if content is not None else None)
    data.seek(0)
    return data


def _link(name: str, target: str) -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type = tarfile.SYMTYPE
    info.linkname = target
    return info, None


def _file(name: str, content: bytes = b"x", mode: int = 0o644) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.mode = mode
    return info, content


# Each extraction test runs twice: with tarfile's data filter (Python 3.11.4+) and with
# corral's own member checks, which Pythons without the filter (Debian 12's 3.11.2) use.
@pytest.fixture(params=[False, True], ids=["data-filter", "own-checks"])
def checked(request: pytest.FixtureRequest) -> bool:
    if not request.param and not HAS_DATA_FILTER:
        pytest.skip("this Python's tarfile has no data filter")
    return bool(request.param)


@pytest.mark.parametrize(
    "members",
    [
        [_file("../escape")],
        [_file("a/../../escape")],
        [_link("etc", "/etc"), _file("etc/owned")],
        [_link("up", "../../.."), _file("up/escape")],
        [_link("passwd", "/etc/passwd")],
        [_link("out", "../outside")],
    ],
    ids=["dotdot", "nested-dotdot", "abs-link-dir", "up-link", "abs-link", "up-link2"],
)
def test_extraction_never_writes_outside_the_release(
    tmp_path: Path, members: list[tuple[tarfile.TarInfo, bytes | None]], checked: bool
) -> None:
    release = tmp_path / "home" / "releases" / "r"
    release.mkdir(parents=True)
    with pytest.raises(StepFailed) as caught:
        extract_release(_tar(*members), release, checked=checked)
    assert caught.value.step == "checkout"
    assert "refused an unsafe file" in caught.value.message
    assert not (tmp_path / "home" / "escape").exists()
    assert not (tmp_path / "home" / "releases" / "escape").exists()
    assert not Path("/etc/owned").exists()


def test_absolute_names_land_inside_the_release(tmp_path: Path, checked: bool) -> None:
    release = tmp_path / "r"
    release.mkdir()
    name = f"{tmp_path}/abs-escape"
    extract_release(_tar(_file(name, b"in")), release, checked=checked)
    assert not Path(name).exists()
    assert (release / name.lstrip("/")).read_text() == "in"


def test_extraction_keeps_links_inside_and_drops_dangerous_modes(
    tmp_path: Path, checked: bool
) -> None:
    release = tmp_path / "r"
    release.mkdir()
    extract_release(
        _tar(
            _file("data/v1.txt", b"v1"),
            _link("latest.txt", "data/v1.txt"),
            _file("bin/run", b"#!/bin/sh\n", 0o4777),
        ),
        release,
        checked=checked,
    )
    assert (release / "latest.txt").read_text() == "v1"
    mode = (release / "bin" / "run").stat().st_mode & 0o7777
    assert mode & 0o4000 == 0 and mode & 0o022 == 0
