"""The local replay of the 2024 results site: index CSVs, actas, the HTML hierarchy, faults.

It listens on loopback only. The same seed gives the same bytes. Site ids in the HTML
hierarchy are the replay's own numbering (like the real site's), not CNE codes.
"""
from __future__ import annotations

import asyncio
import hashlib
import html
import threading
from collections import Counter, deque
from dataclasses import dataclass, field
from email.utils import format_datetime, parsedate_to_datetime
from datetime import datetime, timedelta, timezone
from pathlib import Path

from aiohttp import web

from .data import INDEX_FILES, REAL_PREFIX, Row, index_file, real_images, subset_keys
from .faults import SLOW_SECONDS, TRANSIENT, FaultPlan
from .images import render

SITE = "resultados2024"
PUBLISHED = datetime(2024, 7, 29, 12, 0, tzinfo=timezone.utc)
MEMORY_BUDGET = 384 * 1024 * 1024  # bytes of rendered images kept in memory
HEADERS_KEPT = 10_000  # requests whose headers are recorded (tests check what a client sent)


@dataclass
class _Node:
    name: str
    children: dict = field(default_factory=dict)
    site_id: int = 0


def _page(title: str, body: str) -> str:
    return (f"<!DOCTYPE html><html lang=\"es\"><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
            f"</head><body><h1>{html.escape(title)}</h1>{body}</body></html>")


def _listing(title: str, rows: list[tuple[str, str, int]]) -> str:
    trs = "".join(f"<tr><td><a href=\"{href}\">{html.escape(text)}</a></td><td>{n}</td></tr>"
                  for href, text, n in rows)
    return _page(title, f"<table><thead><tr><th>Nombre</th><th>Actas</th></tr></thead>"
                        f"<tbody id=\"dependencyTableBody\">{trs}</tbody></table>")


