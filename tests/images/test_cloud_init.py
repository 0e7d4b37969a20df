"""NoCloud seeds: built as a FAT image labelled cidata, read back with blkid/mtools; `vm create --cloud-init`."""

from __future__ import annotations

import os
import subprocess
import uuid
from pathlib import Path

import pytest
import yaml
from lxml import etree

from kvmkit.errors import InvalidInput
from kvmkit.images import cloud_init
from kvmkit.spec.cloud_init import CloudInitSpec
from tests.support.cli_run import kvmkit, leftovers

PUB = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIP5adS3KQexugxXNgDWX3bqfPdY/cG2kGb8vahWfVtOF test@kvmkit"
OTHER = ("ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAAAgQDHOMKw8mY0j3U5Izwetu6+oCGqcvM/A/SJGnVMhNpJMON5LLyZlKCPVKG8bmtCP0h"
         "BnwU0hBZigyGBm/IIPzH9WehPQxQSTM+P0+Gq43I5RgWVF1xuQPa1OP95UZmDwr1ZoX538ir5MmaYuFRtSW0M3D3YGB1OB130aNuI9G"
         "jZIQ== other@kvmkit")


def _mtype(img: Path, name: str) -> str:
    env = {**os.environ, "MTOOLS_SKIP_CHECK": "1"}
    return subprocess.run(["mtype", "-i", str(img), f"::{name}"], capture_output=True, text=True, env=env,
                          check=True).stdout


def _label(img: Path) -> str:
    res = subprocess.run(["blkid", "-o", "value", "-s", "LABEL", str(img)], capture_output=True, text=True)
    return res.stdout.strip()


def _write(path: Path, text: str) -> str:
    path.write_text(text)
    return str(path)


def _crypt(password: str, hashed: str) -> str:
    """``password`` hashed by openssl with the salt of ``hashed`` (equal to it when it is that password's)."""
    salt = hashed.split("$")[2]
    return subprocess.run(["openssl", "passwd", "-6", "-salt", salt, "-stdin"], input=password + "\n",
                          capture_output=True, text=True, check=True).stdout.strip()


@pytest.mark.fast
def test_seed_holds_meta_and_user_data(tmp_path):
    user = _write(tmp_path / "user.yaml", f"#cloud-config\npackages: [htop]\nssh_authorized_keys:\n  - {OTHER}\n")
    key = _write(tmp_path / "id.pub", f"# my key\n{PUB}\n")
    spec = CloudInitSpec(user_data=user, ssh_key=key, hostname="web-1")
    img = cloud_init.build_seed(spec, "vm_one", tmp_path / "seed.img")
    assert _label(img) == "cidata"
    meta = yaml.safe_load(_mtype(img, "meta-data"))
    assert meta["local-hostname"] == "web-1"
    uuid.UUID(meta["instance-id"])
    text = _mtype(img, "user-data")
    assert text.startswith("#cloud-config\n")
    config = yaml.safe_load(text)
    assert config["packages"] == ["htop"]
    assert config["ssh_authorized_keys"] == [OTHER, PUB]  # merged, the existing key kept first


@pytest.mark.fast
def test_defaults_minimal_config_and_new_instance_id_per_vm(tmp_path):
    spec = CloudInitSpec()
    first = cloud_init.render(spec, "my_vm.test")
    second = cloud_init.render(spec, "my_vm.test")
    assert first["user-data"] == b"#cloud-config\n"
    meta = yaml.safe_load(first["meta-data"])
    assert meta["local-hostname"] == "my-vm-test"  # the VM name made a DNS label
    assert meta["instance-id"] != yaml.safe_load(second["meta-data"])["instance-id"]
    key = _write(tmp_path / "id.pub", PUB + "\n")
    config = yaml.safe_load(cloud_init.render(CloudInitSpec(ssh_key=key), "v")["user-data"])
    assert config == {"ssh_authorized_keys": [PUB]}


