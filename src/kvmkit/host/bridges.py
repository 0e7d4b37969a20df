"""Host links, addresses, routes and Linux bridges through iproute2 (``ip -j``): kvmkit's one privileged
network module.

``create_bridge(name, uplink=...)`` makes a bridge and, when an uplink is given, moves the uplink's
addresses and routes (default route included) onto the bridge in one ``ip -batch`` run, then waits for the
bridge to carry traffic; if it does not, everything is put back. What kvmkit did is recorded as JSON under
``data_dir()/bridges/<name>.json`` so ``delete_bridge`` undoes exactly that and nothing else.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any

from kvmkit.config import data_dir
from kvmkit.errors import Conflict, HostError, InvalidInput, NotFound, OperationFailed
from kvmkit.spec.common import IFNAME_RE

IP = "ip"
UP_TIMEOUT_S = 10.0


# ---------------------------------------------------------------- running ip


def run_ip(*args: str, netns: str | None = None, batch: list[str] | None = None, force: bool = False) -> str:
    """Run ``ip [-n NS] ARGS`` (or ``ip -batch -`` with ``batch`` lines); raise OperationFailed on error."""
    cmd = [IP]
    if netns:
        cmd += ["-n", netns]
    if batch is not None:
        cmd += (["-force"] if force else []) + ["-batch", "-"]
    cmd += list(args)
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=30,
                             input="\n".join(batch) + "\n" if batch is not None else None)
    except FileNotFoundError as err:
        raise HostError("iproute2 ('ip') is not installed", hint="apt-get install iproute2") from err
    except subprocess.TimeoutExpired as err:
        raise OperationFailed(f"'{' '.join(cmd)}' did not finish in 30 s") from err
    if res.returncode != 0:
        what = "; ".join(batch) if batch is not None else " ".join(args)
        msg = res.stderr.strip().splitlines()
        raise OperationFailed(f"ip {what}: {msg[-1] if msg else 'failed'}",
                              hint="check the interface names and that kvmkit runs as root")
    return res.stdout


def ip_json(*args: str, netns: str | None = None) -> list[dict[str, Any]]:
    out = run_ip("-j", *args, netns=netns)
    return json.loads(out) if out.strip() else []


def validate_ifname(name: str, what: str = "interface name") -> str:
    if not isinstance(name, str) or not IFNAME_RE.match(name):
        raise InvalidInput(f"invalid {what} '{name}'",
                           hint="1-15 characters: letters, digits, '_', '.', '-' (Linux IFNAMSIZ)")
    return name


# ---------------------------------------------------------------- reading host state


def links() -> list[dict[str, Any]]:
    return ip_json("-d", "link", "show")


def link(name: str) -> dict[str, Any] | None:
    for item in links():
        if item.get("ifname") == name:
            return item
    return None


def is_bridge(item: dict[str, Any] | None) -> bool:
    return bool(item) and (item or {}).get("linkinfo", {}).get("info_kind") == "bridge"


def bridge_ports(name: str) -> list[str]:
    return [p["ifname"] for p in ip_json("link", "show", "master", name)]


def addresses(ifname: str | None = None) -> list[dict[str, Any]]:
    """Every address as {ifname, family, local, prefixlen, scope, dynamic, broadcast?}."""
    args = ["addr", "show"] + (["dev", ifname] if ifname else [])
    out = []
    for item in ip_json(*args):
        for a in item.get("addr_info", []):
            out.append({"ifname": item["ifname"], "family": a.get("family"), "local": a.get("local"),
                        "prefixlen": a.get("prefixlen"), "scope": a.get("scope"),
                        "dynamic": bool(a.get("dynamic")), "broadcast": a.get("broadcast")})
    return out


def routes(ifname: str | None = None) -> list[dict[str, Any]]:
    """IPv4 and IPv6 routes of the main table (optionally only through ``ifname``), each with ``family``."""
    dev = ["dev", ifname] if ifname else []
    out = []
    for family in ("-4", "-6"):
        for r in ip_json(family, "route", "show", *dev):
            r["family"] = "inet" if family == "-4" else "inet6"
            if ifname and "dev" not in r:
                r["dev"] = ifname
            out.append(r)
    return out


def neighbours() -> list[dict[str, Any]]:
    """The host's ARP/NDP neighbour table: {dst, dev, lladdr, state}."""
    return [n for n in ip_json("neigh", "show") if n.get("lladdr")]


