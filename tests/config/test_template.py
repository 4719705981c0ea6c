from __future__ import annotations

from pathlib import Path

from corral.config.loader import load_file
from corral.config.schema import FILE_KEYS
from corral.config.template import EXAMPLE_YAML


def test_example_loads_next_to_app_py(project: Path) -> None:
    path = project / "corral.yaml"
    path.write_text(EXAMPLE_YAML)
    (app,) = load_file(path)
    assert app.name == "api"
    assert app.script == str(project / "app.py")
    assert app.env_profiles == {"production": {"APP_ENV": "production"}}
    assert (app.min_uptime, app.kill_timeout) == (1.0, 1.6)


def test_example_shows_the_common_keys() -> None:
    for key in [
        "name",
        "script",
        "args",
        "instances",
        "env",
        "env_production",
        "autorestart",
        "max_restarts",
        "min_uptime",
        "restart_delay",
        "exp_backoff_restart_delay",
        "max_memory_restart",
        "cron_restart",
        "watch",
        "ignore_watch",
        "kill_timeout",
        "user",
    ]:
        assert f"{key}:" in EXAMPLE_YAML, key


def test_commented_keys_are_valid_too(project: Path) -> None:
    """Uncommenting every example key still gives a valid config (but `user`, root only)."""
    lines = []
    for line in EXAMPLE_YAML.splitlines():
        stripped = line.lstrip()
        if stripped.startswith("# ") and ":" in stripped and line.startswith("    #"):
            candidate = "    " + stripped[2:]
            key = candidate.strip().split(":")[0]
            if key in FILE_KEYS and key not in ("user", "group"):
                line = candidate
        lines.append(line)
    text = "\n".join(lines)
    path = project / "corral.yaml"
    path.write_text(text)
    (app,) = load_file(path)
    assert app.exp_backoff_restart_delay == 0.1
    assert app.cron_restart == "0 3 * * *"
    assert app.rlimits == {"nofile": 4096, "as": 1024**3}
    assert app.exec_mode == "cluster"
