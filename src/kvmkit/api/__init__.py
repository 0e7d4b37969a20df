"""kvmkit's REST API (FastAPI): thin routers over the service layer. Build it with ``app.create_app``."""
