"""Origin checks: exact scheme, host and port; Referer fallback; WebSockets."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from starlette.datastructures import Headers

from corral.panel.security.origin import (
    normalise_origin,
    origin_allowed,
    own_origin,
    websocket_origin_allowed,
)

PANEL = "https://panel.example.com"

hosts = st.from_regex(r"[a-z][a-z0-9-]{0,15}(\.[a-z]{2,6}){0,2}", fullmatch=True)
schemes = st.sampled_from(["http", "https"])
ports = st.integers(1, 65535)
DEFAULT = {"http": 80, "https": 443}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("https://panel.example.com", PANEL),
        ("https://panel.example.com:443", PANEL),
        ("HTTPS://Panel.Example.COM", PANEL),
        ("http://127.0.0.1:80", "http://127.0.0.1"),
        ("http://127.0.0.1:8765", "http://127.0.0.1:8765"),
        ("https://[::1]:443", "https://[::1]"),
        ("https://[0:0::1]:8443", "https://[::1]:8443"),
    ],
)
def test_normalise_origin(text: str, expected: str) -> None:
    assert normalise_origin(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "null",
        "",
        "panel.example.com",
        "ftp://panel.example.com",
        "file:///etc/passwd",
        "https://user@panel.example.com",
        "https://panel.example.com:99999",
        "https://panel.example.com:0",
        "https://panel.example.com:",
        "https://panel.example.com:x",
        "https://panel.example.com/",
        "https://panel.example.com/path",
        "https://panel.example.com?q",
        "https://panel.example.com#f",
        "https://pa nel.example.com",
        "https://[fe80::1%25eth0]",
        "https://[not-v6]",
    ],
)
def test_malformed_origins_match_nothing(text: str) -> None:
    assert normalise_origin(text) is None
    assert not origin_allowed({"origin": text}, PANEL)


def test_a_referer_may_have_a_path() -> None:
    assert normalise_origin("https://panel.example.com/a/b?c#d", allow_path=True) == PANEL


def test_own_origin_prefers_the_configured_one() -> None:
    assert own_origin("http", "127.0.0.1:8765", "https://panel.example.com:443/") == PANEL
    assert own_origin("http", "evil.example", PANEL) == PANEL
    assert own_origin("http", None, "not an origin") is None


def test_own_origin_from_scheme_and_host_header() -> None:
    assert own_origin("http", "127.0.0.1:8765", None) == "http://127.0.0.1:8765"
    assert own_origin("https", "Panel.Example.com:443", None) == PANEL
    assert own_origin("wss", "panel.example.com", None) == PANEL
    assert own_origin("ws", "[::1]:8765", None) == "http://[::1]:8765"


@pytest.mark.parametrize(
    "host", [None, "", "evil.example/path", "a@b", "host:port", "a b", "x\r\nSet-Cookie: a=b"]
)
def test_own_origin_refuses_an_unusable_host_header(host: str | None) -> None:
    assert own_origin("http", host, None) is None


def test_origin_must_equal_exactly() -> None:
    assert origin_allowed({"origin": PANEL}, PANEL)
    assert origin_allowed({"origin": "https://panel.example.com:443"}, PANEL)
    assert origin_allowed({"origin": PANEL}, "https://panel.example.com:443")
    assert not origin_allowed({"origin": "http://panel.example.com"}, PANEL)
    assert not origin_allowed({"origin": "https://panel.example.com:8443"}, PANEL)
    assert not origin_allowed({"origin": "https://evil.example.com"}, PANEL)
    assert not origin_allowed({"origin": "https://panel.example.com.evil.com"}, PANEL)
    assert not origin_allowed({"origin": "https://sub.panel.example.com"}, PANEL)


def test_null_origin_is_refused_even_with_a_good_referer() -> None:
    assert not origin_allowed({"origin": "null", "referer": PANEL + "/x"}, PANEL)


def test_without_origin_the_referer_decides() -> None:
    assert origin_allowed({"referer": PANEL + "/apps/web?tab=logs"}, PANEL)
    assert not origin_allowed({"referer": "https://evil.example.com/" + PANEL}, PANEL)
    assert not origin_allowed({"referer": "not a url"}, PANEL)


def test_origin_wins_over_referer() -> None:
    assert not origin_allowed({"origin": "https://evil.example.com", "referer": PANEL}, PANEL)


def test_neither_origin_nor_referer_is_refused() -> None:
    assert not origin_allowed({}, PANEL)
    assert not origin_allowed({"host": "panel.example.com"}, PANEL)


def test_header_names_in_any_case_and_starlette_headers() -> None:
    assert origin_allowed({"Origin": PANEL}, PANEL)
    assert origin_allowed({"REFERER": PANEL + "/"}, PANEL)
    raw = [(b"origin", PANEL.encode()), (b"referer", b"https://evil.example.com/")]
    assert origin_allowed(Headers(raw=raw), PANEL)


def test_an_unusable_expected_origin_allows_nothing() -> None:
    assert not origin_allowed({"origin": "null"}, "null")
    assert not origin_allowed({"origin": ""}, "")
    assert not websocket_origin_allowed({"origin": "null"}, "null")


def test_websocket_needs_an_origin_equal_to_the_panel() -> None:
    assert websocket_origin_allowed({"origin": PANEL}, PANEL)
    assert websocket_origin_allowed({"Origin": "https://PANEL.example.com:443"}, PANEL)
    assert not websocket_origin_allowed({}, PANEL)
    assert not websocket_origin_allowed({"referer": PANEL + "/"}, PANEL)
    assert not websocket_origin_allowed({"origin": "null"}, PANEL)
    assert not websocket_origin_allowed({"origin": "http://panel.example.com"}, PANEL)
    assert not websocket_origin_allowed({"origin": "https://panel.example.com:444"}, PANEL)


@given(schemes, hosts)
def test_default_ports_are_normalised(scheme: str, host: str) -> None:
    bare = f"{scheme}://{host}"
    with_port = f"{scheme}://{host}:{DEFAULT[scheme]}"
    assert normalise_origin(bare) == normalise_origin(with_port) == bare
    assert origin_allowed({"origin": with_port}, bare)
    assert origin_allowed({"origin": bare.upper()}, with_port)


@given(schemes, hosts, ports, ports)
def test_ports_must_match(scheme: str, host: str, port: int, other: int) -> None:
    origin = f"{scheme}://{host}:{port}"
    assert origin_allowed({"origin": origin}, origin)
    assert websocket_origin_allowed({"origin": origin}, origin)
    same = {port, other} <= {DEFAULT[scheme]} or port == other
    assert origin_allowed({"origin": f"{scheme}://{host}:{other}"}, origin) == same


@given(schemes, hosts, hosts)
def test_hosts_must_match(scheme: str, host: str, other: str) -> None:
    assert origin_allowed({"origin": f"{scheme}://{other}"}, f"{scheme}://{host}") == (
        host == other
    )
    flipped = "http" if scheme == "https" else "https"
    assert not origin_allowed({"origin": f"{flipped}://{host}"}, f"{scheme}://{host}")


@given(st.text(max_size=60))
def test_arbitrary_header_values_never_raise(value: str) -> None:
    result = origin_allowed({"origin": value}, PANEL)
    assert result == (normalise_origin(value) == PANEL)
    origin_allowed({"referer": value}, PANEL)
    websocket_origin_allowed({"origin": value}, PANEL)
