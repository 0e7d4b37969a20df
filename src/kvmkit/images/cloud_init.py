"""NoCloud seed images: a small FAT file system labelled ``cidata`` holding ``user-data`` and ``meta-data``.

Built without root or mounts: ``mkfs.vfat -C`` makes the file system in a new file and ``mcopy``
(mtools) writes the files into it. cloud-init's NoCloud datasource finds the disk by its label, on any
bus (kvmkit attaches it as a read-only virtio disk).

:func:`render` produces the two files from a :class:`~kvmkit.spec.cloud_init.CloudInitSpec`:
meta-data always has ``instance-id`` (a new UUID per VM unless the given meta-data has one) and
``local-hostname``; ssh keys (from a key file and/or ``ssh_authorized_keys``) are merged into #cloud-config
user-data — a host file or ``user_data_text``, laid out the same — as ``ssh_authorized_keys`` (the
distribution's default user), a password as its crypt hash (``password`` + ``chpasswd: {expire: false}``),
and with ``eject`` a copy of the meta-data into the guest's NoCloud seed directory (so that the guest stays
the same instance once the seed disk is gone); without user-data a minimal ``#cloud-config`` is written.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
import uuid
from pathlib import Path
from typing import Any

import yaml

from kvmkit.errors import HostError, InvalidInput
from kvmkit.spec.cloud_init import CloudInitSpec, hostname_from
from kvmkit.spec.user_data import validate_public_key

LABEL = "cidata"
CLOUD_CONFIG = "#cloud-config"


def _read(path: str, what: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise InvalidInput(f"{what} file {path} is not UTF-8 text", hint=f"give a text {what} file") from None
    except OSError as err:
        raise InvalidInput(f"cannot read {what} file {path}: {err.strerror}", hint="check the path") from None


def _yaml_mapping(text: str, path: str, what: str) -> dict[str, Any]:
    """``path``: the file's path, or a description of inline text ("the user-data text")."""
    where = path if path.startswith("the ") else f"{what} file {path}"
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        line = f" at line {mark.line + 1}" if mark is not None else ""
        raise InvalidInput(f"{where} is not valid YAML{line}",
                           hint="fix the YAML (check indentation and quoting)") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise InvalidInput(f"{where} is not a YAML mapping (key: value lines)",
                           hint=f"write {what} as key: value lines")
    return data


def read_ssh_keys(path: str) -> list[str]:
    """Public keys in ``path`` (one a line, comments and blank lines skipped); refuses private keys."""
    text = _read(path, "ssh-key")
    if "PRIVATE KEY" in text:
        raise InvalidInput(f"ssh-key file {path} holds a PRIVATE key", hint="give the public key (the .pub file)")
    keys = [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]
    if not keys:
        raise InvalidInput(f"ssh-key file {path} has no key", hint="give a public key file, e.g. ~/.ssh/id_ed25519.pub")
    for key in keys:
        try:
            validate_public_key(key)
        except ValueError as err:
            raise InvalidInput(f"ssh-key file {path} has a line that is not an OpenSSH public key: {err}",
                               hint="give a public key file, e.g. ~/.ssh/id_ed25519.pub") from None
    return keys


SEED_COPY_DIR = "/var/lib/cloud/seed/nocloud"  # NoCloud's seed directory inside the guest


def _extras(spec: CloudInitSpec, meta_data: str) -> dict[str, Any]:
    """What kvmkit adds to #cloud-config user-data: keys, the password hash, the seed copy for eject."""
    extras: dict[str, Any] = {}
    keys = read_ssh_keys(spec.ssh_key) if spec.ssh_key else []
    keys += [k for k in spec.ssh_authorized_keys if k not in keys]  # given inline (validated with the spec)
    if keys:
        extras["ssh_authorized_keys"] = keys
    try:
        password_hash = spec.resolved_password_hash()  # password-file is read here, never while parsing
    except ValueError as err:
        raise InvalidInput(f"--cloud-init: {err}", hint="fix the password file (its first line is the password)") \
            from None
    if password_hash:
        extras["password"] = password_hash  # cloud-init sees the $6$ hash and sets it as a hash
        extras["chpasswd"] = {"expire": False}
    if spec.eject:
        # the seed disk goes away after the first boot: a copy of its meta-data in the guest's NoCloud seed
        # directory keeps the instance-id, so later boots stay the same instance (no re-run, no new host keys)
        extras["write_files"] = [
            {"path": f"{SEED_COPY_DIR}/meta-data", "content": meta_data, "permissions": "0600"},
            {"path": f"{SEED_COPY_DIR}/user-data", "content": CLOUD_CONFIG + "\n", "permissions": "0600"}]
    return extras


