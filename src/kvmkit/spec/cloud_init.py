"""The cloud-init part of a VM spec: which files and hostname go into the VM's NoCloud seed.

``kvmkit vm create --cloud-init user-data=FILE,meta-data=FILE,ssh-key=FILE,hostname=H,password-file=F,eject=yes``
parses into a :class:`CloudInitSpec`; :mod:`kvmkit.images.cloud_init` turns it into the seed image.

Content may also come in the spec itself, for callers that may not name host files (operators over the API):
``user_data_text`` (the user-data document: #cloud-config, a script, a MIME multipart ...; checked by
:mod:`kvmkit.spec.user_data`, write-only — a ``SecretStr``, since cloud-config often carries passwords),
``ssh_authorized_keys`` (OpenSSH public key lines), ``hostname`` and the password fields. The CLI reads its
``user-data=FILE`` itself and passes the text.

A password (``password`` or ``password_file``) is write-only: it is turned into a SHA-512 crypt hash while
the spec is validated (``openssl passwd -6``, the clear text on its stdin, never on a command line) and
then dropped; only ``password_hash`` is kept, dumped and written into the seed. ``password_file`` is read
(and hashed) only when the seed is rendered: parsing a spec reads no host file.
"""

from __future__ import annotations

import os
import re
import subprocess

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

MAX_FILE_BYTES = 1024 * 1024  # NoCloud seeds carry configuration, not payloads
_LABEL = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$")
# crypt(3) hashes cloud-init 22.4 recognises as hashed (anything else it would set as the clear password)
_HASH = re.compile(r"^\$(5|6)\$(rounds=\d+\$)?[./A-Za-z0-9]{1,16}\$[./A-Za-z0-9]{43,86}$")
MAX_PASSWORD = 256


def hash_password(clear: str) -> str:
    """A SHA-512 crypt hash (``$6$salt$...``) of ``clear``, made by ``openssl passwd -6`` reading it on stdin."""
    if not clear:
        raise ValueError("the password is empty; give a password (or leave password out)")
    if "\n" in clear or "\r" in clear or len(clear) > MAX_PASSWORD:
        raise ValueError(f"the password must be one line of at most {MAX_PASSWORD} characters")
    try:
        res = subprocess.run(["openssl", "passwd", "-6", "-stdin"], input=clear + "\n", capture_output=True,
                             text=True, check=False, timeout=30)
    except FileNotFoundError:
        raise ValueError("openssl is not installed (needed to hash the password): apt-get install openssl") from None
    out = res.stdout.strip()
    if res.returncode != 0 or not _HASH.match(out):
        raise ValueError("openssl passwd -6 did not produce a SHA-512 hash; check the openssl installation")
    return out


