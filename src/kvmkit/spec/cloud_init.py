"""The cloud-init part of a VM spec: which files and hostname go into the VM's NoCloud seed.

``kvmkit vm create --cloud-init user-data=FILE,meta-data=FILE,ssh-key=FILE,hostname=H`` parses into a
:class:`CloudInitSpec`; :mod:`kvmkit.images.cloud_init` turns it into the seed image.
"""

from __future__ import annotations

import os
import re

from pydantic import BaseModel, ConfigDict, field_validator

MAX_FILE_BYTES = 1024 * 1024  # NoCloud seeds carry configuration, not payloads
_LABEL = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$")


def validate_hostname(value: str) -> str:
    """A DNS label: letters, digits and '-', 1-63 characters, not starting or ending with '-'."""
    if not _LABEL.fullmatch(value):
        raise ValueError(f"hostname {value!r} is not a valid DNS label; use letters, digits and '-' "
                         "(1-63 characters, no '-' at either end), e.g. hostname=web-1")
    return value


def hostname_from(name: str) -> str:
    """A valid hostname made from a VM name ('my_vm.test' -> 'my-vm-test')."""
    label = re.sub(r"[^A-Za-z0-9-]", "-", name)[:63].strip("-")
    return label or "kvmkit-vm"


def _readable_file(path: str, what: str) -> str:
    """Check a seed file on the host. Not a field validator: parsing a spec never touches the filesystem
    (a caller who may not use host paths must be refused before anything learns whether a path exists);
    :meth:`CloudInitSpec.check_files` runs it once the caller's rights are checked."""
    if not os.path.exists(path):
        raise ValueError(f"{what} file {path} does not exist; check the path")
    if not os.path.isfile(path):
        raise ValueError(f"{what} {path} is not a regular file; give a file")
    if not os.access(path, os.R_OK):
        raise ValueError(f"{what} file {path} is not readable; check its permissions")
    size = os.path.getsize(path)
    if size > MAX_FILE_BYTES:
        raise ValueError(f"{what} file {path} is {size} bytes; the limit is {MAX_FILE_BYTES} bytes "
                         "(fetch large payloads from the guest instead)")
    return path


class CloudInitSpec(BaseModel):
    """Files (host paths, made absolute) and hostname for the VM's NoCloud seed. All optional: an empty
    spec still gives the VM a seed with an instance-id and its name as hostname."""

    model_config = ConfigDict(extra="forbid")

    user_data: str | None = None     # #cloud-config YAML (or any user-data cloud-init accepts)
    meta_data: str | None = None     # YAML; instance-id and local-hostname are added when missing
    ssh_key: str | None = None       # public key file(s) for the default user's authorized_keys
    hostname: str | None = None      # local-hostname; default: the VM name

    @field_validator("user_data", "meta_data", "ssh_key")
    @classmethod
    def _file(cls, v: str | None, info) -> str | None:
        from kvmkit.spec.common import as_value_error, validate_text

        what = (info.field_name or "file").replace("_", "-")
        if v is None:
            return None
        as_value_error(validate_text, v, f"{what} path", single_line=True, max_len=4096)
        return os.path.abspath(v)  # a string operation only: no stat here (see _readable_file)

    def check_files(self) -> None:
        """That every named file exists, is a regular readable file and is not too large: InvalidInput
        naming the field otherwise. Call it after the caller's permission to use host paths was checked."""
        from kvmkit.errors import InvalidInput

        for field in ("user_data", "meta_data", "ssh_key"):
            path = getattr(self, field)
            if path is None:
                continue
            what = field.replace("_", "-")
            try:
                _readable_file(path, what)
            except ValueError as err:
                raise InvalidInput(f"invalid cloud_init.{field}: {err}", hint="fix the path and try again") from None

    @field_validator("hostname")
    @classmethod
    def _hostname(cls, v: str | None) -> str | None:
        return None if v is None else validate_hostname(v)
