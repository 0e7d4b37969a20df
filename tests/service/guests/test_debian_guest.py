"""One debian-12 guest (booted twice, rebooted once) for everything that needs a real guest: cloud-init proven
over SSH (host-file fields and an inline key), the guest agent (info, exec, passwords, quiesced snapshots and
backups, thaw on error, seed eject, reboot and shutdown fallback), and its disks offline (copy-in seen by the
guest after boot, a guest-written file copied out identical).

Tier ``full``: the cached debian-12 image (kvmkit image build debian-12), TCG, minutes per boot. The tests
run in file order and share the module's guest; each says what state it leaves the guest in.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import secrets
import shutil
import subprocess
import tarfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import libvirt
import pytest
from lxml import etree

from tests.conftest import TEST_ROOT, live_conn
from tests.support.cleanup import stop_domains, sweep
from tests.support.cli_run import KVMKIT

pytestmark = [pytest.mark.full, pytest.mark.timeout(1800)]
BOOT_DEADLINE_S = 1200  # 1-4 min on a quiet host; 8 agents share 2 cores here
PASSWORD = "kvmkit-seed-pw-1"
NEW_PASSWORD = "kvmkit-new-pw-2"
USER = "debian"  # the image's cloud-init default user
USER_DATA_MARK = "KVMKIT-USER-DATA-RAN"
USER_DATA_FILE = "/var/tmp/kvmkit-user-data"
BOOT_ID = "/proc/sys/kernel/random/boot_id"  # new at every boot of the guest's kernel


@dataclass
class Deb:
    name: str
    hostname: str
    key: Path
    dir: Path
    boots: list[float] = field(default_factory=list)

    @property
    def dom(self) -> libvirt.virDomain:
        return live_conn().lookupByName(self.name)


def kvmkit(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """The real CLI, with room for libguestfs appliances and cloud-init waits on a busy host."""
    env = {**os.environ, "KVMKIT_CONNECT": "qemu:///system"}
    res = subprocess.run([KVMKIT, *args], capture_output=True, text=True, env=env, timeout=1200)
    if check:
        assert res.returncode == 0, f"kvmkit {' '.join(args)} failed:\n{res.stdout}\n{res.stderr}"
    return res


def _ssh(deb: Deb, ip: str, *cmd: str, check: bool = True, key: Path | None = None) -> subprocess.CompletedProcess[str]:
    res = subprocess.run(["ssh", "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
                          "-o", "BatchMode=yes", "-o", "ConnectTimeout=10", "-o", "LogLevel=ERROR",
                          "-o", "IdentitiesOnly=yes", "-i", str(key or deb.key), f"{USER}@{ip}", *cmd],
                         capture_output=True, text=True, timeout=120)
    if check:
        assert res.returncode == 0, f"ssh {' '.join(cmd)}: {res.returncode}\n{res.stdout}\n{res.stderr}"
    return res


def _lease_ip(dom: libvirt.virDomain) -> str | None:
    mac = etree.fromstring(dom.XMLDesc(0).encode()).find("devices/interface/mac").get("address")
    leases = live_conn().networkLookupByName("default").DHCPLeases(mac)
    return next((lease["ipaddr"] for lease in leases if lease["type"] == libvirt.VIR_IP_ADDR_TYPE_IPV4), None)


def _wait_ready(deb: Deb) -> float:
    """Boot until the agent answers and cloud-init has finished this boot; the seconds it took."""
    from kvmkit.service.vms import agent, seed

    began = time.monotonic()
    deadline = began + BOOT_DEADLINE_S
    while time.monotonic() < deadline:
        dom = deb.dom
        if agent.connected(dom):
            try:
                if seed.cloud_init_result(dom) is not None and _lease_ip(dom):
                    return time.monotonic() - began
            except Exception:  # the agent went away between two calls (still booting)
                pass
        time.sleep(3)
    raise AssertionError(f"{deb.name} not ready within {BOOT_DEADLINE_S} s; serial log tail:\n"
                         + (deb.dir / "serial.log").read_text(errors="replace")[-3000:])


@pytest.fixture(scope="module")
def deb() -> Iterator[Deb]:
    from kvmkit.images import debian, qemu_img
    from kvmkit.service.vms.create import create_vm

    prefix = f"kt-{secrets.token_hex(3)}-"
    conn = live_conn()
    work = TEST_ROOT / prefix.rstrip("-")
    work.mkdir(parents=True, exist_ok=True)
    work.chmod(0o755)
    try:
        image = debian.build(None)
        key = work / "id_ed25519"
        for k in (key, work / "id_inline"):  # id_inline: given inline (ssh_authorized_keys), as the API takes it
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "kvmkit-test", "-f", str(k)],
                           check=True)
        pwfile = work / "password"
        pwfile.write_text(PASSWORD + "\n")
        user_data = work / "user.yaml"  # a host user-data file, merged with the key, password and eject
        user_data.write_text(f"#cloud-config\nruncmd:\n  - [sh, -c, 'echo {USER_DATA_MARK} > {USER_DATA_FILE}']\n")
        vol = etree.Element("volume")
        etree.SubElement(vol, "name").text = f"{prefix}root.qcow2"
        size = qemu_img.info(image["path"], "qcow2")["virtual-size"]
        etree.SubElement(vol, "capacity", unit="bytes").text = str(size)
        etree.SubElement(etree.SubElement(vol, "target"), "format", type="qcow2")
        back = etree.SubElement(vol, "backingStore")
        etree.SubElement(back, "path").text = image["path"]
        etree.SubElement(back, "format", type="qcow2")
        conn.storagePoolLookupByName("default").createXML(etree.tostring(vol, encoding="unicode"), 0)
        d = Deb(name=f"{prefix}deb", hostname=f"{prefix}g".replace("-", "x"), key=key, dir=work)
        spec = {"name": d.name, "memory_mib": 1024, "vcpus": 1, "rng": True, "machine": "pc",
                "kernel": image["kernel"], "initrd": image["initrd"], "cmdline": image["cmdline"],
                "disks": [{"volume": f"{prefix}root.qcow2", "pool": "default"}], "serial_log": str(work / "serial.log"),
                "nics": [{"type": "network", "source": "default"}],
                "cloud_init": {"hostname": d.hostname, "ssh_key": f"{key}.pub", "password_file": str(pwfile),
                               "ssh_authorized_keys": [(work / "id_inline.pub").read_text().strip()],
                               "user_data": str(user_data), "eject": True}}
        create_vm(conn, spec, start=True)
        d.boots.append(_wait_ready(d))
        yield d
    finally:
        _clean(prefix, work)


def _clean(prefix: str, work: Path) -> None:
    """Remove the module's VM, volumes and files; again on a fresh connection when libvirtd restarted meanwhile
    (other work on this host may restart it during a long module)."""
    import shutil

    for attempt in range(3):
        try:
            stop_domains(live_conn(), prefix)
            sweep(live_conn(), prefix)
            break
        except libvirt.libvirtError:
            if attempt == 2:
                raise
            time.sleep(5)
    shutil.rmtree(work, ignore_errors=True)


@pytest.fixture(scope="module")
def api(deb: Deb) -> Iterator[httpx.Client]:
    """A real `kvmkit serve` (SQLite) with an admin token, for the API twins on the same guest."""
    from tests.api.server import Server

    srv = Server("sqlite")
    srv.cli("user", "add", "admin", "--role", "admin", "--password-stdin", stdin="admin-pass-123\n")
    srv.start()
    try:
        with srv.client(srv.token("admin")) as c:
            yield c
    finally:
        srv.cleanup()


# --- first boot: cloud-init and the agent -----------------------------------------------------------

def test_cloud_init_sets_the_hostname_and_the_key_lets_ssh_in(deb: Deb) -> None:
    ip = _lease_ip(deb.dom)
    assert ip, "no DHCP lease"
    res = _ssh(deb, ip, f"hostname; id -un; cat /etc/hostname {USER_DATA_FILE}")
    assert res.stdout.split() == [deb.hostname, USER, deb.hostname, USER_DATA_MARK]  # the user-data file ran too
    # the key given inline lets SSH in as well (the API's inline fields make the seed the host-file ones make:
    # tests/images/test_cloud_init.py::test_inline_fields_render_the_seed_their_host_file_twins_render)
    assert _ssh(deb, ip, "id -un", key=deb.dir / "id_inline").stdout.split() == [USER]
    text = (deb.dir / "serial.log").read_text(errors="replace")
    assert "Debian GNU/Linux 12" in text and "Failed to start" not in text, text[-3000:]  # the image boots clean
    print(f"first boot ready after {deb.boots[0]:.0f} s")


def test_the_seed_carries_only_a_hash_and_the_guest_has_that_password(deb: Deb) -> None:
    from kvmkit.service.guests.exec import exec_command

    seed = Path(f"/var/lib/libvirt/images/{deb.name}-cidata.img")
    env = {**os.environ, "MTOOLS_SKIP_CHECK": "1"}
    user_data = subprocess.run(["mtype", "-i", str(seed), "::user-data"], capture_output=True, text=True, env=env,
                               check=True).stdout
    assert PASSWORD not in user_data and PASSWORD not in seed.read_bytes().decode("latin-1")
    assert "password: $6$" in user_data
    res = exec_command(live_conn(), deb.name, ["getent", "shadow", USER])
    hashed = res["stdout"].split(":")[1]
    assert hashed.startswith("$6$")
    salt = hashed.split("$")[2]
    again = subprocess.run(["openssl", "passwd", "-6", "-salt", salt, "-stdin"], input=PASSWORD + "\n",
                           capture_output=True, text=True, check=True).stdout.strip()
    assert again == hashed  # the guest's password is the one given in password-file


def test_the_agent_reports_os_hostname_file_systems_and_the_leased_ip(deb: Deb, api: httpx.Client) -> None:
    from kvmkit.service.vms.query import show_vm

    ip = _lease_ip(deb.dom)
    shown = show_vm(live_conn(), deb.name)
    a = shown["agent"]
    assert a["state"] == "connected" and a["connected"], a
    assert a["os"]["id"] == "debian" and a["os"]["version_id"] == "12"
    assert a["hostname"] == deb.hostname
    assert any(f["mountpoint"] == "/" and f["fstype"] == "ext4" for f in a["filesystems"])
    addrs = {x["addr"] for i in a["interfaces"] for x in i["addresses"] if x["type"] == "ipv4"}
    assert ip in addrs  # the agent's address is the one the DHCP lease gave
    from kvmkit.service.vms.guest_ip import guest_addresses

    agent_only = [x for x in guest_addresses(live_conn(), deb.dom, sources=("agent",)) if x["type"] == "ipv4"]
    mac = shown["nics"][0]["mac"]
    assert [(x["mac"], x["addr"], x["source"]) for x in agent_only] == [(mac, ip, "agent")]
    assert [x["source"] for x in guest_addresses(live_conn(), deb.dom)] == ["lease"]  # leases answer first
    over_http = api.get(f"/api/v1/vms/{deb.name}").json()["agent"]
    assert over_http["hostname"] == deb.hostname and over_http["state"] == "connected"


def test_vm_exec_returns_output_and_the_exit_code(deb: Deb, api: httpx.Client) -> None:
    res = kvmkit("vm", "exec", deb.name, "--", "sh", "-c", "echo out; echo err >&2; exit 3", check=False)
    assert (res.returncode, res.stdout, res.stderr) == (3, "out\n", "err\n")
    res = kvmkit("--json", "vm", "exec", deb.name, "--", "sh", "-c", "echo out; echo err >&2; exit 3", check=False)
    data = json.loads(res.stdout)
    assert res.returncode == 3 and (data["exit_code"], data["stdout"], data["stderr"]) == (3, "out\n", "err\n")
    r = api.post(f"/api/v1/vms/{deb.name}/exec", json={"command": ["sh", "-c", "cat; echo e >&2; exit 5"],
                                                        "input": "fed to stdin\n"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["exit_code"], body["stdout"], body["stderr"]) == (5, "fed to stdin\n", "e\n")
    r = api.post(f"/api/v1/vms/{deb.name}/exec", json={"command": ["no-such-program-x"]})
    assert r.status_code == 422 and "no-such-program-x" in r.json()["error"]


def test_vm_exec_timeout_reports_the_running_pid(deb: Deb) -> None:
    res = kvmkit("--json", "vm", "exec", deb.name, "--timeout", "2", "--", "sleep", "300", check=False)
    data = json.loads(res.stdout)
    assert res.returncode == 124 and data["timed_out"] and not data["exited"]
    pid = data["pid"]
    assert f"pid {pid}" in data["message"]
    assert kvmkit("vm", "exec", deb.name, "--", "kill", str(pid)).returncode == 0


def test_set_password(deb: Deb, api: httpx.Client, tmp_path: Path) -> None:
    from kvmkit.service.guests.exec import exec_command

    check = ["python3", "-c", "import crypt,sys,spwd; pw=sys.stdin.read(); h=spwd.getspnam('debian').sp_pwdp; "
             "print(crypt.crypt(pw, h) == h)"]
    pwfile = tmp_path / "pw"
    pwfile.write_text(NEW_PASSWORD + "\n")
    res = kvmkit("--json", "vm", "set-password", deb.name, USER, "--password-file", str(pwfile))
    assert NEW_PASSWORD not in res.stdout + res.stderr
    assert exec_command(live_conn(), deb.name, check, input_data=NEW_PASSWORD.encode())["stdout"].strip() == "True"
    r = api.post(f"/api/v1/vms/{deb.name}/password", json={"user": USER, "password": PASSWORD})
    assert r.status_code == 200 and PASSWORD not in r.text, r.text
    assert exec_command(live_conn(), deb.name, check, input_data=PASSWORD.encode())["stdout"].strip() == "True"


def test_a_disk_only_snapshot_of_the_running_guest_is_quiesced(deb: Deb) -> None:
    from kvmkit.service.copies import snapshots

    made = snapshots.create_snapshot(live_conn(), deb.name, "q1", disk_only=True)
    assert made["quiesced"] is True and made["consistency"] == "quiesced", made
    listed = {s["name"]: s for s in snapshots.list_snapshots(live_conn(), deb.name)}
    assert listed["q1"]["quiesced"] is True
    shown = kvmkit("--json", "snapshot", "list", deb.name)
    assert json.loads(shown.stdout)[0]["consistency"] == "quiesced"
    snapshots.delete_snapshot(live_conn(), deb.name, "q1")  # merged back while it runs
    assert snapshots.list_snapshots(live_conn(), deb.name) == []


def test_a_backup_whose_job_fails_after_the_freeze_thaws_the_guest(deb: Deb, monkeypatch, tmp_path: Path) -> None:
    from kvmkit.errors import KvmkitError
    from kvmkit.service.copies.backup import backup_vm
    from kvmkit.service.vms.agent import command

    seen = {}

    def failing_begin(dom: libvirt.virDomain, *_args: object) -> None:
        seen["status"] = command(dom, "guest-fsfreeze-status")  # the step after the freeze: it was frozen
        raise libvirt.libvirtError("injected: the backup job could not begin")

    monkeypatch.setattr(libvirt.virDomain, "backupBegin", failing_begin)
    with pytest.raises(KvmkitError, match="injected"):
        backup_vm(live_conn(), deb.name, tmp_path / "backup")
    assert seen["status"] == "frozen"
    assert command(deb.dom, "guest-fsfreeze-status") == "thawed"
    assert not (tmp_path / "backup").exists()


def test_a_backup_of_the_running_guest_is_quiesced_thawed_after_and_verifies(deb: Deb, monkeypatch,
                                                                              tmp_path: Path) -> None:
    from kvmkit.service.copies.backup import backup_vm
    from kvmkit.service.copies.restore import verify
    from kvmkit.service.vms.agent import command

    seen = {}
    begin = libvirt.virDomain.backupBegin

    def watched_begin(dom: libvirt.virDomain, *args: object) -> object:
        seen["status"] = command(dom, "guest-fsfreeze-status")  # as the job begins
        return begin(dom, *args)

    monkeypatch.setattr(libvirt.virDomain, "backupBegin", watched_begin)
    dest = tmp_path / "backup"  # backups are always compressed qcow2: there is no cheaper mode to pick
    try:
        manifest = backup_vm(live_conn(), deb.name, dest)
        assert seen["status"] == "frozen"  # the record is true: the job began on frozen file systems
        assert manifest["quiesced"] is True and manifest["frozen"] is True, manifest
        assert "frozen by the guest agent" in manifest["consistency"]
        assert json.loads((dest / "manifest.json").read_text())["quiesced"] is True
        assert command(deb.dom, "guest-fsfreeze-status") == "thawed"
        assert deb.dom.isActive()
        root = f"{deb.name.removesuffix('deb')}root.qcow2"
        assert [os.path.basename(d["original_path"]) for d in manifest["disks"]] == [root]  # not the seed cdrom
        assert verify(dest)["sha256"] == manifest["sha256"]  # every file matches its recorded checksum
    finally:
        shutil.rmtree(dest, ignore_errors=True)


def test_guest_commands_on_the_running_vm_need_readonly(deb: Deb) -> None:
    res = kvmkit("guest", "ls", deb.name, "/", check=False)
    assert res.returncode == 1 and "running" in res.stderr and "--readonly" in res.stderr
    res = kvmkit("guest", "copy-in", deb.name, str(deb.key) + ".pub", "/root", check=False)
    assert res.returncode == 1 and "shut it down" in res.stderr
    res = kvmkit("--json", "guest", "ls", deb.name, "/etc", "--readonly")
    names = {e["name"] for e in json.loads(res.stdout)["entries"]}
    assert {"hostname", "fstab", "cloud"} <= names


def test_the_seed_is_ejected_after_cloud_init(deb: Deb) -> None:
    seed = Path(f"/var/lib/libvirt/images/{deb.name}-cidata.img")
    assert seed.exists()
    res = json.loads(kvmkit("--json", "vm", "eject-seed", deb.name, "--wait", "600").stdout)
    assert "NoCloud" in res["cloud_init"]["datasource"]  # errors: the image's cc_locale fails (no en_US locale)
    assert not seed.exists()
    xml = deb.dom.XMLDesc(0) + deb.dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
    assert "cidata" not in xml.replace("cidata_eject", "")
    assert "<kvmkit:cidata_eject>done</kvmkit:cidata_eject>" in deb.dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)


def _boot_id(deb: Deb) -> str | None:
    """The guest kernel's boot id through the agent; None while the agent does not answer (rebooting)."""
    from kvmkit.service.guests.exec import exec_command

    try:
        res = exec_command(live_conn(), deb.name, ["cat", BOOT_ID], timeout=30)
    except Exception:  # no agent, or it went away mid-command
        return None
    return res["stdout"].strip() if res.get("exit_code") == 0 else None


