"""The panel's security primitives: passwords, TOTP, throttling, tokens, headers, origins."""
