"""Third-party domain XML for the corpus tests: libvirt's own test documents, fetched at test time.

Nothing of libvirt's is kept in this repository. The first run downloads the libvirt source tarball that
Debian 12 ships (the same 9.0.0 release as the host's libvirtd and its RNG schemas) from Debian's archive,
checks it against the sha256 pinned here (copied from the Checksums-Sha256 field of Debian's
libvirt_9.0.0-4+deb12u2.dsc, which the fetch also reads and compares when the archive still has it),
and extracts only the domain XML directories into ``<data>/cache/corpus/<sha256>/``. Later runs read
the cache; a partial extraction is never seen (it is renamed into place when complete), and concurrent
test processes wait on a lock instead of downloading twice.

Checks the corpus tests share: ``rng_problems`` (libvirt's domain.rng through lxml) and ``TestDriver``
(defining on ``test:///default``, which parses and post-validates like the real drivers).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
import tarfile
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import libvirt
from lxml import etree

from kvmkit.config import cache_dir

ARCHIVE = "http://deb.debian.org/debian/pool/main/libv/libvirt/"
TARBALL = "libvirt_9.0.0.orig.tar.xz"
SHA256 = "deca5cff1b7baac297bca9663907c61f71a47183371dc7ac019c107806d5435a"
SIZE = 9007104
DSC = "libvirt_9.0.0-4%2Bdeb12u2.dsc"   # where SHA256 came from (gone once Debian ships a newer revision)
TOP = "libvirt-9.0.0/"
# Directories of libvirt's tests whose *.xml files are <domain> documents (inputs and expected outputs
# of the qemu driver's parse/format tests, and of the driver-independent ones).
DIRS = ("tests/qemuxml2argvdata", "tests/qemuxml2xmloutdata", "tests/genericxml2xmlindata")
SCHEMA = "/usr/share/libvirt/schemas/domain.rng"


@dataclass(frozen=True)
class Doc:
    name: str      # e.g. qemuxml2argvdata/minimal.xml
    xml: str


def root() -> Path:
    """The extracted corpus directory (downloaded and extracted on first use)."""
    base = Path(os.environ.get("KVMKIT_CORPUS_DIR") or cache_dir("corpus"))
    base.mkdir(parents=True, exist_ok=True)
    done = base / SHA256
    if (done / ".complete").is_file():
        return done
    with _locked(base / ".lock"):
        if not (done / ".complete").is_file():
            tarball = _download(base)
            _extract(tarball, done)
            tarball.unlink()
    return done


def documents() -> list[Doc]:
    """Every domain document of the corpus, sorted by directory and name (deterministic)."""
    top = root()
    docs = []
    for d in DIRS:
        for path in sorted((top / Path(d).name).glob("*.xml")):
            text = path.read_text(encoding="utf-8", errors="replace")
            try:
                tag = etree.fromstring(text.encode()).tag
            except etree.XMLSyntaxError:
                continue  # a few inputs are deliberately broken
            if tag == "domain":
                docs.append(Doc(f"{path.parent.name}/{path.name}", text))
    return docs


def names() -> list[str]:
    return [d.name for d in documents()]


def load(names: list[str]) -> list[Doc]:
    top = root()
    return [Doc(n, (top / n).read_text(encoding="utf-8", errors="replace")) for n in names]


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _download(base: Path) -> Path:
    _check_dsc()
    dst = base / f"{TARBALL}.part"
    h = hashlib.sha256()
    with urllib.request.urlopen(ARCHIVE + TARBALL, timeout=120) as resp, open(dst, "wb") as out:
        while block := resp.read(1 << 20):
            h.update(block)
            out.write(block)
    if h.hexdigest() != SHA256 or dst.stat().st_size != SIZE:
        dst.unlink()
        raise RuntimeError(f"{ARCHIVE}{TARBALL}: sha256 {h.hexdigest()} is not the pinned {SHA256}")
    return dst


def _check_dsc() -> None:
    """When Debian's .dsc is still published, it must list the pinned checksum (else the pin is stale)."""
    try:
        with urllib.request.urlopen(ARCHIVE + DSC, timeout=60) as resp:
            text = resp.read().decode(errors="replace")
    except OSError:
        return  # superseded by a newer Debian revision: the pinned sha256 alone decides
    if f"{SHA256} {SIZE} {TARBALL}" not in text:
        raise RuntimeError(f"{ARCHIVE}{DSC} does not list {TARBALL} with sha256 {SHA256}")


def _extract(tarball: Path, done: Path) -> None:
    """Extract only DIRS' *.xml regular files (never links, never paths outside) into ``done``."""
    tmp = done.with_name(done.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    wanted = {TOP + d + "/": Path(d).name for d in DIRS}
    with tarfile.open(tarball, "r:xz") as tar:
        for member in tar:
            head, _, leaf = member.name.rpartition("/")
            sub = wanted.get(head + "/")
            if sub is None or not member.isfile() or not leaf.endswith(".xml") or leaf.startswith("."):
                continue
            src = tar.extractfile(member)
            assert src is not None
            (tmp / sub).mkdir(parents=True, exist_ok=True)
            (tmp / sub / leaf).write_bytes(src.read())
    (tmp / ".complete").write_text(f"{TARBALL} {SHA256}\n")
    shutil.rmtree(done, ignore_errors=True)
    tmp.rename(done)


# ---------------------------------------------------------------- checks


_schema: etree.RelaxNG | None = None


def rng_problems(xml: str) -> str | None:
    """The first problem libvirt's domain.rng finds in ``xml``, or None when it is valid."""
    global _schema
    if _schema is None:
        _schema = etree.RelaxNG(etree.parse(SCHEMA))
    if _schema.validate(etree.fromstring(xml.encode())):
        return None
    err = _schema.error_log.last_error
    return f"line {err.line}: {err.message}" if err is not None else "invalid"


def _quiet(_ctx: object, _err: object) -> None:
    return None


class TestDriver:
    """Define documents on libvirt's in-process test driver (test:///default) and undefine them again.

    Documents are defined under one fixed name (and without their UUID if the driver's own 'test' domain
    has it), each undefined again at once; the same is done to an original and its edit.
    """

    __test__ = False  # not a pytest test class
    NAME = "kvmkit-corpus-doc"

    def __init__(self) -> None:
        libvirt.registerErrorHandler(_quiet, None)
        self.conn = libvirt.open("test:///default")

    def close(self) -> None:
        self.conn.close()

    def define(self, xml: str) -> str | None:
        """None when the test driver accepts ``xml``, else its error.

        Without VIR_DOMAIN_DEFINE_VALIDATE: that flag only adds the same domain.rng check (``rng_problems``
        runs it once per document, where libvirt would load the schema again for every define)."""
        root = etree.fromstring(xml.encode())
        name = root.find("name")
        if name is not None:
            name.text = self.NAME
        for uuid in root.findall("uuid"):
            with contextlib.suppress(libvirt.libvirtError):
                self.conn.lookupByUUIDString((uuid.text or "").strip())
                root.remove(uuid)
        try:
            dom = self.conn.defineXMLFlags(etree.tostring(root, encoding="unicode"), 0)
        except libvirt.libvirtError as err:
            return str(err)
        dom.undefine()
        return None
