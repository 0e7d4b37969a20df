"""kvmkit: KVM virtualization management over libvirt (library, CLI, REST API, web portal)."""

__version__ = "0.1.0"
