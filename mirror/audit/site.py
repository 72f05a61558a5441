"""Write the voter's static site into the mirror: find your table, see its acta, check it in the browser.

Pages: site/index.html (the country), then SS/, SS/MM/, SS/MM/PP/ and SS/MM/PP/CCCCCCCCC/ with
one page per table (CCCCCCCCC.TT.html), every table of the index included, archived or not.
Every file name written is derived from a table key checked against KEY, never from a path a
mirror records, so a hostile provenance line cannot steer a write. Links are relative (or
https), so the site works from file://, GitHub Pages and any IPFS gateway.

The browser check (acta.js) hashes the image with WebCrypto, walks the table's RFC 9162
inclusion proof (shipped in its page) to a root, and checks the minisign global signature:
Ed25519 over (signature ‖ trusted comment), where the trusted comment names the root. The
prehashed file signature needs BLAKE2b, which WebCrypto lacks; the global one needs nothing else.
"""
from __future__ import annotations

import base64
import csv
import html
import io
import json
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote, urlsplit

from ..evidence import SIGNATURE, STATEMENT
from ..manifest import CHANGES, FAILURES, PAYLOAD_MANIFEST, PROVENANCE, iter_provenance, read_manifest
from ..merkle import all_inclusion_paths, leaf_data, manifest_leaves, root_of_leaves
from ..models import ArchiveWriteError, Entry, IndexFormatError, NotAMirror
from ..qrformat import CANDIDATES
from ..sign import PublicKey, SignatureError, load_public, verify_file
from ..sites.resultados2024 import acta_key, parse_index_bytes, read_index_text
from .tally import tally

SITE = "site"
KEY = re.compile(r"^\d{9}\.\d{2}$")
ASSETS = Path(__file__).parent / "site_static"
COLUMNS = CANDIDATES + ("VOTOS_NULOS",)
NAMES = {"EG": "Edmundo González", "NM": "Nicolás Maduro", "LM": "Luis Martínez", "JABE": "Javier Bertucci",
         "JOBR": "José Brito", "AE": "Antonio Ecarri", "CF": "Claudio Fermín", "DC": "Daniel Ceballos",
         "EM": "Enrique Márquez", "BERA": "Benjamín Rausseo", "VOTOS_NULOS": "Votos nulos"}
LEVEL_NAMES = ("Estado", "Municipio", "Parroquia", "Centro")
CODE_LENGTHS = (2, 4, 6, 9)  # state, municipality, parish, center: prefixes of the 9-digit center code

# One status per table of the index. The labels are what a voter reads.
STATUS_LABELS = {
    "qr": "acta archivada, votos leídos del código QR",
    "print": "acta archivada, votos leídos de las cifras impresas",
    "unreadable": "acta archivada, código QR ilegible",
    "failed": "no archivada: la descarga falló",
    "absent": "no archivada: no está en este espejo",
    "vanished": "el sitio de origen ya no la publica",
}


@dataclass(frozen=True)
class Status:
    kind: str  # a key of STATUS_LABELS
    detail: str = ""  # why, in the source's words (a decoder's or a server's message)


@dataclass
class TablePage:
    key: str
    names: list[str]  # state, municipality, parish, center name ("" where the source gives none)
    status: Status
    entry: Entry | None = None  # the latest archived version
    qr: dict | None = None  # column -> votes, from the QR
    published: dict | None = None  # column -> votes, from the index CSV

    @property
    def archived(self) -> bool:
        return self.entry is not None


@dataclass
class Area:
    code: str
    name: str
    tables: list[TablePage] = field(default_factory=list)
    children: dict[str, "Area"] = field(default_factory=dict)


# -- reading the mirror ------------------------------------------------------------------------
def _latest_entries(bag: Path) -> tuple[dict[str, Entry], Entry | None]:
    """The latest version of each acta, and the latest index file, through the typed reader."""
    actas: dict[str, Entry] = {}
    index = None
    for number, entry in enumerate(iter_provenance(bag / PROVENANCE), 1):
        if entry.kind == "index":
            index = entry
        elif entry.kind == "acta":
            if not KEY.match(entry.key):
                raise NotAMirror(f"{bag / PROVENANCE}: entry {number}: key {entry.key[:40]!r} is not a table key "
                                 f"(9 digits, a dot, 2 digits)")
            if actas.get(entry.key) is None or entry.version >= actas[entry.key].version:
                actas[entry.key] = entry
    return actas, index


