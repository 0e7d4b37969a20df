"""The server's background watchers: crashed VMs (restart policy) and the host inventory."""
