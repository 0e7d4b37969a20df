"""Many hosts: the inventory as users see it, VM lists across hosts, placement of new VMs."""
