"""Turn libvirt's exceptions into kvmkit errors with a hint the user can act on."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import libvirt

from kvmkit.errors import Conflict, HostError, InvalidInput, InvalidState, KvmkitError, NotFound, OperationFailed

_NOT_FOUND = {
    libvirt.VIR_ERR_NO_DOMAIN: "VM",
    libvirt.VIR_ERR_NO_NETWORK: "network",
    libvirt.VIR_ERR_NO_STORAGE_POOL: "storage pool",
    libvirt.VIR_ERR_NO_STORAGE_VOL: "volume",
    libvirt.VIR_ERR_NO_DOMAIN_SNAPSHOT: "snapshot",
}

# what libvirt's client says when the daemon went away in the middle of a call
_CONNECTION_LOST = ("client socket is closed", "Cannot recv data", "Cannot write data", "End of file while reading",
                    "connection closed", "Broken pipe", "Connection reset by peer", "no keepalive response")


def translate(err: libvirt.libvirtError, what: str = "") -> KvmkitError:
    """Map a libvirtError to the kvmkit error class that says what kind of failure it is."""
    code = err.get_error_code()
    msg = err.get_error_message() or str(err)
    prefix = f"{what}: " if what else ""
    if code in _NOT_FOUND:
        return NotFound(f"{prefix}{_NOT_FOUND[code]} not found ({msg})")
    if code == libvirt.VIR_ERR_OPERATION_INVALID:
        return InvalidState(f"{prefix}{msg}")
    if code in (libvirt.VIR_ERR_DOM_EXIST, libvirt.VIR_ERR_NETWORK_EXIST, libvirt.VIR_ERR_STORAGE_POOL_BUILT):
        return Conflict(f"{prefix}{msg}")
    if code in (libvirt.VIR_ERR_XML_ERROR, libvirt.VIR_ERR_XML_DETAIL, libvirt.VIR_ERR_INVALID_ARG,
                libvirt.VIR_ERR_CONFIG_UNSUPPORTED):
        return InvalidInput(f"{prefix}{msg}")
    if code in (libvirt.VIR_ERR_NO_CONNECT, libvirt.VIR_ERR_SYSTEM_ERROR) and "socket" in msg:
        return HostError(f"{prefix}cannot reach libvirtd: {msg}",
                         hint="start it: libvirtd -d (or systemctl start libvirtd), or run scripts/setup.sh")
    if code == libvirt.VIR_ERR_INVALID_CONN or any(m in msg for m in _CONNECTION_LOST):
        return HostError(f"{prefix}lost the connection to libvirtd (it stopped, restarted or stopped answering): "
                         f"{msg}", hint="check that libvirtd runs (`libvirtd -d` or `systemctl start libvirtd`); "
                         "kvmkit reconnects by itself: retry in a few seconds")
    return OperationFailed(f"{prefix}{msg}")


@contextmanager
def libvirt_errors(what: str = "") -> Iterator[None]:
    """Run a block and re-raise any libvirtError as the matching KvmkitError."""
    try:
        yield
    except libvirt.libvirtError as err:
        raise translate(err, what) from err
