"""Every edit family of kvmkit's XML model, and the clone transformation, run over the corpus (corpus.py).

For each document: ``xml_to_spec`` must read it; a no-op ``apply_spec`` must give it back unchanged
(compared after C14N); then each edit below is applied and the result must (1) pass libvirt's RNG if
the original did, (2) be defined by libvirt's test driver if the original was, and (3) read back with
the edited fields as asked. An edit kvmkit refuses with InvalidInput (a clear error for the user) counts
as refused, not as broken. The clone transformation (service/copies/clone_xml.py: identity, MACs,
disks, NVRAM, sockets) is checked the same way, and must leave nothing shared with the original.

Every document gets every edit (no sampling): ``run`` spreads the documents over worker processes.
"""

from __future__ import annotations

import itertools
import multiprocessing
import os
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from lxml import etree

from kvmkit.errors import InvalidInput, InvalidState
from kvmkit.spec.vm import VMSpec
from tests.xml import corpus

Edit = Callable[[VMSpec], "dict[str, Any] | None"]


def _disks(s: VMSpec) -> list[dict[str, Any]]:
    return [d.model_dump() for d in s.disks]


def _nics(s: VMSpec) -> list[dict[str, Any]]:
    return [n.model_dump() for n in s.nics]


def _first(items: list[dict[str, Any]], **changes: Any) -> list[dict[str, Any]] | None:
    return [{**items[0], **changes}, *items[1:]] if items else None


def _other(value: Any, a: Any, b: Any) -> Any:
    return b if value == a else a


def _gfx(s: VMSpec, **changes: Any) -> dict[str, Any] | None:
    return {"graphics": {**s.graphics.model_dump(), **changes}} if s.graphics else None


NEW_FILE = {"path": "/var/lib/libvirt/images/kvmkit-corpus-new.qcow2", "format": "qcow2"}

