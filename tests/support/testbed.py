"""A test bed of two or three libvirt hosts on this one machine (tier 5, "many hosts"); docs/testbed.md.

Each bed host is a network namespace joined by a veth to one bridge in the root namespace, plus a holder
process in its own mount and UTS namespace (entered with ``ip netns exec NS unshare --mount --uts``) that
bind-mounts private directories over /etc/libvirt, /run, /var/lib/libvirt, /var/log/libvirt and
/var/cache/libvirt. virtlogd and ``libvirtd --listen`` run in the holder's namespaces (``nsenter -t
HOLDER``), listening on TCP without authentication on the host's bed address only. Everything else of the
machine is seen as it is: /var/lib/kvmkit (the micro-guest's kernel and initrd, the tests' work
directories) is at the same path on every bed host, so it is the bed's shared storage.

Tests in the root namespace reach the daemons as ``qemu+tcp://10.77.SLOT.1x/system`` over the bridge
(the bridge has 10.77.SLOT.1). SLOT is a per-session /24 taken under a lock file, so concurrent pytest
sessions get different names and addresses; a bed whose session died is swept by the next session.
The machine's own libvirtd (qemu:///system) is never touched.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import json
import os
import secrets
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import libvirt

STATE_DIR = Path("/run/kvmkit-testbed")  # lock files and one JSON per live bed
ROOT = Path(os.environ.get("KVMKIT_TESTBED_DIR", "/var/lib/kvmkit/testbed"))
SUBNET = "10.77"  # 10.77.SLOT.0/24, SLOT in 1..250
LETTERS = "abc"
PRIVATE_DIRS = {  # mount point in the bed host -> its private copy under the host's directory
    "/etc/libvirt": "etc",
    "/run": "run",
    "/var/lib/libvirt": "lib",
    "/var/log/libvirt": "log",
    "/var/cache/libvirt": "cache",
}
# the machine's libvirt files a bed host gets a copy of (never the domain, pool or network definitions)
ETC_COPY = ("libvirt.conf", "libvirt-admin.conf", "virtlogd.conf", "virtlockd.conf", "qemu-lockd.conf", "nwfilter")


def _die_with_parent() -> None:
    """In a child: the kernel kills it when the test process dies (SIGKILL, crash)."""
    ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def _run(*cmd: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)
    if check and res.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({res.returncode}): {res.stderr.strip()}")
    return res


def _quiet_libvirt() -> None:
    libvirt.registerErrorHandler(lambda _ctx, _err: None, None)


@dataclass
class BedHost:
    """One bed host: its namespace, address, daemons and directories."""

    letter: str
    bed_id: str
    netns: str
    address: str
    dir: Path
    kvm: bool = True  # False: /dev/kvm is hidden from this host (its libvirt offers no kvm guests)
    holder: subprocess.Popen[bytes] | None = None
    virtlogd: subprocess.Popen[bytes] | None = None
    libvirtd: subprocess.Popen[bytes] | None = None
    host_uuid: str = field(default_factory=lambda: str(uuid.uuid4()))

    @property
    def uri(self) -> str:
        return f"qemu+tcp://{self.address}/system"

    @property
    def hostname(self) -> str:
        return f"tb-{self.bed_id}-{self.letter}"

    @property
    def veth(self) -> str:
        return f"kvtb{self.bed_id}{self.letter}"

    def connect(self) -> libvirt.virConnect:
        _quiet_libvirt()
        return libvirt.open(self.uri)

    # namespaces ------------------------------------------------------------------------------------
    def nsenter(self, *cmd: str) -> list[str]:
        """``cmd`` run inside this host (its network, mount and UTS namespaces)."""
        assert self.holder is not None, f"bed host {self.letter} has no holder"
        return ["nsenter", "-t", str(self.holder.pid), "--mount", "--uts", "--net", "--", *cmd]

    def run(self, *cmd: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return _run(*self.nsenter(*cmd), check=check)

    def pids(self) -> list[int]:
        """Every process in this host's network namespace (holder, daemons, QEMUs)."""
        res = _run("ip", "netns", "pids", self.netns, check=False)
        return [int(p) for p in res.stdout.split()]

    # set-up ----------------------------------------------------------------------------------------
    def prepare(self, subnet_prefix: str, bridge: str) -> None:
        _run("ip", "netns", "add", self.netns)
        _run("ip", "link", "add", self.veth, "type", "veth", "peer", "name", "eth0", "netns", self.netns)
        _run("ip", "link", "set", self.veth, "master", bridge, "up")
        _run("ip", "-n", self.netns, "addr", "add", f"{self.address}/24", "dev", "eth0")
        _run("ip", "-n", self.netns, "link", "set", "eth0", "up")
        _run("ip", "-n", self.netns, "link", "set", "lo", "up")
        self._write_files()

    def _write_files(self) -> None:
        for sub in PRIVATE_DIRS.values():
            (self.dir / sub).mkdir(parents=True, exist_ok=True)
        etc = self.dir / "etc"
        for name in ETC_COPY:
            src = Path("/etc/libvirt") / name
            if src.is_dir():
                shutil.copytree(src, etc / name, dirs_exist_ok=True)
            elif src.exists():
                shutil.copy2(src, etc / name)
        for sub in ("qemu/networks/autostart", "qemu/autostart", "storage/autostart", "secrets", "hooks"):
            (etc / sub).mkdir(parents=True, exist_ok=True)
        for sub in ("qemu", "images", "dnsmasq", "boot"):
            (self.dir / "lib" / sub).mkdir(parents=True, exist_ok=True)
        (self.dir / "log" / "qemu").mkdir(parents=True, exist_ok=True)
        (self.dir / "run" / "lock").mkdir(parents=True, exist_ok=True)  # /var/lock: libvirt locks console ptys
        caps = Path("/var/cache/libvirt/qemu")
        if caps.is_dir() and self.kvm:
            # QEMU's capabilities as the machine's libvirtd probed them: no re-probe (seconds). Not for a host
            # without /dev/kvm: that copy says KVM works, and libvirt would go on offering kvm guests
            shutil.copytree(caps, self.dir / "cache" / "qemu", dirs_exist_ok=True)
        (etc / "libvirtd.conf").write_text(
            "# kvmkit test bed host: TCP without authentication on the bed address (never on a real host)\n"
            "listen_tcp = 1\nlisten_tls = 0\n"
            f'listen_addr = "{self.address}"\nauth_tcp = "none"\nauth_unix_rw = "none"\n'
            f'host_uuid = "{self.host_uuid}"\n'
            'log_outputs = "3:stderr"\n')
        (etc / "qemu.conf").write_text(
            "# kvmkit test bed host\n"
            # no AppArmor/SELinux labels, and no ownership changes: bed hosts share the machine's files (the
            # micro-guest's kernel and initrd); two daemons relabelling them would fight over their owner and
            # over libvirt's trusted.libvirt.security.* records
            'security_driver = "none"\nuser = "root"\ngroup = "root"\n'
            "dynamic_ownership = 0\nremember_owner = 0\n"
            # two daemons would create the same cgroups (machine/qemu-1-NAME ...)
            "cgroup_controllers = [ ]\n"
            f'migration_host = "{self.address}"\nmigration_address = "{self.address}"\n'
            f'vnc_listen = "{self.address}"\nspice_listen = "{self.address}"\n')

    def write_hosts_file(self, peers: list[BedHost]) -> None:
        """The machine's /etc/hosts plus every bed host's name: libvirt resolves its own host name for each
        capabilities answer (seconds of DNS time-outs in a namespace without DNS) and for migrations."""
        base = Path("/etc/hosts").read_text() if Path("/etc/hosts").exists() else "127.0.0.1 localhost\n"
        lines = "".join(f"{p.address} {p.hostname}\n" for p in peers)
        (self.dir / "hosts").write_text(base.rstrip("\n") + "\n# kvmkit test bed\n" + lines)

    def start_holder(self) -> None:
        mounts = [f"mount --bind {self.dir / sub} {target}" for target, sub in PRIVATE_DIRS.items()]
        mounts.append(f"mount --bind {self.dir / 'hosts'} /etc/hosts")
        if not self.kvm:
            # a /dev of its own with every entry of the machine's but kvm: for libvirt this host has no KVM
            # (a /dev/null bound over /dev/kvm instead makes libvirt probe QEMU again on every call)
            stage = self.dir / "dev"
            stage.mkdir(exist_ok=True)
            mounts.append(f"""mount -t tmpfs -o mode=755,nosuid tmpfs {stage}
for e in /dev/* ; do
  n=${{e##*/}}
  [ "$n" = kvm ] && continue
  if [ -L "$e" ]; then cp -P "$e" {stage}/"$n"
  elif [ -d "$e" ]; then mkdir {stage}/"$n"; mount --rbind "$e" {stage}/"$n"
  else touch {stage}/"$n"; mount --bind "$e" {stage}/"$n"; fi
done
mount --move {stage} /dev""")
        script = "set -e\n" + "\n".join(mounts) + f"\nhostname {self.hostname}\necho ready\nexec sleep infinity\n"
        self.holder = subprocess.Popen(
            ["ip", "netns", "exec", self.netns, "unshare", "--mount", "--uts", "--propagation", "private", "--",
             "sh", "-c", script], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            preexec_fn=_die_with_parent)
        assert self.holder.stdout is not None
        line = self.holder.stdout.readline().decode(errors="replace").strip()
        if line != "ready":
            rest = self.holder.stdout.read().decode(errors="replace") if self.holder.poll() is not None else ""
            raise RuntimeError(f"bed host {self.letter}: holder did not start: {line} {rest}")

    def _daemon(self, *cmd: str, log: str) -> subprocess.Popen[bytes]:
        out = open(self.dir / log, "ab")  # noqa: SIM115 - the child keeps it
        try:
            return subprocess.Popen(self.nsenter(*cmd), stdout=out, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, preexec_fn=_die_with_parent)
        finally:
            out.close()

    def start_daemons(self) -> None:
        if self.virtlogd is None or self.virtlogd.poll() is not None:
            self.virtlogd = self._daemon("virtlogd", log="virtlogd.out")
        self.start_libvirtd(wait=False)

    def start_libvirtd(self, *, wait: bool = True, timeout: float = 60) -> None:
        if self.libvirtd is None or self.libvirtd.poll() is not None:
            # a stale pid file of a killed daemon is left in the private /run: libvirtd takes it over
            self.libvirtd = self._daemon("libvirtd", "--listen", log="libvirtd.out")
        if wait:
            self.wait_ready(timeout)

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            if self.libvirtd is not None and self.libvirtd.poll() is not None:
                raise RuntimeError(f"bed host {self.letter}: libvirtd exited ({self.libvirtd.returncode}): "
                                   f"{self.log_tail()}")
            try:
                c = self.connect()
                c.getCapabilities()  # the first answer of a host without KVM probes QEMU (seconds): here, once
                c.close()
                return
            except libvirt.libvirtError as err:
                last = err
                time.sleep(0.2)
        raise RuntimeError(f"bed host {self.letter}: libvirtd not answering at {self.uri} after {timeout} s: "
                           f"{last}; {self.log_tail()}")

    def log_tail(self) -> str:
        path = self.dir / "libvirtd.out"
        return path.read_text(errors="replace")[-2000:] if path.exists() else ""

    # faults ----------------------------------------------------------------------------------------
    def kill_libvirtd(self) -> None:
        """SIGKILL this host's libvirtd (its QEMUs keep running, as on a real host)."""
        if self.libvirtd is not None and self.libvirtd.poll() is None:
            self.libvirtd.kill()
            self.libvirtd.wait(10)

    def link_down(self) -> None:
        """Cut the host off the bed network: its address stops answering (connections hang, not refused)."""
        _run("ip", "-n", self.netns, "link", "set", "eth0", "down")

    def link_up(self) -> None:
        _run("ip", "-n", self.netns, "link", "set", "eth0", "up")

    def link_is_up(self) -> bool:
        res = _run("ip", "-n", self.netns, "-j", "link", "show", "eth0", check=False)
        try:
            return "UP" in json.loads(res.stdout)[0].get("flags", [])
        except (ValueError, IndexError):
            return False

    def heal(self) -> None:
        """Undo a test's faults: link up, libvirtd running and answering."""
        if not self.link_is_up():
            self.link_up()
        self.start_libvirtd(wait=True)

    # tear-down -------------------------------------------------------------------------------------
    def destroy(self) -> None:
        for proc in (self.libvirtd, self.virtlogd, self.holder):
            if proc is not None and proc.poll() is None:
                proc.kill()
        for pid in self.pids():  # the QEMUs (libvirtd's daemonised children) and anything else in there
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        for proc in (self.libvirtd, self.virtlogd, self.holder):
            if proc is not None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(10)
        _wait_empty(self.netns)
        _run("ip", "netns", "del", self.netns, check=False)
        _run("ip", "link", "del", self.veth, check=False)  # normally gone with the namespace
        from kvmkit.config import cache_dir

        for suffix in (".json", ".lock"):  # kvmkit's KVM verdict for this host (kvmkit.host.virt_type.probe_host):
            with contextlib.suppress(FileNotFoundError):  # the host's UUID is new in every bed
                (cache_dir() / f"kvm-probe-{self.host_uuid}{suffix}").unlink()


