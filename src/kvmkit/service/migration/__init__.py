"""Moving VMs between hosts: pre-checks, live and offline migration, evacuating a host, a common CPU baseline
(docs/migration.md)."""
