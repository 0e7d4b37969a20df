"""The web admin portal: a static single page over the REST API, plus the serial console WebSocket."""
