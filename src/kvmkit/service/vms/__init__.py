"""VMs: create, lifecycle, queries, resources, devices, consoles, pinning, guest addresses, MACs."""
