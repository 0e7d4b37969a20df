"""Before a VM moves: the seeds' preconditions of migration, checked through both hosts' libvirt.

Each check passes, warns (the move works; the user should know) or fails (the move is refused, naming the
cause and the fix): the destination itself (another host, not in maintenance, the name free), the VM's state
(live needs it running, offline shut off; no snapshots, no host devices), the machine type and guest type
(the destination's domain capabilities), the CPU (the guest's CPU compared with what the destination's
hypervisor offers), the networks and bridges, the disks and boot files (present there and the same files
— shared storage — or, with copy_storage, absent and creatable in a pool at the same path), the clocks
(clock.py), and memory and vCPUs (placement's judge). :func:`plan_migration` returns the plan with every
verdict; :func:`require` raises MigrationRefused when one failed.
"""

from __future__ import annotations

from typing import Any

import libvirt
from lxml import etree

from kvmkit.errors import InvalidInput
from kvmkit.hypervisor.errors import libvirt_errors
from kvmkit.service.migration.model import Check, Endpoint, MigrationRefused, Plan
from kvmkit.service.migration.storage_checks import storage_checks
from kvmkit.spec.migration import MigrateSpec
from kvmkit.xml.migration import DomainNeeds, logs_appended, read_needs

BASELINE_HINT = ("create VMs with a CPU model every host runs (`kvmkit host cpu-baseline` names one; "
                 "`kvmkit vm create ... --cpu MODEL`)")


def _host_uuid(conn: libvirt.virConnect) -> str | None:
    return etree.fromstring(conn.getCapabilities().encode()).findtext("host/uuid")


def plan_migration(src: Endpoint, dst: Endpoint, name: str, spec: MigrateSpec) -> Plan:
    """Every pre-check of moving VM ``name`` from ``src`` to ``dst`` (nothing is changed on either host)."""
    from kvmkit.service.vms.domains import domain

    dom = domain(src.conn, name)
    with libvirt_errors(f"reading VM '{name}' on host {src.name}"):
        state = dom.state()[0]
        active = bool(dom.isActive())
    mode = spec.mode or ("live" if active else "offline")
    transport = "peer-to-peer" if dst.remote_uri else "managed"
    with libvirt_errors(f"reading VM '{name}'"):
        flags = libvirt.VIR_DOMAIN_XML_MIGRATABLE if active else libvirt.VIR_DOMAIN_XML_INACTIVE
        xml = dom.XMLDesc(flags | libvirt.VIR_DOMAIN_XML_SECURE)
    needs = read_needs(xml)
    plan = Plan(vm=name, source=src.name, dest=dst.name, mode=mode, transport=transport,
                memory_mib=needs.memory_mib, vcpus=needs.vcpus, uuid=needs.uuid,
                was_paused=state == libvirt.VIR_DOMAIN_PAUSED)
    checks = plan.checks
    checks.append(_destination(src, dst, name))
    checks.append(_state(dom, mode, active, name, dst))
    checks.append(_devices(needs))
    checks.append(_machine(dst, needs))
    checks.append(_cpu(src, dst, needs, mode))
    checks.append(_networks(dst, needs))
    checks.extend(storage_checks(src, dst, needs, spec, mode, plan))
    checks.append(_clock(src, dst, plan))
    checks.append(_memory(dst, needs, mode))
    if mode == "live":
        plan.dest_xml = logs_appended(xml)
        if plan.dest_xml is not None:
            plan.notes.append("serial/console logs are appended to on the destination (append='on'): with "
                              "append='off' the destination's QEMU would empty the log the source wrote")
    if transport == "peer-to-peer":
        plan.notes.append(f"peer-to-peer: host {src.name}'s libvirtd opens {dst.uri} itself and drives the "
                          "migration (it completes or is rolled back by libvirt even if kvmkit goes away)")
    else:
        plan.notes.append(f"managed: {dst.uri} names no network host, so host {src.name}'s libvirtd cannot open "
                          "it; kvmkit holds both connections and drives libvirt's migration phases")
    return plan


def require(plan: Plan) -> Plan:
    if plan.refused:
        raise MigrationRefused(plan)
    return plan


# --- the checks ---------------------------------------------------------------------------------------