@pytest.mark.fast
def test_given_meta_data_and_script_user_data_are_kept(tmp_path):
    meta = _write(tmp_path / "meta", "instance-id: fixed-1\nlocal-hostname: given\nextra: 1\n")
    script = _write(tmp_path / "user.sh", "#!/bin/sh\necho hi\n")
    files = cloud_init.render(CloudInitSpec(meta_data=meta, user_data=script), "v")
    assert yaml.safe_load(files["meta-data"]) == {"instance-id": "fixed-1", "local-hostname": "given", "extra": 1}
    assert files["user-data"] == b"#!/bin/sh\necho hi\n"
    files = cloud_init.render(CloudInitSpec(meta_data=meta, hostname="over"), "v")
    assert yaml.safe_load(files["meta-data"])["local-hostname"] == "over"  # hostname= wins


@pytest.mark.fast
@pytest.mark.parametrize("hostname", ["-x", "x-", "a_b", "a.b", "x" * 64, ""])
def test_bad_hostname(hostname):
    with pytest.raises(ValueError, match="not a valid DNS label"):
        CloudInitSpec(hostname=hostname)


@pytest.mark.fast
def test_bad_files(tmp_path):
    CloudInitSpec(user_data=str(tmp_path / "missing"))  # parsing never looks at the filesystem
    with pytest.raises(InvalidInput, match="does not exist"):
        CloudInitSpec(user_data=str(tmp_path / "missing")).check_files()
    with pytest.raises(InvalidInput, match="not a regular file"):
        CloudInitSpec(meta_data=str(tmp_path)).check_files()
    private = _write(tmp_path / "id", "-----BEGIN OPENSSH PRIVATE KEY-----\nabc\n")
    with pytest.raises(InvalidInput, match="PRIVATE key"):
        cloud_init.render(CloudInitSpec(ssh_key=private), "v")
    junk = _write(tmp_path / "junk.pub", "hello world\n")
    with pytest.raises(InvalidInput, match="not an OpenSSH public key"):
        cloud_init.render(CloudInitSpec(ssh_key=junk), "v")
    key = _write(tmp_path / "id.pub", PUB)
    script = _write(tmp_path / "user.sh", "#!/bin/sh\n")
    with pytest.raises(InvalidInput, match="#cloud-config"):
        cloud_init.render(CloudInitSpec(ssh_key=key, user_data=script), "v")
    broken = _write(tmp_path / "broken.yaml", "#cloud-config\nusers: [\n")
    with pytest.raises(InvalidInput, match="not valid YAML at line"):
        cloud_init.render(CloudInitSpec(ssh_key=key, user_data=broken), "v")
    with pytest.raises(InvalidInput, match="not a YAML mapping"):
        cloud_init.render(CloudInitSpec(meta_data=_write(tmp_path / "m", "- a\n")), "v")


@pytest.mark.fast
def test_cli_bad_input_is_one_line_and_leaves_nothing(conn, prefix, tmp_path):
    junk = _write(tmp_path / "junk.pub", "not a key\n")
    cases = [("hostname=bad_name", "not a valid DNS label"),
             (f"user-data={tmp_path / 'missing.yaml'}", "does not exist"),
             ("colour=red", "unknown option 'colour'"),
             (f"ssh-key={junk}", "not an OpenSSH public key")]
    for value, message in cases:
        res = kvmkit("vm", "create", f"{prefix}vm", "--micro", "--network", "none", "--cloud-init", value,
                     check=False)
        assert res.returncode != 0
        error = [line for line in res.stderr.splitlines() if line.startswith("error:")]
        assert len(error) == 1 and message in error[0], res.stderr
        assert "Traceback" not in res.stderr
    assert leftovers(conn, prefix) == []
    assert not Path(f"/var/lib/libvirt/images/{prefix}vm-cidata.img").exists()


def _seed_disk(xml: str) -> etree._Element:
    root = etree.fromstring(xml.encode())
    found = [d for d in root.iterfind("devices/disk") if "cidata" in (d.find("source").get("file") or "")]
    assert len(found) == 1
    return found[0]


