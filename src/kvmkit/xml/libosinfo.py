"""The guest OS in libosinfo's own domain metadata, as virt-install and virt-manager write it:

    <metadata><libosinfo:libosinfo xmlns:libosinfo="http://libosinfo.org/xmlns/libvirt/domain/1.0">
      <libosinfo:os id="http://debian.org/debian/12"/></libosinfo:libosinfo></metadata>

The spec's ``os`` field holds the osinfo id (service/osinfo turns a short id such as debian12 into it).
Only the libosinfo element is read or written; kvmkit's own and other applications' metadata stay as they are.
An id that is not a plain URL is ignored on read (a foreign domain still describes), never rewritten.
"""

from __future__ import annotations

import re
from typing import Any

from lxml import etree

from kvmkit.xml.util import ensure, remove

NS = "http://libosinfo.org/xmlns/libvirt/domain/1.0"
PREFIX = "libosinfo"
FIELDS = ("os",)
_ID = re.compile(r"^https?://[A-Za-z0-9.-]{1,100}(/[A-Za-z0-9._~+-]{1,64}){1,8}/?$")


def _element(root: etree._Element) -> etree._Element | None:
    meta = root.find("metadata")
    return None if meta is None else meta.find(f"{{{NS}}}libosinfo")


def read(root: etree._Element) -> dict[str, Any]:
    el = _element(root)
    os_el = None if el is None else el.find(f"{{{NS}}}os")
    os_id = None if os_el is None else os_el.get("id")
    return {"os": os_id if os_id and _ID.match(os_id) else None}


def write(root: etree._Element, spec: Any) -> None:
    el = _element(root)
    if spec.os and not _ID.match(spec.os):
        return  # a short id not yet resolved to its osinfo id (service/osinfo does that): nothing to write
    os_id = spec.os or None
    if os_id is None:
        if el is not None and read(root)["os"] is not None:  # only an id kvmkit could read is dropped
            meta = el.getparent()
            remove(el)
            if meta is not None and len(meta) == 0:
                remove(meta)
        return
    if el is None:
        el = etree.SubElement(ensure(root, "metadata"), f"{{{NS}}}libosinfo", nsmap={PREFIX: NS})
    os_el = el.find(f"{{{NS}}}os")
    if os_el is None:
        os_el = etree.SubElement(el, f"{{{NS}}}os")
    os_el.set("id", os_id)
