"""kvmkit's XML model over libvirt's own test XML (1,601 domain documents of libvirt 9.0.0, fetched and
cached by tests/xml/corpus.py; the checks are in tests/xml/corpus_edits.py).

Every document is read, round-tripped unchanged, and gets every edit family and the clone
transformation; nothing may turn a document libvirt's RNG or test driver accepts into one they refuse.
The run happens once per session (spread over worker processes); its numbers are printed at the end of
the session (tests/xml/conftest.py).
"""

from __future__ import annotations

import pytest

from tests.xml import corpus_edits
from tests.xml.corpus_edits import FAMILIES, Results

RESULTS: list[Results] = []  # read by the terminal summary


@pytest.fixture(scope="module")
def results() -> Results:
    res = corpus_edits.run()
    RESULTS.append(res)
    return res


@pytest.mark.fast
def test_corpus_is_the_pinned_libvirt_release(results):
    assert results.documents >= 1500  # 1,601 in libvirt 9.0.0's qemuxml2argv/qemuxml2xmlout/genericxml2xml data
    assert results.rng_valid > 0.9 * results.documents and results.defined > 0.9 * results.documents


@pytest.mark.fast
def test_every_document_is_read(results):
    assert results.unreadable == []


@pytest.mark.fast
def test_no_op_round_trip_changes_nothing(results):
    assert results.changed_by_noop == []
    assert results.identical == results.documents


@pytest.mark.fast
@pytest.mark.parametrize("family", [*FAMILIES, "clone"])
def test_edits_keep_valid_documents_valid(results, family):
    tally = results.families[family]
    assert tally.edits > 0
    assert tally.broken == [], "\n".join(f"{e} {d}: {why}" for d, e, why in tally.broken[:20])


@pytest.mark.fast
def test_extraction_takes_only_domain_xml_files(tmp_path):
    """Only regular *.xml files of the listed directories come out of the tarball: no links, no other paths."""
    import io
    import tarfile

    from tests.xml import corpus

    tarball = tmp_path / "t.tar.xz"
    with tarfile.open(tarball, "w:xz") as tar:
        def add(name: str, data: bytes = b"<domain/>", kind: bytes = tarfile.REGTYPE) -> None:
            info = tarfile.TarInfo(name)
            info.type, info.size = kind, len(data) if kind == tarfile.REGTYPE else 0
            if kind == tarfile.SYMTYPE:
                info.linkname = "/etc/passwd"
            tar.addfile(info, io.BytesIO(data) if kind == tarfile.REGTYPE else None)
        add(f"{corpus.TOP}tests/qemuxml2argvdata/a.xml")
        add(f"{corpus.TOP}tests/qemuxml2argvdata/a.args", b"-x")
        add(f"{corpus.TOP}tests/qemuxml2argvdata/link.xml", kind=tarfile.SYMTYPE)
        add(f"{corpus.TOP}tests/qemuxml2argvdata/../../../evil.xml")
        add(f"{corpus.TOP}src/conf/domain_conf.xml")
    done = tmp_path / "out"
    corpus._extract(tarball, done)
    assert sorted(str(p.relative_to(done)) for p in done.rglob("*")) == [
        ".complete", "qemuxml2argvdata", "qemuxml2argvdata/a.xml"]