@pytest.mark.fast  # like tests/cli/test_vm_define.py: the CLI against qemu:///system, no guest boots
def test_print_xml_shows_the_seed_and_creates_nothing(conn, prefix):
    res = kvmkit("vm", "create", f"{prefix}vm", "--micro", "--network", "none", "--cloud-init", "hostname=x",
                 "--print-xml")
    disk = _seed_disk(res.stdout)
    assert disk.find("readonly") is not None and disk.find("target").get("bus") == "virtio"
    assert disk.find("driver").get("type") == "raw"
    assert disk.find("source").get("file").endswith(f"/{prefix}vm-cidata.img")
    assert leftovers(conn, prefix) == []


@pytest.mark.guest
def test_create_then_delete_storage_leaves_no_seed(conn, prefix, tmp_path):
    user = _write(tmp_path / "user.yaml", "#cloud-config\nruncmd: [[echo, hi]]\n")
    res = kvmkit("--json", "vm", "create", f"{prefix}vm", "--micro", "--network", "none", "--start",
                 "--cloud-init", f"user-data={user},hostname=seeded")
    dom = conn.lookupByName(f"{prefix}vm")
    seed = Path(_seed_disk(dom.XMLDesc(0)).find("source").get("file"))
    assert f"{prefix}vm-cidata.img" in res.stdout
    assert _label(seed) == "cidata"
    assert yaml.safe_load(_mtype(seed, "meta-data"))["local-hostname"] == "seeded"
    assert _mtype(seed, "user-data") == "#cloud-config\nruncmd: [[echo, hi]]\n"
    kvmkit("vm", "delete", f"{prefix}vm", "--storage", "--force")
    assert not seed.exists()
    assert leftovers(conn, prefix) == []


@pytest.mark.guest
def test_failed_create_removes_the_seed(conn, prefix):
    from kvmkit.errors import KvmkitError
    from kvmkit.service.vms.create import create_vm

    spec = {"name": f"{prefix}vm", "micro": True, "memory_mib": 256, "cpu_model": "NoSuchCpuModel",
            "cloud_init": {"hostname": "x"}}
    said: list[str] = []
    with pytest.raises(KvmkitError, match="NoSuchCpuModel"):  # refused at start: after the seed was written
        create_vm(conn, spec, start=True, progress=said.append)
    assert any("cloud-init seed" in m for m in said) and any(m.startswith("starting") for m in said)
    assert leftovers(conn, prefix) == []
    assert not Path(f"/var/lib/libvirt/images/{prefix}vm-cidata.img").exists()


# The debian-12 guest taking the hostname, the key and a user-data file from its seed, and SSH into it:
# tests/service/guests/test_debian_guest.py (one boot shared with the agent and guest-disk tests).


@pytest.mark.fast
def test_password_is_hashed_at_once_and_never_kept_in_clear(tmp_path):
    spec = CloudInitSpec(password="clear-text-1")
    assert spec.password is None and spec.password_hash.startswith("$6$")
    dumped = spec.model_dump()
    assert "clear-text-1" not in repr(dumped) + repr(spec) + spec.model_dump_json()
    assert CloudInitSpec.model_validate(dumped).password_hash == spec.password_hash  # not hashed again
    assert _crypt("clear-text-1", spec.password_hash) == spec.password_hash
    pw = _write(tmp_path / "pw", "from-a-file\nsecond line ignored\n")
    from_file = CloudInitSpec(password_file=pw)
    assert from_file.password_file == pw and from_file.password_hash is None  # read when the seed is rendered
    user_data = cloud_init.render(from_file, "v")["user-data"].decode()
    config = yaml.safe_load(user_data)
    assert config["chpasswd"] == {"expire": False} and "from-a-file" not in user_data
    assert _crypt("from-a-file", config["password"]) == config["password"]


