"""Log in to a SPICE server's main channel with a password, as remote-viewer does, to prove a password
works (tests of the ``.vv`` files). Written for kvmkit's tests from the SPICE protocol description: the
link message, the server's RSA public key (1024-bit, X.509 SubjectPublicKeyInfo), the password encrypted
with RSA-OAEP (SHA-1, its terminating NUL included), then the server's link result (0: OK, 7: permission
denied). Pure Python: the standard library has no RSA, the arithmetic is a few lines.
"""

from __future__ import annotations

import hashlib
import os
import socket
import struct

MAGIC = b"REDQ"
MAIN_CHANNEL = 1
PUBKEY_BYTES = 162
LINK_OK, LINK_PERMISSION_DENIED = 0, 7


def _der(data: bytes, pos: int) -> tuple[int, bytes, int]:
    """(tag, value, position after) of the DER element at ``pos``."""
    tag, length = data[pos], data[pos + 1]
    pos += 2
    if length & 0x80:
        n = length & 0x7F
        length = int.from_bytes(data[pos:pos + n], "big")
        pos += n
    return tag, data[pos:pos + length], pos + length


def rsa_key(spki: bytes) -> tuple[int, int]:
    """(modulus, exponent) of an RSA SubjectPublicKeyInfo."""
    _t, body, _ = _der(spki, 0)               # SEQUENCE
    _t, _alg, pos = _der(body, 0)             # AlgorithmIdentifier
    _t, bits, _ = _der(body, pos)             # BIT STRING: unused-bits byte, RSAPublicKey
    _t, key, _ = _der(bits[1:], 0)            # SEQUENCE
    _t, n, pos = _der(key, 0)
    _t, e, _ = _der(key, pos)
    return int.from_bytes(n, "big"), int.from_bytes(e, "big")


def _mgf1(seed: bytes, length: int) -> bytes:
    out = b""
    counter = 0
    while len(out) < length:
        out += hashlib.sha1(seed + counter.to_bytes(4, "big")).digest()
        counter += 1
    return out[:length]


def oaep_encrypt(n: int, e: int, message: bytes) -> bytes:
    k = (n.bit_length() + 7) // 8
    h = hashlib.sha1(b"").digest()
    if len(message) > k - 2 * len(h) - 2:
        raise ValueError("message too long for the key")
    db = h + b"\x00" * (k - len(message) - 2 * len(h) - 2) + b"\x01" + message
    seed = os.urandom(len(h))
    masked_db = bytes(a ^ b for a, b in zip(db, _mgf1(seed, len(db)), strict=True))
    masked_seed = bytes(a ^ b for a, b in zip(seed, _mgf1(masked_db, len(h)), strict=True))
    em = b"\x00" + masked_seed + masked_db
    return pow(int.from_bytes(em, "big"), e, n).to_bytes(k, "big")


def _read(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise EOFError(f"the SPICE server closed after {len(data)} of {n} bytes")
        data += chunk
    return data


def login(host: str, port: int, password: str, timeout: float = 30) -> int:
    """The SPICE link result for ``password`` on the main channel: LINK_OK or an error code."""
    with socket.create_connection((host, port), timeout=timeout) as sock:
        mess = struct.pack("<IBBIII", 0, MAIN_CHANNEL, 0, 0, 0, 18)  # no capabilities: plain ticket auth
        sock.sendall(MAGIC + struct.pack("<III", 2, 2, len(mess)) + mess)
        magic, major, _minor, size = struct.unpack("<4sIII", _read(sock, 16))
        assert magic == MAGIC and major == 2, (magic, major)
        reply = _read(sock, size)
        error = struct.unpack_from("<I", reply, 0)[0]
        if error:
            return int(error)
        n, e = rsa_key(reply[4:4 + PUBKEY_BYTES])
        sock.sendall(oaep_encrypt(n, e, password.encode() + b"\x00"))
        return int(struct.unpack("<I", _read(sock, 4))[0])
