"""``kvmkit vm create | list | show``: flags are parsed into a VMSpec (the one way in), then the service."""

from __future__ import annotations

from typing import Any

import typer

from kvmkit.cli.context import connection
from kvmkit.cli.output import console, emit, table, text
from kvmkit.errors import InvalidInput

# spec field (first part of a pydantic error location) -> the flag the user typed
FLAG_OF = {
    "name": "NAME", "memory_mib": "--memory", "max_memory_mib": "--memory max", "vcpus": "--vcpus",
    "max_vcpus": "--vcpus max", "sockets": "--vcpus sockets", "cores": "--vcpus cores",
    "threads": "--vcpus threads", "disks": "--disk", "nics": "--network", "graphics": "--graphics",
    "cpuset": "--cpuset", "boot": "--boot", "firmware": "--firmware", "machine": "--machine",
    "kernel": "--kernel", "initrd": "--initrd", "cmdline": "--cmdline", "template": "--template",
    "serial_log": "--serial-log", "cpu_model": "--cpu", "cpu_mode": "--cpu", "virt_type": "--virt-type",
    "uuid": "--uuid", "metadata": "--metadata", "title": "--title", "description": "--description",
    "cloud_init": "--cloud-init", "profile": "--profile", "on_crash": "--on-crash", "os": "--os",
    "virtio_win": "--virtio-win",
}
_CPU_MODES = ("host-passthrough", "host-model", "maximum")


def parse_opts(value: str, flag: str, first: str | None = None) -> dict[str, str]:
    """'512M,max=2G' -> {first: '512M', 'max': '2G'}; 'size=10G,bus=virtio' -> {...}."""
    out: dict[str, str] = {}
    for i, part in enumerate(p.strip() for p in value.split(",")):
        if not part:
            continue
        if "=" in part:
            key, val = part.split("=", 1)
            out[key.strip().replace("-", "_")] = val.strip()
        elif i == 0 and first:
            out[first] = part
        else:
            raise InvalidInput(f"{flag}: cannot read {part!r} in {value!r}",
                               hint="write key=value pairs separated by commas, see `kvmkit vm create --help`")
    return out


def _bool(value: str, flag: str) -> bool:
    if value.lower() in ("on", "yes", "true", "1"):
        return True
    if value.lower() in ("off", "no", "false", "0"):
        return False
    raise InvalidInput(f"{flag}: {value!r} is not on/off", hint="use on or off")


def _disk(value: str) -> dict[str, Any]:
    opts = parse_opts(value, "--disk")
    for key in ("readonly", "shareable"):
        if key in opts:
            opts[key] = _bool(opts[key], f"--disk {key}")  # type: ignore[assignment]
    known = {"size", "path", "pool", "volume", "format", "bus", "cache", "io", "readonly", "shareable",
             "target", "device"}
    bad = set(opts) - known
    if bad:
        raise InvalidInput(f"--disk: unknown option {sorted(bad)[0]!r}", hint=f"use {', '.join(sorted(known))}")
    return opts


def _network(value: str) -> dict[str, Any] | None:
    if value.strip() == "none":
        return None
    opts = parse_opts(value, "--network")
    kinds = [k for k in ("network", "bridge", "direct") if k in opts]
    if len(kinds) != 1:
        raise InvalidInput(f"--network {value!r} needs one of network=NAME, bridge=BR or direct=DEV",
                           hint="e.g. --network network=default or --network bridge=br0")
    kind = kinds[0]
    nic: dict[str, Any] = {"type": kind, "source": opts.pop(kind)}
    for key in ("model", "mac", "mode"):
        if key in opts:
            nic[key] = opts.pop(key)
    if opts:
        raise InvalidInput(f"--network: unknown option {sorted(opts)[0]!r}", hint="use model=, mac= or mode=")
    return nic


def _graphics(value: str) -> dict[str, Any] | None:
    opts = parse_opts(value, "--graphics", first="type")
    if opts.get("type") == "none":
        return None
    if "port" in opts:
        try:
            opts["port"] = int(opts["port"])  # type: ignore[assignment]
        except ValueError:
            raise InvalidInput(f"--graphics port {opts['port']!r} is not a number") from None
    return opts


