"""What a libvirt driver cannot do is the host's limit, not a server failure: 409 instead of 500.

libvirt answers ``VIR_ERR_NO_SUPPORT`` ("this function is not supported by the connection driver") when
the host's driver (the test driver, an older libvirt, a hypervisor without the feature) lacks a call;
kvmkit's error mapping calls that OperationFailed (500). A router that lists ``LIMITS`` in its
dependencies answers such a request with 409 naming the call and saying the host cannot do it.
"""

from __future__ import annotations

from collections.abc import Iterator

import libvirt
from fastapi import Depends

from kvmkit.errors import InvalidState, OperationFailed

UNSUPPORTED = (libvirt.VIR_ERR_NO_SUPPORT, libvirt.VIR_ERR_ARGUMENT_UNSUPPORTED)


def unsupported(err: BaseException) -> bool:
    cause = err.__cause__
    return isinstance(cause, libvirt.libvirtError) and cause.get_error_code() in UNSUPPORTED


def _driver_limits() -> Iterator[None]:
    try:
        yield
    except OperationFailed as err:
        if unsupported(err):
            raise InvalidState(err.message, hint="this host's libvirt driver cannot do that; use a host "
                               "(libvirt driver) that supports it") from err
        raise


LIMITS = Depends(_driver_limits)
