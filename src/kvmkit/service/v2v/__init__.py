"""Importing VMs from other hypervisors: the package and its disks checked (package, ovf, disks), the guest
inspected (inspect) and converted where it needs it (virtv2v), the VM defined (importer)."""