@pytest.mark.fast
def test_inline_fields_render_the_seed_their_host_file_twins_render(tmp_path):
    """The API's inline fields and the host-file fields make the same seed (only the password's salt
    differs): the file-based seed is the one proven on a booting Debian guest (test_debian_guest.py, which
    also logs in with an inline key), so this is what proves the inline one there too."""
    user_data = "#cloud-config\nwrite_files:\n  - {path: /etc/kvmkit-inline, content: x}\nruncmd:\n  - [true]\n"
    files = CloudInitSpec(hostname="h1", ssh_key=_write(tmp_path / "id.pub", PUB + "\n"),
                          user_data=_write(tmp_path / "user.yaml", user_data),
                          password_file=_write(tmp_path / "pw", "pw-1\n"))
    inline = CloudInitSpec(hostname="h1", ssh_authorized_keys=[PUB], user_data_text=user_data, password="pw-1")

    def seed(spec: CloudInitSpec) -> tuple[str, str]:
        seed = cloud_init.render(spec, "v")
        text = seed["user-data"].decode()
        hashed = yaml.safe_load(text)["password"]
        assert _crypt("pw-1", hashed) == hashed and "pw-1" not in text
        return text.replace(hashed, "HASH"), yaml.safe_load(seed["meta-data"])["local-hostname"]

    from_inline = seed(inline)
    assert seed(files) == from_inline
    assert yaml.safe_load(from_inline[0])["ssh_authorized_keys"] == [PUB]


@pytest.mark.fast
def test_bad_passwords(prefix, tmp_path):
    with pytest.raises(ValueError, match="one of password, password-file or password-hash"):
        CloudInitSpec(password="a", password_file=_write(tmp_path / "pw", "b\n"))
    with pytest.raises(InvalidInput, match="is empty"):
        cloud_init.render(CloudInitSpec(password_file=_write(tmp_path / "empty", "\n")), "v")
    with pytest.raises(ValueError, match="one line"):
        CloudInitSpec(password="two\nlines")
    with pytest.raises(ValueError, match="SHA-512"):
        CloudInitSpec(password_hash="$y$j9T$abc$def")  # yescrypt: cloud-init 22.4 would set it as clear text
    res = kvmkit("vm", "create", f"{prefix}vm", "--micro", "--network", "none", "--print-xml", "--cloud-init",
                 "password=x,password-file=/etc/hostname", check=False)
    assert res.returncode != 0 and "one of password, password-file" in res.stderr


@pytest.mark.fast
def test_eject_keeps_a_seed_copy_in_the_guest_and_merges_into_user_data(tmp_path):
    user = _write(tmp_path / "user.yaml", "#cloud-config\nwrite_files:\n  - {path: /etc/motd, content: hi}\n"
                                          "chpasswd: {expire: true}\n")
    files = cloud_init.render(CloudInitSpec(user_data=user, eject=True, password="p-1", hostname="h1"), "v")
    config = yaml.safe_load(files["user-data"])
    paths = [f["path"] for f in config["write_files"]]
    assert paths == ["/etc/motd", f"{cloud_init.SEED_COPY_DIR}/meta-data", f"{cloud_init.SEED_COPY_DIR}/user-data"]
    assert config["write_files"][1]["content"] == files["meta-data"].decode()  # same instance-id and hostname
    assert config["chpasswd"] == {"expire": True}  # the user's own setting wins
    script = _write(tmp_path / "user.sh", "#!/bin/sh\n")
    with pytest.raises(InvalidInput, match="eject can only be merged"):
        cloud_init.render(CloudInitSpec(user_data=script, eject=True), "v")


@pytest.mark.fast
def test_cli_parses_password_file_and_eject(conn, prefix, tmp_path):
    pw = _write(tmp_path / "pw", "cli-secret\n")
    res = kvmkit("vm", "create", f"{prefix}vm", "--micro", "--network", "none", "--print-xml",
                 "--cloud-init", f"password-file={pw},eject=yes")
    assert "cli-secret" not in res.stdout + res.stderr
    assert "<kvmkit:cidata_eject>pending</kvmkit:cidata_eject>" in res.stdout
    assert leftovers(conn, prefix) == []
