"""Host inventory specs: a libvirt host kvmkit manages besides the local one (``kvmkit host add``)."""

from __future__ import annotations

from urllib.parse import parse_qsl, urlsplit

from pydantic import BaseModel, Field, field_validator, model_validator

from kvmkit.spec.common import as_value_error, parse_size_mib, validate_name

LOCAL = "local"  # the implicit host: the URI of --connect / KVMKIT_CONNECT (default qemu:///system)
# libvirt's remote transports (https://libvirt.org/uri.html); qemu+tcp has no encryption and, as kvmkit's test
# bed uses it, no authentication: for tests and closed networks only
SCHEMES = ("qemu", "qemu+ssh", "qemu+libssh", "qemu+libssh2", "qemu+tls", "qemu+tcp", "qemu+unix", "qemu+ext",
           "test", "test+tcp", "test+ssh", "test+tls", "test+unix")
SSH_SCHEMES = ("qemu+ssh", "qemu+libssh", "qemu+libssh2", "test+ssh")


def validate_uri(uri: str) -> str:
    from kvmkit.errors import InvalidInput

    uri = uri.strip()
    parts = urlsplit(uri)
    if parts.scheme not in SCHEMES or not uri.startswith(f"{parts.scheme}://"):
        raise InvalidInput(f"'{uri}' is not a libvirt URI kvmkit can manage",
                           hint="use qemu+ssh://USER@HOST/system or qemu+tls://HOST/system "
                                "(qemu+tcp://HOST/system only on a closed test network)")
    if parts.scheme.startswith("qemu") and parts.path not in ("/system", "/session"):
        raise InvalidInput(f"'{uri}' names no QEMU driver instance", hint="end the URI with /system (or /session)")
    if "keyfile" in dict(parse_qsl(parts.query)):
        raise InvalidInput(f"'{uri}' carries keyfile=", hint="give the key with --ssh-key FILE instead")
    return uri


class HostSpec(BaseModel):
    """A host to add: its name in kvmkit, its libvirt URI and optional limits for placement."""

    name: str = Field(description="the host's name in kvmkit (VMs are named per host)")
    uri: str = Field(description="libvirt URI, e.g. qemu+ssh://root@host2/system")
    ssh_key: str | None = Field(default=None,
                                description="private key file for qemu+ssh (a path on the management host)")
    max_memory_mib: int | None = Field(default=None, ge=1, description="memory VMs may use on this host in MiB "
                                       "(placement caps free memory at what this leaves)")
    max_memory: str | None = Field(default=None, description="the same as a size: 8G, 16384 (MiB)", exclude=True)
    cpu_overcommit: float | None = Field(default=None, gt=0, le=64,
                                         description="vCPUs allowed per physical core (default: the global limit)")

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        as_value_error(validate_name, v, "host name")
        if v == LOCAL:
            raise ValueError("'local' is the local host (the --connect URI); it cannot be added; "
                             "change its limits with `kvmkit host set local`")
        return v

    @field_validator("uri")
    @classmethod
    def _uri(cls, v: str) -> str:
        return as_value_error(validate_uri, v)

    @model_validator(mode="after")
    def _checks(self) -> HostSpec:
        if self.max_memory is not None:
            self.max_memory_mib = as_value_error(parse_size_mib, self.max_memory, "max_memory")
            self.max_memory = None
        if self.ssh_key and urlsplit(self.uri).scheme not in SSH_SCHEMES:
            raise ValueError(f"--ssh-key is for ssh URIs ({', '.join(SSH_SCHEMES)}), not {self.uri}")
        return self


class HostLimits(BaseModel):
    """Placement limits of a host (``kvmkit host set``): unset fields stay as they are; 0 clears one."""

    max_memory_mib: int | None = Field(default=None, ge=0, description="MiB VMs may use; 0 clears the cap")
    max_memory: str | None = Field(default=None, description="the same as a size (8G); '0' clears the cap",
                                   exclude=True)
    cpu_overcommit: float | None = Field(default=None, ge=0, le=64,
                                         description="vCPUs per physical core; 0: the global limit")

    @model_validator(mode="after")
    def _size(self) -> HostLimits:
        if self.max_memory is not None:
            self.max_memory_mib = 0 if self.max_memory.strip() == "0" else as_value_error(
                parse_size_mib, self.max_memory, "max_memory")
            self.max_memory = None
        return self
