from __future__ import annotations

import math

import pytest

from corral.config.units import parse_duration, parse_signal, parse_size, parse_umask


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("500ms", 0.5),
        ("5s", 5.0),
        ("2m", 120.0),
        ("1h", 3600.0),
        ("1.5s", 1.5),
        (".5s", 0.5),
        ("1m30s", 90.0),
        ("1d", 86400.0),
        (" 5 s ", 5.0),
        ("5S", 5.0),
        (3000, 3.0),  # bare numbers are milliseconds, as in PM2
        (1500.0, 1.5),
        ("3000", 3.0),
        (0, 0.0),
    ],
)
def test_parse_duration(value: object, seconds: float) -> None:
    assert math.isclose(parse_duration(value), seconds)


def test_parse_duration_bare_seconds_for_canonical_data() -> None:
    assert parse_duration(1.6, bare_seconds=True) == 1.6
    assert parse_duration("500ms", bare_seconds=True) == 0.5


@pytest.mark.parametrize(
    "value", ["", "abc", "5x", "s", "-5", -1, "5s 3", True, None, [], float("nan"), float("inf")]
)
def test_parse_duration_rejects(value: object) -> None:
    with pytest.raises(ValueError, match="expected a duration like 500ms, 5s or 2m"):
        parse_duration(value)


@pytest.mark.parametrize(
    ("value", "size"),
    [
        ("200M", 200 * 1024**2),
        ("1G", 1024**3),
        ("512K", 512 * 1024),
        ("100MB", 100 * 1024**2),
        ("1.5G", int(1.5 * 1024**3)),
        ("64KiB", 64 * 1024),
        ("200m", 200 * 1024**2),
        ("1024", 1024),
        ("100B", 100),
        (4096, 4096),
    ],
)
def test_parse_size(value: object, size: int) -> None:
    assert parse_size(value) == size


@pytest.mark.parametrize("value", ["", "1X", "M", "-1G", -5, True, None, "1 G B"])
def test_parse_size_rejects(value: object) -> None:
    with pytest.raises(ValueError, match="expected a size like"):
        parse_size(value)


@pytest.mark.parametrize(
    ("value", "name"),
    [
        ("SIGINT", "SIGINT"),
        ("INT", "SIGINT"),
        ("int", "SIGINT"),
        ("sigterm", "SIGTERM"),
        (2, "SIGINT"),
        ("15", "SIGTERM"),
        ("SIGIOT", "SIGABRT"),  # an alias comes back under its canonical name
    ],
)
def test_parse_signal(value: object, name: str) -> None:
    assert parse_signal(value) == name


@pytest.mark.parametrize("value", ["SIGNOPE", "", 0, 999, True, None, "SIG"])
def test_parse_signal_rejects(value: object) -> None:
    with pytest.raises(ValueError, match="expected a signal"):
        parse_signal(value)


@pytest.mark.parametrize(
    ("value", "umask"), [("022", 0o022), ("0o027", 0o027), ("77", 0o077), (0o022, 0o022), (0, 0)]
)
def test_parse_umask(value: object, umask: int) -> None:
    assert parse_umask(value) == umask


@pytest.mark.parametrize("value", ["999", "abc", "", 0o1000, -1, True, None, "0x12"])
def test_parse_umask_rejects(value: object) -> None:
    with pytest.raises(ValueError, match="expected a umask"):
        parse_umask(value)
