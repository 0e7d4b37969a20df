"""Storage: pools, volumes, volume streams, templates, disk conversion."""