def _read_index(bag: Path, entry: Entry | None) -> dict[str, tuple[list[str], dict]]:
    """key -> (place names, published votes) for every table the archived index lists."""
    if entry is None:
        return {}
    try:
        raw = (bag / entry.path).read_bytes()
    except OSError as exc:
        raise NotAMirror(f"{entry.path}: unreadable ({exc.strerror})") from None
    out: dict[str, tuple[list[str], dict]] = {}
    try:
        for acta in parse_index_bytes(raw, entry.path):
            p = acta.place
            out[acta.key] = ([p.state, p.municipality, p.parish, ""], {})
    except IndexFormatError as exc:
        raise NotAMirror(f"the archived index is not readable: {exc}") from None
    for row in csv.DictReader(io.StringIO(read_index_text(raw), newline="")):
        try:
            key = acta_key(row["CENTRO"], row["MESA"])
            out[key][1].update({c: int(row[c]) for c in COLUMNS if (row.get(c) or "").strip()})
        except (ValueError, KeyError):
            continue
    return out


def _records(path: Path) -> list[dict]:
    """The JSON objects of a record file (failures, changes); a damaged line is skipped."""
    out = []
    try:
        with open(path, encoding="utf-8") as fh:
            for line in fh:
                try:
                    obj = json.loads(line)
                except ValueError:
                    continue
                if isinstance(obj, dict) and isinstance(obj.get("key"), str) and KEY.match(obj["key"]):
                    out.append(obj)
    except (FileNotFoundError, UnicodeDecodeError):
        pass
    return out


def table_statuses(bag: Path, keys: set[str], readings: dict) -> dict[str, Status]:
    """One status per table: the one place where the audit's coverage (issue 16) plugs in.

    readings: key -> the tally's Table for each archived acta.
    """
    failed = {f["key"]: str(f.get("reason", "")) for f in _records(bag / FAILURES)}
    last_change = {c["key"]: c.get("change") for c in _records(bag / CHANGES)}
    out = {}
    for key in keys:
        table = readings.get(key)
        if last_change.get(key) == "vanished":
            out[key] = Status("vanished", "archivada antes" if table else "")
        elif table is not None:
            out[key] = Status("qr") if table.votes is not None else Status("unreadable", table.status)
        elif key in failed:
            out[key] = Status("failed", failed[key])
        else:
            out[key] = Status("absent")
    return out


# -- escaping by context -----------------------------------------------------------------------
def _t(value) -> str:
    """Text or a quoted attribute value."""
    return html.escape("" if value is None else str(value), quote=True)


def _https(url: str) -> str | None:
    """The URL if it may be a link (https with a host, nothing odd in it), else None."""
    if not isinstance(url, str) or any(ord(c) < 33 or c in "\"'<>\\`" for c in url):
        return None
    parts = urlsplit(url)
    return url if parts.scheme == "https" and parts.netloc else None


def _local(path: str) -> str:
    """A relative URL for a recorded data/ path (each segment percent-encoded: never a scheme)."""
    return "/".join(quote(part, safe="") for part in path.split("/"))


def _js(obj) -> str:
    """JSON that cannot close a <script> element or break out of it."""
    text = json.dumps(obj, ensure_ascii=False, separators=(",", ":"))
    return (text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
            .replace("\u2028", "\\u2028").replace("\u2029", "\\u2029"))


# -- pages -------------------------------------------------------------------------------------
def _folder(code: str) -> list[str]:
    """site/ folders of an area: 01, 01/01, 01/01/01, 01/01/01/010101001."""
    parts = [code[0:2], code[2:4], code[4:6], code][:CODE_LENGTHS.index(len(code)) + 1]
    return parts


def _page(title: str, depth: int, crumbs: list[tuple[str, str | None]], body: str, scripts: tuple = ()) -> str:
    up = "../" * depth
    trail = "".join(f"<li><a href=\"{_t(href)}\">{_t(label)}</a></li>" if href else
                    f"<li aria-current=\"page\">{_t(label)}</li>" for label, href in crumbs)
    tags = "".join(f"<script src=\"{up}{name}\"></script>" for name in scripts)
    return ("<!DOCTYPE html><html lang=\"es\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>{_t(title)}</title><link rel=\"icon\" href=\"data:,\"><link rel=\"stylesheet\" href=\"{up}acta.css\"></head>"
            f"<body data-root=\"{up}\"><nav aria-label=\"Ruta\"><ol class=\"crumbs\">{trail}</ol></nav>"
            f"<main><h1>{_t(title)}</h1>{body}</main>{tags}</body></html>")