def _wait_empty(netns: str, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _run("ip", "netns", "pids", netns, check=False).stdout.split():
            return
        time.sleep(0.1)


@dataclass
class TestBed:
    """The bed: hosts by letter (``bed["a"]``), the bridge, the per-session id and slot."""

    __test__ = False  # not a pytest test class

    bed_id: str
    slot: int
    dir: Path
    hosts: dict[str, BedHost]
    lock_fd: int | None = None

    @property
    def bridge(self) -> str:
        return f"kvtb{self.bed_id}"

    @property
    def gateway(self) -> str:
        return f"{SUBNET}.{self.slot}.1"

    @property
    def shared_dir(self) -> Path:
        """A directory every bed host (and the test process) sees at the same path with the same files."""
        return self.dir / "shared"

    def __getitem__(self, letter: str) -> BedHost:
        return self.hosts[letter]

    def __iter__(self) -> Iterator[BedHost]:
        return iter(self.hosts.values())

    def state(self) -> dict[str, Any]:
        return {"id": self.bed_id, "slot": self.slot, "dir": str(self.dir), "bridge": self.bridge, "pid": os.getpid(),
                "hosts": [{"letter": h.letter, "netns": h.netns, "veth": h.veth, "address": h.address}
                          for h in self]}

    def teardown(self) -> None:
        for host in self:
            host.destroy()
        _run("ip", "link", "del", self.bridge, check=False)
        shutil.rmtree(self.dir, ignore_errors=True)
        with contextlib.suppress(FileNotFoundError):
            (STATE_DIR / f"{self.bed_id}.json").unlink()
        if self.lock_fd is not None:
            os.close(self.lock_fd)  # releases the slot
            self.lock_fd = None


def _take_slot() -> tuple[int, int]:
    """A free /24 (1..250) held by an flock for as long as this process keeps the descriptor."""
    STATE_DIR.mkdir(parents=True, exist_ok=True)
    for slot in range(1, 251):
        fd = os.open(STATE_DIR / f"slot-{slot}.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        return slot, fd
    raise RuntimeError(f"no free test bed slot under {STATE_DIR} (250 beds in use?)")


def sweep_stale() -> list[str]:
    """Tear down beds whose session died (their slot lock is free): processes, namespaces, links, files."""
    swept: list[str] = []
    if not STATE_DIR.is_dir():
        return swept
    for path in sorted(STATE_DIR.glob("*.json")):
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        fd = os.open(STATE_DIR / f"slot-{data['slot']}.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # its session is alive
            for h in data["hosts"]:
                BedHost(h["letter"], data["id"], h["netns"], h["address"], Path(data["dir"]) / h["letter"]).destroy()
            _run("ip", "link", "del", data["bridge"], check=False)
            shutil.rmtree(data["dir"], ignore_errors=True)
            path.unlink(missing_ok=True)
            swept.append(data["id"])
        finally:
            os.close(fd)
    return swept


def create(count: int = 3, *, no_kvm: tuple[str, ...] = ("c",), timeout: float = 90) -> TestBed:
    """Build a bed of ``count`` hosts (a, b, c); the hosts in ``no_kvm`` do not see /dev/kvm."""
    if os.geteuid() != 0:
        raise RuntimeError("the test bed needs root (network and mount namespaces)")
    sweep_stale()
    slot, fd = _take_slot()
    bed_id = secrets.token_hex(3)
    bed_dir = ROOT / bed_id
    hosts = {}
    for i, letter in enumerate(LETTERS[:count]):
        hosts[letter] = BedHost(letter, bed_id, f"kvmkit-tb-{bed_id}-{letter}", f"{SUBNET}.{slot}.{11 + i}",
                                bed_dir / letter, kvm=letter not in no_kvm)
    bed = TestBed(bed_id, slot, bed_dir, hosts, fd)
    try:
        bed_dir.mkdir(parents=True, exist_ok=True)
        bed_dir.chmod(0o755)
        bed.shared_dir.mkdir(exist_ok=True)
        (STATE_DIR / f"{bed_id}.json").write_text(json.dumps(bed.state()))
        _run("ip", "link", "add", bed.bridge, "type", "bridge")
        _run("ip", "addr", "add", f"{bed.gateway}/24", "dev", bed.bridge)
        _run("ip", "link", "set", bed.bridge, "up")
        for host in bed:
            host.prepare(f"{SUBNET}.{slot}", bed.bridge)
            host.write_hosts_file(list(bed))
            host.start_holder()
            host.start_daemons()
        for host in bed:
            host.wait_ready(timeout)
    except BaseException:
        bed.teardown()
        raise
    return bed


def main(argv: list[str] | None = None) -> int:
    """``python -m tests.support.testbed up [N]`` (prints the hosts, keeps running until Ctrl-C) | ``sweep``."""
    import sys

    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["sweep"]:
        print("swept:", " ".join(sweep_stale()) or "nothing")
        return 0
    if args[:1] == ["up"]:
        def stop(_sig: int, _frame: Any) -> None:
            raise KeyboardInterrupt

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)  # a background job of a script starts with SIGINT ignored
        bed = create(int(args[1]) if len(args) > 1 else 3)
        try:
            for host in bed:
                print(f"{host.letter}: {host.uri}  (netns {host.netns}, files {host.dir})")
            print(f"shared storage: {bed.shared_dir}; Ctrl-C tears the bed down")
            signal.pause()
        except KeyboardInterrupt:
            pass
        finally:
            bed.teardown()
        return 0
    print(main.__doc__)
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