def _cloud_init(value: str) -> dict[str, Any]:
    """'user-data=FILE,ssh-key=FILE,hostname=H,password-file=F,eject=yes' -> CloudInitSpec fields (paths made
    absolute; user-data read here into ``user_data_text``). ``password=`` works too but puts the password on the
    command line: prefer password-file."""
    import os

    opts: dict[str, Any] = dict(parse_opts(value, "--cloud-init"))
    known = {"user_data", "meta_data", "ssh_key", "hostname", "password", "password_file", "password_hash", "eject"}
    bad = set(opts) - known
    if bad:
        raise InvalidInput(f"--cloud-init: unknown option {sorted(bad)[0].replace('_', '-')!r}",
                           hint="use user-data=FILE, meta-data=FILE, ssh-key=FILE, hostname=H, password-file=FILE, "
                                "password=P, password-hash=H, eject=yes")
    for key in ("user_data", "meta_data", "ssh_key", "password_file"):
        if key in opts:
            opts[key] = os.path.abspath(os.path.expanduser(opts[key]))
    if "user_data" in opts:  # the CLI runs as its caller on the host: it reads the file and sends the text
        from kvmkit.spec.cloud_init import read_user_data_file

        try:
            opts["user_data_text"] = read_user_data_file(opts.pop("user_data"))
        except ValueError as err:
            raise InvalidInput(f"--cloud-init: {err}", hint="fix the path and try again") from None
    if "eject" in opts:
        opts["eject"] = _bool(opts["eject"], "--cloud-init eject")
    return opts


def _abs(path: str | None) -> str | None:
    import os

    return None if path is None else os.path.abspath(os.path.expanduser(path))


def build_spec_data(name: str, *, memory: str | None, vcpus: str | None, disks: list[str], cdrom: str | None,
                    networks: list[str], graphics: str | None, **flat: Any) -> dict[str, Any]:
    """Turn create's flags into the dict that VMSpec validates."""
    data: dict[str, Any] = {"name": name}
    if memory:
        mem = parse_opts(memory, "--memory", first="memory")
        data["memory_mib"] = mem.pop("memory", None) or mem.get("max")
        if "max" in mem:
            data["max_memory_mib"] = mem.pop("max")
        if mem:
            raise InvalidInput(f"--memory: unknown option {sorted(mem)[0]!r}", hint="e.g. --memory 512M,max=2G")
    if vcpus:
        cpu = parse_opts(vcpus, "--vcpus", first="vcpus")
        for key, field in (("vcpus", "vcpus"), ("max", "max_vcpus"), ("sockets", "sockets"), ("cores", "cores"),
                           ("threads", "threads")):
            if key in cpu:
                try:
                    data[field] = int(cpu.pop(key))
                except ValueError:
                    raise InvalidInput(f"--vcpus {key}: not a whole number",
                                       hint="e.g. --vcpus 2,max=4,sockets=1,cores=2,threads=2") from None
        if cpu:
            raise InvalidInput(f"--vcpus: unknown option {sorted(cpu)[0]!r}",
                               hint="use max=, sockets=, cores=, threads=")
    data["disks"] = [_disk(d) for d in disks]
    if cdrom:
        data["disks"].append({"device": "cdrom", "path": cdrom})
        data.setdefault("boot", ["cdrom", "hd"])
    if networks:
        data["nics"] = [n for n in (_network(v) for v in networks) if n is not None]
    else:
        data["nics"] = [{"type": "network", "source": "default"}]
    if graphics is not None:
        data["graphics"] = _graphics(graphics)
    cpu_arg = flat.pop("cpu", None)
    if cpu_arg:
        if cpu_arg in _CPU_MODES:
            data["cpu_mode"] = cpu_arg
        else:
            data["cpu_mode"], data["cpu_model"] = "custom", cpu_arg
    boot = flat.pop("boot", None)
    if boot:
        data["boot"] = [b.strip() for b in boot.split(",") if b.strip()]
    cloud_init = flat.pop("cloud_init", None)
    if cloud_init is not None:
        data["cloud_init"] = _cloud_init(cloud_init)
    metadata = flat.pop("metadata", None) or []
    if metadata:
        data["metadata"] = parse_opts(",".join(metadata), "--metadata")
    for key, value in flat.items():
        if value not in (None, False):
            data[key] = value
    return data