def _crumbs(names: dict[str, str], code: str, depth: int, last: str | None = None) -> list[tuple[str, str | None]]:
    """Country down to this page; each link relative to a page `depth` folders down."""
    up = "../" * depth
    trail: list[tuple[str, str | None]] = [("Venezuela", f"{up}index.html")]
    for length in CODE_LENGTHS:
        if len(code) < length:
            break
        sub = code[:length]
        trail.append((names.get(sub) or f"{LEVEL_NAMES[CODE_LENGTHS.index(length)]} {sub}",
                      up + "/".join(_folder(sub)) + "/index.html"))
    if last is not None:
        trail.append((last, None))
    else:
        trail[-1] = (trail[-1][0], None)
    return trail


SEARCH_FORM = ("<form id=\"search\" role=\"search\" class=\"search\"><label for=\"q\">Busque su mesa: estado, municipio, "
               "parroquia, nombre o código del centro (y número de mesa)</label>"
               "<div class=\"row\"><input id=\"q\" name=\"q\" type=\"search\" autocomplete=\"off\" "
               "placeholder=\"san jose, 10101002 3\" aria-describedby=\"search-status\" aria-controls=\"results\">"
               "<button id=\"go\" type=\"submit\">Buscar</button></div>"
               "<p id=\"search-status\" aria-live=\"polite\"></p><ul id=\"results\"></ul></form>")


def _counts(tables: list[TablePage]) -> str:
    total = len(tables)
    archived = sum(t.archived for t in tables)
    read = sum(t.qr is not None for t in tables)
    return (f"<p class=\"counts\"><strong>{archived:,} de {total:,} mesas archivadas</strong>; "
            f"{read:,} de {total:,} actas leídas del código QR.</p>").replace(",", ".")


def _votes_table(columns: list[tuple[str, dict | None]], caption: str) -> str:
    head = "".join(f"<th scope=\"col\">{_t(name)}</th>" for name, _v in columns)
    rows = []
    for col in COLUMNS:
        values = [v.get(col) if v else None for _n, v in columns]
        differ = len({v for v in values if v is not None}) > 1
        cells = "".join(f"<td>{'—' if v is None else f'{v:,}'.replace(',', '.')}</td>" for v in values)
        mark, flag = (' class="differ"', ' <span class="flag">(no coinciden)</span>') if differ else ("", "")
        rows.append(f"<tr{mark}><th scope=\"row\">{_t(NAMES[col])}{flag}</th>{cells}</tr>")
    return (f"<div class=\"wide\"><table class=\"votes\"><caption>{_t(caption)}</caption><thead><tr><th scope=\"col\">"
            f"Candidato</th>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table></div>")


def _sum(tables: list[TablePage]) -> dict:
    total = {c: 0 for c in COLUMNS}
    for t in tables:
        for c in COLUMNS:
            total[c] += (t.qr or {}).get(c, 0)
    return total


@dataclass(frozen=True)
class Signed:
    """What the browser needs to check the root's signature, and what the page shows about it."""

    root: str
    size: int
    public: PublicKey | None
    minisig: list[str] | None  # the four lines of signed-root.json.minisig

    def script(self) -> str:
        data = {"root": self.root, "size": self.size}
        if self.public:
            data["pubkey"] = base64.b64encode(b"Ed" + self.public.key_id + self.public.key).decode()
        if self.minisig:
            data.update(sig=self.minisig[1], trusted=self.minisig[2][len("trusted comment: "):], glob=self.minisig[3])
        return f"ACTA.signed({_js(data)});\n"


def _signed(bag: Path, root: str, size: int, pubkey) -> tuple[Signed, list[str]]:
    warnings = []
    public = load_public(pubkey) if pubkey else None
    try:
        lines = (bag / SIGNATURE).read_text(encoding="utf-8").splitlines()
        if len(lines) < 4 or not lines[2].startswith("trusted comment: "):
            raise ValueError
    except (OSError, UnicodeDecodeError, ValueError):
        lines = None
        warnings.append(f"{SIGNATURE}: missing or not a minisign signature; the site's check will say so")
    if public is None:
        warnings.append("no --pubkey: the site cannot show the signer's key, and its check will say so")
    elif lines:
        try:
            verify_file(bag / STATEMENT, bag / SIGNATURE, public)
        except SignatureError as exc:
            warnings.append(f"the root's signature does not check with {pubkey}: {exc}")
    return Signed(root, size, public, lines), warnings