def _password_from_file(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read(MAX_PASSWORD + 2)
    except (OSError, UnicodeDecodeError) as err:
        raise ValueError(f"cannot read password-file {path}: {err}") from None
    line = text.split("\n", 1)[0].rstrip("\r")
    if not line:
        raise ValueError(f"password-file {path} is empty; put the password on its first line")
    return line


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


def read_user_data_file(path: str) -> str:
    """The text of a user-data file (checked like a seed file, UTF-8), for callers that may read host files
    themselves (the CLI, as its user); ValueError naming the file and what is wrong."""
    _readable_file(path, "user-data")
    try:
        with open(path, encoding="utf-8") as fh:
            return fh.read()
    except UnicodeDecodeError:
        raise ValueError(f"user-data file {path} is not UTF-8 text; give a text file") from None
    except OSError as err:
        raise ValueError(f"cannot read user-data file {path}: {err.strerror}") from None


class CloudInitSpec(BaseModel):
    """Files (host paths, made absolute) and hostname for the VM's NoCloud seed. All optional: an empty
    spec still gives the VM a seed with an instance-id and its name as hostname."""

    model_config = ConfigDict(extra="forbid")

    user_data: str | None = Field(None, description="a host file (admins only): #cloud-config YAML or any "
                                                    "user-data cloud-init accepts; others send user_data_text")
    user_data_text: SecretStr | None = Field(None, description=(
        "the user-data document itself (instead of a host file; at most 1 MiB): #cloud-config YAML (a mapping), "
        "a #! script, another cloud-init header, or a MIME multipart document. Write-only: never echoed"))
    ssh_authorized_keys: list[str] = Field(default_factory=list, max_length=64, description=(
        "OpenSSH public key lines for the default user (ssh-ed25519 AAAA... comment), besides ssh_key's file"))
    meta_data: str | None = Field(None, description="a host file (admins only): meta-data YAML; instance-id and "
                                                    "local-hostname are added when missing")
    ssh_key: str | None = Field(None, description="a host file (admins only) of public keys for the default "
                                                  "user; others send ssh_authorized_keys")
    hostname: str | None = Field(None, description="the guest's hostname (local-hostname), a DNS label; default: "
                                                   "made from the VM name")
    password: SecretStr | None = Field(None, exclude=True, description=(
        "the default user's password (write-only: hashed at once, never stored, logged or echoed)"))
    password_file: str | None = Field(None, description="a host file (admins only) whose first line is the "
                                                        "password; others send password")
    password_hash: str | None = Field(None, description="a SHA-512 or SHA-256 crypt hash ($6$... / $5$...)")
    eject: bool = Field(False, description="detach and delete the seed once the guest agent reports that "
                                           "cloud-init has finished (docs/cloud-init.md)")

    @field_validator("user_data", "meta_data", "ssh_key", "password_file")
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

        for field in ("user_data", "meta_data", "ssh_key", "password_file"):
            path = getattr(self, field)
            if path is None:
                continue
            what = field.replace("_", "-")
            try:
                _readable_file(path, what)
            except ValueError as err:
                raise InvalidInput(f"invalid cloud_init.{field}: {err}", hint="fix the path and try again") from None

    @field_validator("user_data_text")
    @classmethod
    def _user_data_text(cls, v: SecretStr | None) -> SecretStr | None:
        from kvmkit.spec.user_data import user_data_kind

        if v is not None:
            user_data_kind(v.get_secret_value())  # ValueError: the kind, size or YAML problem (never the text)
        return v

    @field_validator("ssh_authorized_keys")
    @classmethod
    def _keys(cls, v: list[str]) -> list[str]:
        from kvmkit.spec.user_data import validate_public_key

        out: list[str] = []
        for i, line in enumerate(v):
            try:
                key = validate_public_key(line)
            except ValueError as err:
                raise ValueError(f"ssh_authorized_keys[{i}]: {err}") from None
            if key not in out:
                out.append(key)
        return out

    @field_validator("hostname")
    @classmethod
    def _hostname(cls, v: str | None) -> str | None:
        return None if v is None else validate_hostname(v)

    @field_validator("password_hash")
    @classmethod
    def _hash_format(cls, v: str | None) -> str | None:
        if v is not None and not _HASH.match(v):
            raise ValueError("password-hash must be a SHA-512 ($6$...) or SHA-256 ($5$...) crypt hash, "
                             "e.g. from `openssl passwd -6`")
        return v

    @model_validator(mode="after")
    def _hash_the_password(self) -> CloudInitSpec:
        """Replace a clear password by its hash at once (no file is read here: ``password_file`` is read and
        hashed when the seed is rendered, after the caller's right to name host files was checked)."""
        given = [f for f in ("password", "password_file", "password_hash") if getattr(self, f) is not None]
        if len(given) > 1:
            raise ValueError("give one of password, password-file or password-hash")
        if self.user_data is not None and self.user_data_text is not None:
            raise ValueError("give user-data as a host file (user_data) or as text (user_data_text), not both")
        if self.password is not None:
            self.password_hash = hash_password(self.password.get_secret_value())
            self.password = None
        return self

    def resolved_password_hash(self) -> str | None:
        """The hash for the seed: ``password_hash``, or the hash of ``password_file``'s first line (read now)."""
        if self.password_hash is None and self.password_file is not None:
            return hash_password(_password_from_file(self.password_file))
        return self.password_hash
