"""``kvmkit serve --tls-cert --tls-key`` serves HTTPS and marks the session cookie Secure."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.api.server import Server

pytestmark = pytest.mark.guest


def test_tls_server_sets_secure_cookie(tmp_path: Path) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1",
                    "-days", "1", "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    srv = Server("sqlite", tls=(str(cert), str(key)))
    srv.cli("user", "add", "admin", "--role", "admin", "--password-stdin", stdin="admin-pass-123\n")
    srv.start()
    try:
        assert srv.url.startswith("https://")
        with srv.client() as c:
            r = c.post("/api/v1/auth/login", json={"name": "admin", "password": "admin-pass-123"})
            assert r.status_code == 200, r.text
            cookie = next(h for h in r.headers.get_list("set-cookie") if h.startswith("kvmkit_session="))
            assert "Secure" in cookie and "HttpOnly" in cookie
    finally:
        srv.cleanup()
