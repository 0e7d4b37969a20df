"""Virtual networks: create, start/stop, leases, reservations."""
