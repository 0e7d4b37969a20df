"""The view-only filter of the graphical console: what a viewer's browser sends to QEMU's VNC server,
parsed message by message, with every input message dropped.

The relay (api/routes/console_vnc.py) hands QEMU a socket on which libvirt skipped VNC authentication, so
the server offers exactly one security type, None. The client->server stream is then (RFC 6143):

1. ProtocolVersion: 12 bytes, ``RFB 003.00N\\n``.
2. The chosen security type: 1 byte, only for versions 3.7 and 3.8 (3.3 -- and 3.4/3.5, which servers
   treat as 3.3 -- let the server choose).
3. ClientInit: 1 byte, the shared flag. A view-only client always gets 1 here: an "exclusive" request
   would make QEMU disconnect every other client (the operator's session included).
4. Client messages, each a type byte and a length that follows from its header:

   ======  ===========================  ====================================  =========
   type    message                      length                                view-only
   ======  ===========================  ====================================  =========
   0       SetPixelFormat               20                                    forwarded
   2       SetEncodings                 4 + 4 * U16 at offset 2               forwarded
   3       FramebufferUpdateRequest     10                                    forwarded
   4       KeyEvent                     8                                     dropped
   5       PointerEvent                 6                                     dropped
   6       ClientCutText                8 + abs(S32 at 4) (negative: the      dropped
                                        extended clipboard)
   250     xvp (power control)          4                                     dropped
   251     SetDesktopSize               8 + 16 * U8 at offset 6               dropped
   255/0   QEMU extended key event      12                                    dropped
   255/1   QEMU audio (0/1: 4, 2: 10)   4 or 10                               forwarded
   ======  ===========================  ====================================  =========

   Anything else has no length the filter could know (QEMU itself closes the connection on it), so the
   filter refuses the stream (:class:`RfbRefused`) instead of guessing where the next message starts.

Interface: ``f = ViewOnlyFilter(); safe = f.feed(chunk)`` -> the bytes to forward (possibly empty: an
incomplete message waits for the next chunk); ``f.dropped`` counts the input messages dropped.
"""

from __future__ import annotations

import struct

MAX_MESSAGE = 8 + (1 << 20)  # QEMU refuses a ClientCutText over 1 MiB; nothing legitimate is longer
FORWARD = "forward"
DROP = "drop"


class RfbRefused(Exception):
    """The client sent something the filter cannot parse: close the console."""


def _need(buf: bytes | bytearray) -> tuple[int, str] | None:
    """(length, action) of the client message at the start of ``buf``; None while its header is incomplete."""
    kind = buf[0]
    if kind == 0:
        return 20, FORWARD
    if kind == 2:
        if len(buf) < 4:
            return None
        return 4 + 4 * struct.unpack_from(">H", buf, 2)[0], FORWARD
    if kind == 3:
        return 10, FORWARD
    if kind == 4:
        return 8, DROP
    if kind == 5:
        return 6, DROP
    if kind == 6:
        if len(buf) < 8:
            return None
        return 8 + abs(struct.unpack_from(">i", buf, 4)[0]), DROP
    if kind == 250:
        return 4, DROP
    if kind == 251:
        if len(buf) < 8:
            return None
        return 8 + 16 * buf[6], DROP
    if kind == 255:
        if len(buf) < 2:
            return None
        sub = buf[1]
        if sub == 0:
            return 12, DROP
        if sub == 1:
            if len(buf) < 4:
                return None
            op = struct.unpack_from(">H", buf, 2)[0]
            if op in (0, 1):
                return 4, FORWARD
            if op == 2:
                return 10, FORWARD
            raise RfbRefused(f"unknown QEMU audio operation {op}")
        raise RfbRefused(f"unknown QEMU client message {sub}")
    raise RfbRefused(f"unknown RFB client message type {kind}")


class ViewOnlyFilter:
    """Incremental: feed it the client's bytes as they come (any chunking); it returns what may go on."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self._stage = "version"
        self._minor = 8
        self.dropped = 0
        self.forwarded = 0

    def feed(self, data: bytes) -> bytes:
        self._buf += data
        out = bytearray()
        while self._buf:
            if self._stage == "version":
                if len(self._buf) < 12:
                    break
                head = bytes(self._buf[:12])
                if not (head.startswith(b"RFB 003.") and head.endswith(b"\n") and head[8:11].isdigit()):
                    raise RfbRefused(f"not an RFB protocol version: {head!r}")
                self._minor = int(head[8:11])
                out += head
                del self._buf[:12]
                self._stage = "init" if self._minor in (3, 4, 5) else "security"
            elif self._stage == "security":
                out += self._buf[:1]
                del self._buf[:1]
                self._stage = "init"
            elif self._stage == "init":
                out += b"\x01"  # shared: never disconnect the other clients
                del self._buf[:1]
                self._stage = "messages"
            else:
                need = _need(self._buf)
                if need is None:
                    break
                length, action = need
                if length > MAX_MESSAGE:
                    raise RfbRefused(f"RFB client message of {length} bytes (more than {MAX_MESSAGE})")
                if len(self._buf) < length:
                    break
                if action == FORWARD:
                    out += self._buf[:length]
                    self.forwarded += 1
                else:
                    self.dropped += 1
                del self._buf[:length]
        return bytes(out)
