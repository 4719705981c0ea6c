"""An app: its configuration, its environment inputs, and its process instances."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from corral.config.model import AppConfig
from corral.core.lifecycle import Instance

Desired = Literal["running", "stopped"]


@dataclass
class App:
    id: int
    config: AppConfig
    cli_env: dict[str, str] | None
    """The environment of the CLI that started the app (None with --filter-env)."""
    env_name: str | None
    created_at: float
    desired: Desired = "stopped"
    instances: dict[int, Instance] = field(default_factory=dict)
    _config_dict: tuple[AppConfig, dict[str, Any]] | None = field(
        default=None, repr=False, compare=False
    )

    @property
    def name(self) -> str:
        return self.config.name

    def sorted_instances(self) -> list[Instance]:
        return [self.instances[n] for n in sorted(self.instances)]

    def free_numbers(self, count: int) -> list[int]:
        """The `count` lowest instance numbers not in use (scale reuses gaps first)."""
        numbers: list[int] = []
        candidate = 0
        while len(numbers) < count:
            if candidate not in self.instances:
                numbers.append(candidate)
            candidate += 1
        return numbers

    def log_paths(self, logs_dir: Path, number: int) -> tuple[Path, Path]:
        """stdout and stderr files of one instance: `<name>-out-<n>.log` unless merged."""
        cfg = self.config
        suffix = "" if cfg.merge_logs else f"-{number}"
        out = _with_suffix(cfg.out_file, suffix) if cfg.out_file else None
        err = _with_suffix(cfg.error_file, suffix) if cfg.error_file else None
        return (
            out or logs_dir / f"{cfg.name}-out{suffix}.log",
            err or logs_dir / f"{cfg.name}-err{suffix}.log",
        )

    def to_state(self) -> dict[str, Any]:
        """What the state file and the dump keep of this app."""
        # The state file is rewritten after every change of every app: converting each
        # config (dataclasses.asdict, deep) only when it changed keeps that cheap.
        # Configs are never changed in place, only replaced, so identity tells.
        if self._config_dict is None or self._config_dict[0] is not self.config:
            self._config_dict = (self.config, self.config.to_dict())
        return {
            "id": self.id,
            "config": self._config_dict[1],
            "cli_env": self.cli_env,
            "env_name": self.env_name,
            "created_at": self.created_at,
            "desired": self.desired,
        }


def _with_suffix(path: str, suffix: str) -> Path:
    """`/var/log/api.log` + `-1` -> `/var/log/api-1.log` (PM2 does the same per instance)."""
    p = Path(path)
    if not suffix or str(p) == "/dev/null":
        return p
    return p.with_name(f"{p.stem}{suffix}{p.suffix}")


InstanceFactory = Callable[[App, int], Instance]
