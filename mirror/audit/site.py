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
import stat
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote, urlsplit

from ..evidence import SIGNATURE, STATEMENT, check_seal
from ..merkle import all_inclusion_paths, leaf_data, manifest_leaves, root_of_leaves
from ..manifest import text_lines
from ..models import ArchiveWriteError, Entry, NotAMirror, UnsafePath, UsageError
from ..qrformat import CANDIDATES
from ..sign import PublicKey, load_public, parse_public
from ..sites.resultados2024 import acta_key, read_index_text
from ..state import MirrorState, read_state
from .coverage import archived_index
from .qr import CHANGED
from .tally import Table, electors_report, tally

SITE = "site"
KEY = re.compile(r"[0-9]{9}\.[0-9]{2}")  # fullmatch, ASCII: \d and $ take look-alikes and a newline
CID = re.compile(r"b[a-z2-7]{40,100}")  # a CIDv1 in base32, as the archive records it
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
    "unreadable": "acta archivada, sin lectura comprobada (ni el código QR ni las cifras impresas)",
    "failed": "no archivada: la descarga falló",
    "deferred": "no archivada todavía: quedó para la próxima descarga",
    "absent": "no archivada: no está en este espejo",
    "vanished": "el sitio de origen ya no la publica",
}


@dataclass(frozen=True)
class Status:
    kind: str  # a key of STATUS_LABELS: one of coverage.STATUSES
    detail: str = ""  # why, in the source's words (a decoder's or a server's message)


@dataclass
class TablePage:
    key: str
    names: list[str]  # state, municipality, parish, center name ("" where the source gives none)
    status: Status
    entry: Entry | None = None  # the latest archived version
    qr: dict | None = None  # column -> votes, from the QR
    published: dict | None = None  # column -> votes, from the index CSV
    electors: int | None = None  # the table's registered electors, where the archived index lists them
    over: int | None = None  # the votes its acta counts, when more than its electors (tally.electors_report)

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
def _published(state: MirrorState) -> dict[str, dict]:
    """key -> the votes the site's own index CSV gives (the latest archived index)."""
    entry = state.latest_index()
    if entry is None:
        return {}
    out: dict[str, dict] = {}
    try:
        text = read_index_text(archived_index(state, entry))
        for row in csv.DictReader(io.StringIO(text, newline="")):
            try:
                out[acta_key(row["CENTRO"], row["MESA"])] = {c: int(row[c]) for c in COLUMNS
                                                             if (row.get(c) or "").strip()}
            except (ValueError, KeyError, TypeError, AttributeError):
                continue  # coverage.py reports what the index lists; a row without figures has none to show
    except (OSError, UnsafePath, UnicodeDecodeError, csv.Error) as exc:
        raise NotAMirror(f"{entry.path}: the archived index is unreadable ({exc})") from None
    return out


def _status(t: Table) -> Status:
    """The coverage status with its details in Spanish (a server's or decoder's own words kept)."""
    s = t.state
    if s.status == "absent":
        return Status(s.status, "el índice la lista, pero este espejo no registra ninguna descarga")
    if s.status == "vanished":
        kept = "; se conserva la copia archivada" if t.entry else ""
        return Status(s.status, (f"desde el {_when(s.at)}" if s.at else "") + kept)
    when = [f"el {_when(s.at)}"] if s.at and s.status in ("failed", "deferred") else []
    if s.attempts:
        when.append(f"tras {s.attempts} {'intento' if s.attempts == 1 else 'intentos'}")
    return Status(s.status, s.detail + (f" ({', '.join(when)})" if when else ""))


def _when(iso: str) -> str:
    """'2026-11-27T05:09:07.8Z' -> '2026-11-27 05:09 UTC' (what a voter reads; the ISO stays in the records)."""
    m = re.match(r"(\d{4}-\d\d-\d\d)T(\d\d:\d\d)", iso)
    return f"{m.group(1)} {m.group(2)} UTC" if m else iso


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


def _gateway(url: str | None) -> str:
    """An IPFS gateway's base URL: https, or http on loopback (a local node's gateway)."""
    if not url:
        return ""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018  (a port that is not a number raises here)
    except ValueError:
        raise UsageError("--gateway: not a URL, like https://GATEWAY") from None
    if "@" in parts.netloc:  # the site is public: a credential in it would be published on every page
        raise UsageError("--gateway: a URL without user or password, like https://GATEWAY")
    loopback = parts.scheme == "http" and parts.hostname in ("127.0.0.1", "localhost", "::1")
    if not (_https(url) or loopback) or parts.query or parts.fragment or any(c in url for c in "\"'<>` "):
        raise UsageError(f"--gateway {url!r}: an https URL (or http on 127.0.0.1), like https://GATEWAY")
    return url.rstrip("/")


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