def _verify_section(t: TablePage, proof: dict | None, signed: Signed, image: str) -> str:
    e = t.entry
    key_id = signed.public.key_id[::-1].hex().upper() if signed.public else ""
    pub_line = base64.b64encode(b"Ed" + signed.public.key_id + signed.public.key).decode() if signed.public else ""
    return (
        "<section id=\"check\" aria-labelledby=\"check-h\"><h2 id=\"check-h\">Compruebe esta acta</h2>"
        "<p>Su navegador calcula el sha256 de la imagen, sigue la prueba de inclusión hasta la raíz de Merkle "
        "y comprueba la firma Ed25519 de esa raíz. No hace falta ningún servidor.</p>"
        "<dl class=\"facts\">"
        f"<dt>Clave pública del firmante</dt><dd><code id=\"pubkey\">{_t(pub_line) or 'no publicada con este sitio'}</code></dd>"
        f"<dt>Huella (key ID)</dt><dd><code id=\"key-id\">{_t(key_id) or '—'}</code> "
        "Compárela con la que anuncia quien publica este espejo.</dd>"
        f"<dt>Raíz de Merkle</dt><dd><code id=\"root\">{_t(signed.root)}</code> ({signed.size:,} archivos)</dd></dl>"
        "<p><button id=\"verify\" type=\"button\">Comprobar en este navegador</button></p>"
        "<p class=\"picker\"><label for=\"verify-file\">Si abrió el sitio como archivo (file://), el navegador no deja "
        f"leer la imagen: elíjala aquí (es <code>{_t(e.path)}</code> en el espejo)</label> "
        "<input type=\"file\" id=\"verify-file\" accept=\"image/*\"></p>"
        "<p id=\"verify-result\" data-status=\"pending\" role=\"status\" aria-live=\"polite\">Sin comprobar.</p>"
        "<ol id=\"verify-steps\"></ol>"
        "<h3>Con la línea de comandos</h3><pre class=\"cmd\">"
        f"sha256sum {_t(e.path)}   # debe dar {_t(e.sha256)}\n"
        f"minisign -Vm {STATEMENT} -P {_t(pub_line) or 'CLAVE'}\n"
        f"acta-mirror prove . {_t(e.path)} &gt; prueba.json\n"
        f"acta-mirror verify-file {_t(e.path)} --proof prueba.json --root {_t(signed.root)}</pre>"
        "</section>"
        f"<script type=\"application/json\" id=\"acta-proof\">{_js({**(proof or {}), 'image': image})}</script>")


def _table_page(t: TablePage, names: dict[str, str], proof: dict | None, signed: Signed) -> str:
    depth = 4
    up = "../" * depth
    number = int(t.key[10:])
    center = names.get(t.key[:9]) or f"Centro {t.key[:9]}"
    label = STATUS_LABELS[t.status.kind]
    body = [f"<p class=\"status status-{t.status.kind}\" id=\"status\"><strong>{_t(label)}</strong>"
            + (f": {_t(t.status.detail)}" if t.status.detail else "") + "</p>"]
    body.append(_votes_table([("QR del acta", t.qr), ("Índice publicado", t.published)],
                             f"Votos de la mesa {number}"))
    if t.qr and t.published and any(t.qr.get(c) != t.published.get(c) for c in t.published):
        body.append("<p class=\"differ\" id=\"disagreement\">El QR del acta y el índice publicado no coinciden "
                    "(filas marcadas).</p>")
    e = t.entry
    if e is not None:
        image = up + "../" + _local(e.path)  # the site sits in the mirror, next to data/
        facts = [("Acta", t.key), ("sha256", e.sha256), ("CID (IPFS)", e.cid or "—"), ("Versión", e.version),
                 ("Descargada", e.fetched_at), ("Archivo", e.path)]
        links = [("URL de origen", e.url), ("URL final", e.final_url), ("Página", e.page)]
        body.append(f"<h2>Acta</h2><p><a href=\"{_t(image)}\">Abrir la imagen original</a> (para ampliarla) · "
                    "<button type=\"button\" id=\"zoom\" aria-pressed=\"false\">Ampliar aquí</button></p>"
                    f"<div class=\"acta\" id=\"acta-box\"><img id=\"acta\" src=\"{_t(image)}\" "
                    f"alt=\"Acta de escrutinio de la mesa {number}, {_t(center)}\"></div>")
        body.append("<h2>Datos del archivo</h2><dl class=\"facts\">" + "".join(
            f"<dt>{_t(k)}</dt><dd><code>{_t(v)}</code></dd>" for k, v in facts) + "".join(
            f"<dt>{_t(k)}</dt><dd>" + (f"<a href=\"{_t(_https(v))}\" rel=\"noopener noreferrer\">{_t(v)}</a>"
                                       if _https(v) else f"<code>{_t(v)}</code>") + "</dd>"
            for k, v in links if v) + "</dl>")
        body.append(_verify_section(t, proof, signed, image))
    crumbs = _crumbs(names, t.key[:9], depth, f"Mesa {number}")
    scripts = ("acta.js", "firma.js") if e is not None else ()
    return _page(f"Mesa {number} · {center}", depth, crumbs, "".join(body), scripts)


