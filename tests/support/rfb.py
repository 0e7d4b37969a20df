"""A small RFB (VNC) client for tests: the handshake with security type None (what kvmkit's relay offers),
ServerInit, and key events typed as a person with a US keyboard would (Shift held for capitals and symbols).

It runs over any byte transport: ``RfbClient(send, recv)`` where ``send(bytes)`` writes and ``recv()``
returns the next chunk (a WebSocket frame, a socket read). Written for kvmkit's tests from RFC 6143.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass

SHIFT_L, RETURN = 0xFFE1, 0xFF0D
_SHIFTED = '~!@#$%^&*()_+{}|:"<>?'


@dataclass
class ServerInit:
    width: int
    height: int
    name: str


def keysyms_for(text: str) -> list[tuple[int, bool]]:
    """(keysym, needs Shift) for each character: Latin-1 keysyms are the code points; newline is Return."""
    out = []
    for ch in text:
        if ch == "\n":
            out.append((RETURN, False))
        elif ch.isascii() and ch.isprintable():
            out.append((ord(ch), ch.isupper() or ch in _SHIFTED))
        else:
            raise ValueError(f"cannot type {ch!r} on a US keyboard")
    return out


class RfbClient:
    def __init__(self, send: Callable[[bytes], None], recv: Callable[[], bytes]) -> None:
        self._send, self._recv = send, recv
        self._buf = b""

    def read(self, n: int) -> bytes:
        while len(self._buf) < n:
            chunk = self._recv()
            if not chunk:
                raise EOFError(f"the server closed after {len(self._buf)} of {n} bytes")
            self._buf += chunk
        data, self._buf = self._buf[:n], self._buf[n:]
        return data

    def handshake(self, shared: bool = True) -> ServerInit:
        version = self.read(12)
        assert version.startswith(b"RFB 003."), version
        self._send(b"RFB 003.008\n")
        count = self.read(1)[0]
        types = list(self.read(count))
        if 1 not in types:
            raise AssertionError(f"the server offers security types {types}, not None (1)")
        self._send(b"\x01")
        result = struct.unpack(">I", self.read(4))[0]
        if result != 0:
            raise AssertionError(f"security result {result}")
        self._send(b"\x01" if shared else b"\x00")
        width, height = struct.unpack(">HH", self.read(4))
        self.read(16)  # pixel format
        name_len = struct.unpack(">I", self.read(4))[0]
        return ServerInit(width, height, self.read(name_len).decode(errors="replace"))

    def key(self, keysym: int, down: bool) -> None:
        self._send(struct.pack(">BBHI", 4, 1 if down else 0, 0, keysym))

    def type(self, text: str) -> None:
        """Key presses for ``text`` (ASCII and newlines), each a down and an up, Shift where needed."""
        msgs = b""
        for sym, shift in keysyms_for(text):
            press = struct.pack(">BBHI", 4, 1, 0, sym) + struct.pack(">BBHI", 4, 0, 0, sym)
            if shift:
                press = struct.pack(">BBHI", 4, 1, 0, SHIFT_L) + press + struct.pack(">BBHI", 4, 0, 0, SHIFT_L)
            msgs += press
        self._send(msgs)

    def pointer(self, x: int, y: int, buttons: int = 0) -> None:
        self._send(struct.pack(">BBHH", 5, buttons, x, y))

    def cut_text(self, text: str) -> None:
        data = text.encode("latin-1")
        self._send(struct.pack(">BxxxI", 6, len(data)) + data)

    def update_request(self, width: int, height: int, incremental: bool = False) -> None:
        self._send(struct.pack(">BBHHHH", 3, 1 if incremental else 0, 0, 0, width, height))
