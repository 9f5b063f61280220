"""Asset hosts for tests: small aiohttp servers on 127.0.0.1 serving images and audio, some
of them hostile (wrong bytes under an image type, huge sizes, redirects, 403, 503, slow)."""

from __future__ import annotations

import asyncio
import socket
import struct
import zlib
from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from aiohttp import web


def png(width: int = 640, height: int = 480) -> bytes:
    """A real (grey) PNG of the given size."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))
    raw = b"".join(b"\x00" + b"\x80" * width for _ in range(height))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0,
                                                              0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def jpeg_header(width: int, height: int, exif: int = 0) -> bytes:
    """The first bytes of a baseline JPEG (SOI, an APP1 block of `exif` bytes, SOF0)."""
    app1 = b"\xff\xe1" + struct.pack(">H", exif + 2) + b"\x00" * exif if exif else b""
    sof = b"\xff\xc0" + struct.pack(">HBHHB", 11, 8, height, width, 1) + b"\x01\x11\x00"
    return b"\xff\xd8" + app1 + sof + b"\xff\xda" + b"\x00" * 64


MP3 = b"ID3\x04\x00\x00\x00\x00\x00\x00" + b"\xff\xfb\x90\x00" * 256
HTML = b"<!DOCTYPE html><html><body>Sign in to view this image</body></html>"


class AssetHost:
    """One server: `url(path)`, and `hits` per path (what was really fetched)."""

    def __init__(self, app: web.Application) -> None:
        self.app = app
        self.hits: Counter[str] = Counter()
        self.runner = web.AppRunner(app)
        self.base = ""

    def url(self, path: str) -> str:
        return f"{self.base}/{path.lstrip('/')}"


def free_port() -> int:
    """A loopback port nothing listens on (connection refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@asynccontextmanager
async def asset_host(files: dict[str, bytes] | None = None, *, slow: float = 5.0,
                     on_hit: Callable[[str], None] | None = None) -> AsyncIterator[AssetHost]:
    """Serves `files` (path -> bytes, as image/png whatever they are) plus hostile routes:
    /huge (Content-Length 10 GB), /forbidden (403), /busy (503), /slow (`slow` s before
    answering), /loop (redirects to itself), /moved/<path> (302 to /<path>), /empty,
    /gzip/<path> (gzipped when offered), /always-gzip (gzipped regardless). `on_hit` is
    called with each path as it is asked (a test looks at its run at that moment)."""
    files = dict(files or {})
    app = web.Application()
    host = AssetHost(app)

    async def serve(request: web.Request) -> web.StreamResponse:
        path = request.match_info["path"]
        host.hits[path] += 1
        if on_hit is not None:
            on_hit(path)
        if path == "huge":
            resp = web.StreamResponse(headers={"Content-Type": "image/png",
                                               "Content-Length": str(10 * 1024 ** 3)})
            await resp.prepare(request)
            await resp.write(png(64, 64)[:512])
            return resp
        if path == "forbidden":
            return web.Response(status=403, text="AccessDenied")
        if path == "busy":
            return web.Response(status=503)
        if path == "slow":
            await asyncio.sleep(slow)
            return web.Response(body=png(), content_type="image/png")
        if path == "loop":
            raise web.HTTPFound("/loop")
        if path.startswith("moved/"):
            raise web.HTTPFound("/" + path.removeprefix("moved/"))
        if path == "empty":
            return web.Response(body=b"", content_type="image/png")
        if path.startswith("gzip/"):  # compresses whenever the client says it may
            import gzip
            body = files[path.removeprefix("gzip/")]
            if "gzip" in request.headers.get("Accept-Encoding", ""):
                return web.Response(body=gzip.compress(body), content_type="image/png",
                                    headers={"Content-Encoding": "gzip"})
            return web.Response(body=body, content_type="image/png")
        if path == "always-gzip":  # compresses whatever it is asked
            import gzip
            return web.Response(body=gzip.compress(png()), content_type="image/png",
                                headers={"Content-Encoding": "gzip"})
        if path not in files:
            return web.Response(status=404, text="no such key")
        return web.Response(body=files[path], content_type="image/png")

    app.router.add_get("/{path:.*}", serve)
    await host.runner.setup()
    site = web.TCPSite(host.runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    host.base = f"http://127.0.0.1:{port}"
    try:
        yield host
    finally:
        await host.runner.cleanup()
