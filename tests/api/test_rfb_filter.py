"""The view-only RFB filter (api/rfb_filter.py) on byte streams built here: input messages are dropped,
the others forwarded byte for byte, in any chunking; the shared flag is forced; what it cannot parse is
refused. The guest-level proof (key presses not reaching a real guest) is in test_console_vnc.py."""

from __future__ import annotations

import struct

import pytest

from kvmkit.api.rfb_filter import RfbRefused, ViewOnlyFilter

pytestmark = pytest.mark.fast

HANDSHAKE = b"RFB 003.008\n" + b"\x01" + b"\x01"
PIXEL_FORMAT = b"\x00\x00\x00\x00" + bytes(range(16))
ENCODINGS = struct.pack(">BxH", 2, 3) + struct.pack(">iii", 0, -223, 0x574D5664)
UPDATE = struct.pack(">BBHHHH", 3, 1, 0, 0, 720, 400)
AUDIO = struct.pack(">BBH", 255, 1, 0) + struct.pack(">BBHBBI", 255, 1, 2, 3, 2, 44100)
KEY = struct.pack(">BBHI", 4, 1, 0, ord("a"))
POINTER = struct.pack(">BBHH", 5, 1, 10, 20)
CUT = struct.pack(">BxxxI", 6, 5) + b"hello"
CUT_EXT = struct.pack(">Bxxxi", 6, -8) + struct.pack(">I", 1 << 24) + b"abcd"
EXT_KEY = struct.pack(">BBHII", 255, 0, 1, 0x61, 0x1E)
XVP = struct.pack(">BxBB", 250, 1, 4)
RESIZE = struct.pack(">BxHHBx", 251, 1024, 768, 1) + bytes(16)
SAFE = PIXEL_FORMAT + ENCODINGS + UPDATE + AUDIO
INPUT = [KEY, POINTER, CUT, CUT_EXT, EXT_KEY, XVP, RESIZE]


def _run(stream: bytes, chunk: int) -> tuple[bytes, ViewOnlyFilter]:
    f = ViewOnlyFilter()
    out = b"".join(f.feed(stream[i:i + chunk]) for i in range(0, len(stream), chunk))
    return out, f


@pytest.mark.parametrize("chunk", [1, 2, 3, 5, 7, 64, 10_000])
def test_input_is_dropped_and_the_rest_kept_in_any_chunking(chunk: int) -> None:
    stream = HANDSHAKE + b"".join(m + SAFE for m in INPUT)
    out, f = _run(stream, chunk)
    assert out == HANDSHAKE + SAFE * len(INPUT)
    assert f.dropped == len(INPUT) and f.forwarded == 5 * len(INPUT)  # SAFE holds five messages


def test_exclusive_access_is_turned_into_shared() -> None:
    out, _f = _run(b"RFB 003.008\n\x01\x00" + UPDATE, 100)
    assert out == b"RFB 003.008\n\x01\x01" + UPDATE  # a viewer cannot make QEMU drop the other clients


@pytest.mark.parametrize("version", [b"RFB 003.003\n", b"RFB 003.005\n"])
def test_old_protocol_versions_have_no_security_byte(version: bytes) -> None:
    out, f = _run(version + b"\x00" + KEY + UPDATE, 1)
    assert out == version + b"\x01" + UPDATE and f.dropped == 1


def test_a_message_split_over_frames_waits_for_its_end() -> None:
    f = ViewOnlyFilter()
    assert f.feed(HANDSHAKE) == HANDSHAKE
    assert f.feed(ENCODINGS[:3]) == b"" and f.feed(ENCODINGS[3:9]) == b""
    assert f.feed(ENCODINGS[9:] + KEY[:4]) == ENCODINGS
    assert f.feed(KEY[4:]) == b"" and f.dropped == 1


@pytest.mark.parametrize("bad", [b"\x07", b"\x96" + bytes(9), struct.pack(">BB", 255, 9),
                                 struct.pack(">BBH", 255, 1, 5)])
def test_what_cannot_be_parsed_is_refused(bad: bytes) -> None:
    f = ViewOnlyFilter()
    f.feed(HANDSHAKE)
    with pytest.raises(RfbRefused):
        f.feed(bad + bytes(16))


def test_not_rfb_and_oversized_messages_are_refused() -> None:
    with pytest.raises(RfbRefused, match="not an RFB protocol version"):
        ViewOnlyFilter().feed(b"GET / HTTP/1.1\r\n")
    f = ViewOnlyFilter()
    f.feed(HANDSHAKE)
    with pytest.raises(RfbRefused, match="more than"):
        f.feed(struct.pack(">BxxxI", 6, 64 << 20))
