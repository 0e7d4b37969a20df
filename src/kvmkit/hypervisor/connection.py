"""Opening libvirt connections (one URI per host) with libvirt's stderr chatter silenced."""

from __future__ import annotations

import threading
import time
import weakref

import libvirt

from kvmkit.config import default_uri
from kvmkit.errors import HostError

_quiet_once = threading.Lock()
_quiet = False


def _silence_libvirt() -> None:
    """libvirt prints every error to stderr by default; kvmkit reports errors itself."""
    global _quiet
    with _quiet_once:
        if not _quiet:
            libvirt.registerErrorHandler(lambda _ctx, _err: None, None)
            _quiet = True


def connect(uri: str | None = None, *, readonly: bool = False) -> libvirt.virConnect:
    """Open a libvirt connection or raise HostError saying how to make libvirtd reachable."""
    _silence_libvirt()
    uri = uri or default_uri()
    try:
        conn = libvirt.openReadOnly(uri) if readonly else libvirt.open(uri)
    except libvirt.libvirtError as err:
        raise HostError(
            f"cannot connect to {uri}: {err.get_error_message()}",
            hint="is libvirtd running? start it with `libvirtd -d` (or `systemctl start libvirtd`), "
            "or run scripts/setup.sh",
        ) from err
    if conn is None:  # pragma: no cover - old bindings returned None
        raise HostError(f"cannot connect to {uri}")
    return conn


def wait_for(uri: str | None = None, timeout: float = 30.0) -> libvirt.virConnect:
    """Connect, retrying until libvirtd answers or ``timeout`` seconds pass."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return connect(uri)
        except HostError:
            if time.monotonic() >= deadline:
                raise
            time.sleep(0.2)


_per_thread = threading.local()
_owners: weakref.WeakKeyDictionary[libvirt.virConnect, int] = weakref.WeakKeyDictionary()


def claim(conn: libvirt.virConnect) -> None:
    """Record that ``conn`` is the calling thread's own (kvmkit.hosts.leases lends connections to one thread
    at a time): :func:`worker_connection` then uses it as it is instead of opening another."""
    _owners[conn] = threading.get_ident()


def worker_connection(shared: libvirt.virConnect) -> libvirt.virConnect:
    """This thread's own connection to the host ``shared`` is connected to (opened once per thread,
    reopened when libvirtd went away).

    libvirtd serves at most ``max_client_requests`` (default 5) calls of one client connection at a time
    and stops reading that connection beyond them, so task workers sharing one connection queue behind
    each other's slow calls (a domain start is ~0.4 s of libvirtd's time). test:/// connections are each a
    private in-memory host, so for them the shared connection is the only one that sees the same world.
    A connection this thread already owns (:func:`claim`) is its own: it is returned as it is."""
    if _owners.get(shared) == threading.get_ident():
        return shared
    try:
        uri = shared.getURI()
    except libvirt.libvirtError:  # the shared one died with a libvirtd restart: this thread knows the URI
        uri = getattr(_per_thread, "uri", None)
        if uri is None:
            raise
    if uri.startswith("test:"):
        return shared
    _per_thread.uri = uri
    conns: dict[str, libvirt.virConnect] = _per_thread.__dict__.setdefault("conns", {})
    conn = conns.get(uri)
    if conn is not None:
        try:
            # isAlive() only knows what the client saw; one cheap round trip notices a restarted libvirtd
            if conn.isAlive() and conn.getLibVersion():
                return conn
        except libvirt.libvirtError:
            pass
        try:
            conn.close()
        except libvirt.libvirtError:
            pass
    conn = connect(uri)
    conns[uri] = conn
    return conn