def test_reboot_goes_through_the_agent_and_the_guest_comes_back(deb: Deb) -> None:
    """After the seed eject (a reboot would eject it itself) and with the guest left as it was: running, agent
    connected, cloud-init done for the new boot, same instance (the last test's second boot does the same)."""
    from kvmkit.service.vms.lifecycle import reboot
    from tests.support.serial import SerialLog

    before = _boot_id(deb)
    assert before
    log = SerialLog(deb.dir / "serial.log")
    mark = log.offset()
    res = reboot(live_conn(), deb.name)
    assert res["method"] == "agent" and res["action"] == "reboot", res
    assert "seed_ejected" not in res  # nothing left to eject
    deadline = time.monotonic() + BOOT_DEADLINE_S
    while (now := _boot_id(deb)) in (None, before):  # the agent answers again, from a new boot
        assert time.monotonic() < deadline, f"{deb.name} did not come back from the reboot within " \
                                            f"{BOOT_DEADLINE_S} s; serial log tail:\n{log.text()[-3000:]}"
        time.sleep(3)
    assert now != before
    assert "Linux version" in log.text()[mark:]  # the kernel booted again in the same QEMU (the console shows it)
    deb.boots.append(_wait_ready(deb))  # cloud-init done and a lease: ready for the tests after this one
    assert deb.dom.isActive() and _boot_id(deb) == now


