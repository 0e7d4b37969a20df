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
    """Put ``c``'s (shared) state back to the defaults recorded by record_defaults() (AssertionError if it
    cannot: a later test would see the leftovers)."""
    for dom in c.listAllDomains():
        if dom.name() in _pristine:
            continue
        persistent = dom.isPersistent()
        with contextlib.suppress(libvirt.libvirtError):
            if dom.isActive():
                dom.destroy()
        if not persistent:
            continue  # a transient domain is gone once destroyed
        try:  # snapshot metadata or a managed save would make a plain undefine refuse
            dom.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA | libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE)
        except libvirt.libvirtError:
            dom.undefine()
    for name, xml in _pristine.items():
        try:
            dom = c.lookupByName(name)
        except libvirt.libvirtError:
            dom = c.defineXML(xml)
        if not dom.isActive():
            dom.create()
    left = sorted(set(d.name() for d in c.listAllDomains()) - set(_pristine))
    assert not left, f"test:///default still has {left} after the reset"
