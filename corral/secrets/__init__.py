"""Secrets: app environment variables encrypted at rest (AES-256-GCM), see docs/SECRETS.md."""

from __future__ import annotations

from corral.secrets.errors import SecretError
from corral.secrets.store import NAME_RE, SecretInfo, SecretStore

__all__ = ["NAME_RE", "SecretError", "SecretInfo", "SecretStore"]
