"""The API's routers, one module per service area: each a thin shell over kvmkit.service (as the CLI's
command modules are), included by api/app.py."""
