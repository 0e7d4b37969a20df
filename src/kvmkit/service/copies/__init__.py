"""Copies of VMs: snapshots, clones, backups and restores."""