# --- offline: shut down by the agent, then libguestfs --------------------------------------------

def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_shutdown_falls_back_to_the_agent_when_acpi_is_ignored(deb: Deb) -> None:
    from kvmkit.service.guests.exec import exec_command
    from kvmkit.service.vms.lifecycle import shutdown

    made = exec_command(live_conn(), deb.name, ["sh", "-c", "head -c 200000 /dev/urandom > /root/guest-made.bin; "
                                                            "sync; sha256sum /root/guest-made.bin"])
    (deb.dir / "guest-made.sha256").write_text(made["stdout"].split()[0])
    # hold logind's power-key handling: the ACPI button does nothing now
    exec_command(live_conn(), deb.name, ["sh", "-c", "setsid systemd-inhibit --what=handle-power-key --mode=block "
                                                     "sleep 100000 >/dev/null 2>&1 < /dev/null &"])
    time.sleep(2)
    res = shutdown(live_conn(), deb.name, timeout=30)
    assert res["method"] == "agent" and res["state"] == "shut-off", res


def test_copy_out_of_a_file_the_guest_wrote_is_identical(deb: Deb) -> None:
    out = deb.dir / "out"
    out.mkdir()
    kvmkit("guest", "copy-out", deb.name, "/root/guest-made.bin", str(out))
    assert _sha((out / "guest-made.bin").read_bytes()) == (deb.dir / "guest-made.sha256").read_text()