class Replay:
    """The replay application; start() it in a running loop, or use ReplayThread."""

    def __init__(self, *, seed: int = 0, small: bool = False, faults: FaultPlan | None = None,
                 limit: int | None = None, cache_dir: str | None = None, html_version: int = 1,
                 epoch: int = 1, latency: float = 0.0):
        self.seed = seed
        self.latency = latency  # seconds each image answer waits, as a distant server's would
        self.small = small
        self.faults = faults or FaultPlan(seed=seed)
        self.cache_dir = Path(cache_dir) if cache_dir else None
        self.html_version = html_version
        self.epoch = epoch
        self.keys = subset_keys(limit)
        self.rows: dict[str, Row] = {}
        for version in INDEX_FILES:
            for row in index_file(version).rows:
                if self.keys is None or row.key in self.keys:
                    self.rows.setdefault(row.filename, row)
        self.hits: Counter = Counter()
        self.stats: Counter = Counter()
        self.requests: deque = deque(maxlen=HEADERS_KEPT)  # (path, {header: value}) of recent requests
        self._memory: dict[tuple[str, int], tuple[bytes, str]] = {}
        self._memory_bytes = 0
        self._etags: dict[tuple[str, int], str] = {}  # kept for every image ever rendered
        self._csv: dict[str, bytes] = {}
        self._in_flight = 0  # image requests being answered now; their peak is stats["peak_in_flight"]
        self.base_url = ""
        self._runner: web.AppRunner | None = None
        self._tree = self._build_tree()

    # -- content ---------------------------------------------------------------
    def index_bytes(self, version: int) -> bytes:
        f = index_file(version)
        prefix = self.base_url.rstrip("/").encode() + b"/"
        lines = [f.header]
        for row, line in zip(f.rows, f.lines):
            if self.keys is None or row.key in self.keys:
                lines.append(line.replace(REAL_PREFIX, prefix, 1))
        return b"".join(lines)

    def variant(self, name: str) -> int:
        rule = self.faults.kind_for(name)
        return self.epoch - 1 if rule and rule.kind == "change" and self.epoch > 1 else 0

    def image(self, name: str) -> tuple[bytes, str]:
        """(bytes, etag) of an image; rendered once, then kept in memory and the disk cache."""
        variant = self.variant(name)
        cached = self._memory.get((name, variant))
        if cached:
            return cached
        disk = None
        if self.cache_dir:
            tag = f"s{self.seed}-{'small' if self.small else 'full'}-v{variant}"
            disk = self.cache_dir / tag / name
        if disk is not None and disk.exists():
            body = disk.read_bytes()
        else:
            body = self._render(name, variant)
            if disk is not None:
                disk.parent.mkdir(parents=True, exist_ok=True)
                tmp = disk.with_suffix(".part")
                tmp.write_bytes(body)
                tmp.replace(disk)
        result = (body, '"' + hashlib.md5(body).hexdigest() + '"')  # an S3-style ETag
        self._etags[(name, variant)] = result[1]
        while self._memory and self._memory_bytes + len(body) > MEMORY_BUDGET:
            old = self._memory.pop(next(iter(self._memory)))
            self._memory_bytes -= len(old[0])
        self._memory[(name, variant)] = result
        self._memory_bytes += len(body)
        return result

    def _render(self, name: str, variant: int) -> bytes:
        real = real_images().get(name)
        if real is not None:
            body = real.read_bytes()
            if variant:  # a re-scan of a real sheet: same picture, other bytes
                import io

                from PIL import Image
                out = io.BytesIO()
                Image.open(real).save(out, format="JPEG", quality=85 + variant % 10)
                body = out.getvalue()
            return body
        return render(self.rows[name], name, seed=self.seed, small=self.small, variant=variant)

    def warm(self, workers: int = 2) -> int:
        """Render every image into the disk cache ahead of time (for benchmarks)."""
        from ..workers import pool

        if not self.cache_dir:
            raise ValueError("warm() needs a cache_dir")
        names = sorted(self.rows)
        chunks = [names[i::workers * 8] for i in range(workers * 8)]
        args = [(self.seed, self.small, str(self.cache_dir), self.keys and sorted(self.keys), c) for c in chunks]
        with pool(workers) as executor:
            return sum(executor.map(_warm_chunk, args))

    # -- the HTML hierarchy ----------------------------------------------------
    def _build_tree(self) -> _Node:
        root = _Node("VENEZUELA")
        for row in index_file(self.html_version).rows:
            if self.keys is not None and row.key not in self.keys:
                continue
            st = root.children.setdefault(row.state_code.zfill(2), _Node(row.state))
            mu = st.children.setdefault(row.mun_code.zfill(2), _Node(row.mun))
            pa = mu.children.setdefault(row.par_code.zfill(2), _Node(row.par))
            ce = pa.children.setdefault(row.center, _Node(f"CENTRO {row.center}"))
            ce.children[row.table] = _Node(f"Mesa {int(row.table)}", {"row": row})
        self._ids: list[dict[int, _Node]] = [{}, {}, {}, {}, {}]
        counters = [7, 301, 1201, 4001, 20001]  # the site's own numbering starts
        for st in _sorted(root):
            for level, node in _walk(st, 0):
                node.site_id = counters[level]
                counters[level] += 1
                self._ids[level][node.site_id] = node
        return root

    def _count(self, node: _Node) -> int:
        if "row" in node.children:
            return 1
        return sum(self._count(c) for c in node.children.values())

    # -- HTTP ------------------------------------------------------------------
    def app(self) -> web.Application:
        @web.middleware
        async def record(request: web.Request, handler):
            self.requests.append((request.path, dict(request.headers)))
            return await handler(request)

        app = web.Application(middlewares=[record])
        app.router.add_get("/", self.h_root)
        for version, name in INDEX_FILES.items():
            app.router.add_get(f"/{name}", self._csv_handler(version))
        for level, prefix in enumerate(("estado", "municipio", "parroquia", "centro")):
            app.router.add_get(f"/{prefix}/{{id:\\d+}}", self._level_handler(level))
        app.router.add_get("/mesa/{centro:\\d+}/{mesa:\\d+}", self.h_mesa)
        app.router.add_get("/_replay/stats", self.h_stats)
        app.router.add_post("/_replay/epoch/{n:\\d+}", self.h_epoch)
        app.router.add_get("/cdn/{name}", self.h_image)
        app.router.add_get("/{name}", self.h_image)
        return app

    async def h_root(self, request: web.Request) -> web.Response:
        rows = [(f"/estado/{n.site_id}", n.name, self._count(n)) for n in _sorted(self._tree)]
        return web.Response(text=_listing("Resultados por estado", rows), content_type="text/html")

    def _level_handler(self, level: int):
        nxt = ("municipio", "parroquia", "centro", "mesa")[level]

        async def handler(request: web.Request) -> web.Response:
            node = self._ids[level].get(int(request.match_info["id"]))
            if node is None:
                raise web.HTTPNotFound()
            if nxt == "mesa":
                rows = [(f"/mesa/{node.site_id}/{c.site_id}", c.name, 1) for c in _sorted(node)]
            else:
                rows = [(f"/{nxt}/{c.site_id}", c.name, self._count(c)) for c in _sorted(node)]
            return web.Response(text=_listing(node.name, rows), content_type="text/html")
        return handler

    async def h_mesa(self, request: web.Request) -> web.Response:
        center = self._ids[3].get(int(request.match_info["centro"]))
        node = self._ids[4].get(int(request.match_info["mesa"]))
        if center is None or node is None or node not in center.children.values():
            raise web.HTTPNotFound()
        row: Row = node.children["row"]
        votes = "".join(f"<tr><td>{c}</td><td>{v}</td></tr>" for c, v in row.votes)
        body = (f"<dl><dt>Centro</dt><dd id=\"codigo-centro\">{row.center}</dd>"
                f"<dt>Mesa</dt><dd id=\"numero-mesa\">{int(row.table)}</dd></dl>"
                f"<table id=\"votos\">{votes}</table>"
                f"<div id=\"acta\"><img src=\"/{html.escape(row.filename)}\" alt=\"Acta {row.key}\"></div>")
        return web.Response(text=_page(f"Mesa {int(row.table)}", body), content_type="text/html")

    def _csv_handler(self, version: int):
        async def handler(request: web.Request) -> web.StreamResponse:
            body = self._csv.get(str(version))
            if body is None:
                body = self._csv[str(version)] = self.index_bytes(version)
            etag = '"' + hashlib.md5(body).hexdigest() + '"'
            return self._conditional(request, body, etag, PUBLISHED, "text/csv")
        return handler

    async def h_stats(self, request: web.Request) -> web.Response:
        return web.json_response(dict(self.stats))

    async def h_epoch(self, request: web.Request) -> web.Response:
        self.epoch = int(request.match_info["n"])
        return web.json_response({"epoch": self.epoch})

    @staticmethod
    def _fresh(request, etag: str, modified: datetime) -> bool:
        """RFC 9110 conditional GET: If-None-Match wins; else If-Modified-Since."""
        inm = request.headers.get("If-None-Match")
        ims = request.headers.get("If-Modified-Since")
        if inm is not None:
            return etag in [t.strip() for t in inm.split(",")]
        if ims:
            try:
                return parsedate_to_datetime(ims) >= modified.replace(microsecond=0)
            except (TypeError, ValueError):
                return False
        return False

    def _conditional(self, request, body: bytes, etag: str, modified: datetime, ctype: str):
        fresh = self._fresh(request, etag, modified)
        headers = {"ETag": etag, "Last-Modified": format_datetime(modified, usegmt=True)}
        if fresh:
            self.stats["not_modified"] += 1
            return web.Response(status=304, headers=headers)
        self.stats["bodies"] += 1
        return web.Response(body=body, headers=headers, content_type=ctype)

    async def h_image(self, request: web.Request) -> web.StreamResponse:
        self._in_flight += 1
        self.stats["peak_in_flight"] = max(self.stats["peak_in_flight"], self._in_flight)
        try:
            if self.latency:
                await asyncio.sleep(self.latency)
            return await self._image(request)
        finally:
            self._in_flight -= 1

    async def _image(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        if name not in self.rows:
            raise web.HTTPNotFound()
        self.hits[name] += 1
        rule = self.faults.kind_for(name)
        kind = rule.kind if rule else None
        if kind == "404":
            raise web.HTTPNotFound()
        if kind == "denied":
            return web.Response(text=_page("Access denied", "<p>Sorry, you have been blocked.</p>"),
                                content_type="text/html")
        if kind == "redirect" and not request.path.startswith("/cdn/"):
            raise web.HTTPFound(f"/cdn/{name}")
        if kind in TRANSIENT and self.hits[name] <= rule.times:
            self.stats[f"fault_{kind}"] += 1
            if kind == "429":
                half = int(hashlib.sha256(name.encode()).hexdigest(), 16) % 2
                when = datetime.now(timezone.utc) + timedelta(seconds=2)
                retry = format_datetime(when, usegmt=True) if half else "1"
                return web.Response(status=429, text="slow down", headers={"Retry-After": retry})
            if kind == "503":
                return web.Response(status=503, text="busy")
        variant = self.variant(name)
        modified = PUBLISHED + timedelta(days=variant)
        etag = self._etags.get((name, variant))
        if etag and kind is None and self._fresh(request, etag, modified):
            self.stats["not_modified"] += 1  # answered from the ETag alone, as a static host does
            return web.Response(status=304, headers={"ETag": etag,
                                                     "Last-Modified": format_datetime(modified, usegmt=True)})
        if self.small or (name, variant) in self._memory:
            body, etag = self.image(name)
        else:
            body, etag = await asyncio.to_thread(self.image, name)
        if kind in ("reset", "short") and self.hits[name] <= rule.times:
            return await self._broken(request, body, kind)
        if kind == "slow":
            await asyncio.sleep(SLOW_SECONDS)
        if kind in ("drip", "endless", "huge"):
            return await self._hostile(request, body, kind)
        return self._conditional(request, body, etag, modified, "image/jpeg")

    async def _broken(self, request, body: bytes, kind: str) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "image/jpeg"})
        resp.content_length = len(body)
        resp.force_close()
        await resp.prepare(request)
        await resp.write(body[: len(body) // 2])
        if kind == "reset":
            request.transport.abort()
        return resp

    async def _hostile(self, request, body: bytes, kind: str) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "image/jpeg"})
        if kind == "drip":
            resp.content_length = len(body)
        elif kind == "huge":
            resp.content_length = 100 * 1024 ** 3
        resp.force_close()
        await resp.prepare(request)
        try:
            if kind == "drip":
                for i in range(600):  # bounded: ten minutes at most
                    await resp.write(body[i:i + 1])
                    await asyncio.sleep(1.0)
            else:
                block = (body * (1 + 65536 // max(1, len(body))))[:65536]
                for _ in range(16384):  # bounded: 1 GiB at most
                    await resp.write(block)
        except (ConnectionError, RuntimeError):
            pass
        return resp

    def expected(self) -> dict[str, str]:
        """acta key -> image file name, for the index the HTML pages follow."""
        return {r.key: r.filename for r in index_file(self.html_version).rows
                if self.keys is None or r.key in self.keys}

    # -- running -----------------------------------------------------------------
    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        self._runner = web.AppRunner(self.app(), access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port, reuse_address=True)
        await site.start()
        sock = site._server.sockets[0]
        self.base_url = f"http://{host}:{sock.getsockname()[1]}"
        self._csv.clear()
        return self.base_url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


def _sorted(node: _Node) -> list[_Node]:
    return [node.children[k] for k in sorted(node.children) if k != "row"]


def _walk(node: _Node, level: int):
    yield level, node
    if level < 4:
        for child in _sorted(node):
            yield from _walk(child, level + 1)


def _warm_chunk(args) -> int:
    seed, small, cache_dir, keys, names = args
    replay = Replay(seed=seed, small=small, cache_dir=cache_dir)
    if keys is not None:
        replay.keys = frozenset(keys)
    for name in names:
        replay.image(name)
        replay._memory.clear()
    return len(names)


def make(**options) -> Replay:
    return Replay(**options)


class ReplayThread:
    """Run a Replay on its own thread and loop (for tests and scripts)."""

    def __init__(self, replay: Replay, host: str = "127.0.0.1", port: int = 0):
        self.replay = replay
        self.host, self.port = host, port
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.url = ""

    def start(self) -> str:
        self._thread.start()
        self.url = asyncio.run_coroutine_threadsafe(self.replay.start(self.host, self.port), self.loop).result(30)
        return self.url

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.replay.stop(), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)

    def __enter__(self) -> "ReplayThread":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def serve_forever(replay: Replay, host: str, port: int, on_ready=None) -> None:
    async def main():
        url = await replay.start(host, port)
        if on_ready:
            on_ready(url)
        try:
            while True:
                await asyncio.sleep(3600)
        finally:
            await replay.stop()

    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass
