"""Path confinement: `confine` for checks, `open_confined` for race-free opens."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from corral.panel.confine import PathOutsideHome, confine, open_confined


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """tmp/home with srv/app.py, an outside folder with a secret, and a sibling
    folder whose name starts with the home's (`home` vs `homeboy`)."""
    root = tmp_path / "home"
    (root / "srv" / "lib").mkdir(parents=True)
    (root / "srv" / "app.py").write_text("print('hi')\n")
    (root / "srv" / "lib" / "util.py").write_text("")
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "secret").write_text("secret\n")
    (tmp_path / "homeboy").mkdir()
    (tmp_path / "homeboy" / "x").write_text("")
    return root


def refused(home: Path, path: str, **kwargs: object) -> str:
    with pytest.raises(PathOutsideHome) as info:
        confine(home, path, **kwargs)  # type: ignore[arg-type]
    return str(info.value)


def test_a_relative_path_resolves_inside(home: Path) -> None:
    assert confine(home, "srv/app.py") == home / "srv" / "app.py"
    assert confine(home, "./srv//lib/../app.py") == home / "srv" / "app.py"
    assert confine(home, "not/yet/there.log") == home / "not" / "yet" / "there.log"
    assert confine(home, ".") == home
    assert confine(home, "srv/..") == home


def test_an_absolute_path_inside_is_accepted(home: Path) -> None:
    assert confine(home, str(home / "srv" / "app.py")) == home / "srv" / "app.py"


@pytest.mark.parametrize(
    "path", ["..", "../outside/secret", "srv/../../outside/secret", "srv/lib/../../../outside"]
)
def test_dot_dot_escapes_are_refused(home: Path, path: str) -> None:
    message = refused(home, path)
    assert repr(path) in message and "outside your home" in message


def test_absolute_paths_elsewhere_are_refused(home: Path) -> None:
    assert "outside your home" in refused(home, "/etc/passwd")
    assert "outside your home" in refused(home, "/")
    assert "outside your home" in refused(home, str(home.parent / "outside" / "secret"))


def test_a_prefix_sibling_is_not_inside(home: Path) -> None:
    sibling = home.parent / "homeboy"
    refused(home, str(sibling / "x"))
    refused(home, "../homeboy/x")
    refused(home, str(sibling))


def test_symlinks_pointing_out_are_refused(home: Path) -> None:
    outside = home.parent / "outside"
    (home / "secret-link").symlink_to(outside / "secret")
    (home / "dir-link").symlink_to(outside)
    (home / "dangling").symlink_to(outside / "not-there")
    (home / "srv" / "up").symlink_to("../..")
    for path in ("secret-link", "dir-link", "dir-link/secret", "dangling", "srv/up/outside"):
        assert "outside your home" in refused(home, path)
    refused(home, "dir-link", kind="dir", must_exist=True)
    refused(home, "dangling/../home/srv")  # the link resolves first, then ..


def test_symlinks_inside_pointing_inside_are_followed(home: Path) -> None:
    (home / "current").symlink_to("srv")
    (home / "entry.py").symlink_to(home / "srv" / "app.py")
    assert confine(home, "current/app.py", must_exist=True) == home / "srv" / "app.py"
    assert confine(home, "entry.py", kind="file") == home / "srv" / "app.py"
    assert confine(home, "current", kind="dir") == home / "srv"


def test_home_itself_may_be_a_symlink(home: Path) -> None:
    link = home.parent / "home-link"
    link.symlink_to(home)
    assert confine(link, "srv/app.py") == home / "srv" / "app.py"
    assert confine(link, str(link / "srv" / "app.py")) == home / "srv" / "app.py"
    refused(link, "../outside/secret")


def test_a_missing_home_is_refused_with_a_message(tmp_path: Path) -> None:
    message = refused(tmp_path / "nobody", "x")
    assert "not usable" in message


@pytest.mark.parametrize("path", ["", "   ", "a\x00b", "\x00", "\ud800/x"])
def test_empty_nul_and_unencodable_paths_are_refused(home: Path, path: str) -> None:
    refused(home, path)


def test_tilde_is_not_expanded(home: Path) -> None:
    assert confine(home, "~/x") == home / "~" / "x"
    refused(home, "~/../../outside")


def test_must_exist_and_kind(home: Path) -> None:
    assert "does not exist" in refused(home, "srv/nope.py", must_exist=True)
    assert "not a directory" in refused(home, "srv/app.py", kind="dir")
    assert "not a regular file" in refused(home, "srv", kind="file")
    assert confine(home, "srv/new-dir", kind="dir") == home / "srv" / "new-dir"
    os.mkfifo(home / "fifo")
    assert "not a regular file" in refused(home, "fifo", kind="file")


def test_a_symlink_loop_is_refused_when_it_must_exist(home: Path) -> None:
    (home / "loop-a").symlink_to("loop-b")
    (home / "loop-b").symlink_to("loop-a")
    assert "loop" in refused(home, "loop-a", must_exist=True)


def test_relative_paths_start_from_base(home: Path) -> None:
    srv = home / "srv"
    assert confine(home, "app.py", base=srv, must_exist=True) == srv / "app.py"
    assert confine(home, "../srv/lib", base=srv) == srv / "lib"
    assert confine(home, "/" + str(srv / "app.py").lstrip("/"), base=srv) == srv / "app.py"
    refused(home, "../../outside", base=srv)
    # A base outside the home does not make its files acceptable.
    refused(home, "secret", base=home.parent / "outside")


# --- Any string at all ---

SEGMENTS = ["..", ".", "", "srv", "app.py", "out", "in", "up", "home", "outside", "~", "x y"]


@st.composite
def user_paths(draw: st.DrawFn) -> str:
    parts = draw(st.lists(st.sampled_from(SEGMENTS), max_size=8))
    return ("/" if draw(st.booleans()) else "") + "/".join(parts)


def _home_with_links(tmp_path: Path) -> Path:
    root = tmp_path / "h"
    if not root.exists():
        (root / "srv").mkdir(parents=True)
        (root / "srv" / "app.py").write_text("")
        (tmp_path / "outside").mkdir()
        (root / "out").symlink_to(tmp_path / "outside")
        (root / "in").symlink_to("srv")
        (root / "srv" / "up").symlink_to("../..")
    return root


@settings(
    suppress_health_check=[HealthCheck.function_scoped_fixture], max_examples=300, deadline=None
)
@given(user_paths(), st.booleans())
def test_confine_never_returns_a_path_outside_home(
    tmp_path: Path, path: str, must_exist: bool
) -> None:
    root = _home_with_links(tmp_path)
    try:
        result = confine(root, path, must_exist=must_exist)
    except PathOutsideHome:
        return
    assert result.is_absolute()
    assert os.path.realpath(result) == str(result)
    assert result.is_relative_to(root.resolve())


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture], deadline=None)
@given(st.text(max_size=300))
def test_confine_of_arbitrary_text_only_raises_path_outside_home(tmp_path: Path, path: str) -> None:
    root = _home_with_links(tmp_path)
    try:
        result = confine(root, path)
    except PathOutsideHome:
        return
    assert result.is_relative_to(root.resolve())


# --- open_confined ---


def read_fd(fd: int) -> bytes:
    try:
        return os.read(fd, 1000)
    finally:
        os.close(fd)


def open_refused(home: Path, path: str, flags: int = os.O_RDONLY) -> str:
    with pytest.raises(PathOutsideHome) as info:
        os.close(open_confined(home, path, flags))
    return str(info.value)


def test_open_confined_reads_a_file_inside(home: Path) -> None:
    assert read_fd(open_confined(home, "srv/app.py", os.O_RDONLY)) == b"print('hi')\n"
    assert read_fd(open_confined(home, "./srv//app.py", os.O_RDONLY)) == b"print('hi')\n"


def test_open_confined_takes_the_absolute_path_confine_returns(home: Path) -> None:
    path = confine(home, "srv/app.py", must_exist=True)
    assert read_fd(open_confined(home, str(path), os.O_RDONLY)).startswith(b"print")
    open_refused(home, "/etc/passwd")
    open_refused(home, str(home.parent / "homeboy" / "x"))


def test_open_confined_creates_a_file_with_its_mode(home: Path) -> None:
    fd = open_confined(home, "srv/new.log", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
    try:
        os.write(fd, b"line\n")
        assert os.get_blocking(fd)
    finally:
        os.close(fd)
    assert (home / "srv" / "new.log").read_bytes() == b"line\n"
    assert (home / "srv" / "new.log").stat().st_mode & 0o777 == 0o640 & ~_umask()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_open_confined_refuses_dot_dot_and_empty(home: Path) -> None:
    assert "'..'" in open_refused(home, "srv/../srv/app.py")
    open_refused(home, "../outside/secret")
    open_refused(home, "")
    assert "home itself" in open_refused(home, ".")
    open_refused(home, "a\x00b")


def test_open_confined_refuses_any_symlink(home: Path) -> None:
    (home / "inside-link").symlink_to("srv/app.py")
    (home / "dir-link").symlink_to("srv")
    (home / "out-link").symlink_to(home.parent / "outside")
    assert "symbolic link" in open_refused(home, "inside-link")
    assert "symbolic link" in open_refused(home, "dir-link/app.py")
    assert "symbolic link" in open_refused(home, "out-link/secret")
    create = os.O_WRONLY | os.O_CREAT
    assert "symbolic link" in open_refused(home, "out-link/new", create)
    (home / "dangling").symlink_to(home.parent / "outside" / "created-by-panel")
    assert "symbolic link" in open_refused(home, "dangling", create)
    assert not (home.parent / "outside" / "created-by-panel").exists()


def test_a_symlink_swapped_in_after_confine_is_refused(home: Path) -> None:
    (home / "logs").mkdir()
    (home / "logs" / "out.log").write_text("mine\n")
    checked = confine(home, "logs/out.log", must_exist=True)  # fine at this moment
    # ...and then the tenant swaps the folder for a link to someone else's files.
    shutil.rmtree(home / "logs")
    (home.parent / "outside" / "out.log").write_text("not yours\n")
    (home / "logs").symlink_to(home.parent / "outside")
    assert "symbolic link" in open_refused(home, str(checked))
    assert "symbolic link" in open_refused(home, "logs/out.log")
    # the same swap for the file itself
    (home / "srv" / "app.py").unlink()
    (home / "srv" / "app.py").symlink_to(home.parent / "outside" / "secret")
    assert "symbolic link" in open_refused(home, "srv/app.py")


def test_open_confined_with_home_a_symlink(home: Path) -> None:
    link = home.parent / "home-link"
    link.symlink_to(home)
    assert read_fd(open_confined(link, "srv/app.py", os.O_RDONLY)).startswith(b"print")
    assert read_fd(open_confined(link, str(link / "srv/app.py"), os.O_RDONLY))
    assert read_fd(open_confined(link, str(home / "srv/app.py"), os.O_RDONLY))


def test_open_confined_refuses_a_fifo_without_blocking(home: Path) -> None:
    os.mkfifo(home / "fifo")
    assert "not a regular file" in open_refused(home, "fifo")


def test_open_confined_opens_a_directory_when_asked(home: Path) -> None:
    fd = open_confined(home, "srv/lib", os.O_RDONLY | os.O_DIRECTORY)
    try:
        assert os.listdir(fd) == ["util.py"]
    finally:
        os.close(fd)


def test_open_confined_lets_ordinary_errors_through(home: Path) -> None:
    with pytest.raises(FileNotFoundError):
        open_confined(home, "srv/missing.py", os.O_RDONLY)
    with pytest.raises(FileNotFoundError):
        open_confined(home, "nope/missing.py", os.O_RDONLY)
    with pytest.raises(NotADirectoryError):
        open_confined(home, "srv/app.py/x", os.O_RDONLY)
    with pytest.raises(FileExistsError):
        open_confined(home, "srv/app.py", os.O_WRONLY | os.O_CREAT | os.O_EXCL)


def test_open_confined_leaks_no_descriptor(home: Path) -> None:
    (home / "out-link").symlink_to(home.parent / "outside")
    os.mkfifo(home / "fifo")
    before = len(os.listdir("/proc/self/fd"))
    for _ in range(20):
        for path in ("out-link/secret", "srv/missing", "fifo", "srv/app.py/x", "../x"):
            with pytest.raises((PathOutsideHome, OSError)):
                open_confined(home, path, os.O_RDONLY)
        os.close(open_confined(home, "srv/lib/util.py", os.O_RDONLY))
    assert len(os.listdir("/proc/self/fd")) == before
