"""A hostile results site on loopback: each path answers whatever a test tells it to.

It speaks the shapes of the `resultados2024` adapter (an index CSV, listing pages, table
pages) and serves small real JPEGs, so that every good acta can be checked as archived.
Handlers for what blocked, slow or hostile sites do: trickled bodies, 304s nobody asked
for, 429/503 forever, redirects anywhere, fake images, bodies that never end, gzip bombs,
header bombs, silence, raw bytes no HTTP library would send (raw()). Linux routes all of 127.0.0.0/8 to
the loopback device, so a second instance on 127.0.0.2 is "another host".
"""
from __future__ import annotations

import asyncio
import gzip
import html
import io
import threading
from collections import Counter
from typing import Awaitable, Callable

from aiohttp import web
from PIL import Image, ImageDraw

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
HEADER = "COD_EDO,EDO,COD_MUN,MUN,COD_PAR,PAR,CENTRO,MESA,URL\n"


def jpeg(n: int, size: tuple[int, int] = (48, 64)) -> bytes:
    """A small real JPEG, different for each n."""
    img = Image.new("L", size, 255)
    draw = ImageDraw.Draw(img)
    draw.text((2, 2), str(n), fill=0)
    draw.line((0, n % size[1], size[0], (3 * n) % size[1]), fill=0, width=2)
    out = io.BytesIO()
    img.save(out, "JPEG", quality=70)
    return out.getvalue()


def png(n: int) -> bytes:
    out = io.BytesIO()
    Image.new("L", (32, 32), n % 256).save(out, "PNG")
    return out.getvalue()


def key_of(i: int) -> str:
    return f"{10101000 + i:09d}.01"


def index_row(i: int, url: str) -> str:
    center = f"{10101000 + i:09d}"
    return f"1,DTTO. CAPITAL,1,BLVNO LIBERTADOR,1,PQ. ALTAGRACIA,{center},1,{url}\n"


def listing(links: list[tuple[str, str]]) -> str:
    rows = "".join(f'<tr><td><a href="{html.escape(h)}">{html.escape(t)}</a></td></tr>' for h, t in links)
    return f'<html><body><table><tbody id="dependencyTableBody">{rows}</tbody></table></body></html>'


def mesa(image: str, i: int) -> str:
    return (f'<html><body><dd id="codigo-centro">{10101000 + i:09d}</dd><dd id="numero-mesa">1</dd>'
            f'<div id="acta"><img src="{html.escape(image)}"></div></body></html>')


# -- handlers ------------------------------------------------------------------------
def body(data: bytes | str, content_type: str = "image/jpeg", status: int = 200, **headers: str) -> Handler:
    raw = data.encode() if isinstance(data, str) else data

    async def handle(request: web.Request) -> web.Response:
        return web.Response(body=raw, status=status, headers={"Content-Type": content_type, **headers})
    return handle


def status(code: int, **headers: str) -> Handler:
    async def handle(request: web.Request) -> web.Response:
        return web.Response(status=code, headers=headers)
    return handle


def redirect(location: str, code: int = 302) -> Handler:
    return status(code, Location=location)


def drip(data: bytes, every: float = 1.0, content_type: str = "image/jpeg", lead: int = 16) -> Handler:
    """Slowloris: headers and the first `lead` bytes at once, then one byte every `every` seconds."""
    async def handle(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": content_type, "Content-Length": str(len(data))})
        await resp.prepare(request)
        await resp.write(data[:lead])
        for i in range(lead, len(data)):
            await asyncio.sleep(every)
            await resp.write(data[i:i + 1])
        return resp
    return handle


def split(data: bytes, first: int, pause: float = 0.2) -> Handler:
    """The body in two writes, the first only `first` bytes long (as over Tor)."""
    async def handle(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "image/jpeg", "Content-Length": str(len(data))})
        await resp.prepare(request)
        await resp.write(data[:first])
        await asyncio.sleep(pause)
        await resp.write(data[first:])
        return resp
    return handle