def _area_page(area: Area, names: dict[str, str], tables: list[TablePage]) -> str:
    code = area.code
    depth = 0 if code == "VE" else len(_folder(code))
    body = [SEARCH_FORM, _counts(tables)]
    if area.children:
        level = LEVEL_NAMES[0] if code == "VE" else LEVEL_NAMES[CODE_LENGTHS.index(len(code)) + 1]
        rows = []
        for child in sorted(area.children.values(), key=lambda a: a.code):
            archived = sum(t.archived for t in child.tables)
            href = "/".join(_folder(child.code)[depth:]) + "/index.html"
            rows.append(f"<tr><th scope=\"row\"><a href=\"{_t(href)}\">{_t(child.name or child.code)}</a></th>"
                        f"<td>{archived:,} de {len(child.tables):,}</td></tr>".replace(",", "."))
        body.append(f"<div class=\"wide\"><table class=\"list\"><caption>{level}s</caption><thead><tr>"
                    f"<th scope=\"col\">{level}</th><th scope=\"col\">Mesas archivadas</th></tr></thead>"
                    f"<tbody>{''.join(rows)}</tbody></table></div>")
    else:
        rows = []
        for t in sorted(area.tables, key=lambda t: t.key):
            detail = f": {t.status.detail}" if t.status.detail and not t.archived else ""
            rows.append(f"<tr class=\"status-{t.status.kind}\"><th scope=\"row\"><a href=\"{t.key}.html\">"
                        f"Mesa {int(t.key[10:])}</a></th><td>{_t(STATUS_LABELS[t.status.kind] + detail)}</td></tr>")
        body.append("<div class=\"wide\"><table class=\"list\"><caption>Mesas</caption><thead><tr><th scope=\"col\">"
                    f"Mesa</th><th scope=\"col\">Estado</th></tr></thead><tbody>{''.join(rows)}</tbody></table></div>")
    body.append(_votes_table([("Suma de los QR leídos", _sum(tables))], "Votos según los códigos QR leídos"))
    title = "Resultados por acta: Venezuela" if code == "VE" else (area.name or code)
    crumbs = [("Venezuela", None)] if code == "VE" else _crumbs(names, code, depth)
    return _page(title, depth, crumbs, "".join(body), ("acta.js", "buscar/lugares.js"))


# -- the build ---------------------------------------------------------------------------------
def collect(bag: Path) -> tuple[list[TablePage], dict[str, Entry]]:
    """Every table of the index (or, with no index file, every table the mirror knows), one status each."""
    actas, index_entry = _latest_entries(bag)
    listed = _read_index(bag, index_entry)
    readings = tally(bag).tables if actas else {}
    failed = {f["key"] for f in _records(bag / FAILURES)}
    keys = set(listed) | set(actas) | failed
    statuses = table_statuses(bag, keys, readings)
    pages = []
    for key in sorted(keys):
        e = actas.get(key)
        names, published = listed.get(key, (["", "", "", ""], {}))
        if e is not None:
            names = [e.state or names[0], e.municipality or names[1], e.parish or names[2], e.center_name]
        reading = readings.get(key)
        qr = {**reading.votes, "VOTOS_NULOS": reading.nulos} if reading is not None and reading.votes else None
        pages.append(TablePage(key, names, statuses[key], e, qr, published or None))
    return pages, actas


