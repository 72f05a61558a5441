"""Replay of CNE-style results pages (r/{level}/reg_{code}.html), built from the real 2024 index.

Nation, state, municipality, parish, center and table pages carry their results in
table#tablaResultados; a table's page links to its acta at /actas/<center>_<table>.jpg,
the 20 real scans included. Faults from the same plan as the 2024 replay apply to actas
(404, denied, and the transient kinds).
"""
from __future__ import annotations

import hashlib
import html

from aiohttp import web

from ..qrformat import CANDIDATES
from .data import index_file, real_images, subset_keys
from .faults import TRANSIENT, FaultPlan
from .images import render

SITE = "cne"
LEVEL_NAMES = ("PAÍS", "ESTADO", "MUNICIPIO", "PARROQUIA", "CENTRO", "MESA")


def center_name(row) -> str:
    """A made-up school name in the style of real ones (accents included), stable per center."""
    parish = row.par.removeprefix("PQ. ").strip()
    return f"ESCUELA BÁSICA NACIONAL {parish} N° {int(row.center[6:])}"


def _code(row, level: int) -> str:
    c = row.center
    return ("000000", c[:2] + "0000", c[:4] + "00", c[:6], c, c + row.table)[level]


class CneReplay:
    def __init__(self, *, seed: int = 0, small: bool = False, faults: FaultPlan | None = None,
                 limit: int | None = None, **_):
        self.seed, self.small = seed, small
        self.faults = faults or FaultPlan(seed=seed)
        keys = subset_keys(limit)
        self.rows = [r for r in index_file(1).rows if keys is None or r.key in keys]
        self.by_image = {f"{r.center}_{r.table}.jpg": r for r in self.rows}
        self.pages: dict[tuple[int, str], list] = {}
        self.names: dict[tuple[int, str], str] = {(0, "000000"): "VENEZUELA"}
        for r in self.rows:
            for level in range(6):
                self.pages.setdefault((level, _code(r, level)), []).append(r)
            self.names[(1, _code(r, 1))] = r.state
            self.names[(2, _code(r, 2))] = r.mun
            self.names[(3, _code(r, 3))] = r.par
            self.names[(4, _code(r, 4))] = center_name(r)
            self.names[(5, _code(r, 5))] = f"MESA {int(r.table)}"
        self.hits: dict[str, int] = {}
        self.base_url = ""
        self._runner = None

    def expected(self) -> dict[str, str]:
        return {r.key: f"{r.center}_{r.table}.jpg" for r in self.rows}

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get(r"/r/{level:\d}/reg_{code:\d+}.html", self.h_page)
        app.router.add_get("/actas/{name}", self.h_acta)
        return app

    async def h_page(self, request: web.Request) -> web.Response:
        level, code = int(request.match_info["level"]), request.match_info["code"]
        rows = self.pages.get((level, code))
        if not rows or level > 5:
            raise web.HTTPNotFound()
        totals = {c: sum(dict(r.votes)[c] for r in rows) for c in CANDIDATES}
        head = "<tr><th>" + LEVEL_NAMES[min(level + 1, 5)] + "</th>" + "".join(f"<th>{c}</th>" for c in CANDIDATES) + "</tr>"
        body = []
        if level < 5:
            children: dict[str, list] = {}
            for r in rows:
                children.setdefault(_code(r, level + 1), []).append(r)
            for child, members in sorted(children.items()):
                votes = "".join(f"<td>{sum(dict(m.votes)[c] for m in members)}</td>" for c in CANDIDATES)
                name = html.escape(self.names[(level + 1, child)])
                body.append(f"<tr><td><a href=\"../{level + 1}/reg_{child}.html\">{name}</a></td>{votes}</tr>")
            extra = ""
        else:
            body.append("<tr><td>TOTAL</td>" + "".join(f"<td>{totals[c]}</td>" for c in CANDIDATES) + "</tr>")
            r = rows[0]
            extra = f"<p><a id=\"acta\" href=\"/actas/{r.center}_{r.table}.jpg\">Ver acta de escrutinio</a></p>"
        page = (f"<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>{html.escape(self.names[(level, code)])}"
                f"</title></head><body><h1>{html.escape(self.names[(level, code)])}</h1>"
                f"<table id=\"tablaResultados\">{head}{''.join(body)}</table>{extra}</body></html>")
        return web.Response(text=page, content_type="text/html")

    async def h_acta(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        row = self.by_image.get(name)
        if row is None:
            raise web.HTTPNotFound()
        self.hits[name] = self.hits.get(name, 0) + 1
        rule = self.faults.kind_for(name)
        if rule and rule.kind == "404":
            raise web.HTTPNotFound()
        if rule and rule.kind == "denied":
            return web.Response(text="<html><body>Access denied</body></html>", content_type="text/html")
        if rule and rule.kind in TRANSIENT and self.hits[name] <= rule.times:
            return web.Response(status=503, text="busy")
        real = real_images().get(row.filename)
        body = real.read_bytes() if real else render(row, name, seed=self.seed, small=self.small)
        etag = '"' + hashlib.md5(body).hexdigest() + '"'
        if request.headers.get("If-None-Match") == etag:
            return web.Response(status=304, headers={"ETag": etag})
        return web.Response(body=body, content_type="image/jpeg", headers={"ETag": etag})

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        self._runner = web.AppRunner(self.app(), access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port, reuse_address=True)
        await site.start()
        self.base_url = f"http://{host}:{site._server.sockets[0].getsockname()[1]}"
        return self.base_url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


def make(**options) -> CneReplay:
    return CneReplay(**options)
