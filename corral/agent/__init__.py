"""The agent: the daemon's one outbound link to a monitoring hub (SPEC 5).

- `state`: `<home>/agent.json` (0600, atomic): hub URL, CA file, server id and the bucket's
  derived keys (never the secret).
- `backoff`, `pushqueue`: the reconnect schedule and the bounded queue of metric pushes.
- `collect`: server and app metrics from the supervisor, in the protocol's shapes.
- `actions`: the hub's remote actions, decided by `corral.protocol.hub.proof.decide_action`
  and run through the daemon's own handlers.
- `link`: the WebSocket task (handshake, hello, pushes, actions, reconnects).
- `service`: what the daemon holds: the `link`, `unlink`, `link_info` commands.

The wire protocol itself is `corral.protocol.hub` (docs/HUB_PROTOCOL.md).
"""