# ---------------------------------------------------------------- what moves with an uplink


def _movable_addresses(ifname: str) -> list[dict[str, Any]]:
    return [a for a in addresses(ifname) if a["family"] in ("inet", "inet6") and a["scope"] == "global"]


def _movable_routes(ifname: str) -> list[dict[str, Any]]:
    keep = []
    for r in routes(ifname):
        if r.get("protocol") == "kernel" or r.get("type") in ("multicast", "local", "broadcast"):
            continue
        if r["dst"].startswith(("fe80:", "ff00:")):
            continue
        keep.append(r)
    return keep


def _addr_cmd(verb: str, a: dict[str, Any], dev: str) -> str:
    cmd = f"addr {verb} {a['local']}/{a['prefixlen']}"
    if verb == "add" and a.get("broadcast"):
        cmd += f" brd {a['broadcast']}"
    return f"{cmd} dev {dev}"


def _route_cmd(r: dict[str, Any], dev: str) -> str:
    cmd = f"route replace {r['dst']}"
    if r.get("gateway"):
        cmd += f" via {r['gateway']}"
    cmd += f" dev {dev}"
    for key, word in (("protocol", "proto"), ("metric", "metric"), ("prefsrc", "src"), ("scope", "scope")):
        if r.get(key) not in (None, "", "boot") and not (key == "scope" and r[key] == "global"):
            cmd += f" {word} {r[key]}"
    return cmd


# ---------------------------------------------------------------- records of what kvmkit did


def records_dir() -> Path:
    path = data_dir() / "bridges"
    path.mkdir(parents=True, exist_ok=True)
    return path


def load_record(name: str) -> dict[str, Any] | None:
    path = records_dir() / f"{name}.json"
    if not path.exists():
        return None
    return json.loads(path.read_text())


def _save_record(record: dict[str, Any]) -> None:
    path = records_dir() / f"{record['bridge']}.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(record, indent=2))
    tmp.replace(path)


def _drop_record(name: str) -> None:
    (records_dir() / f"{name}.json").unlink(missing_ok=True)


# ---------------------------------------------------------------- create / delete


