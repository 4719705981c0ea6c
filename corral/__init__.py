"""corral: a process manager for servers, secure by design."""

__version__ = "0.1.0"
