"""Cloud-init given inline (``user_data_text``, ``ssh_authorized_keys``): what the spec accepts and refuses, and
that the seed it renders is laid out like the one from host files (real ssh-keygen keys, real openssl hashes)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from kvmkit.images import cloud_init
from kvmkit.spec.cloud_init import CloudInitSpec
from kvmkit.spec.user_data import MAX_TEXT_BYTES, user_data_kind, validate_public_key

pytestmark = pytest.mark.fast
PUB = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIP5adS3KQexugxXNgDWX3bqfPdY/cG2kGb8vahWfVtOF"


@pytest.fixture(scope="module")
def keypair(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    """(public key line, private key text) of a fresh ed25519 key."""
    d = tmp_path_factory.mktemp("key")
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "inline@kvmkit", "-f", str(d / "k")],
                   check=True)
    return (d / "k.pub").read_text().strip(), (d / "k").read_text()


def _errors(**fields: object) -> str:
    with pytest.raises(ValidationError) as info:
        CloudInitSpec(**fields)
    return " ".join(e["msg"] for e in info.value.errors())


def test_a_real_public_key_is_accepted_stripped_and_deduplicated(keypair) -> None:
    pub, _ = keypair
    spec = CloudInitSpec(ssh_authorized_keys=[pub + "\n", "  " + pub])
    assert spec.ssh_authorized_keys == [pub]
    assert validate_public_key(pub) == pub


@pytest.mark.parametrize("line, words", [
    ("not a key at all", "not an OpenSSH public key"),
    ("ssh-ed25519", "not an OpenSSH public key"),
    ("ssh-ed25519 !!!notbase64!!! c", "not base64"),
    ("ssh-rsa AAAAC3NzaC1lZDI1NTE5AAAAIP5adS3KQexugxXNgDWX3bqfPdY/cG2kGb8vahWfVtOF c", "does not hold a ssh-rsa"),
    ("ssh-ed25519 AAAA c\nssh-ed25519 AAAA d", "one line"),
])
def test_bad_key_lines_name_the_item_and_the_fix(line: str, words: str) -> None:
    msg = _errors(ssh_authorized_keys=[PUB, line])
    assert "ssh_authorized_keys[1]" in msg and words in msg, msg


def test_a_pasted_private_key_is_refused_without_being_echoed(keypair) -> None:
    _, private = keypair
    msg = _errors(ssh_authorized_keys=[private])
    assert "PRIVATE key" in msg and "public key" in msg
    body = private.splitlines()[1]
    assert body[:20] not in msg


def test_user_data_kinds() -> None:
    assert user_data_kind("#cloud-config\npackages: [htop]\n") == "cloud-config"
    assert user_data_kind("#cloud-config\n") == "cloud-config"
    assert user_data_kind("#!/bin/sh\necho hi\n") == "#!"
    assert user_data_kind("## template: jinja\n#cloud-config\n") == "## template: jinja"
    multipart = ('Content-Type: multipart/mixed; boundary="XX"\nMIME-Version: 1.0\n\n--XX\n'
                 'Content-Type: text/cloud-config\n\n#cloud-config\nhostname: a\n--XX--\n')
    assert user_data_kind(multipart) == "multipart"


@pytest.mark.parametrize("text, words", [
    ("#cloud-config\n- a\n- b\n", "not a YAML mapping"),
    ("#cloud-config\njust a string\n", "not a YAML mapping"),
    ("#cloud-config\nkey: [unclosed\n", "not valid YAML at line"),
    ("hello: world\n", "first line is not one cloud-init reads"),
    ("Content-Type: text/plain\n\nhi\n", "not a multipart document"),
    ("#!/bin/sh\necho \x00\n", "NUL"),
])
def test_bad_user_data_says_what_is_wrong_never_the_text(text: str, words: str) -> None:
    msg = _errors(user_data_text=text)
    assert words in msg, msg
    assert "unclosed" not in msg and "world" not in msg


def test_oversize_user_data_is_refused() -> None:
    text = "#!/bin/sh\n" + "#" * MAX_TEXT_BYTES
    msg = _errors(user_data_text=text)
    assert f"the limit is {MAX_TEXT_BYTES} bytes" in msg


def test_file_and_text_together_are_refused(tmp_path: Path) -> None:
    msg = _errors(user_data=str(tmp_path / "u"), user_data_text="#cloud-config\n")
    assert "not both" in msg


def test_user_data_text_is_write_only() -> None:
    spec = CloudInitSpec(user_data_text="#cloud-config\nruncmd: [secret-cmd]\n", password="pw-Inline-1")
    assert "secret-cmd" not in repr(spec) and "secret-cmd" not in spec.model_dump_json()
    assert "pw-Inline-1" not in spec.model_dump_json() and spec.password is None
    assert spec.password_hash and spec.password_hash.startswith("$6$")
    again = CloudInitSpec.model_validate(spec.model_dump())  # the API's dump and re-validate keeps the text
    assert again.user_data_text is not None and "secret-cmd" in again.user_data_text.get_secret_value()


def test_inline_seed_is_laid_out_like_the_file_seed(tmp_path: Path, keypair) -> None:
    pub, _ = keypair
    doc = "#cloud-config\npackages: [htop]\n"
    (tmp_path / "ud").write_text(doc)
    (tmp_path / "k.pub").write_text(pub + "\n")
    (tmp_path / "pw").write_text("pw-Same-1\n")
    by_file = cloud_init.render(CloudInitSpec(user_data=str(tmp_path / "ud"), ssh_key=str(tmp_path / "k.pub"),
                                              password_file=str(tmp_path / "pw"), hostname="web-1", eject=True), "v")
    inline = cloud_init.render(CloudInitSpec(user_data_text=doc, ssh_authorized_keys=[pub], password="pw-Same-1",
                                             hostname="web-1", eject=True), "v")
    a, b = (yaml.safe_load(f["user-data"]) for f in (by_file, inline))
    assert a["password"].startswith("$6$") and b["password"].startswith("$6$")  # salted: differ, both hashes
    a.pop("password"), b.pop("password")
    for files, config in ((by_file, a), (inline, b)):  # the meta-data copy names each seed's own instance-id
        assert files["user-data"].startswith(b"#cloud-config\n")
        for wf in config["write_files"]:
            wf.pop("content")
    assert a == b and b["ssh_authorized_keys"] == [pub] and b["packages"] == ["htop"]
    assert b"pw-Same-1" not in inline["user-data"]
    assert yaml.safe_load(inline["meta-data"])["local-hostname"] == "web-1"


def test_a_script_cannot_take_keys_and_the_error_names_the_text() -> None:
    from kvmkit.errors import InvalidInput

    spec = CloudInitSpec(user_data_text="#!/bin/sh\necho hi\n", ssh_authorized_keys=[PUB])
    with pytest.raises(InvalidInput) as info:
        cloud_init.render(spec, "v")
    assert "the user-data text does not start with #cloud-config" in info.value.message
    assert cloud_init.render(CloudInitSpec(user_data_text="#!/bin/sh\necho hi\n"), "v")["user-data"] == \
        b"#!/bin/sh\necho hi\n"  # passed through as written
