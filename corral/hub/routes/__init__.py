"""The hub's pages and API, registered on `corral.hub.routing.registry`."""
