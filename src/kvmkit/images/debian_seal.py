"""Seal a debootstrapped Debian tree as a template (the seeds' rules for a clean template image).

One root file system mounted by label and no swap; an empty /etc/machine-id (systemd makes a new one at
first boot); no SSH host keys (a oneshot unit makes them before sshd's first start; cloud-init also
does); no persistent MAC/udev network rules; DHCP on any en*/eth* NIC via systemd-networkd; cloud-init
told to look for a NoCloud seed; apt lists, caches and logs emptied.
"""

from __future__ import annotations

import shutil
from pathlib import Path

FSTAB = "# one root file system, no swap (kvmkit template)\nLABEL=root / ext4 defaults,errors=remount-ro 0 1\n"
NETWORK = "[Match]\nName=en* eth*\n\n[Network]\nDHCP=yes\n"
CLOUD_CFG = "# kvmkit: personalise with a NoCloud seed (cidata ISO or kernel cmdline ds=nocloud)\n" \
            "datasource_list: [ NoCloud, None ]\n"
SSH_KEYGEN_UNIT = """[Unit]
Description=Generate SSH host keys (the template ships none)
Before=ssh.service
ConditionPathExistsGlob=!/etc/ssh/ssh_host_*_key

[Service]
Type=oneshot
ExecStart=/usr/bin/ssh-keygen -A

[Install]
RequiredBy=ssh.service
"""


def _empty_dir(path: Path) -> None:
    if not path.is_dir():
        return
    for child in path.iterdir():
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()


def seal(root: Path) -> None:
    """Apply the template rules to the tree at ``root`` (idempotent)."""
    etc = root / "etc"
    (etc / "fstab").write_text(FSTAB)
    (etc / "hostname").write_text("localhost\n")
    (etc / "hosts").write_text("127.0.0.1 localhost\n::1 localhost ip6-localhost ip6-loopback\n")
    (etc / "machine-id").write_text("")
    dbus_id = root / "var/lib/dbus/machine-id"
    if dbus_id.exists() and not dbus_id.is_symlink():
        dbus_id.unlink()
    for key in (etc / "ssh").glob("ssh_host_*"):
        key.unlink()
    for rules in ("70-persistent-net.rules", "75-persistent-net-generator.rules"):
        (etc / "udev/rules.d" / rules).unlink(missing_ok=True)
    netdir = etc / "systemd/network"
    netdir.mkdir(parents=True, exist_ok=True)
    (netdir / "20-kvmkit-dhcp.network").write_text(NETWORK)
    (etc / "cloud/cloud.cfg.d").mkdir(parents=True, exist_ok=True)
    (etc / "cloud/cloud.cfg.d/90-kvmkit.cfg").write_text(CLOUD_CFG)
    unit = etc / "systemd/system/kvmkit-ssh-keygen.service"
    unit.write_text(SSH_KEYGEN_UNIT)
    wants = etc / "systemd/system/ssh.service.requires"
    wants.mkdir(parents=True, exist_ok=True)
    link = wants / unit.name
    if not link.is_symlink():
        link.symlink_to(f"/etc/systemd/system/{unit.name}")
    for rel in ("var/lib/apt/lists", "var/cache/apt", "var/lib/cloud", "tmp", "var/tmp"):
        _empty_dir(root / rel)
    (root / "var/lib/apt/lists/partial").mkdir(parents=True, exist_ok=True)
    for log in (root / "var/log").rglob("*"):
        if log.is_file() and not log.is_symlink():
            log.write_bytes(b"")