FAMILIES: dict[str, dict[str, Edit]] = {
    "general": {
        "title": lambda s: {"title": "edited by kvmkit"},
        "on_crash": lambda s: {"on_crash": _other(s.on_crash, "restart", "destroy")},
        "name": lambda s: {"name": "kvmkit-renamed"},
    },
    "metadata": {"key": lambda s: {"metadata": {**s.metadata, "edited": "yes"}}},
    "memory": {
        "size": lambda s: {"memory_mib": _other(s.memory_mib, 1000, 1100),
                           "max_memory_mib": _other(s.memory_mib, 1000, 1100)},
        "balloon_size": lambda s: {"memory_mib": max(1, s.memory_mib // 2)},
        "hugepages": lambda s: {"hugepages": not s.hugepages},
        "nosharepages": lambda s: {"nosharepages": not s.nosharepages},
    },
    "cpu": {
        "vcpus": lambda s: {"vcpus": (s.max_vcpus or 1) + 1, "max_vcpus": (s.max_vcpus or 1) + 1,
                            "sockets": None, "cores": None, "threads": None},
        "topology": lambda s: {"sockets": 1, "cores": s.max_vcpus, "threads": 1},
        "host_passthrough": lambda s: {"cpu_mode": "host-passthrough", "cpu_model": None},
        "host_model": lambda s: {"cpu_mode": "host-model", "cpu_model": None},
        "custom": lambda s: {"cpu_mode": "custom", "cpu_model": "qemu64"},
        "pin": lambda s: {"vcpupin": {0: "0"}, "emulatorpin": "0"},
    },
    "osboot": {
        "firmware": lambda s: {"firmware": _other(s.firmware, "uefi", "bios")},
        "boot_order": lambda s: {"boot": ["cdrom", "hd"]},
        "kernel": lambda s: {"kernel": "/boot/vmlinuz-kvmkit", "initrd": "/boot/initrd-kvmkit",
                             "cmdline": "console=ttyS0"},
    },
    "disks": {
        "cache": lambda s: (d := _first(_disks(s), io=None, cache=_other(s.disks[0].cache if s.disks else None,
                                                                          "writeback", "none"))) and {"disks": d},
        "add_scsi": lambda s: {"disks": [*_disks(s), {**NEW_FILE, "bus": "virtio-scsi"}]},
        "add_virtio": lambda s: {"disks": [*_disks(s), NEW_FILE]},
        "add_cdrom": lambda s: {"disks": [*_disks(s), {"device": "cdrom", "path": "/var/lib/libvirt/images/k.iso"}]},
        "remove_last": lambda s: {"disks": _disks(s)[:-1]} if s.disks else None,
    },
    "nics": {
        "model": lambda s: (n := _first(_nics(s), model=_other(s.nics[0].model if s.nics else None, "e1000e",
                                                                "virtio"))) and {"nics": n},
        "source": lambda s: (n := _first(_nics(s), type="network", source="kvmkit-other")) and {"nics": n},
        "add": lambda s: {"nics": [*_nics(s), {"source": "default"}]},
        "remove_last": lambda s: {"nics": _nics(s)[:-1]} if s.nics else None,
    },
    "graphics": {
        "listen": lambda s: _gfx(s, listen=_other(s.graphics.listen if s.graphics else None, "0.0.0.0", "127.0.0.1")),
        "password": lambda s: _gfx(s, password="kvmkit-pw"),
        "port": lambda s: _gfx(s, port=_other(s.graphics.port if s.graphics else None, 5977, None)),
        "add_or_remove": lambda s: {"graphics": None if s.graphics else {"type": "vnc"}},
    },
    "chardevs": {
        "serial_log": lambda s: {"serial": True, "serial_log": "/var/log/kvmkit/kvmkit-corpus.serial.log"},
        "serial_off": lambda s: {"serial": False, "serial_log": None} if s.serial else None,
        "guest_agent": lambda s: {"guest_agent": not s.guest_agent},
    },
    "misc_devices": {
        "usb": lambda s: {"usb": not s.usb},
        "balloon": lambda s: {"balloon": not s.balloon},
        "rng": lambda s: {"rng": not s.rng},
    },
}


@dataclass
class Tally:
    """What happened to one family's edits (or the clones) over the documents a worker saw."""

    edits: int = 0
    refused: int = 0       # InvalidInput / InvalidState: kvmkit said what is wrong
    not_applicable: int = 0
    broken: list[tuple[str, str, str]] = field(default_factory=list)   # (document, edit, why)

    def add(self, other: Tally) -> None:
        self.edits += other.edits
        self.refused += other.refused
        self.not_applicable += other.not_applicable
        self.broken += other.broken


@dataclass
class Results:
    documents: int = 0
    identical: int = 0
    unreadable: list[tuple[str, str]] = field(default_factory=list)
    changed_by_noop: list[str] = field(default_factory=list)
    rng_valid: int = 0
    defined: int = 0
    families: dict[str, Tally] = field(default_factory=dict)

    def add(self, other: Results) -> None:
        for name in ("documents", "identical", "rng_valid", "defined"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.unreadable += other.unreadable
        self.changed_by_noop += other.changed_by_noop
        for fam, tally in other.families.items():
            self.families.setdefault(fam, Tally()).add(tally)


def c14n(xml: str | etree._Element) -> bytes:
    root = etree.fromstring(xml.encode()) if isinstance(xml, str) else xml
    return etree.tostring(root, method="c14n")


_driver: corpus.TestDriver | None = None


def _check(orig_rng: bool, orig_def: bool, out: str) -> str | None:
    assert _driver is not None
    if orig_rng and (problem := corpus.rng_problems(out)):
        return f"RNG {problem}"
    if orig_def and (problem := _driver.define(out)):
        return f"test driver: {problem}"
    return None


def _edit(doc: corpus.Doc, spec: VMSpec, family: str, name: str, edit: Edit, orig: tuple[bool, bool],
          tally: Tally) -> None:
    from kvmkit.xml import domain

    try:
        changes = edit(spec)
        if changes is None:
            tally.not_applicable += 1
            return
        want = spec.updated(**changes)
    except InvalidInput:
        tally.not_applicable += 1  # the edit itself is not valid for this document's spec
        return
    tally.edits += 1
    try:
        out = domain.apply_spec(doc.xml, want)
    except InvalidInput:
        tally.refused += 1
        return
    except Exception as err:  # a crash is a finding, reported with the document
        tally.broken.append((doc.name, name, f"crash {err!r}"))
        return
    problem = _check(*orig, out)
    if problem is None and orig[1]:  # a document libvirt takes must read back as edited
        got = domain.xml_to_spec(out)
        diff = [f for f in _fields(family) if _cmp(f, getattr(got, f)) != _cmp(f, getattr(want, f))]
        problem = f"reads back different {', '.join(diff)}" if diff else None
    if problem:
        tally.broken.append((doc.name, name, problem))


def _fields(family: str) -> tuple[str, ...]:
    import importlib

    return importlib.import_module(f"kvmkit.xml.{family}").FIELDS  # type: ignore[no-any-return]


def _cmp(name: str, value: Any) -> Any:
    """A field as compared after an edit: targets libvirt-style names assigned on the way out are ignored."""
    if isinstance(value, list):
        items = [v.model_dump() if hasattr(v, "model_dump") else v for v in value]
        if name == "disks":  # a format left out is written as raw (kvmkit never lets libvirt probe)
            items = [{**d, "target": None, "format": d["format"] or "raw"} for d in items]
        return items
    return value.model_dump() if hasattr(value, "model_dump") else value


def _clone(doc: corpus.Doc, orig: tuple[bool, bool], tally: Tally) -> None:
    """The XML half of `kvmkit vm clone`, with every copy placed the way clone.py places it."""
    from kvmkit.service.copies.clone_xml import disk_refs, point_disk, rename_identity, set_macs

    root = etree.fromstring(doc.xml.encode())
    old = root.findtext("name") or "vm"
    counter = itertools.count(1)
    tally.edits += 1
    try:
        rename_identity(root, old, "kvmkit-clone")
        set_macs(root, lambda: (lambda n: f"52:54:00:ff:{n // 256:02x}:{n % 256:02x}")(next(counter)))
        refs = disk_refs(root, old)
    except (InvalidInput, InvalidState):
        tally.refused += 1
        return
    except Exception as err:
        tally.broken.append((doc.name, "clone", f"crash {err!r}"))
        return
    for ref in refs:
        fmt = ref.fmt or "raw"
        if ref.kind == "volume":
            point_disk(ref, "volume", fmt, pool=ref.pool, volume=f"kvmkit-clone-{ref.target}.{fmt}")
        else:
            base = os.path.dirname(ref.path or "") if ref.kind == "file" else "/var/lib/libvirt/images"
            point_disk(ref, "file", fmt, path=f"{base}/kvmkit-clone-{ref.target}.{fmt}")
    out = etree.tostring(root, encoding="unicode")
    problem = _check(*orig, out) or _shared(doc.xml, root)
    if problem:
        tally.broken.append((doc.name, "clone", problem))


def _private(root: etree._Element) -> set[str]:
    """Everything two VMs must not share: UUID, MACs, written disk files, NVRAM, logs, listening sockets."""
    from kvmkit.xml.osboot import nvram_path

    out = {f"uuid:{u.strip()}" for u in root.xpath("uuid/text()")}
    out |= {f"mac:{m.lower()}" for m in root.xpath("devices/interface/mac/@address")}
    out |= {f"disk:{p}" for p in root.xpath("devices/disk[not(readonly) and not(shareable) and "
                                            "(not(@device) or @device='disk')]/source/@file")}
    out |= {f"log:{p}" for p in root.xpath("devices/*[not(self::console)]/log/@file")}
    out |= {f"socket:{p}" for p in root.xpath("devices//*[@type='unix']/source[@mode='bind']/@path")}
    out |= {f"socket:{p}" for p in root.xpath("devices/interface[@type='vhostuser']/source[@mode='server']/@path")}
    nv = nvram_path(root)
    return out | ({f"nvram:{nv}"} if nv else set())


def _shared(orig_xml: str, clone: etree._Element) -> str | None:
    both = _private(etree.fromstring(orig_xml.encode())) & _private(clone)
    return f"shares {sorted(both)[0]} with the original" if both else None


def check_documents(names: list[str]) -> Results:
    """Run the no-op, every edit family and the clone over the named documents (in a worker process)."""
    global _driver
    from kvmkit.xml.domain import apply_spec, xml_to_spec

    if _driver is None:
        _driver = corpus.TestDriver()
    res = Results(families={f: Tally() for f in [*FAMILIES, "clone"]})
    for doc in corpus.load(names):
        res.documents += 1
        try:
            spec = xml_to_spec(doc.xml)
        except Exception as err:
            res.unreadable.append((doc.name, repr(err)))
            continue
        if c14n(apply_spec(doc.xml, spec)) == c14n(doc.xml):
            res.identical += 1
        else:
            res.changed_by_noop.append(doc.name)
        orig = (corpus.rng_problems(doc.xml) is None, _driver.define(doc.xml) is None)
        res.rng_valid += orig[0]
        res.defined += orig[1]
        for family, edits in FAMILIES.items():
            for name, edit in edits.items():
                _edit(doc, spec, family, f"{family}.{name}", edit, orig, res.families[family])
        _clone(doc, orig, res.families["clone"])
    return res


def run(workers: int | None = None) -> Results:
    """All documents, spread over ``workers`` processes (default: the CPUs this process may use, at most 4)."""
    names = corpus.names()
    workers = workers or max(1, min(4, len(os.sched_getaffinity(0))))
    chunks = [names[i::workers * 4] for i in range(workers * 4)]
    total = Results(families={f: Tally() for f in [*FAMILIES, "clone"]})
    if workers == 1:
        for chunk in chunks:
            total.add(check_documents(chunk))
        return total
    # spawn: a fresh interpreter per worker, never a fork of a process holding libvirt connections
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        for part in pool.map(check_documents, chunks):
            total.add(part)
    return total


def report(res: Results) -> list[str]:
    pct = 100.0 * res.identical / max(1, res.documents - len(res.unreadable))
    lines = [f"corpus: {res.documents} domain documents from {corpus.TARBALL}; "
             f"read {res.documents - len(res.unreadable)}, no-op round trip identical {res.identical} ({pct:.2f}%); "
             f"RNG-valid {res.rng_valid}, defined by test:///default {res.defined}"]
    for fam, t in res.families.items():
        lines.append(f"  {fam:<13} {t.edits:>6} edits  {t.refused:>4} refused with an error  "
                     f"{t.not_applicable:>5} not applicable  {len(t.broken):>3} broken")
    return lines


if __name__ == "__main__":  # python -m tests.xml.corpus_edits: the numbers, and what broke
    import sys
    import time

    start = time.monotonic()
    results = run(int(sys.argv[1]) if len(sys.argv) > 1 else None)
    print("\n".join(report(results)))
    for t in results.families.values():
        for doc, edit, why in t.broken[:20]:
            print(f"BROKEN {edit} {doc}: {why[:300]}")
    for doc, why in results.unreadable:
        print(f"UNREADABLE {doc}: {why[:300]}")
    print(f"{time.monotonic() - start:.1f} s")
