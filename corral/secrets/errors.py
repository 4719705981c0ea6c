"""The one error of the secrets package."""

from __future__ import annotations


class SecretError(ValueError):
    """A secret or key cannot be used. The message is for the user and never holds a value."""