def to_spec(data: dict[str, Any]):  # -> VMSpec
    """Validate; on failure name the flag (not the internal field) in one line."""
    from pydantic import ValidationError

    from kvmkit.spec.vm import VMSpec, describe

    try:
        return VMSpec.model_validate(data)
    except ValidationError as exc:
        message, hint = describe(exc)
        loc = exc.errors()[0].get("loc", ())
        if loc and str(loc[0]) in FLAG_OF:
            flag = FLAG_OF[str(loc[0])]
            if loc[0] in ("disks", "nics") and len(loc) > 1:
                flag = f"{flag} #{int(loc[1]) + 1}" + (f" {loc[2]}" if len(loc) > 2 else "")
            message = message.replace(f"invalid {'.'.join(str(p) for p in loc)}:", f"invalid {flag}:", 1)
        raise InvalidInput(message, hint) from exc


def _show_created(d: dict[str, Any]) -> None:
    from rich.markup import escape

    out = console()
    if not d.get("defined"):
        text(d["xml"])
        return
    where = f" on host {d['host']}" if d.get("host") else ""
    out.print(f"VM [bold]{d['name']}[/] {'started' if d['started'] else 'defined'}{where} ({d['virt_type']}: "
              f"{d['virt_type_reason']})")
    if d.get("profile"):
        out.print(f"  profile {d['profile']}")
    if d.get("os"):
        out.print(f"  os     {d['os']['short_id']} ({d['os']['name']}, from the {d['os']['source_name']})")
    for note in d.get("notes", []):
        out.print(f"  [dim]{escape(note)}[/]")
    for path in d["disks"]:
        out.print(f"  disk   {path}")
    for mac in d["macs"]:
        out.print(f"  nic    {mac}")
    if d.get("serial_log"):
        out.print(f"  serial log {d['serial_log']}  (kvmkit vm console {d['name']})")


def _os_line(d: dict[str, Any]) -> str | None:
    os_ = d.get("os")
    if not os_:
        return None
    return f"{os_['short_id']} ({os_['name']})" if os_.get("short_id") else os_["id"]


def _show_vm(d: dict[str, Any]) -> None:
    out = console()
    from kvmkit.service.vms.rows import shown_state

    out.print(f"[bold]{d['name']}[/]  {shown_state(d['state'], d.get('state_reason'))}  ({d['host']})")
    rows = [
        ("uuid", d["uuid"]), ("title", d["title"]), ("virt type", f"{d['virt_type']} ({d['virt_type_reason']})"),
        ("vcpus", f"{d['vcpus']} (max {d['max_vcpus']})"),
        ("memory", f"{d['memory_mib']} MiB (max {d['max_memory_mib']} MiB)"),
        ("profile", d.get("profile")), ("os", _os_line(d)), ("machine", d["machine"]),
        ("firmware", f"{d['firmware']}{' (secure boot)' if d.get('secure_boot') else ''}"),
        ("tpm", f"{d['tpm']['model']} {d['tpm']['backend']} {d['tpm']['version'] or ''}".strip() if d.get("tpm")
         else None),
        ("autostart", d["autostart"]),
        ("persistent", d["persistent"]), ("kernel", d["kernel"]), ("serial log", d["serial_log"]),
    ]
    for key, value in rows:
        if value not in (None, ""):
            out.print(f"  {key:<11} {value}")
    for disk in d["disks"]:
        out.print(f"  disk        {disk['target']} {disk['device']} {disk['bus']} {disk['format']} {disk['source']}")
    for nic in d["nics"]:
        out.print(f"  nic         {nic['mac']} {nic['type']}={nic['source']} {nic['model']}")
    for a in d.get("addresses", []):
        out.print(f"  address     {a['addr']}/{a['prefix']} on {a['mac']} (from {a['source']})")
    if d["graphics"]:
        g = d["graphics"]
        out.print(f"  graphics    {g['type']} {g['listen']}:{g['port'] or 'auto'}")
    _show_agent(d.get("agent") or {})
    for key, value in d["metadata"].items():
        if key == "profile":
            continue  # shown above
        out.print(f"  meta        {key}={value}")


