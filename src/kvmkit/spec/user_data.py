"""Checks of cloud-init content given inline (``CloudInitSpec.user_data_text``, ``ssh_authorized_keys``): what a
NoCloud seed's user-data may be, and what an OpenSSH public key line is. Used while a spec is validated and by
the seed renderer for key files (kvmkit.images.cloud_init), so both paths accept the same things.

User-data kinds cloud-init takes as text, by their first line: ``#cloud-config`` (YAML; checked here to be a
mapping), a MIME multipart document (``Content-Type: multipart/...``, parsed here), a script (``#!``),
``#include``, ``#cloud-boothook``, ``#part-handler``, ``#cloud-config-archive`` and a Jinja template
(``## template: jinja``, not parsed: it is rendered in the guest). Anything else cloud-init would ignore, so it
is refused. Gzip-compressed user-data is binary, not text: give it as a host file.
"""

from __future__ import annotations

import base64
import binascii
import email
import email.policy

CLOUD_CONFIG = "#cloud-config"
MAX_TEXT_BYTES = 1024 * 1024  # as for seed files: NoCloud seeds carry configuration, not payloads
MAX_KEYS = 64
MAX_KEY_LINE = 16 * 1024  # an RSA-16384 public key line is ~2.8 KiB; certificates more
_HEADERS = ("#!", "#include", "#cloud-boothook", "#part-handler", "#cloud-config-archive", "## template: jinja")
KEY_TYPES = ("ssh-ed25519", "ssh-rsa", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384", "ecdsa-sha2-nistp521",
             "sk-ssh-ed25519@openssh.com", "sk-ecdsa-sha2-nistp256@openssh.com", "ssh-dss")
_KINDS_HINT = ("start it with #cloud-config (YAML), #! (a script) or another cloud-init header, or send a MIME "
               "multipart document")


def user_data_kind(text: str) -> str:
    """'cloud-config', 'multipart' or the header (e.g. '#!') of a user-data text; ValueError naming what is wrong."""
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > MAX_TEXT_BYTES:
        raise ValueError(f"the user-data is {size} bytes; the limit is {MAX_TEXT_BYTES} bytes")
    if "\x00" in text:
        raise ValueError("the user-data contains a NUL character; send text")
    first = text.split("\n", 1)[0].rstrip("\r")
    if first.rstrip() == CLOUD_CONFIG:
        _cloud_config(text)
        return "cloud-config"
    if first.lower().startswith(("content-type:", "mime-version:")):
        _multipart(text)
        return "multipart"
    for header in _HEADERS:
        if first.startswith(header):
            return header
    raise ValueError(f"the user-data's first line is not one cloud-init reads; {_KINDS_HINT}")


def _cloud_config(text: str) -> None:
    import yaml

    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ValueError(f"the #cloud-config user-data is not valid YAML{where}; check indentation and quoting") \
            from None
    if data is not None and not isinstance(data, dict):
        raise ValueError("the #cloud-config user-data is not a YAML mapping; write it as key: value lines")


def _multipart(text: str) -> None:
    msg = email.message_from_string(text, policy=email.policy.default)
    if not msg.is_multipart():
        raise ValueError("the user-data has MIME headers but is not a multipart document; give Content-Type: "
                         "multipart/mixed with a boundary")
    parts = list(msg.iter_parts())  # type: ignore[attr-defined]
    if not parts or msg.defects:
        raise ValueError("the multipart user-data has no parts or a broken structure; check the boundary lines")


def validate_public_key(line: str) -> str:
    """One OpenSSH public key line (``TYPE BASE64 [COMMENT]``, as in ~/.ssh/id_ed25519.pub), stripped; ValueError
    naming what is wrong. The key data must be base64 whose first field names the same key type."""
    if not isinstance(line, str):
        raise ValueError("an SSH key must be a string")
    key = line.strip()
    if "PRIVATE KEY" in key:
        raise ValueError("this is a PRIVATE key; give the public key (the .pub file's line)")
    if len(key) > MAX_KEY_LINE:
        raise ValueError(f"the SSH key line is {len(key)} characters; at most {MAX_KEY_LINE}")
    if any(c in key for c in "\r\n\x00"):
        raise ValueError("an SSH key is one line; give each key as its own list item")
    fields = key.split(None, 2)
    if len(fields) < 2 or fields[0] not in KEY_TYPES:
        raise ValueError("this is not an OpenSSH public key line; give a line like the contents of "
                         "~/.ssh/id_ed25519.pub (ssh-ed25519 AAAA... comment)")
    try:
        blob = base64.b64decode(fields[1], validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"the key data of this {fields[0]} key is not base64; copy the whole line of the .pub "
                         "file") from None
    n = int.from_bytes(blob[:4], "big") if len(blob) >= 4 else -1
    if n < 0 or blob[4:4 + n] != fields[0].encode():
        raise ValueError(f"the key data does not hold a {fields[0]} key; copy the whole line of the .pub file")
    return key