def _destination(src: Endpoint, dst: Endpoint, name: str) -> Check:
    with libvirt_errors(f"asking hosts {src.name} and {dst.name}"):
        same = _host_uuid(src.conn) == _host_uuid(dst.conn)
    if same or src.name == dst.name:
        return Check("destination", "fail", f"host {dst.name} is the host VM '{name}' is on",
                     "name another host: kvmkit host list")
    if dst.maintenance:
        return Check("destination", "fail", f"host {dst.name} is in maintenance",
                     f"end it (kvmkit host maintenance {dst.name} off) or pick another host")
    return Check("destination", "pass", f"host {dst.name} answers and is not in maintenance")


def _state(dom: libvirt.virDomain, mode: str, active: bool, name: str, dst: Endpoint) -> Check:
    from kvmkit.service.vms.domains import state_of

    try:
        dst.conn.lookupByName(name)
        return Check("state", "fail", f"host {dst.name} has a VM named '{name}' already",
                     f"rename one of them (kvmkit vm rename) or delete the one on host {dst.name}")
    except libvirt.libvirtError as err:
        if err.get_error_code() != libvirt.VIR_ERR_NO_DOMAIN:
            raise
    with libvirt_errors(f"reading VM '{name}'"):
        uuid = dom.UUIDString()
        try:
            other = dst.conn.lookupByUUIDString(uuid)
            return Check("state", "fail", f"host {dst.name} has a VM with this VM's UUID ({other.name()})",
                         f"delete that copy on host {dst.name} first")
        except libvirt.libvirtError as err:
            if err.get_error_code() != libvirt.VIR_ERR_NO_DOMAIN:
                raise
        snapshots = dom.snapshotNum(0)
        job = dom.jobInfo()[0] if active else libvirt.VIR_DOMAIN_JOB_NONE
    if mode == "live" and not active:
        return Check("state", "fail", f"VM '{name}' is shut off: there is nothing to migrate live",
                     "leave out --live (a shut-off VM moves offline) or start it first")
    if mode == "offline" and active:
        return Check("state", "fail", f"VM '{name}' is {state_of(dom)}: an offline migration moves a shut-off VM",
                     f"migrate it live (leave out --offline) or shut it down first (kvmkit vm shutdown {name})")
    if job != libvirt.VIR_DOMAIN_JOB_NONE:
        return Check("state", "fail", f"VM '{name}' is busy with another libvirt job (a backup, a block copy, "
                     "a migration)", "wait for it to end, or abort it")
    if snapshots:
        return Check("state", "fail", f"VM '{name}' has {snapshots} snapshot(s): libvirt does not move snapshots",
                     f"delete them first (kvmkit snapshot list {name}; kvmkit snapshot delete {name} SNAP)")
    return Check("state", "pass", f"VM '{name}' is {state_of(dom)}; {mode} migration")


def _devices(needs: DomainNeeds) -> Check:
    if needs.hostdevs:
        return Check("devices", "fail", f"the VM uses {len(needs.hostdevs)} host device(s) "
                     f"({', '.join(sorted(set(needs.hostdevs)))}): they belong to this host",
                     "detach them before the move (kvmkit vm xml NAME --replace) and attach the destination's")
    return Check("devices", "pass", "no host devices")


def _machine(dst: Endpoint, needs: DomainNeeds) -> Check:
    try:
        caps = dst.conn.getDomainCapabilities(needs.emulator, needs.arch, needs.machine, needs.virt_type, 0)
    except libvirt.libvirtError as err:
        qemu = _qemu_version(dst.conn)
        return Check("machine", "fail", f"host {dst.name}'s QEMU ({qemu}) cannot run this VM's machine "
                     f"{needs.machine or '(default)'} as a {needs.virt_type} guest "
                     f"({needs.emulator or 'default emulator'}): {err.get_error_message()}",
                     f"move it to a host whose QEMU offers machine {needs.machine} and {needs.virt_type} "
                     "guests (kvmkit host list shows the guest type), or change its machine type while shut off")
    machine = etree.fromstring(caps.encode()).findtext("machine")
    return Check("machine", "pass", f"host {dst.name}'s QEMU runs machine {machine} as a {needs.virt_type} guest")


def _qemu_version(conn: libvirt.virConnect) -> str:
    try:
        v = conn.getVersion()
        return f"QEMU {v // 1_000_000}.{v // 1000 % 1000}.{v % 1000}"
    except libvirt.libvirtError:
        return "QEMU"


