"""/api/v1/vms/{name}/xml: read a VM's domain XML (viewers) and replace its definition (admins) —
``kvmkit vm xml NAME [--inactive] [--replace FILE]``.

A replacement is checked against libvirt's RelaxNG schema (422 naming the element it does not accept),
must keep the VM's name and UUID, and is refused (409) while it would drop a disk, NIC or graphics device
the running VM uses; it is defined with libvirt's own validation and the answer carries the diff between
the definition before and after (service/vms/xml_edit.py).
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, Field

from kvmkit.api.deps import check_vm_visible, require, state
from kvmkit.api.driver_limits import LIMITS
from kvmkit.api.models.base import Out
from kvmkit.service.access.auth import Principal

router = APIRouter(prefix="/vms/{name}/xml", tags=["vm xml"], dependencies=[LIMITS])


class DomainXml(Out):
    name: str
    inactive: bool = Field(description="true: the definition used at the next start; false: the running VM")
    secure: bool = Field(description="secrets (e.g. VNC passwords) included: for admins only")
    xml: str


class NewXml(BaseModel):
    xml: str = Field(description="the complete <domain> definition (e.g. GET ...?inactive=true, edited)",
                     max_length=1 << 20)


class XmlSummary(Out):
    title: str | None = None
    description: str | None = None
    vcpus: int | None = None
    max_vcpus: int | None = None
    memory_mib: int | None = None
    max_memory_mib: int | None = None
    disks: list[str] = Field(default_factory=list, description="guest device names")
    nics: list[str] = Field(default_factory=list, description="MAC addresses")
    graphics: str | None = None


class XmlReplaced(Out):
    name: str
    changed: bool = Field(description="false: libvirt stored the same definition as before")
    diff: str = Field(description="unified diff of the stored definition, before -> after")
    running: bool
    applies: str = Field(description="'now' (shut off) or 'next start' (running)")
    summary: XmlSummary | None = Field(None, description="what kvmkit's VM model reads from the new definition")
    warnings: list[str] = Field(default_factory=list)


@router.get("", responses={404: {"description": "no such VM (or not delegated to you)"}})
def get_xml(name: str, request: Request,
            inactive: bool = Query(False, description="the definition (used at the next start) instead of the "
                                                      "running VM"),
            p: Principal = Depends(require("viewer"))) -> DomainXml:
    """The VM's domain XML; with secrets (VNC passwords) for admins, so that their edits keep them."""
    from kvmkit.service.vms import xml_edit

    check_vm_visible(p, name)
    return DomainXml.model_validate(xml_edit.read_xml(state(request).hv.get(), name, inactive=inactive,
                                                      secure=p.at_least("admin")))


@router.put("", responses={404: {"description": "no such VM"},
                           409: {"description": "busy, or the new definition drops a device the running VM uses"},
                           422: {"description": "not well-formed, another VM's name or UUID, or rejected by "
                                                "libvirt's schema or libvirt itself"}})
def replace_xml(name: str, body: NewXml, request: Request, p: Principal = Depends(require("admin"))) -> XmlReplaced:
    """Replace the VM's definition (the running VM keeps running; it applies from the next start)."""
    from kvmkit.service.vms import xml_edit

    check_vm_visible(p, name)
    st = state(request)
    conn = st.hv.get()
    with st.runner.hold(f"vm:{name}", "vm.xml.replace"):
        return XmlReplaced.model_validate(xml_edit.replace_xml(conn, name, body.xml))