def _wait_up(name: str, need_carrier: bool, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while True:
        item = link(name) or {}
        state = item.get("operstate", "MISSING")
        flags = item.get("flags", [])
        if "UP" in flags and (not need_carrier or (state == "UP" and "LOWER_UP" in flags)):
            return state
        if time.monotonic() >= deadline:
            return state
        time.sleep(0.2)


def _restore_uplink(name: str, uplink: str, addrs: list[dict[str, Any]], rts: list[dict[str, Any]]) -> None:
    """Put the uplink back as it was (best effort, every step tried) and remove the bridge."""
    lines = [f"link set {uplink} nomaster", f"link del {name}"]
    lines += [_addr_cmd("add", a, uplink) for a in addrs]
    lines += [_route_cmd(r, uplink) for r in rts]
    try:
        run_ip(batch=lines, force=True)
    except OperationFailed:
        pass  # -force ran every line; lines that failed had nothing to undo


def create_bridge(name: str, *, uplink: str | None = None, stp: bool = False, owner: str | None = None,
                  up_timeout: float = UP_TIMEOUT_S) -> dict[str, Any]:
    """Create Linux bridge ``name``; with ``uplink`` enslave it and move its addresses and routes over.

    Without ``uplink`` no existing host interface is touched. Returns (and records) what was done.
    """
    validate_ifname(name, "bridge name")
    if link(name) is not None:
        raise Conflict(f"host interface '{name}' already exists",
                       hint="pick another bridge name, or use the existing bridge without --create-bridge")
    record: dict[str, Any] = {"bridge": name, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                              "owner": owner, "uplink": None, "addresses": [], "routes": [], "warnings": []}
    prep = [f"link add {name} type bridge stp_state {1 if stp else 0} forward_delay {1500 if stp else 0}"]
    moved_addrs: list[dict[str, Any]] = []
    moved_routes: list[dict[str, Any]] = []
    if uplink:
        validate_ifname(uplink, "uplink")
        up = link(uplink)
        if up is None:
            raise NotFound(f"uplink interface '{uplink}' does not exist",
                           hint="see `ip link` for the host's interfaces")
        if up.get("master"):
            raise Conflict(f"uplink '{uplink}' is already a port of '{up['master']}'",
                           hint=f"use bridge '{up['master']}' instead, or release it first")
        if is_bridge(up) or uplink == "lo":
            raise InvalidInput(f"'{uplink}' cannot be an uplink (it is a bridge or loopback)",
                               hint="give the physical interface (e.g. eth0) as --uplink")
        moved_addrs = _movable_addresses(uplink)
        moved_routes = _movable_routes(uplink)
        record.update(uplink=uplink, addresses=moved_addrs, routes=moved_routes)
        record["warnings"] = [f"{a['local']}/{a['prefixlen']} was assigned dynamically on {uplink}; run the DHCP "
                              f"client on {name} from now on" for a in moved_addrs if a["dynamic"]]
        if up.get("address"):
            prep.append(f"link set {name} address {up['address']}")
    run_ip(batch=prep)
    # The bridge exists from here on: any failure must remove it and restore the uplink.
    try:
        if uplink:
            # One ip process: enslave, move addresses, re-add routes, bring the bridge up.
            step = [f"link set {uplink} master {name}"]
            step += [_addr_cmd("del", a, uplink) for a in moved_addrs]
            step += [_addr_cmd("add", a, name) for a in moved_addrs]
            step += [f"link set {name} up"]
            step += [_route_cmd(r, name) for r in moved_routes]
            run_ip(batch=step)
        else:
            run_ip("link", "set", name, "up")
        state = _wait_up(name, need_carrier=bool(uplink), timeout=up_timeout)
        if uplink and state != "UP":
            raise OperationFailed(
                f"bridge '{name}' did not come up within {up_timeout:.0f} s (state {state}); "
                f"'{uplink}' was restored and the bridge removed",
                hint=f"check that '{uplink}' has a link (cable/carrier): `ip link show {uplink}`")
        _save_record(record)
    except BaseException:
        if uplink:
            _restore_uplink(name, uplink, moved_addrs, moved_routes)
        else:
            run_ip(batch=[f"link del {name}"], force=True)
        raise
    return record


def delete_bridge(name: str, *, force_ports: bool = False) -> dict[str, Any]:
    """Undo what ``create_bridge`` did for ``name``: give the uplink its addresses and routes back, delete
    the bridge. Refuses bridges kvmkit did not create and bridges that still have other ports."""
    validate_ifname(name, "bridge name")
    record = load_record(name)
    if record is None:
        raise NotFound(f"kvmkit did not create bridge '{name}' (no record in {records_dir()})",
                       hint="kvmkit only deletes bridges it created; remove others with your own tools")
    uplink = record.get("uplink")
    if link(name) is None:
        _drop_record(name)
        return {"bridge": name, "deleted": False, "note": "bridge was already gone; record removed"}
    others = [p for p in bridge_ports(name) if p != uplink]
    if others and not force_ports:
        raise Conflict(f"bridge '{name}' still has ports: {', '.join(others)}",
                       hint="stop the VMs or detach the interfaces using it first")
    warnings: list[str] = []
    if uplink and link(uplink) is not None:
        lines = [f"link set {uplink} nomaster", f"link del {name}"]
        lines += [_addr_cmd("add", a, uplink) for a in record.get("addresses", [])]
        lines += [_route_cmd(r, uplink) for r in record.get("routes", [])]
        try:
            run_ip(batch=lines, force=True)
        except OperationFailed as err:  # -force ran every line; report what did not apply
            warnings.append(err.message)
    else:
        run_ip("link", "del", name)
    if link(name) is not None:
        raise OperationFailed(f"bridge '{name}' could not be removed", hint=f"see `ip link show {name}`")
    _drop_record(name)
    return {"bridge": name, "deleted": True, "uplink": uplink, "warnings": warnings,
            "restored_addresses": [f"{a['local']}/{a['prefixlen']}" for a in record.get("addresses", [])]}