def _write(tmp: Path, rel: str, text: str) -> None:
    """Write one file of the site; rel comes from checked codes only, and must stay in tmp."""
    if not re.fullmatch(r"(\d{2}/){0,3}(\d{9}/)?(index\.html|\d{9}\.\d{2}\.html)|[a-z]+\.(js|css)|buscar/[a-z0-9]+\.js",
                        rel):
        raise ValueError(f"refusing to write {rel!r}")
    target = tmp / rel
    if os.path.commonpath([tmp.resolve(), target.parent.resolve()]) != str(tmp.resolve()):
        raise ValueError(f"refusing to write outside the site: {rel!r}")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text, encoding="utf-8")


def _clear(path: Path) -> None:
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.exists():
        shutil.rmtree(path)


def build_site(bag: str | os.PathLike, pubkey: str | os.PathLike | None = None) -> "SiteResult":
    """Write site/ into the mirror, replacing the last one whole."""
    bag = Path(bag)
    if not (bag / PROVENANCE).is_file():
        raise NotAMirror(f"{bag}: not a mirror (no {PROVENANCE})")
    pages, actas = collect(bag)
    items = sorted(read_manifest(bag / PAYLOAD_MANIFEST).items()) if (bag / PAYLOAD_MANIFEST).exists() else []
    leaves = manifest_leaves(items)
    root = root_of_leaves(leaves).hex()
    position = {path: i for i, (path, _h) in enumerate(items)}
    paths = all_inclusion_paths(leaves)
    signed, warnings = _signed(bag, root, len(items), pubkey)

    names: dict[str, str] = {}
    country = Area("VE", "Venezuela")
    for t in pages:
        node = country
        node.tables.append(t)
        for level, length in enumerate(CODE_LENGTHS):
            code = t.key[:length]
            name = t.names[level] if level < 3 else (t.names[3] or f"Centro {code}")
            if t.names[level] or code not in names:
                names[code] = name
            node = node.children.setdefault(code, Area(code, ""))
            node.name = names[code]
            node.tables.append(t)
    site, tmp = bag / SITE, bag / (SITE + ".part")
    try:
        _clear(tmp)
        tmp.mkdir()
        for asset in ("acta.js", "acta.css"):
            _write(tmp, asset, (ASSETS / asset).read_text(encoding="utf-8"))
        _write(tmp, "firma.js", signed.script())
        _write(tmp, "index.html", _area_page(country, names, country.tables))
        by_state: dict[str, list] = {}
        places = []

        def walk(area: Area) -> None:
            for child in area.children.values():
                if len(child.code) < 9:
                    places.append([child.code, child.name, len(child.tables)])
                else:
                    by_state.setdefault(child.code[:2], []).append(
                        [child.code, next((t.names[3] for t in child.tables if t.names[3]), ""),
                         [int(t.key[10:]) for t in child.tables]])
                _write(tmp, "/".join(_folder(child.code)) + "/index.html", _area_page(child, names, child.tables))
                walk(child)

        walk(country)
        has_names = any(c[1] for centers in by_state.values() for c in centers)
        _write(tmp, "buscar/lugares.js", f"ACTA.places({_js(places)},{_js(sorted(by_state))},{_js(has_names)});\n")
        for state, centers in by_state.items():
            _write(tmp, f"buscar/e{state}.js", f"ACTA.centers({_js(state)},{_js(centers)});\n")
        for t in pages:
            proof = None
            if t.entry is not None and t.entry.path in position:
                i = position[t.entry.path]
                proof = {"leaf": leaf_data(*items[i]).decode("utf-8"), "sha256": items[i][1], "index": i,
                         "size": len(items), "path": [h.hex() for h in paths[i]]}
            _write(tmp, "/".join(_folder(t.key[:9])) + f"/{t.key}.html", _table_page(t, names, proof, signed))
        _clear(site)
        os.replace(tmp, site)
    except OSError as exc:
        raise ArchiveWriteError(f"cannot write the site into {bag}: {exc.strerror or exc}") from None
    archived = sum(t.archived for t in pages)
    return SiteResult(site / "index.html", f"{archived:,} of {len(pages):,} tables archived", warnings)


@dataclass(frozen=True)
class SiteResult:
    index: Path
    coverage: str  # "N of M tables archived", M the tables of the index
    warnings: list[str]  # each one line: what the site's own check will find wrong
