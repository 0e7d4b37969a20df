"""The hosts kvmkit manages: the inventory (store) and a pool of libvirt connections, one per host.

Kept free of imports: the CLI's lean ``vm list`` path reads the inventory through kvmkit.hosts.lean.
"""