def _show_agent(a: dict[str, Any]) -> None:
    if not a or a.get("state") == "none":
        return
    out = console()
    out.print(f"  agent       {a['state']}" + (f" ({a['error']})" if a.get("error") else ""))
    if a.get("os"):
        out.print(f"  guest os    {a['os'].get('pretty_name') or a['os'].get('name')} "
                  f"(kernel {a['os'].get('kernel_release')})")
    if a.get("hostname"):
        out.print(f"  hostname    {a['hostname']}")
    for i in a.get("interfaces") or []:
        addrs = " ".join(f"{x['addr']}/{x['prefix']}" for x in i["addresses"])
        if i["name"] != "lo":
            out.print(f"  guest nic   {i['name']} {i['mac']} {addrs}")
    for f in a.get("filesystems") or []:
        used, total = f.get("used_bytes"), f.get("total_bytes")
        size = f" {used // 2**20}/{total // 2**20} MiB used" if used is not None and total else ""
        out.print(f"  guest fs    {f['mountpoint']} {f['fstype']} {f['device']}{size}")


def _placed(spec: Any, explain: bool) -> tuple[Any, dict[str, Any] | None]:
    """The connection to create on: the named host, or (more than one host, none named) the one placement
    chooses; and the placement decision (None when nothing was placed)."""
    from kvmkit.cli.context import connection, host_given, hosts, settings

    if host_given() or not hosts().multi():
        if explain and not settings.json:
            console(stderr=True).print("[dim]placement: the host is given (or the only one); nothing to choose[/]")
        return connection(), None
    from kvmkit.service.hosts.placement import place, require_host

    decision = place(hosts(), vcpus=spec.vcpus, memory_mib=spec.memory_mib)
    if explain and not settings.json:
        _explain(decision)
    chosen = require_host(decision, spec.name)
    return hosts().resolve(chosen).get(), decision


def _explain(decision: dict[str, Any]) -> None:
    out = console(stderr=True)
    for c in decision["candidates"]:
        mark = "[green]fits[/]   " if c["ok"] else "[red]refused[/]"
        chosen = "  [bold]<- chosen[/]" if c["name"] == decision["chosen"] else ""
        out.print(f"{mark} {c['name']}: {c['reason']}{chosen}")
        for note in c["notes"]:
            out.print(f"[dim]         {note}[/]")
    if decision["reason"]:
        out.print(f"placed on {decision['reason']}")


def _list_rows(all_: bool, ip: bool, timeout: float) -> list[dict[str, Any]]:
    """The VMs of the named host, or of every host (warning about those that did not answer)."""
    from kvmkit.cli.context import connection, host_given, host_name, hosts
    from kvmkit.service.vms.query import list_vms

    if host_given() or not hosts().multi():
        return list_vms(connection(), include_inactive=all_, ips=ip, host=host_name())
    from kvmkit.service.hosts.listing import list_vms_across

    res = list_vms_across([(rec.name, handle.get) for rec, handle in hosts().handles()], include_inactive=all_,
                          ips=ip, timeout=timeout)
    err = console(stderr=True)
    for h in res["hosts"]:
        if h["state"] != "up":
            err.print(f"[yellow]warning: host {h['name']} is left out: {h['state']}: {h['error']}[/]")
    return list(res["vms"])


