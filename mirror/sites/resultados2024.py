"""Adapter for the 2024 results site: the index CSV (V1 or V2) and the HTML hierarchy."""
from __future__ import annotations

import codecs
import csv
import io
import re
import asyncio
from typing import AsyncIterator, BinaryIO, Iterator

from ..models import Acta, IndexFormatError, Place
from . import (GetPage, Page, Report, index_chunks, join, link_text, page_base, parse_page, register, unreadable,
               walk_pages)

REQUIRED = ("COD_EDO", "EDO", "COD_MUN", "MUN", "COD_PAR", "PAR", "CENTRO", "MESA", "URL")
_URLISH = re.compile(r"^(https?://|/)?[^\s]+$")
LEVELS = ("estado", "municipio", "parroquia", "centro", "mesa")


def acta_key(center: str, table: str) -> str:
    """'<9-digit center>.<2-digit table>'; raises ValueError on non-digits."""
    center, table = center.strip(), table.strip()
    if not center.isdigit() or not table.isdigit() or len(center) > 9 or len(table) > 3:
        raise ValueError(f"bad center/table {center!r}/{table!r}")
    return f"{int(center):09d}.{int(table):02d}"


def read_index_text(raw: bytes) -> str:
    """V1 is UTF-8 with a BOM, V2 is latin-1: tell them apart by the bytes."""
    if raw.startswith(b"\xef\xbb\xbf"):
        return raw[3:].decode("utf-8", errors="strict")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def parse_index_bytes(raw: bytes, url: str, site: str = "resultados2024",
                      report: Report | None = None) -> Iterator[Acta]:
    """Actas listed in an index held in memory (parse_index_file)."""
    return parse_index_file(io.BytesIO(raw), url, site, report)


def parse_index_file(fh: BinaryIO, url: str, site: str = "resultados2024",
                     report: Report | None = None) -> Iterator[Acta]:
    """Actas listed in an index file, read in chunks and never held whole: once now to tell its
    encoding (a BOM, else UTF-8 if it all decodes, else latin-1) and refuse binary data, then
    row by row as they are asked for. With `report`, a bad row is reported and skipped;
    without, it raises IndexFormatError, as it does for a file larger than any index."""
    start = 3 if fh.read(3) == b"\xef\xbb\xbf" else 0
    fh.seek(start)
    utf8 = codecs.getincrementaldecoder("utf-8")()
    for chunk in index_chunks(fh, url, start):
        if b"\x00" in chunk:
            raise IndexFormatError(f"{url}: binary data, not a CSV index")
        if utf8 and not start:
            try:
                utf8.decode(chunk)
            except UnicodeDecodeError:
                utf8 = None
    if utf8 and not start:
        try:
            utf8.decode(b"", final=True)
        except UnicodeDecodeError:
            utf8 = None
    fh.seek(start)
    encoding = "utf-8" if start or utf8 else "latin-1"
    stream = io.TextIOWrapper(fh, encoding=encoding, errors="strict", newline="")
    reader = csv.DictReader(stream)
    try:
        header = reader.fieldnames or []
    except UnicodeDecodeError as exc:
        raise IndexFormatError(f"{url}: not UTF-8 after its BOM (byte {exc.start})") from None
    except csv.Error as exc:  # a header field past csv's limit, a NUL byte
        raise IndexFormatError(f"{url}: not a results index: its header is unreadable ({exc})") from None
    return _rows(reader, header, url, site, report)


def _rows(reader, header, url: str, site: str, report: Report | None) -> Iterator[Acta]:
    missing = [c for c in REQUIRED if c not in header]
    if missing:
        raise IndexFormatError(f"{url}: not a results index: missing column(s) {', '.join(missing)}")
    try:
        for row in reader:
            try:
                yield _acta(row, reader.line_num, url, site)
            except IndexFormatError as exc:
                if report is None:
                    raise
                report(url, str(exc), "bad index row")
    except (csv.Error, UnicodeDecodeError, OSError) as exc:  # the rows before it are listed
        where = f"{url}:{reader.line_num}"
        error = unreadable(where, exc) if isinstance(exc, OSError) else IndexFormatError(
            f"{where}: not UTF-8 after its BOM (byte {exc.start})" if isinstance(exc, UnicodeDecodeError)
            else f"{where}: {exc}")
        if report is None:
            raise error from None
        report(url, f"{error}; the rest of the index is unreadable", "bad index row")


def _closing(rows: Iterator[Acta], fh) -> Iterator[Acta]:
    with fh:
        yield from rows