def _merge(config: dict[str, Any], extras: dict[str, Any], path: str) -> dict[str, Any]:
    for key, value in extras.items():
        existing = config.get(key)
        if key == "ssh_authorized_keys":
            if isinstance(existing, str):
                existing = [existing]
            if existing is not None and not isinstance(existing, list):
                raise InvalidInput(f"ssh_authorized_keys in {path} is not a list",
                                   hint="write ssh_authorized_keys as a YAML list")
            existing = existing or []
            config[key] = existing + [k for k in value if k not in existing]
        elif key == "write_files":
            if existing is not None and not isinstance(existing, list):
                raise InvalidInput(f"write_files in {path} is not a list", hint="write write_files as a YAML list")
            config[key] = (existing or []) + value
        elif key == "chpasswd":
            if existing is not None and not isinstance(existing, dict):
                raise InvalidInput(f"chpasswd in {path} is not a mapping", hint="write chpasswd as key: value lines")
            config[key] = {**value, **(existing or {})}  # the user's own chpasswd settings win
        elif key == "password" and existing is not None:
            raise InvalidInput(f"{path} sets a password already, and --cloud-init password was given too",
                               hint="keep one of them")
        else:
            config[key] = value
    return config


def _user_data(spec: CloudInitSpec, meta_data: str) -> str:
    extras = _extras(spec, meta_data)
    if spec.user_data is not None:
        text, where = _read(spec.user_data, "user-data"), spec.user_data
    elif spec.user_data_text is not None:
        text, where = spec.user_data_text.get_secret_value(), "the user-data text"
    else:
        return CLOUD_CONFIG + "\n" + (yaml.safe_dump(extras, sort_keys=False) if extras else "")
    if not extras:
        return text  # passed through as written: cloud-config, a script, or a MIME multipart
    if not text.lstrip().startswith(CLOUD_CONFIG):
        what = ", ".join(k for k, on in (("ssh-key", spec.ssh_key or spec.ssh_authorized_keys),
                                         ("password", "password" in extras), ("eject", spec.eject)) if on)
        raise InvalidInput(f"{what} can only be merged into #cloud-config user-data, and {where} "
                           "does not start with #cloud-config",
                           hint="add it to your user-data yourself, or make it a #cloud-config document")
    config = _merge(_yaml_mapping(text, where, "user-data"), extras, where)
    return CLOUD_CONFIG + "\n" + yaml.safe_dump(config, sort_keys=False)


def _meta_data(spec: CloudInitSpec, vm_name: str) -> str:
    meta = _yaml_mapping(_read(spec.meta_data, "meta-data"), spec.meta_data, "meta-data") if spec.meta_data else {}
    meta.setdefault("instance-id", str(uuid.uuid4()))
    if spec.hostname:
        meta["local-hostname"] = spec.hostname
    else:
        meta.setdefault("local-hostname", hostname_from(vm_name))
    return yaml.safe_dump(meta, sort_keys=False)


def render(spec: CloudInitSpec, vm_name: str) -> dict[str, bytes]:
    """The seed's files: {'meta-data': ..., 'user-data': ...}. Raises InvalidInput for bad input."""
    spec.check_files()
    meta = _meta_data(spec, vm_name)
    return {"meta-data": meta.encode(), "user-data": _user_data(spec, meta).encode()}


def _tool(cmd: list[str], what: str, package: str) -> None:
    env = {**os.environ, "MTOOLS_SKIP_CHECK": "1"}
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    except FileNotFoundError:
        raise HostError(f"{cmd[0]} not found (needed to {what})", hint=f"apt-get install {package}") from None
    if res.returncode != 0:
        tail = (res.stderr.strip() or res.stdout.strip())[-400:]
        raise HostError(f"{what} failed: {tail}", hint="check free space in the temporary directory")


def write_seed(files: dict[str, bytes], out: str | Path) -> Path:
    """Write a FAT seed image labelled cidata holding ``files`` to ``out`` (which must not exist)."""
    out = Path(out)
    if out.exists():
        raise InvalidInput(f"{out} already exists", hint="remove it or choose another path")
    payload = sum(len(data) for data in files.values())
    size_kib = max(1024, (payload * 2) // 1024 + 512)  # FAT overhead is small; leave room
    try:
        _tool(["mkfs.vfat", "-C", "-n", LABEL, str(out), str(size_kib)], "make the seed file system", "dosfstools")
        with tempfile.TemporaryDirectory(prefix="kvmkit-cidata-") as tmp:
            for name, data in files.items():
                src = Path(tmp) / name
                src.write_bytes(data)
                _tool(["mcopy", "-o", "-i", str(out), str(src), f"::{name}"], f"copy {name} into the seed",
                      "mtools")
    except BaseException:
        out.unlink(missing_ok=True)
        raise
    return out


def build_seed(spec: CloudInitSpec, vm_name: str, out: str | Path) -> Path:
    """Render ``spec`` for ``vm_name`` and write the seed image to ``out``."""
    return write_seed(render(spec, vm_name), out)
