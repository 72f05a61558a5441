"""Write a static 'find your table' site into the mirror: one page per level, state to table.

Relative links only, so it works from file://, GitHub Pages and any IPFS gateway. The search
box runs in the browser over a small index loaded as a script (file:// allows no fetch).
"""
from __future__ import annotations

import csv
import html
import io
import json
import os
import shutil
from pathlib import Path

from ..state import open_payload, read_state
from ..qrformat import CANDIDATES
from ..sites.resultados2024 import acta_key, read_index_text
from .tally import Table, tally

SITE = "site"
NAMES = {"EG": "Edmundo González", "NM": "Nicolás Maduro", "LM": "Luis Martínez", "JABE": "Javier Bertucci",
         "JOBR": "José Brito", "AE": "Antonio Ecarri", "CF": "Claudio Fermín", "DC": "Daniel Ceballos",
         "EM": "Enrique Márquez", "BERA": "Benjamín Rausseo", "VOTOS_NULOS": "Votos nulos"}
CSS = ("body{font-family:system-ui,sans-serif;margin:1.5em;max-width:60em}table{border-collapse:collapse}"
       "td,th{border:1px solid #bbb;padding:.2em .5em;text-align:right}td:first-child,th:first-child{text-align:left}"
       ".bad{background:#fdd}td.mono{font-family:monospace;word-break:break-all;text-align:left}img.acta{max-width:100%;border:1px solid #888}"
       "nav{margin-bottom:1em}")
SEARCH_JS = """
function findTable(ev) {
  ev.preventDefault();
  var q = document.getElementById('q').value.replace(/[^0-9. ]/g, ' ').trim();
  var parts = q.split(/[ .]+/), center = (parts[0] || ''), table = (parts[1] || '');
  while (center.length < 9) center = '0' + center;
  while (table.length < 2) table = '0' + table;
  var dir = ACTA_INDEX.centers[center], out = document.getElementById('result');
  if (!dir || ACTA_INDEX.tables[center].indexOf(table) < 0) {
    out.textContent = 'No table ' + center + '.' + table + ' in this mirror.';
    return false;
  }
  window.location.href = ROOT + dir + '/' + center + '.' + table + '.html';
  return false;
}
"""


def _page(title: str, depth: int, body: str, search: bool = False) -> str:
    up = "../" * depth
    head = (f"<!DOCTYPE html><html lang=\"es\"><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
            f"<style>{CSS}</style>")
    if search:
        head += (f"<script src=\"{up}search-index.js\"></script><script>var ROOT='{up}';{SEARCH_JS}</script>")
    return (head + f"</head><body><nav><a href=\"{up}index.html\">Inicio</a></nav><h1>{html.escape(title)}</h1>"
            + body + "</body></html>")


def _search_form() -> str:
    return ("<form id=\"search\" onsubmit=\"return findTable(event)\"><label>Centro y mesa "
            "<input id=\"q\" name=\"q\" placeholder=\"010101002 3\" autocomplete=\"off\"></label> "
            "<button id=\"go\" type=\"submit\">Buscar</button></form><p id=\"result\"></p>")


def _votes_table(rows: list[tuple[str, dict | None]], header: list[str]) -> str:
    out = ["<table><tr><th></th>" + "".join(f"<th>{html.escape(h)}</th>" for h in header) + "</tr>"]
    for col in CANDIDATES + ("VOTOS_NULOS",):
        values = [r.get(col) if r else None for _n, r in rows]
        differ = len({v for v in values if v is not None}) > 1
        cells = "".join(f"<td>{'' if v is None else f'{v:,}'}</td>" for v in values)
        mark = ' class="bad"' if differ else ""
        out.append(f"<tr{mark}><td>{NAMES[col]}</td>{cells}</tr>")
    return "".join(out) + "</table>"


def index_rows(bag: Path) -> dict[str, dict]:
    """The site's own published figures per table, from the latest archived index CSV."""
    latest = read_state(bag).require_clean().latest_index()
    rows: dict[str, dict] = {}
    if latest is None:
        return rows
    with open_payload(bag, latest.path) as fh:
        text = read_index_text(fh.read())
    for row in csv.DictReader(io.StringIO(text, newline="")):
        try:
            rows[acta_key(row["CENTRO"], row["MESA"])] = {c: int(row[c]) for c in CANDIDATES + ("VOTOS_NULOS",)
                                                          if row.get(c, "").strip() != ""}
        except (ValueError, KeyError):
            continue
    return rows


