"""Which file names are config files, and in which format: by name alone.

Kept apart from the loader (PyYAML, the schema): `corral start FILE` decides from the
name whether a daemon is about to be needed before it pays for importing the loader.
"""

from __future__ import annotations

import os

FORMATS = {".yaml": "yaml", ".yml": "yaml", ".toml": "toml", ".json": "json"}
_JS_SUFFIXES = (".js", ".cjs", ".mjs")


def is_procfile_name(filename: str) -> bool:
    """Procfile, Procfile.dev, web.procfile..."""
    return (
        filename == "Procfile"
        or filename.startswith("Procfile.")
        or (filename.lower().endswith(".procfile"))
    )


def config_format(filename: str) -> str | None:
    """ "yaml", "toml", "json" or "procfile" for a config file's name; None otherwise."""
    if is_procfile_name(filename):
        return "procfile"
    return FORMATS.get(os.path.splitext(filename)[1].lower())


def is_js_ecosystem(filename: str) -> bool:
    """A PM2 ecosystem file in JavaScript (read by no one here: the loader says so)."""
    lower = filename.lower()
    return lower.endswith(_JS_SUFFIXES) and (".config." in lower or lower.startswith("ecosystem"))


def is_config_file(path: str) -> bool:
    """Whether `corral start path` means a config file rather than a script to run.

    True for ecosystem.config.js too, so that load_file can say it is not supported
    (instead of running it with node as a script).
    """
    filename = os.path.basename(path)
    return config_format(filename) is not None or is_js_ecosystem(filename)
