"""The daemon core: the process lifecycle, the supervisor, persistence and the control server."""
