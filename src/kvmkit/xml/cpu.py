"""vCPUs and CPU model: <vcpu>, <cpu> (mode, model, topology), <cputune> pins, <numatune>.

A topology the spec cannot say (dies > 1, or one that does not multiply out to the vCPU count) reads as
none and is left as it is, unless the vCPU count changes (then it no longer fits and is dropped). The
mode and model are written apart from the topology, and <cpu> keeps what kvmkit does not model
(NUMA cells, features, cache); leaving a custom model drops the children only a model may have.
"""

from __future__ import annotations

from typing import Any

from lxml import etree

from kvmkit.xml.util import ensure, remove

FIELDS = ("vcpus", "max_vcpus", "cpuset", "sockets", "cores", "threads", "cpu_mode", "cpu_model",
          "vcpupin", "emulatorpin", "numatune")


def read(root: etree._Element) -> dict[str, Any]:
    out: dict[str, Any] = {}
    vcpu = root.find("vcpu")
    maximum = int(vcpu.text.strip()) if vcpu is not None and vcpu.text else 1
    out["max_vcpus"] = maximum
    out["vcpus"] = int(vcpu.get("current", maximum)) if vcpu is not None else 1
    out["cpuset"] = vcpu.get("cpuset") if vcpu is not None else None
    cpu = root.find("cpu")
    topo = cpu.find("topology") if cpu is not None else None
    for key in ("sockets", "cores", "threads"):
        out[key] = int(topo.get(key)) if topo is not None and topo.get(key) else None
    if topo is not None and (int(topo.get("dies") or 1) != 1 or None in (out["sockets"], out["cores"], out["threads"])
                             or out["sockets"] * out["cores"] * out["threads"] != maximum):
        out["sockets"] = out["cores"] = out["threads"] = None
    model = cpu.find("model") if cpu is not None else None
    mode = cpu.get("mode") if cpu is not None else None
    out["cpu_model"] = model.text if model is not None and model.text else None
    if mode is None and out["cpu_model"]:
        mode = "custom"
    out["cpu_mode"] = mode if mode in ("host-passthrough", "host-model", "custom", "maximum") else None
    if out["cpu_mode"] == "custom" and not out["cpu_model"]:
        out["cpu_mode"] = None  # topology-only <cpu>
    tune = root.find("cputune")
    out["vcpupin"] = {}
    out["emulatorpin"] = None
    if tune is not None:
        out["vcpupin"] = {int(p.get("vcpu")): p.get("cpuset") for p in tune.findall("vcpupin")}
        emu = tune.find("emulatorpin")
        out["emulatorpin"] = emu.get("cpuset") if emu is not None else None
    numa = root.find("numatune/memory")
    out["numatune"] = ({"mode": numa.get("mode", "strict"), "nodeset": numa.get("nodeset")}
                       if numa is not None and numa.get("nodeset") else None)
    return out


def write(root: etree._Element, spec: Any) -> None:
    old = read(root)
    if (old["vcpus"], old["max_vcpus"], old["cpuset"]) != (spec.vcpus, spec.max_vcpus, spec.cpuset):
        vcpu = ensure(root, "vcpu")
        vcpu.text = str(spec.max_vcpus)
        if spec.vcpus != spec.max_vcpus:
            vcpu.set("current", str(spec.vcpus))
        else:
            vcpu.attrib.pop("current", None)
        if spec.cpuset:
            vcpu.set("cpuset", spec.cpuset)
        else:
            vcpu.attrib.pop("cpuset", None)
        if vcpu.get("placement") is None:
            vcpu.set("placement", "static")
    if (old["cpu_mode"], old["cpu_model"]) != (spec.cpu_mode, spec.cpu_model):
        _write_mode(root, spec)
    if (old["sockets"], old["cores"], old["threads"]) != (spec.sockets, spec.cores, spec.threads) or (
            spec.sockets is None and old["max_vcpus"] != spec.max_vcpus):
        _write_topology(root, spec)
    cpu = root.find("cpu")
    if cpu is not None and len(cpu) == 0 and not set(cpu.attrib) - {"mode", "match", "check"} and \
            cpu.get("mode", "custom") == "custom":
        remove(cpu)  # nothing left that says anything
    if (old["vcpupin"], old["emulatorpin"]) != (spec.vcpupin, spec.emulatorpin):
        _write_pins(root, spec)
    numa = spec.numatune.model_dump() if spec.numatune else None
    if old["numatune"] != numa:
        if numa is None:
            remove(root.find("numatune"))
        else:
            ensure(ensure(root, "numatune"), "memory", mode=numa["mode"], nodeset=numa["nodeset"])


# children of <cpu> only a custom (named) model may have; those only host-passthrough and maximum may have
MODEL_ONLY = ("model", "vendor")
PASSTHROUGH_ONLY = ("cache[@mode='passthrough']", "maxphysaddr[@mode='passthrough']")


def _write_mode(root: etree._Element, spec: Any) -> None:
    cpu = root.find("cpu")
    if spec.cpu_mode is None:
        if cpu is not None:
            for attr in ("mode", "match", "migratable"):
                cpu.attrib.pop(attr, None)
            for path in (*MODEL_ONLY, *PASSTHROUGH_ONLY):
                remove(cpu.find(path))
        return
    cpu = ensure(root, "cpu")
    cpu.set("mode", spec.cpu_mode)
    if spec.cpu_mode not in ("host-passthrough", "maximum"):
        cpu.attrib.pop("migratable", None)  # libvirt allows it only for those two modes
        for path in PASSTHROUGH_ONLY:
            remove(cpu.find(path))
    if spec.cpu_mode == "custom":
        cpu.set("match", cpu.get("match", "exact"))
        model = cpu.find("model")
        if model is None:
            model = etree.Element("model", fallback="allow")
            cpu.insert(0, model)
        model.text = spec.cpu_model
    else:
        for tag in MODEL_ONLY:
            remove(cpu.find(tag))
        cpu.attrib.pop("match", None)


def _write_topology(root: etree._Element, spec: Any) -> None:
    cpu = root.find("cpu")
    topo = cpu.find("topology") if cpu is not None else None
    if spec.sockets is None:
        remove(topo)
        return
    cpu = ensure(root, "cpu")
    if topo is None:
        topo = etree.Element("topology")
        after = [c for c in cpu if c.tag in MODEL_ONLY]  # schema: model, vendor, topology, then the rest
        if after:
            after[-1].addnext(topo)
        else:
            cpu.insert(0, topo)
    topo.set("sockets", str(spec.sockets))
    if topo.get("dies") is not None:
        topo.set("dies", "1")
    topo.set("cores", str(spec.cores))
    topo.set("threads", str(spec.threads))


def _write_pins(root: etree._Element, spec: Any) -> None:
    tune = root.find("cputune")
    if tune is None:
        if not spec.vcpupin and not spec.emulatorpin:
            return
        tune = ensure(root, "cputune")
    for el in tune.findall("vcpupin") + tune.findall("emulatorpin"):
        remove(el)
    pos = 0
    for vcpu, cpus in sorted(spec.vcpupin.items()):
        tune.insert(pos, etree.Element("vcpupin", vcpu=str(vcpu), cpuset=cpus))
        pos += 1
    if spec.emulatorpin:
        tune.insert(pos, etree.Element("emulatorpin", cpuset=spec.emulatorpin))
    if len(tune) == 0 and not tune.attrib:
        remove(tune)
