"""Adapter for CNE results pages in the shape of past elections: r/{level}/reg_{code}.html.

Levels 0 to 5 are nation, state, municipality, parish, center and table; codes are CNE
codes (000000, EE0000, EEMM00, EEMMPP, the 9-digit center, the center and 2-digit table).
Every page has its results in table#tablaResultados, whose first-column links lead one
level down; a table's page links to its acta (a#acta). There is no index file.
"""
from __future__ import annotations

import asyncio
import re
from typing import AsyncIterator, Iterator


from ..models import Acta, IndexFormatError, Place
from . import GetPage, Page, Report, join, link_text, page_base, parse_page, register, walk_pages
from .resultados2024 import acta_key

_CODE = re.compile(r"reg_([0-9]+)\.html$")


def _results(html: str, url: str):
    # only the results table and the acta link become objects, however large the page
    soup = parse_page(html, url, "tablaResultados", "acta")
    table = soup.select_one("#tablaResultados")
    if table is None:
        raise IndexFormatError(f"{url}: no results table (#tablaResultados) on the page")
    return soup, table


@register
class Cne:
    name = "cne"
    description = "CNE results pages in the shape of past elections (r/{level}/reg_{code}.html)"
    discover_modes = ("html",)

    def index_urls(self, root: str) -> list[str]:
        return []

    def parse_index(self, path: str, url: str, report: Report | None = None) -> Iterator[Acta]:
        raise IndexFormatError(f"{url}: the cne site has no index file; use --discover html")

    async def walk(self, root: str, get_page: GetPage, report: Report) -> AsyncIterator[Acta]:
        start = join(root.rstrip("/") + "/", "r/0/reg_000000.html")

        def visit(url: str, page: Page, names: tuple) -> tuple[list, list[Acta]]:
            base = page_base(page)  # what its links resolve against; url (asked for) says what the page is
            soup, table = _results(page.text, base)
            code = _CODE.search(url)
            if code and len(code.group(1)) == 11:  # a table's page
                link = soup.select_one("a#acta[href]")
                if link is None:
                    raise IndexFormatError(f"{url}: no acta link (a#acta) on a table's page")
                key = acta_key(code.group(1)[:9], code.group(1)[9:])
                state, mun, par, center_name = (names[1:] + ("", "", "", ""))[:4]
                return [], [Acta(site=self.name, key=key, url=join(base, link["href"]), page=page.url, place=Place(
                    state_code=str(int(key[0:2])), state=state, municipality_code=str(int(key[2:4])),
                    municipality=mun, parish_code=str(int(key[4:6])), parish=par, center=key[:9],
                    table=key[10:], center_name=center_name))]
            children = [(join(base, a["href"]), names + (link_text(a),))
                        for a in table.select("td:first-child a[href]")]
            return children, []

        first, _ = await asyncio.to_thread(visit, start, await get_page(start), ("VENEZUELA",))  # a broken nation page is fatal
        async for acta in walk_pages(first, visit, get_page, report, seen=(start,)):
            yield acta