def build_site(bag: str | os.PathLike) -> Path:
    bag = Path(bag)
    result = tally(bag)
    published = index_rows(bag)
    site = bag / SITE
    tmp = bag / (SITE + ".part")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    tree: dict = {}
    centers: dict[str, str] = {}
    tables_of: dict[str, list[str]] = {}
    for key, table in result.tables.items():
        levels = table.path.split("/")[1:-1]  # state, municipality, parish, center directories
        node = tree
        for part in levels:
            node = node.setdefault(part, {})
        node[key] = table
        centers[key[:9]] = "/".join(levels)
        tables_of.setdefault(key[:9], []).append(key[10:])

    def unit_for(level_index: int, key: str):
        level = ("state", "municipality", "parish", "center")[level_index]
        code = {"state": key[:2], "municipality": key[:4], "parish": key[:6], "center": key[:9]}[level]
        return result.units[(level, code)]

    def write_dir(node: dict, parts: list[str], title: str, unit) -> None:
        depth = len(parts)
        folder = tmp.joinpath(*parts)
        folder.mkdir(parents=True, exist_ok=True)
        items = []
        for name in sorted(node):
            child = node[name]
            if isinstance(child, Table):
                items.append(f"<li><a href=\"{html.escape(name)}.html\">Mesa {int(name[10:])}</a> "
                             f"({'QR leído' if child.votes else html.escape(child.status)})</li>")
                write_table(child, parts, folder / f"{name}.html")
            else:
                any_key = _first_key(child)
                sub_unit = unit_for(depth, any_key)
                label = sub_unit.name or name
                items.append(f"<li><a href=\"{html.escape(name)}/index.html\">{html.escape(label)}</a> "
                             f"({sub_unit.decoded} de {sub_unit.tables} actas leídas)</li>")
                write_dir(child, parts + [name], label, sub_unit)
        body = (f"<p>{unit.decoded} de {unit.tables} actas leídas del código QR.</p>"
                + _votes_table([("QR", {**unit.votes, "VOTOS_NULOS": unit.nulos})], ["Suma de los QR"])
                + "<ul>" + "".join(items) + "</ul>")
        if unit.unreadable:
            body += "<h2>Sin leer</h2><ul>" + "".join(
                f"<li>{html.escape(k)}: {html.escape(r)}</li>" for k, r in unit.unreadable[:500]) + "</ul>"
        if depth == 0:
            body = _search_form() + body
        (folder / "index.html").write_text(_page(title, depth, body, search=depth == 0), encoding="utf-8")

    def write_table(table: Table, parts: list[str], target: Path) -> None:
        depth = len(parts)
        up = "../" * (depth + 1)
        e = table.entry
        qr = {**table.votes, "VOTOS_NULOS": table.nulos} if table.votes else None
        row = published.get(table.key)
        differs = qr and row and any(qr.get(c) != row.get(c) for c in row)
        facts = [("Acta", table.key), ("Estado", e.get("state")), ("Municipio", e.get("municipality")),
                 ("Parroquia", e.get("parish")), ("Centro", e.get("center")), ("sha256", e["sha256"]),
                 ("CID (IPFS)", e.get("cid")), ("URL", e.get("url")), ("URL final", e.get("final_url")),
                 ("Descargada", e.get("fetched_at")), ("ETag", e.get("etag")),
                 ("Last-Modified", e.get("last_modified")), ("Versión", e.get("version")),
                 ("Lectura del QR", table.status)]
        body = ("<table>" + "".join(f"<tr><th>{html.escape(k)}</th><td class=\"mono\">{html.escape(str(v or ''))}</td></tr>"
                                    for k, v in facts) + "</table>")
        body += "<h2>Votos</h2>" + _votes_table([("QR", qr), ("Índice", row)], ["QR del acta", "Índice publicado"])
        if differs:
            body += "<p class=\"bad\" id=\"disagreement\">El QR del acta y el índice publicado no coinciden.</p>"
        body += (f"<h2>Acta</h2><p><a href=\"{up}{html.escape(table.path)}\">Imagen original</a></p>"
                 f"<img class=\"acta\" id=\"acta\" src=\"{up}{html.escape(table.path)}\" alt=\"Acta {table.key}\">")
        target.write_text(_page(f"Mesa {table.key}", depth, body), encoding="utf-8")

    nation = result.units[("nation", "VE")]
    write_dir(tree, [], "Resultados por acta: " + (nation.name or "VENEZUELA"), nation)
    index = {"centers": centers, "tables": tables_of}
    (tmp / "search-index.js").write_text("var ACTA_INDEX = " + json.dumps(index, separators=(",", ":")) + ";\n",
                                         encoding="utf-8")
    shutil.rmtree(site, ignore_errors=True)
    os.replace(tmp, site)
    return site / "index.html"


def _first_key(node: dict) -> str:
    for name, child in node.items():
        if isinstance(child, Table):
            return name
        return _first_key(child)
    raise ValueError("an empty branch")
