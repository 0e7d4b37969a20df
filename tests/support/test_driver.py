"""libvirt's in-memory test driver (test:///default), put back to its defaults before each test that uses it.

The driver keeps one state per process, freed only when the last reference to a test:///default connection
goes (a connection, but also a virDomain object or an event callback still holding one). One test that leaves
such a reference alive hands everything it defined, and whatever it did to the default domain ``test``, on to
every later test: a full run then failed ten unrelated fast tests. So the fixture does not rely on the state
being freed: it removes every domain the defaults do not have and brings ``test`` back, defined and running,
with the XML it had when the run started. Everything on this state was made by this process's tests.
"""

from __future__ import annotations

import contextlib

import libvirt

URI = "test:///default"
_pristine: dict[str, str] = {}


def record_defaults() -> None:
    """Remember the default domains' XML (called once at session start, before any test ran)."""
    c = libvirt.open(URI)
    try:
        for dom in c.listAllDomains():
            _pristine[dom.name()] = dom.XMLDesc(0)
    finally:
        c.close()


def reset(c: libvirt.virConnect) -> None:
    """Put ``c``'s (shared) state back to the defaults recorded by record_defaults()."""
    for dom in c.listAllDomains():
        if dom.name() in _pristine:
            continue
        with contextlib.suppress(libvirt.libvirtError):
            if dom.isActive():
                dom.destroy()
        with contextlib.suppress(libvirt.libvirtError):
            dom.undefine()
    for name, xml in _pristine.items():
        try:
            dom = c.lookupByName(name)
        except libvirt.libvirtError:
            dom = c.defineXML(xml)
        if not dom.isActive():
            dom.create()
