"""A CPU model every host of the inventory can give its guests (``kvmkit host cpu-baseline``): VMs created
with it (``vm create --cpu MODEL``) stay migratable between those hosts.

Each host's libvirt says, in its domain capabilities, which CPU its guests of a type (kvm or qemu) can have
at most (``host-model``: a named model plus features); libvirt's ``virConnectBaselineHypervisorCPU`` then
computes the newest model (and features) contained in all of them, migratable features only. When that
model is usable as it is on every host (domain capabilities: ``usable='yes'``), it is the one to name with
``--cpu``; otherwise (the baseline disables some of the model's features) kvmkit recommends, of the models
usable everywhere, the one with the most features.
"""

from __future__ import annotations

import functools
from typing import Any

import libvirt
from lxml import etree

from kvmkit.errors import InvalidState
from kvmkit.hypervisor.errors import libvirt_errors


def _host_model(conn: libvirt.virConnect, virt_type: str, arch: str) -> tuple[str, list[str]]:
    """(the host-model CPU as a <cpu> definition for the baseline call, the models usable there)."""
    caps = etree.fromstring(conn.getDomainCapabilities(None, arch, None, virt_type, 0).encode())
    mode = caps.find("cpu/mode[@name='host-model']")
    if mode is None or mode.get("supported") != "yes" or mode.find("model") is None:
        raise InvalidState(f"the host offers no host-model CPU for {virt_type} guests",
                           hint="pick the guest type every host runs (--virt-type)")
    cpu = etree.Element("cpu", mode="custom", match="exact")
    model = mode.find("model")
    assert model is not None
    etree.SubElement(cpu, "model", fallback="forbid").text = model.text
    if mode.findtext("vendor"):
        etree.SubElement(cpu, "vendor").text = mode.findtext("vendor")
    for feat in mode.findall("feature"):
        etree.SubElement(cpu, "feature", policy=feat.get("policy", "require"), name=feat.get("name", ""))
    usable = [m.text or "" for m in caps.findall("cpu/mode[@name='custom']/model") if m.get("usable") == "yes"]
    return etree.tostring(cpu, encoding="unicode"), usable


def cpu_baseline(hosts: Any, *, names: list[str] | None = None, virt_type: str | None = None,
                 arch: str = "x86_64", timeout: float = 30.0) -> dict[str, Any]:
    """The baseline over ``names`` (default: every host that answers); which hosts took part, and why not."""
    from kvmkit.service.hosts.facts import guest_type
    from kvmkit.service.hosts.listing import ask_hosts

    pairs = [(rec, h) for rec, h in hosts.handles() if names is None or rec.name in names]
    if names:
        for name in names:
            hosts.record(name)

    def probe(handle: Any) -> dict[str, Any]:
        conn = handle.get()
        kind = virt_type or guest_type(conn)[0]
        return {"virt_type": kind}

    kinds = ask_hosts([(rec.name, functools.partial(probe, h)) for rec, h in pairs], timeout)
    answered = [(rec, h, got["virt_type"]) for (rec, h), (ans, got) in zip(pairs, kinds, strict=True)
                if got is not None]
    left_out = [{"host": ans.name, "reason": ans.error or ans.state} for ans, got in kinds if got is None]
    if not answered:
        raise InvalidState("no host answered", hint="see kvmkit host list")
    kind = virt_type or ("kvm" if all(k == "kvm" for _r, _h, k in answered) else "qemu")
    cpus: list[str] = []
    usable: list[set[str]] = []
    used: list[str] = []
    for rec, handle, _k in answered:
        try:
            with libvirt_errors(f"host {rec.name}'s CPU for {kind} guests"):
                xml, models = _host_model(handle.get(), kind, arch)
        except Exception as err:
            left_out.append({"host": rec.name, "reason": str(err)})
            continue
        cpus.append(xml)
        usable.append(set(models))
        used.append(rec.name)
    if not cpus:
        raise InvalidState(f"no host can say which CPU its {kind} guests get: "
                           + "; ".join(f"{x['host']}: {x['reason']}" for x in left_out),
                           hint="check the hosts with kvmkit host list")
    conn = hosts.resolve(used[0]).get()
    with libvirt_errors("computing the CPU baseline"):
        out = conn.baselineHypervisorCPU(None, arch, None, kind, cpus,
                                         libvirt.VIR_CONNECT_BASELINE_CPU_MIGRATABLE)
    root = etree.fromstring(out.encode())
    model = root.findtext("model")
    features = {f.get("name"): f.get("policy", "require") for f in root.findall("feature")}
    common = set.intersection(*usable) if usable else set()
    everywhere = bool(model and model in common)
    choice = model if everywhere else _richest(conn, arch, kind, common)
    return {"model": model, "virt_type": kind, "arch": arch, "hosts": used, "left_out": left_out,
            "features": features, "usable_everywhere": everywhere, "cpu_xml": out, "recommended": choice,
            "create_option": f"--cpu {choice}" if choice else None}


def _richest(conn: libvirt.virConnect, arch: str, kind: str, models: set[str]) -> str | None:
    """Of the named models every host's guests can have as they are, the one with the most CPU features.

    The baseline's own model may need features some host lacks (its baseline then disables them, which a
    bare ``--cpu MODEL`` cannot say): a model usable everywhere on its own is what ``--cpu`` can name."""
    best: tuple[int, str] | None = None
    for name in sorted(models):
        cpu = etree.Element("cpu", mode="custom", match="exact")
        etree.SubElement(cpu, "model", fallback="forbid").text = name
        try:
            xml = conn.baselineHypervisorCPU(None, arch, None, kind, [etree.tostring(cpu, encoding="unicode")],
                                             libvirt.VIR_CONNECT_BASELINE_CPU_EXPAND_FEATURES)
        except libvirt.libvirtError:
            continue
        count = len(etree.fromstring(xml.encode()).findall("feature[@policy='require']"))
        if best is None or count > best[0]:
            best = (count, name)
    return best[1] if best else None
