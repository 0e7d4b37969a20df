"""Mount the portal on the API application: ``/`` serves the page, ``/static/...`` its assets.

The portal is a static single-page application (docs/portal.md): HTML, ES modules, CSS and JSON message
catalogs under ``static/``, with the pinned libraries that ``scripts/setup.sh`` vendors into
``static/vendor/``. Assets are served with a validator (ETag from size and modification time) and gzip
when the browser accepts it (compressed once per file version and kept in memory); ``Cache-Control:
no-cache`` makes the browser revalidate, so a new version is seen at the next load without stale modules.
"""

from __future__ import annotations

import gzip
import mimetypes
import threading
from importlib import resources
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import Response

STATIC = Path(str(resources.files("kvmkit.web").joinpath("static")))
TYPES = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8",
         ".json": "application/json", ".html": "text/html; charset=utf-8", ".svg": "image/svg+xml",
         ".png": "image/png", ".txt": "text/plain; charset=utf-8"}
COMPRESS = {".js", ".css", ".json", ".html", ".svg", ".txt"}
_cache: dict[Path, tuple[str, bytes, bytes | None]] = {}
_lock = threading.Lock()


def _load(path: Path) -> tuple[str, bytes, bytes | None] | None:
    """(etag, body, gzipped body) of a file under STATIC, or None when it does not exist."""
    try:
        st = path.stat()
    except OSError:
        return None
    etag = f'"{st.st_size:x}-{st.st_mtime_ns:x}"'
    with _lock:
        hit = _cache.get(path)
    if hit is not None and hit[0] == etag:
        return hit
    body = path.read_bytes()
    packed = gzip.compress(body, 9, mtime=0) if path.suffix in COMPRESS and len(body) > 512 else None
    entry = (etag, body, packed)
    with _lock:
        _cache[path] = entry
    return entry


def _serve(request: Request, path: Path) -> Response:
    entry = _load(path)
    if entry is None:
        return Response(b"not found\n", status_code=404, media_type="text/plain")
    etag, body, packed = entry
    headers = {"ETag": etag, "Cache-Control": "no-cache", "Vary": "Accept-Encoding"}
    if request.headers.get("if-none-match") == etag:
        return Response(status_code=304, headers=headers)
    media = TYPES.get(path.suffix) or mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    if packed is not None and "gzip" in request.headers.get("accept-encoding", ""):
        return Response(packed, media_type=media, headers={**headers, "Content-Encoding": "gzip"})
    return Response(body, media_type=media, headers=headers)


def static_path(rel: str) -> Path | None:
    """The file ``rel`` names under STATIC, or None when it would leave it (``..``, absolute, hidden)."""
    parts = [p for p in rel.split("/") if p]
    if not parts or any(p.startswith(".") or "\\" in p or "\x00" in p for p in parts):
        return None
    path = STATIC.joinpath(*parts).resolve()
    return path if path.is_relative_to(STATIC.resolve()) and path.is_file() else None


def install(app: FastAPI) -> None:
    # async: served on the event loop, never queued behind blocking work in the thread pool (the files are
    # small and kept in memory after their first read)
    @app.get("/static/{rel:path}", include_in_schema=False)
    async def asset(rel: str, request: Request) -> Response:
        path = static_path(rel)
        if path is None:
            return Response(b"not found\n", status_code=404, media_type="text/plain")
        return _serve(request, path)

    @app.get("/", include_in_schema=False)
    async def portal(request: Request) -> Response:
        return _serve(request, STATIC / "index.html")
