"""ASGI middleware and the logging filter: audit, request counts, the body cap, security headers and
the request guard, redacted logs."""