def _cpu(src: Endpoint, dst: Endpoint, needs: DomainNeeds, mode: str) -> Check:
    if needs.cpu_xml is None:
        return Check("cpu", "pass", "the VM uses QEMU's default CPU model (no <cpu>), which every host's QEMU "
                     "offers", None)
    if needs.cpu_mode in ("host-passthrough", "maximum"):
        if mode == "offline":
            return Check("cpu", "warn", f"the VM's CPU is {needs.cpu_mode}: it becomes host {dst.name}'s CPU "
                         "when it starts there", BASELINE_HINT)
        with libvirt_errors("reading the hosts' CPUs"):
            src_cpu = etree.fromstring(src.conn.getCapabilities().encode()).find("host/cpu")
            xml = etree.tostring(src_cpu, encoding="unicode") if src_cpu is not None else ""
        try:
            result = dst.conn.compareCPU(xml, libvirt.VIR_CONNECT_COMPARE_CPU_FAIL_INCOMPATIBLE)
        except libvirt.libvirtError as err:
            return Check("cpu", "fail", f"the VM's CPU is {needs.cpu_mode} (host {src.name}'s own CPU) and host "
                         f"{dst.name}'s CPU lacks some of it: {err.get_error_message()}", BASELINE_HINT)
        if result not in (libvirt.VIR_CPU_COMPARE_IDENTICAL, libvirt.VIR_CPU_COMPARE_SUPERSET):
            return Check("cpu", "fail", f"the VM's CPU is {needs.cpu_mode} and host {dst.name}'s CPU is not "
                         f"host {src.name}'s", BASELINE_HINT)
        return Check("cpu", "pass", f"{needs.cpu_mode}: host {dst.name}'s CPU offers everything host "
                     f"{src.name}'s does")
    if needs.cpu_mode == "host-model" and mode == "offline":
        return Check("cpu", "pass", f"host-model: the CPU is taken from host {dst.name} when the VM starts there")
    try:
        result = dst.conn.compareHypervisorCPU(needs.emulator, needs.arch, needs.machine, needs.virt_type,
                                               needs.cpu_xml, libvirt.VIR_CONNECT_COMPARE_CPU_FAIL_INCOMPATIBLE)
    except libvirt.libvirtError as err:
        if err.get_error_code() == libvirt.VIR_ERR_CPU_INCOMPATIBLE:
            return Check("cpu", "fail", f"host {dst.name} cannot offer the VM's CPU "
                         f"({_cpu_model(needs.cpu_xml)}): {err.get_error_message()}", BASELINE_HINT)
        return Check("cpu", "fail", f"host {dst.name} could not compare the VM's CPU: {err.get_error_message()}",
                     BASELINE_HINT)
    if result == libvirt.VIR_CPU_COMPARE_INCOMPATIBLE:
        return Check("cpu", "fail", f"host {dst.name} cannot offer the VM's CPU ({_cpu_model(needs.cpu_xml)})",
                     BASELINE_HINT)
    return Check("cpu", "pass", f"host {dst.name}'s {needs.virt_type} guests can have the VM's CPU "
                 f"({_cpu_model(needs.cpu_xml)})")


def _cpu_model(cpu_xml: str) -> str:
    root = etree.fromstring(cpu_xml.encode())
    model = root.findtext("model") or root.get("mode") or "custom"
    required = [f.get("name") for f in root.findall("feature") if f.get("policy") in ("require", "force")]
    return model + (f" + {', '.join(str(r) for r in required)}" if required else "")


def _host_interfaces(conn: libvirt.virConnect) -> set[str] | None:
    try:
        return {i.name() for i in conn.listAllInterfaces(0)}
    except libvirt.libvirtError:
        pass
    try:
        names = set()
        for dev in conn.listAllDevices(libvirt.VIR_CONNECT_LIST_NODE_DEVICES_CAP_NET):
            iface = etree.fromstring(dev.XMLDesc(0).encode()).findtext("capability/interface")
            if iface:
                names.add(iface)
        return names
    except libvirt.libvirtError:
        return None