def endless(start: bytes, chunk: bytes, content_type: str = "text/csv", length: int | None = None) -> Handler:
    """`start`, then `chunk` for ever (a CSV index that never ends); `length`: a Content-Length to claim."""
    async def handle(request: web.Request) -> web.StreamResponse:
        headers = {"Content-Type": content_type, **({"Content-Length": str(length)} if length else {})}
        resp = web.StreamResponse(headers=headers)
        await resp.prepare(request)
        try:
            await resp.write(start)
            while True:
                await resp.write(chunk)
        except ConnectionError:  # the client hung up: what it should do
            return resp
    return handle


def gzip_bomb(size: int, content_type: str = "image/jpeg") -> Handler:
    """`size` zero bytes, gzipped (a thousandth of that on the wire), sent as Content-Encoding: gzip."""
    packed = gzip.compress(bytes(size), 9)
    return body(packed, content_type, **{"Content-Encoding": "gzip"})


def header_bomb(n: int = 5000) -> Handler:
    """A good image behind n response headers of 100 bytes each."""
    async def handle(request: web.Request) -> web.Response:
        return web.Response(body=jpeg(5), headers={"Content-Type": "image/jpeg",
                                                   **{f"X-H{i}": "a" * 100 for i in range(n)}})
    return handle


def silent() -> Handler:
    """Takes the request and never answers."""
    async def handle(request: web.Request) -> web.Response:
        await asyncio.sleep(3600)
        raise AssertionError("unreachable")
    return handle


def raw(data: bytes) -> Handler:
    """These bytes on the socket, then the connection closed: an answer no server library
    would write (a header byte outside ASCII, a malformed status line)."""
    async def handle(request: web.Request) -> web.StreamResponse:
        request.transport.write(data)
        request.transport.close()
        return web.Response()  # never sent: the connection is closed
    return handle


def sequence(*handlers: Handler) -> Handler:
    """The first handler for the first request, the second for the second...; the last for the rest."""
    count = 0

    async def handle(request: web.Request) -> web.StreamResponse:
        nonlocal count
        count += 1
        return await handlers[min(count, len(handlers)) - 1](request)
    return handle


def changing() -> Handler:
    """A different real JPEG on every request."""
    count = 0

    async def handle(request: web.Request) -> web.Response:
        nonlocal count
        count += 1
        return web.Response(body=jpeg(1000 + count), headers={"Content-Type": "image/jpeg"})
    return handle


class HostileSite:
    """An aiohttp server on its own thread; `routes[path] = handler` at any time."""

    def __init__(self, host: str = "127.0.0.1"):
        self.host = host
        self.routes: dict[str, Handler] = {}
        self.hits: Counter = Counter()
        self.url = ""
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._runner: web.AppRunner | None = None

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        path = request.raw_path
        self.hits[path] += 1
        handler = self.routes.get(path) or self.routes.get(request.path)
        if handler is None:
            return web.Response(status=404, text="not here")
        return await handler(request)

    async def _start(self) -> str:
        app = web.Application()
        app.router.add_route("GET", "/{tail:.*}", self._handle)
        # request lines and headers as long as a client sends them: the limits under test are the client's
        self._runner = web.AppRunner(app, handler_cancellation=True, shutdown_timeout=0.5,
                                     max_line_size=1 << 20, max_field_size=1 << 20)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, 0)
        await site.start()
        port = self._runner.addresses[0][1]
        return f"http://{self.host}:{port}"

    def __enter__(self) -> "HostileSite":
        self._thread.start()
        self.url = asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(10)
        return self

    def __exit__(self, *exc) -> None:
        async def stop():
            await self._runner.cleanup()
        asyncio.run_coroutine_threadsafe(stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)

    # -- a results site -----------------------------------------------------------------
    def serve_index(self, rows: list[str], path: str = "/RESULTADOS_2024_CSV_V1.csv") -> None:
        self.routes[path] = body(HEADER + "".join(rows), "text/csv; charset=utf-8")

    def good_actas(self, n: int, start: int = 0) -> list[str]:
        """Serve n good actas (real JPEGs) at /img/<i>.jpg; return their index rows."""
        rows = []
        for i in range(start, start + n):
            self.routes[f"/img/{i}.jpg"] = body(jpeg(i))
            rows.append(index_row(i, f"{self.url}/img/{i}.jpg"))
        return rows
