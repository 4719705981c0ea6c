"""`corral.protocol.hub` loads its parts on first use: an unlinked daemon starts without
the ciphers, X25519 and argon2 (measured: ~35 ms of every daemon start-up)."""

from __future__ import annotations

import subprocess
import sys

import pytest

import corral.protocol.hub as hub

HEAVY = ("cryptography", "argon2", "corral.protocol.hub.frames", "corral.protocol.hub.proof")


def test_a_daemon_and_its_agent_service_import_no_cipher() -> None:
    code = (
        "import sys, corral.core.daemon, corral.agent.service, corral.agent.state\n"
        f"print(sorted(m for m in sys.modules if m.startswith({HEAVY!r})))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    assert out.strip() == "[]"


@pytest.mark.parametrize("name", hub.__all__)
def test_every_exported_name_resolves_to_its_module_object(name: str) -> None:
    value = getattr(hub, name)
    module = sys.modules[f"corral.protocol.hub.{hub._WHERE[name]}"]
    assert value is getattr(module, name)


def test_an_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        hub.Nope  # noqa: B018
    with pytest.raises(ImportError):
        exec("from corral.protocol.hub import Nope")
