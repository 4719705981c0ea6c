"""Which folder is the corral home: $CORRAL_HOME, or ~/.corral.

Apart from `corral.paths` (which builds every path inside the home with pathlib) so that
`corral start FILE` can find the home and spawn its daemon before importing pathlib.
"""

from __future__ import annotations

import os

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (~10 ms); mypy knows it
if TYPE_CHECKING:
    from collections.abc import Mapping

HOME_ENV = "CORRAL_HOME"
SOCKET_NAME = "corral.sock"
STATE_NAME = "state.json"
SUN_PATH_MAX = 107
"""The longest unix socket path Linux accepts (108 bytes with the final NUL)."""


def home_root(environ: Mapping[str, str] | None = None) -> str:
    """The home's absolute path: $CORRAL_HOME (`~` expanded), or ~/.corral."""
    env = os.environ if environ is None else environ
    raw = env.get(HOME_ENV) or os.path.join(os.path.expanduser("~"), ".corral")
    return os.path.abspath(os.path.expanduser(raw))
