"""The panel's path confinement: the shared `corral.confine` (also used by the daemon's
`resolve_paths`, which checks paths with the tenant's rights in isolated mode)."""

from corral.confine import PathOutsideHome, confine, open_confined

__all__ = ["PathOutsideHome", "confine", "open_confined"]
