"""The panel's routes, one module per screen family; each registers on `routing.registry`."""
