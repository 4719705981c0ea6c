"""The web control panel (SPEC 2)."""