def _acta(row: dict, line: int, url: str, site: str) -> Acta:
    if None in row or any(row.get(c) is None for c in REQUIRED):
        raise IndexFormatError(f"{url}:{line}: wrong number of fields")
    try:
        key = acta_key(row["CENTRO"], row["MESA"])
    except ValueError as exc:
        raise IndexFormatError(f"{url}:{line}: {exc}") from None
    image = row["URL"].strip()
    if not _URLISH.match(image):
        raise IndexFormatError(f"{url}:{line}: bad URL {image!r}")
    center = key[:9]
    return Acta(
        site=site, key=key, url=join(url, image), page=url,
        place=Place(state_code=row["COD_EDO"].strip(), state=row["EDO"].strip(),
                    municipality_code=row["COD_MUN"].strip(), municipality=row["MUN"].strip(),
                    parish_code=row["COD_PAR"].strip(), parish=row["PAR"].strip(),
                    center=center, table=key[10:]),
        electors=_electors(row.get("RE")),
    )


def _electors(value: str | None) -> int | None:
    """The RE column (registered electors), where the index has one and it is a number of ASCII
    digits under a billion (the second version of 2024's index has none); a column that is not
    one leaves the table's list as it is."""
    value = (value or "").strip()
    return int(value) if value.isascii() and value.isdigit() and len(value.lstrip("0")) <= 9 else None


def _listing(html: str, url: str) -> list[tuple[str, str]]:
    soup = parse_page(html, url, "dependencyTableBody")
    body = soup.select_one("tbody#dependencyTableBody")
    if body is None:
        raise IndexFormatError(f"{url}: no listing (tbody#dependencyTableBody) on the page")
    rows = []
    for a in body.select("a[href]"):
        rows.append((join(url, a["href"]), link_text(a)))
    return rows


def _mesa(html: str, url: str) -> tuple[str, str, str]:
    soup = parse_page(html, url, "acta", "codigo-centro", "numero-mesa")
    img = soup.select_one("#acta img")
    center = soup.select_one("#codigo-centro")
    table = soup.select_one("#numero-mesa")
    if img is None or not img.get("src") or center is None or table is None:
        raise IndexFormatError(f"{url}: not a table page (#acta img, #codigo-centro, #numero-mesa)")
    return join(url, img["src"]), center.get_text(strip=True), table.get_text(strip=True)


@register
class Resultados2024:
    name = "resultados2024"
    description = "Venezuela 2024 presidential election, the opposition's results site"
    discover_modes = ("csv", "html", "both")
    index_name = "RESULTADOS_2024_CSV_V1.csv"
    hosts = ("static.resultadosconvzla.com",)  # the real site's images, when its pages are walked from elsewhere

    def index_urls(self, root: str) -> list[str]:
        return [join(root.rstrip("/") + "/", self.index_name)]

    def parse_index(self, path: str, url: str, report: Report | None = None) -> Iterator[Acta]:
        """Opens the file now (it may be renamed or removed later: the open file stays
        readable); rows are read and parsed as they are asked for."""
        try:
            fh = open(path, "rb")
        except OSError as exc:
            raise unreadable(url, exc) from None
        try:
            rows = parse_index_file(fh, url, self.name, report)
        except BaseException as exc:
            fh.close()
            if isinstance(exc, OSError):
                raise unreadable(url, exc) from None
            raise
        return _closing(rows, fh)

    async def walk(self, root: str, get_page: GetPage, report: Report) -> AsyncIterator[Acta]:
        """Walk / -> estado -> municipio -> parroquia -> centro -> mesa."""
        root_url = root.rstrip("/") + "/"
        top = await get_page(root_url)
        first = await asyncio.to_thread(lambda: _listing(top.text, page_base(top)))  # a broken root is fatal

        def visit(url: str, page: Page, names: tuple) -> tuple[list, list[Acta]]:
            depth = len(names) - 1
            if depth >= len(LEVELS):
                raise IndexFormatError(f"{url}: deeper than a table's page")
            if LEVELS[depth] != "mesa":
                return [(child, names + (text,)) for child, text in _listing(page.text, page_base(page))], []
            image, center, table = _mesa(page.text, page_base(page))
            key = acta_key(center, table)
            state, mun, par = (names + ("", "", ""))[:3]
            return [], [Acta(site=self.name, key=key, url=image, page=page.url, place=Place(
                state_code=str(int(key[0:2])), state=state, municipality_code=str(int(key[2:4])),
                municipality=mun, parish_code=str(int(key[4:6])), parish=par, center=key[:9], table=key[10:]))]

        async for acta in walk_pages([(link, (text,)) for link, text in first], visit, get_page, report,
                                     seen=(root_url,)):
            yield acta