def register(app: typer.Typer) -> None:
    @app.command()
    def create(
        name: str = typer.Argument(..., help="VM name (letters, digits, . _ -; up to 64)"),
        memory: str = typer.Option(None, "--memory", help="512M[,max=2G] (bare number = MiB)"),
        vcpus: str = typer.Option(None, "--vcpus", help="1[,max=4,sockets=1,cores=1,threads=1]"),
        disk: list[str] = typer.Option([], "--disk", help="size=10G[,format=qcow2,bus=virtio,cache=none,"
                                       "io=native,pool=default] | path=FILE[,...] | volume=V,pool=P"),
        cdrom: str = typer.Option(None, "--cdrom", help="ISO to install from"),
        import_: bool = typer.Option(False, "--import", help="boot from the given --disk path (no installer)"),
        kernel: str = typer.Option(None, "--kernel", help="direct kernel boot: kernel file"),
        initrd: str = typer.Option(None, "--initrd", help="direct kernel boot: initrd file"),
        cmdline: str = typer.Option(None, "--cmdline", help="direct kernel boot: kernel command line"),
        template: str = typer.Option(None, "--template", help="first disk from this template (linked clone)"),
        full_clone: bool = typer.Option(False, "--full-clone", help="copy the template instead of linking"),
        micro: bool = typer.Option(False, "--micro", help="boot kvmkit's micro-guest (demos and tests)"),
        network: list[str] = typer.Option([], "--network", help="network=default[,model=virtio,mac=..] | "
                                          "bridge=br0 | direct=eth0[,mode=bridge] | none"),
        graphics: str = typer.Option(None, "--graphics", help="vnc|spice[,listen=127.0.0.1,password=..,port=N]"
                                     " | none (default none)"),
        serial_log: str = typer.Option(None, "--serial-log", help="serial log file "
                                       "(default /var/log/kvmkit/NAME.serial.log)"),
        hugepages: bool = typer.Option(False, "--hugepages", help="back memory with huge pages"),
        nosharepages: bool = typer.Option(False, "--no-share-pages", help="opt out of KSM page sharing"),
        cpuset: str = typer.Option(None, "--cpuset", help="host CPUs the vCPUs may use, e.g. 0-1"),
        cpu: str = typer.Option(None, "--cpu", help="host-passthrough | host-model | a model name"),
        autostart: bool = typer.Option(False, "--autostart", help="start with the host"),
        virt_type: str = typer.Option(None, "--virt-type", help="kvm | qemu (default: kvm when usable)"),
        start: bool = typer.Option(False, "--start", help="start the VM once defined"),
        print_xml: bool = typer.Option(False, "--print-xml", help="print the XML; define nothing"),
        title: str = typer.Option(None, "--title"),
        description: str = typer.Option(None, "--description"),
        machine: str = typer.Option(None, "--machine", help="machine type, e.g. pc or q35"),
        firmware: str = typer.Option(None, "--firmware", help="bios | uefi"),
        boot: str = typer.Option(None, "--boot", help="boot order, e.g. hd,cdrom"),
        uuid: str = typer.Option(None, "--uuid"),
        metadata: list[str] = typer.Option([], "--metadata", help="KEY=VALUE kept in kvmkit's domain metadata"),
        cloud_init: str = typer.Option(None, "--cloud-init", help="NoCloud seed disk: user-data=FILE[,meta-data="
                                       "FILE,ssh-key=FILE,hostname=H,password-file=F,password-hash=H,password=P,"
                                       "eject=yes] (each part optional; the password is hashed in the seed, "
                                       "password= shows it in the process list: prefer password-file; eject: "
                                       "docs/cloud-init.md)"),
        profile: str = typer.Option(None, "--profile", help="fast-boot: q35+SeaBIOS, no USB/balloon/RNG/agent, "
                                    "lean kernel args (docs/vm-profiles.md); explicit flags win, no UEFI"),
        restart_on_crash: bool = typer.Option(False, "--restart-on-crash", help="start the VM again when it "
                                              "crashes or its QEMU process dies (same as --on-crash restart)"),
        on_crash: str = typer.Option(None, "--on-crash", help="destroy (default) | restart | preserve | "
                                     "coredump-destroy | coredump-restart"),
        os_name: str = typer.Option(None, "--os", help="guest OS (debian12, ubuntu24.04, rhel9, win11 ...): its "
                                    "devices, firmware and sizes from osinfo; explicit flags win (kvmkit os list)"),
        virtio_win: str = typer.Option(None, "--virtio-win", help="virtio-win drivers ISO for a Windows guest: a "
                                       "second CD-ROM, and virtio disk/NIC (docs/os-presets.md)"),
        explain: bool = typer.Option(False, "--explain", help="say which host placement chose and why (with "
                                     "more than one host and no --host)"),
    ) -> None:
        """Create a VM (define it; --start boots it). Checks everything first; on failure nothing is left."""
        from kvmkit.cli.output import progress
        from kvmkit.service.vms.create import create_vm

        if restart_on_crash:
            if on_crash not in (None, "restart"):
                raise InvalidInput(f"--restart-on-crash contradicts --on-crash {on_crash}", hint="give one of them")
            on_crash = "restart"
        if import_ and not any("path=" in d or "volume=" in d for d in disk):
            raise InvalidInput("--import needs an existing disk", hint="add --disk path=FILE (or volume=V,pool=P)")
        data = build_spec_data(
            name, memory=memory, vcpus=vcpus, disks=disk, cdrom=cdrom, networks=network, graphics=graphics,
            kernel=kernel, initrd=initrd, cmdline=cmdline, template=template, full_clone=full_clone, micro=micro,
            serial_log=serial_log, hugepages=hugepages, nosharepages=nosharepages, cpuset=cpuset, cpu=cpu,
            autostart=autostart, virt_type=virt_type, title=title, description=description, machine=machine,
            firmware=firmware, boot=boot, uuid=uuid, metadata=metadata, cloud_init=cloud_init, profile=profile,
            on_crash=on_crash, os=os_name, virtio_win=_abs(virtio_win))
        if micro and memory is None:
            data["memory_mib"] = 256
        spec = to_spec(data)
        from kvmkit.cli.context import settings

        with progress(f"creating VM {name}", unit="steps") as advance:
            steps = [0]

            def say(msg: str) -> None:
                steps[0] += 1
                advance(steps[0])
                if not settings.json:
                    from rich.markup import escape

                    if msg.startswith("warning: "):
                        console(stderr=True).print(f"[yellow]warning:[/] {escape(msg[9:])}")
                    else:
                        console(stderr=True).print(f"[dim]{escape(msg)}[/]")

            conn, placement = _placed(spec, explain)
            result = create_vm(conn, spec, start=start, print_xml=print_xml, progress=say)
        if result.get("defined"):
            result.setdefault("profile", spec.profile)
        if placement is not None:
            result["host"] = placement["chosen"]
            result["placement"] = placement
        emit(result, _show_created)

    @app.command("list")
    def list_(all_: bool = typer.Option(False, "--all", help="include shut-off VMs"),
              ip: bool = typer.Option(True, "--ip/--no-ip", help="show running VMs' addresses (DHCP leases)"),
              host_timeout: float = typer.Option(5.0, "--host-timeout", min=0.1,
                                                 help="seconds to wait for each host (more than one host)")) -> None:
        """VMs: name, state, vCPUs, memory, IP, host (one bulk libvirt call per host). Without --host (or
        --connect) the VMs of every host of the inventory, asked at once: a host that does not answer in
        --host-timeout seconds is named in a warning and left out."""
        from kvmkit.service.vms.rows import shown_state

        rows = _list_rows(all_, ip, host_timeout)
        cols = ["name", "state", "vcpus", "memory_mib", "ip", "host"] if ip else ["name", "state", "vcpus",
                                                                               "memory_mib", "host"]
        emit(rows, lambda r: table([{**x, "state": shown_state(x["state"], x.get("state_reason"))} for x in r],
                                   cols))

    @app.command()
    def show(name: str = typer.Argument(..., help="VM name"),
             xml: bool = typer.Option(False, "--xml", help="print the domain XML")) -> None:
        """Details of one VM: resources, disks, NICs and MACs, graphics, guest type and why, metadata."""
        from kvmkit.cli.context import host_name
        from kvmkit.service.vms.query import show_vm

        data = show_vm(connection(), name, xml=xml)
        data["host"] = host_name()
        if xml:
            emit(data, lambda d: text(d["xml"]))
        else:
            emit(data, _show_vm)
