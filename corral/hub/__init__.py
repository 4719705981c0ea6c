"""The monitoring hub (SPEC 5): a separate service many servers' agents report to."""