def _cifra(n: int) -> str:
    """A count as Venezuela writes it (1.234.567): "1,234" would read as one and a fraction."""
    return f"{n:,}".replace(",", ".")


def _counts(tables: list[TablePage]) -> str:
    total = len(tables)
    archived = sum(t.archived for t in tables)
    read = sum(t.qr is not None for t in tables)
    return (f"<p class=\"counts\"><strong>{_cifra(archived)} de {_cifra(total)} mesas archivadas</strong>; "
            f"{_cifra(read)} de {_cifra(total)} actas leídas del código QR.</p>")


def _votes_table(columns: list[tuple[str, dict | None]], caption: str) -> str:
    head = "".join(f"<th scope=\"col\">{_t(name)}</th>" for name, _v in columns)
    rows = []
    for col in COLUMNS:
        values = [v.get(col) if v else None for _n, v in columns]
        differ = len({v for v in values if v is not None}) > 1
        cells = "".join(f"<td>{'—' if v is None else _cifra(v)}</td>" for v in values)
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


def _small(state: MirrorState, name: str) -> bytes | None:
    try:
        with state.open(name) as fh:
            return fh.read(64 * 1024)
    except (FileNotFoundError, UnsafePath, OSError):
        return None


def _signed(state: MirrorState, root: str, size: int, pubkey) -> tuple[Signed, list[str]]:
    """The key the page shows: the one given (--pubkey), else the one the signed statement names.
    Warnings: whatever check_seal finds, so the builder learns what a visitor's check will say."""
    seal = check_seal(state.root, pubkey, state)
    warnings = [str(p) for p in seal.problems]
    public = load_public(pubkey) if pubkey else None
    lines = None
    raw = _small(state, SIGNATURE)
    if raw is not None:
        lines = text_lines(raw.decode("utf-8", "replace"))  # as minisign and sign.parse_signature split it
        if len(lines) < 4 or not lines[2].startswith("trusted comment: "):
            lines = None
    if lines is None:
        warnings.append(f"{SIGNATURE}: missing or not a minisign signature; every table's check will say so")
    if public is None:
        try:
            public = parse_public(json.loads(_small(state, STATEMENT) or b"{}").get("public_key", ""), STATEMENT)
        except (ValueError, AttributeError, RecursionError, UsageError):
            warnings.append("no --pubkey and no key in the signed statement: the site cannot check the signature")
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
        f"<dt>Raíz de Merkle</dt><dd><code id=\"root\">{_t(signed.root)}</code> ({_cifra(signed.size)} archivos)</dd></dl>"
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


def _table_page(t: TablePage, names: dict[str, str], proof: dict | None, signed: Signed, gateway: str) -> str:
    depth = 4
    up = "../" * depth
    number = int(t.key[10:])
    center = names.get(t.key[:9]) or f"Centro {t.key[:9]}"
    label = STATUS_LABELS[t.status.kind]
    body = [f"<p class=\"status status-{t.status.kind}\" id=\"status\"><strong>{_t(label)}</strong>"
            + (f": {_t(t.status.detail)}" if t.status.detail else "") + "</p>"]
    read_from = "Cifras impresas del acta" if t.status.kind == "print" else "QR del acta"
    body.append(_votes_table([(read_from, t.qr), ("Índice publicado", t.published)],
                             f"Votos de la mesa {number}"))
    if t.qr and t.published and any(t.qr.get(c) != t.published.get(c) for c in t.published):
        body.append("<p class=\"differ\" id=\"disagreement\">El QR del acta y el índice publicado no coinciden "
                    "(filas marcadas).</p>")
    if t.electors is not None:
        body.append(f"<p id=\"electors\">Electores inscritos en la mesa, según el índice: {_cifra(t.electors)}</p>")
        if t.over is not None:
            body.append(f"<p class=\"differ\" id=\"over-electors\">El acta cuenta {_cifra(t.over)} votos, más que los "
                        f"{_cifra(t.electors)} electores inscritos en la mesa: un acta alterada o mal impresa, o un "
                        "error del índice.</p>")
    e = t.entry
    if e is not None:
        image = up + "../" + _local(e.path)  # the site sits in the mirror, next to data/
        facts = [("Acta", t.key), ("sha256", e.sha256), ("CID (IPFS)", e.cid or "—"), ("Versión", e.version),
                 ("Descargada", e.fetched_at), ("Archivo", e.path)]
        links = [("URL de origen", e.url), ("URL final", e.final_url), ("Página", e.page)]
        if gateway and CID.fullmatch(e.cid):
            proof = {**(proof or {}), "gateway": f"{gateway}/ipfs/{e.cid}"}
            links.insert(0, ("En IPFS", proof["gateway"]))
        body.append(f"<h2>Acta</h2><p><a href=\"{_t(image)}\">Abrir la imagen original</a> (para ampliarla) · "
                    "<button type=\"button\" id=\"zoom\" aria-pressed=\"false\">Ampliar aquí</button></p>"
                    f"<div class=\"acta\" id=\"acta-box\"><img id=\"acta\" src=\"{_t(image)}\" "
                    f"alt=\"Acta de escrutinio de la mesa {number}, {_t(center)}\"></div>")
        body.append("<h2>Datos del archivo</h2><dl class=\"facts\">" + "".join(
            f"<dt>{_t(k)}</dt><dd><code>{_t(v)}</code></dd>" for k, v in facts) + "".join(
            f"<dt>{_t(k)}</dt><dd>" + (f"<a href=\"{_t(v)}\" rel=\"noopener noreferrer\">{_t(v)}</a>"
                                       if _https(v) or k == "En IPFS" else f"<code>{_t(v)}</code>") + "</dd>"
            for k, v in links if v) + "</dl>")
        body.append(_verify_section(t, proof, signed, image))
    crumbs = _crumbs(names, t.key[:9], depth, f"Mesa {number}")
    scripts = ("acta.js", "firma.js") if e is not None else ()
    return _page(f"Mesa {number} · {center}", depth, crumbs, "".join(body), scripts)


def _area_page(area: Area, names: dict[str, str], tables: list[TablePage], short: str = "") -> str:
    code = area.code
    depth = 0 if code == "VE" else len(_folder(code))
    body = [SEARCH_FORM, _counts(tables)] + ([f"<p class=\"counts\">{_t(short)}</p>"] if short else [])
    if area.children:
        level = LEVEL_NAMES[0] if code == "VE" else LEVEL_NAMES[CODE_LENGTHS.index(len(code)) + 1]
        rows = []
        for child in sorted(area.children.values(), key=lambda a: a.code):
            archived = sum(t.archived for t in child.tables)
            href = "/".join(_folder(child.code)[depth:]) + "/index.html"
            rows.append(f"<tr><th scope=\"row\"><a href=\"{_t(href)}\">{_t(child.name or child.code)}</a></th>"
                        f"<td>{_cifra(archived)} de {_cifra(len(child.tables))}</td></tr>")
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
                    f"Mesa</th><th scope=\"col\">Situación</th></tr></thead><tbody>{''.join(rows)}</tbody></table></div>")
    # The sum's base in its caption; with no acta read there is no sum to show (zeros would read as no votes)
    read = sum(t.qr is not None for t in tables)
    body.append(_votes_table([("Suma de los QR leídos", _sum(tables) if read else None)],
                             f"Votos según los códigos QR leídos: {_cifra(read)} de {_cifra(len(tables))} actas"
                             + ("" if read else " (ninguna leída: no hay suma)")))
    title = "Resultados por acta: Venezuela" if code == "VE" else (area.name or code)
    crumbs = [("Venezuela", None)] if code == "VE" else _crumbs(names, code, depth)
    return _page(title, depth, crumbs, "".join(body), ("acta.js", "buscar/lugares.js"))


# -- the build ---------------------------------------------------------------------------------
def collect(state: MirrorState) -> tuple[list[TablePage], list[str], list[str], tuple[int, int]]:
    """Every table of the index (with no index file, every table the mirror knows of), each with
    its one status from the audit's coverage; the keys left out (not a table key: no page); and
    the tables whose archived file is not the bytes recorded (a changed copy); and the list's
    gaps (listing pages, index rows the last run could not read: Coverage.gaps)."""
    published = _published(state)
    pages, skipped, changed = [], [], []
    result = tally(state.root)
    over = {x["key"]: x["votes"] for x in electors_report(result)["over"]}
    for key, t in result.tables.items():
        if not KEY.fullmatch(key):
            skipped.append(key)
            continue
        if t.state.cause == CHANGED:
            changed.append(key)
        p, e = t.state.place, t.entry
        names = [p.state, p.municipality, p.parish, e.center_name if e else p.center_name]
        if e is not None:
            names = [e.state or names[0], e.municipality or names[1], e.parish or names[2], names[3]]
        qr = {**t.votes, "VOTOS_NULOS": t.nulos} if t.votes else None
        pages.append(TablePage(key, names, _status(t), e, qr, published.get(key), t.state.electors, over.get(key)))
    return pages, skipped, changed, result.coverage.gaps