def test_copy_in_then_ls_cat_df_inspect_over_the_cli_and_http(deb: Deb, api: httpx.Client) -> None:
    """Each guest-disk operation once, through the CLI or the API in turn (both are thin over one service:
    every libguestfs appliance costs ~20 s under TCG): what the CLI copies in, HTTP lists and tars out; what
    HTTP copies in, the CLI reads."""
    local = deb.dir / "host-made.txt"
    local.write_text(f"from the host {secrets.token_hex(8)}\n")
    kvmkit("guest", "copy-in", deb.name, str(local), "/root")
    payload = secrets.token_bytes(70_000)
    r = api.post(f"/api/v1/vms/{deb.name}/guest/copy-in", params={"path": "/root/payload.bin"}, content=payload,
                 timeout=900)
    assert r.status_code == 200 and r.json()["sha256"] == _sha(payload), r.text
    r = api.get(f"/api/v1/vms/{deb.name}/guest/ls", params={"path": "/root"}, timeout=900)
    assert r.status_code == 200, r.text
    entries = {e["name"]: e for e in r.json()["entries"]}
    assert entries["host-made.txt"]["type"] == "file" and entries["host-made.txt"]["size"] == local.stat().st_size
    assert entries["payload.bin"]["size"] == len(payload)
    assert kvmkit("guest", "cat", deb.name, "/root/host-made.txt").stdout == local.read_text()
    r = api.get(f"/api/v1/vms/{deb.name}/guest/cat", params={"path": "/root/nope"}, timeout=900)
    assert r.status_code == 404 and "/root/nope" in r.json()["error"]
    df = json.loads(kvmkit("--json", "guest", "df", deb.name).stdout)["filesystems"]
    assert df and all(f["size_kib"] > 0 for f in df)
    r = api.get(f"/api/v1/vms/{deb.name}/guest/inspect", timeout=900)
    os_info = r.json()["operating_systems"][0]
    assert os_info["distro"] == "debian" and os_info["hostname"] == deb.hostname
    r = api.get(f"/api/v1/vms/{deb.name}/guest/copy-out", params={"path": "/root"}, timeout=900)
    assert r.status_code == 200 and r.headers["content-type"] == "application/x-tar"
    with tarfile.open(fileobj=io.BytesIO(r.content)) as tar:
        files = {m.name.rsplit("/", 1)[-1]: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}
    assert files["payload.bin"] == payload and files["host-made.txt"] == local.read_bytes()


def test_the_guest_sees_the_copied_file_after_boot_and_stays_the_same_instance(deb: Deb) -> None:
    from kvmkit.service.vms.lifecycle import start

    start(live_conn(), deb.name)
    deb.boots.append(_wait_ready(deb))
    ip = _lease_ip(deb.dom)
    res = _ssh(deb, ip, "cat /root/host-made.txt 2>/dev/null || sudo cat /root/host-made.txt; hostname")
    lines = res.stdout.splitlines()
    assert lines[0] == (deb.dir / "host-made.txt").read_text().strip()
    assert lines[1] == deb.hostname  # no seed any more, and cloud-init kept the instance (seed copy in the guest)
    print(f"boots: {[round(b) for b in deb.boots]} s")