def _networks(dst: Endpoint, needs: DomainNeeds) -> Check:
    problems: list[str] = []
    fixes: list[str] = []
    seen: list[str] = []
    ifaces: set[str] | None = None
    for nic in needs.nics:
        if nic.type == "network" and nic.source:
            try:
                net = dst.conn.networkLookupByName(nic.source)
            except libvirt.libvirtError:
                problems.append(f"network '{nic.source}' does not exist on host {dst.name}")
                fixes.append(f"create it there with the same name (kvmkit --host {dst.name} net create "
                             f"{nic.source} ...), or move the VM's NIC to a network both hosts have")
                continue
            if not net.isActive():
                problems.append(f"network '{nic.source}' is not running on host {dst.name}")
                fixes.append(f"kvmkit --host {dst.name} net start {nic.source}")
                continue
            seen.append(f"network {nic.source}")
        elif nic.type in ("bridge", "direct") and nic.source:
            if ifaces is None:
                ifaces = _host_interfaces(dst.conn)
            if ifaces is not None and nic.source not in ifaces:
                what = "bridge" if nic.type == "bridge" else "host interface"
                problems.append(f"{what} '{nic.source}' does not exist on host {dst.name}")
                fixes.append(f"create {what} {nic.source} on host {dst.name} (same name, same network segment)")
                continue
            seen.append(f"{nic.type} {nic.source}")
        elif nic.type == "hostdev":
            problems.append("a NIC is a host device (SR-IOV VF) of this host")
            fixes.append("detach it before the move")
    if problems:
        return Check("network", "fail", "; ".join(problems), "; ".join(dict.fromkeys(fixes)))
    if not needs.nics:
        return Check("network", "pass", "no NICs")
    return Check("network", "pass", f"host {dst.name} has {', '.join(dict.fromkeys(seen)) or 'what the NICs need'}")


def _clock(src: Endpoint, dst: Endpoint, plan: Plan) -> Check:
    from kvmkit.service.migration.clock import limit_s, read_clock, skew

    limit = limit_s()
    try:
        a = read_clock(src.conn, src.name)
        b = read_clock(dst.conn, dst.name)
    except libvirt.libvirtError as err:
        return Check("clock", "warn", f"could not read the hosts' clocks through libvirt: {err.get_error_message()}",
                     "keep the hosts' clocks synchronised (chrony or ntpd on every host)")
    diff, error = skew(a, b)
    plan.clock_skew_s = round(diff, 4)
    simulated = " (simulated by KVMKIT_TEST_CLOCK_OFFSET)" if a.simulated_s or b.simulated_s else ""
    text = (f"host {dst.name}'s clock is {diff:+.3f} s from host {src.name}'s (±{error:.3f} s){simulated}; "
            f"limit {limit:g} s")
    if abs(diff) - error > limit:
        return Check("clock", "fail", text, "synchronise the hosts' clocks (chrony or ntpd on both); "
                     "KVMKIT_MIGRATE_MAX_CLOCK_SKEW raises the limit")
    return Check("clock", "pass", text)


def _memory(dst: Endpoint, needs: DomainNeeds, mode: str) -> Check:
    from kvmkit.service.hosts.facts import host_facts
    from kvmkit.service.hosts.placement import judge

    with libvirt_errors(f"reading host {dst.name}'s memory"):
        facts = host_facts(dst.conn)
    verdict = judge(dst.name, facts, vcpus=needs.vcpus, memory_mib=needs.memory_mib,
                    max_memory_mib=dst.max_memory_mib, cpu_overcommit=dst.cpu_overcommit)
    if verdict.ok:
        return Check("memory", "pass", f"host {dst.name}: {verdict.reason}")
    if mode == "offline":
        return Check("memory", "warn", f"host {dst.name}: {verdict.reason} (the VM is shut off: it needs that "
                     "when it starts there)", None)
    return Check("memory", "fail", f"host {dst.name}: {verdict.reason}",
                 f"free memory or vCPUs on host {dst.name} (or raise its limits: kvmkit host set {dst.name}), or "
                 "pick another host")


def endpoints(hosts: Any, source: str | None, dest: str) -> tuple[Endpoint, Endpoint]:
    """The two ends from the inventory (``hosts``: kvmkit.hosts.registry.Hosts); NotFound for unknown names."""
    src_rec = hosts.record(source)
    dst_rec = hosts.record(dest)
    if dst_rec.name == src_rec.name:
        raise InvalidInput(f"the VM is on host {dest} already", hint="name another host with --to (kvmkit host list)")
    src_conn = hosts.resolve(src_rec.name).get()
    dst_conn = hosts.resolve(dst_rec.name).get()
    return (Endpoint(src_rec.name, src_rec.uri, src_conn, src_rec.maintenance, src_rec.max_memory_mib,
                     src_rec.cpu_overcommit),
            Endpoint(dst_rec.name, dst_rec.uri, dst_conn, dst_rec.maintenance, dst_rec.max_memory_mib,
                     dst_rec.cpu_overcommit))