def _write(tmp: Path, rel: str, text: str) -> None:
    """Write one file of the site; rel comes from checked codes only, and must stay in tmp."""
    if not re.fullmatch(r"([0-9]{2}/){0,3}([0-9]{9}/)?(index\.html|[0-9]{9}\.[0-9]{2}\.html)|[a-z]+\.(js|css)|buscar/[a-z0-9]+\.js",
                        rel):
        raise ValueError(f"refusing to write {rel!r}")
    target = os.path.normpath(os.path.join(tmp, rel))
    if not target.startswith(os.path.join(tmp, "")):  # tmp is made fresh by this run: no link inside it
        raise ValueError(f"refusing to write outside the site: {rel!r}")
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text, encoding="utf-8")


def _clear(path: Path) -> None:
    """Remove the last site: a real folder whole, anything else (a link, a FIFO a copy put
    there) as a name, never opened: rmtree opens what it is given, and a FIFO blocks."""
    try:
        is_folder = stat.S_ISDIR(os.lstat(path).st_mode)
    except FileNotFoundError:
        return
    if is_folder:
        try:
            shutil.rmtree(path)
        except RecursionError:  # rmtree recurses per folder: a copy's site/ nested a thousand deep stops it
            raise UsageError(f"{path}: its folders are nested too deep to remove; remove it yourself "
                             "(rm -rf), then run 'site' again") from None
    else:
        path.unlink()


def build_site(bag: str | os.PathLike, pubkey: str | os.PathLike | None = None,
               gateway: str | None = None) -> "SiteResult":
    """Write site/ into the mirror, replacing the last one whole. With a gateway, every table's
    page also links its image by CID there, and the check falls back to it when the mirror's
    copy is not beside the site (a Git shard that holds other states)."""
    gateway = _gateway(gateway)
    bag = Path(bag)
    state = read_state(bag).require_clean()  # a hostile record stops here, named, before anything is written
    pages, skipped, changed, gaps = collect(state)
    items = sorted(state.manifest.items())
    leaves = manifest_leaves(items)
    root = root_of_leaves(leaves).hex()
    position = {path: i for i, (path, _h) in enumerate(items)}
    paths = all_inclusion_paths(leaves)
    signed, warnings = _signed(state, root, len(items), pubkey)
    warnings += [f"{key}: not a table key (9 digits, a dot, 2 digits): no page" for key in skipped]
    if changed:
        archived = sum(t.archived for t in pages)
        warnings.append(f"{len(changed):,} of {archived:,} archived actas are not the bytes the archive recorded "
                        f"(first: {changed[0]}): their pages' check will fail; run 'acta-mirror verify'")

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
        _write(tmp, "index.html", _area_page(country, names, country.tables, _short_list(gaps)))
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
            _write(tmp, "/".join(_folder(t.key[:9])) + f"/{t.key}.html", _table_page(t, names, proof, signed, gateway))
        _clear(site)
        os.replace(tmp, site)
    except OSError as exc:
        raise ArchiveWriteError(f"cannot write the site into {bag}: {exc.strerror or exc}") from None
    archived = sum(t.archived for t in pages)
    return SiteResult(site / "index.html", f"{archived:,} of {len(pages):,} tables archived", warnings)


def _short_list(gaps: tuple[int, int]) -> str:
    """What the home page says when the last run could not read all of the list of tables
    (gaps: listing pages, index rows, as the audit's coverage counted them)."""
    pages, rows = gaps
    if not pages and not rows:
        return ""
    what = " y ".join([f"{_cifra(pages)} página(s) de la lista"] * bool(pages)
                      + [f"{_cifra(rows)} fila(s) del índice"] * bool(rows))
    return f"La lista de mesas puede estar incompleta: la última descarga no pudo leer {what}."


@dataclass(frozen=True)
class SiteResult:
    index: Path
    coverage: str  # "N of M tables archived", M the tables of the index
    warnings: list[str]  # each one line: what the site's own check will find wrong
