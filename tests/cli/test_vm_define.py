"""`kvmkit vm create | list | show` as a user runs them: the real CLI in a subprocess."""

from __future__ import annotations

import json

import pytest

from tests.support.cli_run import kvmkit, leftovers
from tests.support.serial import SerialLog


@pytest.mark.guest
def test_create_micro_start_boots_and_list_show_report_it(conn, prefix):
    name = f"{prefix}cli"
    out = json.loads(kvmkit("--json", "vm", "create", name, "--micro", "--start", "--vcpus", "1,max=2",
                            "--memory", "256M,max=512M", "--network", "network=default,model=virtio").stdout)
    assert out["started"] is True and out["serial_log"] == f"/var/log/kvmkit/{name}.serial.log"
    SerialLog(out["serial_log"]).wait_for("KVMKIT-GUEST-READY")

    rows = json.loads(kvmkit("--json", "vm", "list", "--all").stdout)
    row = next(r for r in rows if r["name"] == name)
    assert {"name", "uuid", "state", "vcpus", "memory_mib", "host"} <= set(row)
    assert row["state"] == "running" and row["vcpus"] == 1 and row["host"] == "local"  # the host's name

    info = json.loads(kvmkit("--json", "vm", "show", name).stdout)
    assert info["uuid"] == out["uuid"] and info["macs"] == out["macs"]
    assert info["virt_type"] == out["virt_type"] and info["virt_type_reason"]
    assert info["max_vcpus"] == 2 and info["max_memory_mib"] == 512 and info["metadata"] == {"micro": "yes"}
    assert info["disks"] == [] and info["nics"][0]["model"] == "virtio"
    xml = kvmkit("vm", "show", name, "--xml").stdout
    assert xml.lstrip().startswith("<domain") and name in xml
    human = kvmkit("vm", "show", name).stdout
    assert name in human and "running" in human
    assert name in kvmkit("vm", "list").stdout


@pytest.mark.fast
def test_create_with_disk_and_options_defines_what_was_asked(conn, prefix):
    name = f"{prefix}opts"
    kvmkit("vm", "create", name, "--micro", "--memory", "256M", "--vcpus", "2,max=4,sockets=1,cores=2,threads=2",
           "--disk", "size=32M,format=qcow2,bus=virtio,cache=none,io=native", "--network", "none",
           "--graphics", "vnc,listen=127.0.0.1", "--no-share-pages", "--cpuset", "0-1", "--autostart",
           "--title", "Opts test", "--metadata", "owner=tests", "--cpu", "qemu64")
    info = json.loads(kvmkit("--json", "vm", "show", name).stdout)
    assert info["state"] == "shut-off" and info["autostart"] is True and info["title"] == "Opts test"
    assert info["topology"] == {"sockets": 1, "cores": 2, "threads": 2} and info["vcpus"] == 2
    assert info["disks"][0]["format"] == "qcow2" and info["disks"][0]["cache"] == "none"
    assert info["disks"][0]["source"].endswith(f"{name}-disk0.qcow2")
    assert info["graphics"]["type"] == "vnc" and info["nics"] == [] and info["nosharepages"] is True
    assert info["metadata"]["owner"] == "tests" and info["cpu_model"] == "qemu64"


@pytest.mark.fast
def test_print_xml_defines_nothing(conn, prefix):
    res = kvmkit("vm", "create", f"{prefix}px", "--micro", "--disk", "size=1G", "--print-xml")
    assert res.stdout.lstrip().startswith("<domain") and f"{prefix}px-disk0.qcow2" in res.stdout
    assert leftovers(conn, prefix) == []


MICRO = ["--micro", "--disk", "size=16M"]


@pytest.mark.fast
@pytest.mark.parametrize(("args", "match"), [
    (["{p}a/b", *MICRO], "invalid NAME"),
    (["<x>", *MICRO], "invalid NAME"),
    (["", *MICRO], "invalid NAME"),
    (["{p}" + "y" * 60, *MICRO], "invalid NAME"),
    (["{p}v", *MICRO, "--memory", "12Q"], "invalid --memory: memory: '12Q' is not a size"),
    (["{p}v", *MICRO, "--memory", "1G,max=512M"], "memory 1024 MiB is above max memory 512 MiB"),
    (["{p}v", *MICRO, "--vcpus", "4,max=2"], "vcpus 4 is above max vcpus 2"),
    (["{p}v", *MICRO, "--vcpus", "2,max=4,cores=3"], "does not match max vcpus 4"),
    (["{p}v", *MICRO, "--cdrom", "/var/lib/kvmkit/none.iso"], "ISO /var/lib/kvmkit/none.iso does not exist"),
    (["{p}v", "--micro", "--disk", "path=/var/lib/kvmkit/none.img", "--import"],
     "disk /var/lib/kvmkit/none.img does not exist"),
    (["{p}v", "--disk", "size=16M", "--kernel", "/var/lib/kvmkit/none-k"], "kernel /var/lib/kvmkit/none-k does not"),
    (["{p}v", "--micro", "--disk", "size=1G,bus=floppy"], "invalid --disk #1 bus"),
    (["{p}v", *MICRO, "--network", "bridge"], "--network"),
    (["{p}v", "--micro", "--import"], "--import needs an existing disk"),
])
def test_bad_input_one_line_error_and_nothing_left(conn, prefix, args, match):
    res = kvmkit("vm", "create", *[a.format(p=prefix) for a in args], check=False)
    assert res.returncode != 0
    errors = [line for line in res.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and match in errors[0], res.stderr
    assert "Traceback" not in res.stderr
    assert leftovers(conn, prefix) == []


@pytest.mark.fast
def test_duplicate_name_and_mac_via_cli(conn, prefix):
    from kvmkit.service.vms.macs import generate_mac

    mac = generate_mac(conn)  # a free one: a fixed MAC would clash with a leftover of an interrupted run
    kvmkit("vm", "create", f"{prefix}one", "--micro", "--network", f"network=default,mac={mac}")
    res = kvmkit("vm", "create", f"{prefix}one", "--micro", check=False)
    assert res.returncode != 0 and f"a VM named '{prefix}one' already exists" in res.stderr
    res = kvmkit("--json", "vm", "create", f"{prefix}two", "--micro", "--disk", "size=16M",
                 "--network", f"network=default,mac={mac}", check=False)
    assert res.returncode != 0
    assert json.loads(res.stdout)["error"] == f"MAC {mac} is already used by domain '{prefix}one'"
    assert leftovers(conn, prefix) == [f"{prefix}one"]


@pytest.mark.fast
def test_show_missing_vm(prefix):
    res = kvmkit("vm", "show", f"{prefix}nope", check=False)
    assert res.returncode != 0 and f"VM '{prefix}nope' not found" in res.stderr
