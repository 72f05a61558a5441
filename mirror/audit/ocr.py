"""Read an acta's printed figures with OCR, and accept them only when they check themselves.

Every party row prints its votes twice: in digits and in Spanish number words ("Cero, Dos,
Dos, Tres" = 0223); the summary below gives the valid votes, the null votes and the total.
tesseract reads the words more reliably than the digits, so a row's value is its words,
confirmed by a reading of its digits. The reading is "checked" only when all 38 party rows
are found and confirmed, the three totals are found (their digits sit in ruled cells that
OCR reads poorly, so the arithmetic checks their words), the parties add up to the valid
votes and valid plus null votes make the total. When a check fails, the failing part is read
again at other settings: the digit column alone (digits only, twice the size), each
unconfirmed row alone, the summary box with its rules removed, then the whole band at 1.5x
with more contrast, and the whole page when the table was not found. Passes are combined row
by row; what still fails is "needs review", never a guess. A checked reading also gives the
acta code printed under the title: the figures name no table, and a reading that stands in for
a lost QR code must be of the table it is counted for.

The layout is found from the text: the party rows are the lines ending in four number
words between the column header (Cand. / Sigla / Código) and "Resumen de votos".

Readings are kept per file content (sha256) in the user's cache, never in a mirror (a mirror
made by someone else could carry forged readings): a re-run never reads the same bytes twice.
"""
from __future__ import annotations

import contextlib
import difflib
import json
import os
import re
import shutil
import unicodedata
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import BinaryIO

from PIL import Image, ImageOps

from ..qrformat import PARTY_FIELDS, by_candidate

READER_VERSION = 3  # bump when the reading changes: older cached readings are then ignored
MIN_SIDE = 64  # px: a page smaller than this holds no legible table (and tesseract refuses empty crops)
BAND = (0.10, 0.68)  # the part of the page searched first (the party table sits at about 0.20-0.50)
NUMBER_WORDS = {"cero": 0, "uno": 1, "dos": 2, "tres": 3, "cuatro": 4, "cinco": 5, "seis": 6,
                "siete": 7, "ocho": 8, "nueve": 9}
CHECKED, REVIEW = "checked", "needs review"
# digit look-alikes tesseract produces in the NRO column
_DIGIT_LIKE = str.maketrans({"o": "0", "O": "0", "D": "0", "Q": "0", "l": "1", "I": "1", "i": "1",
                             "S": "5", "s": "5", "$": "5", "B": "8", "Z": "2", "z": "2"})
_FRAME = "|[]{}()—-_¡!'\"‘’“”.:;"  # table rules and specks around a figure
_TOKEN = re.compile(r"[A-Za-zÀ-ÿ]+|\d+|\S")


@dataclass(frozen=True)
class PrintReading:
    status: str  # CHECKED or REVIEW
    parties: tuple[int, ...] | None  # the 38 party rows in ballot order, when checked
    valid: int | None
    nulos: int | None
    total: int | None
    detail: str  # which checks failed, or which passes were combined
    code: str = ""  # the acta code printed under the title, "<center>.<table>", when checked and read

    def by_candidate(self) -> dict[str, int]:
        return by_candidate(self.parties)


@dataclass(frozen=True)
class Row:
    words: int | None  # the value the number words give
    digits: tuple[int, ...]  # the values the digits gave in the passes that could read them
    box: tuple[int, int, int, int] | None = None  # the digits' box (left, top, right, bottom) in the view
    line: tuple[int, int] = (0, 0)  # the line's top and bottom in the view


@dataclass(frozen=True)
class Page:
    """What one OCR pass found: the party rows in order, and the summary rows by name."""

    parties: tuple[Row, ...]
    summary: dict  # "total", "valid", "nulos" -> Row


def available() -> bool:
    """Is tesseract with its Spanish data installed?"""
    if shutil.which("tesseract") is None:
        return False
    try:
        import pytesseract

        return "spa" in pytesseract.get_languages(config="")
    except Exception:  # any failure to run it means: no OCR here
        return False


def _plain(text: str) -> str:
    return "".join(c for c in unicodedata.normalize("NFD", text) if unicodedata.category(c) != "Mn").lower()


def _number_word(token: str) -> int | None:
    token = _plain(token)
    if len(token) < 3 or not token.isalpha():
        return None
    if token in NUMBER_WORDS:
        return NUMBER_WORDS[token]
    close = difflib.get_close_matches(token, NUMBER_WORDS, n=2, cutoff=0.75)
    if len(close) == 1 or (close and difflib.SequenceMatcher(None, token, close[0]).ratio() >= 0.85):
        return NUMBER_WORDS[close[0]]
    return None


def _digits(chunk: str) -> int | None:
    """The number a whitespace-separated chunk shows, reading digit look-alikes as digits."""
    t = chunk.strip(_FRAME).translate(_DIGIT_LIKE)
    return int(t) if t.isdigit() and len(t) <= 4 else None


def parse_line(words: list[str], boxes: list | None = None) -> tuple[str, Row] | None:
    """(the label before the figures, Row) for a line ending in four number words, else None.

    words are the line's whitespace-separated words; boxes, when given, their (left, top, right, bottom).
    """
    line = " ".join(words)
    starts = [sum(len(w) + 1 for w in words[:i]) for i in range(len(words))]
    matches = list(_TOKEN.finditer(line))
    tokens = [m.group() for m in matches]
    found = [(i, v) for i, v in ((i, _number_word(t)) for i, t in enumerate(tokens)) if v is not None]
    # the last run of four number words, separated only by commas or nothing, ending the line
    for start in range(len(found) - 4, -1, -1):
        run = found[start:start + 4]
        between = [tokens[j] for a, b in zip(run, run[1:]) for j in range(a[0] + 1, b[0])]
        after = tokens[run[-1][0] + 1:]
        if not (all(t in ",.;" for t in between) and all(len(t) <= 2 or t in _FRAME for t in after)):
            continue
        value = int("".join(str(d) for _i, d in run))
        offset = matches[run[0][0]].start()
        first = max(i for i, s0 in enumerate(starts) if s0 <= offset)  # the word the figures start in
        before = [i for i in range(first) if words[i].strip(_FRAME)]
        digits = _digits(words[before[-1]]) if before else None
        label_words = before[:-1] if digits is not None else before
        label = " ".join(words[i].strip(_FRAME) for i in label_words if words[i].strip(_FRAME).isalpha())
        box = boxes[before[-1]] if boxes and digits is not None else None
        span = (min(b[1] for b in boxes), max(b[3] for b in boxes)) if boxes else (0, 0)
        return label, Row(value, () if digits is None else (digits,), box, span)
    return None


def _summary_name(label: str) -> str | None:
    words = [_plain(w) for w in label.split() if len(w) >= 3]
    if not words or difflib.SequenceMatcher(None, words[0], "votos").ratio() < 0.75:
        return None
    if len(words) == 1:
        return "total"
    second = difflib.get_close_matches(words[1], ["validos", "nulos", "parciales", "vacios"], n=1, cutoff=0.7)
    return {"validos": "valid", "nulos": "nulos"}.get(second[0]) if second else None


def _lines(data: dict) -> list[tuple[list[str], list]]:
    """Words and boxes per text line, in reading order, from pytesseract's image_to_data."""
    lines: dict[tuple, tuple[list, list]] = {}
    for i, text in enumerate(data["text"]):
        if not text.strip():
            continue
        words, boxes = lines.setdefault((data["block_num"][i], data["par_num"][i], data["line_num"][i]), ([], []))
        left, top = data["left"][i], data["top"][i]
        words.append(text.strip())
        boxes.append((left, top, left + data["width"][i], top + data["height"][i]))
    return list(lines.values())


def parse_page(lines: list[tuple[list[str], list]]) -> Page:
    """The party rows (between the column header and 'Resumen') and the summary rows of an OCR pass."""
    plain = [_plain(" ".join(words)) for words, _b in lines]
    start = max((i for i, p in enumerate(plain) if re.search(r"\b(sigla|codigo|cand)\b", p)), default=None)
    end = next((i for i, p in enumerate(plain) if "resumen" in p and (start is None or i > start)), None)
    parties: list[Row] = []
    summary: dict[str, Row] = {}
    if start is not None and end is not None:
        for words, boxes in lines[start + 1:end]:
            parsed = parse_line(words, boxes)
            if parsed:
                parties.append(parsed[1])
    if end is not None:
        for words, boxes in lines[end + 1:]:
            parsed = parse_line(words, boxes)
            if parsed:
                name = _summary_name(parsed[0])
                if name and name not in summary:
                    summary[name] = parsed[1]
    return Page(tuple(parties), summary)


def _words(rows: list[Row]) -> tuple[int | None, str]:
    values = {r.words for r in rows if r.words is not None}
    if len(values) == 1:
        return values.pop(), ""
    return None, "passes read different words" if values else "no reading"


def _party(rows: list[Row]) -> tuple[int | None, str]:
    """A party row's value: its words, agreed across passes and confirmed by a digit reading."""
    value, why = _words(rows)
    if value is None:
        return None, why
    digits = {d for r in rows for d in r.digits}
    if value in digits:
        return value, ""
    return None, f"words say {value}, digits say {'/'.join(map(str, sorted(digits)))}" if digits else \
        f"words say {value}, digits illegible"


def combine(pages: list[Page]) -> PrintReading:
    """Resolve each row across passes and check the arithmetic; REVIEW with the reasons when it fails.

    Party rows need their words confirmed by their digits. The summary rows sit in ruled cells
    whose digits OCR reads poorly; their words are checked by the arithmetic instead: the
    confirmed parties must add up to the valid votes, and valid plus null votes to the total.
    """
    usable = [p for p in pages if len(p.parties) == PARTY_FIELDS]
    if not usable:
        found = sorted({len(p.parties) for p in pages})
        return PrintReading(REVIEW, None, None, None, None, f"party rows found: {found}, not {PARTY_FIELDS}")
    problems = []
    parties = []
    for i in range(PARTY_FIELDS):
        value, why = _party([p.parties[i] for p in usable])
        if value is None:
            problems.append(f"party row {i + 1}: {why}")
        parties.append(value)
    totals = {}
    for name in ("valid", "nulos", "total"):
        value, why = _words([p.summary[name] for p in pages if name in p.summary])
        if value is None:
            problems.append(f"{name} votes: {why}")
        totals[name] = value
    if not problems:
        if sum(parties) != totals["valid"]:
            problems.append(f"the parties add up to {sum(parties)}, the valid votes read {totals['valid']}")
        if totals["valid"] + totals["nulos"] != totals["total"]:
            problems.append(f"valid {totals['valid']} + null {totals['nulos']} is not the total {totals['total']}")
    if problems:
        return PrintReading(REVIEW, None, None, None, None, "; ".join(problems[:4])
                            + (f" (and {len(problems) - 4} more)" if len(problems) > 4 else ""))
    return PrintReading(CHECKED, tuple(parties), totals["valid"], totals["nulos"], totals["total"],
                        f"{len(pages)} pass(es)")


DIGITS_ONLY = "-c tessedit_char_whitelist=0123456789"


def _ocr(view: Image.Image, config: str) -> list[tuple[list[str], list]]:
    import pytesseract

    return _lines(pytesseract.image_to_data(view, lang="spa", config=config, output_type=pytesseract.Output.DICT))


def _median(values: list[int]) -> int:
    return sorted(values)[len(values) // 2]


def reread_digits(view: Image.Image, page: Page) -> Page:
    """Read the party rows' digit column again, alone, digits only, at twice the size.

    The column is where this pass found the digits of the rows whose digits and words agreed;
    each number found is given to the row whose line it sits on.
    """
    confirmed = [r.box for r in page.parties if r.box and r.words in r.digits]
    boxes = confirmed if len(confirmed) >= 3 else [r.box for r in page.parties if r.box]
    if len(boxes) < 3 or len(page.parties) != PARTY_FIELDS:
        return page
    pad = _median([b[3] - b[1] for b in boxes])
    left, right = _median([b[0] for b in boxes]) - 2 * pad, _median([b[2] for b in boxes]) + 2 * pad
    top = min(r.line[0] for r in page.parties) - pad
    bottom = max(r.line[1] for r in page.parties) + pad
    crop = view.crop((max(0, left), max(0, top), min(view.width, right), min(view.height, bottom)))
    crop = ImageOps.autocontrast(crop.resize((crop.width * 2, crop.height * 2), Image.Resampling.LANCZOS))
    found: list[tuple[float, int]] = []
    for words, wboxes in _ocr(crop, f"--psm 6 {DIGITS_ONLY}"):
        text = "".join(words)
        if text.isdigit() and len(text) <= 4:
            found.append((max(0, top) + (min(b[1] for b in wboxes) + max(b[3] for b in wboxes)) / 4, int(text)))
    rows = []
    for r in page.parties:
        mine = [v for y, v in found if r.line[0] - 2 <= y <= r.line[1] + 2]
        rows.append(Row(r.words, r.digits + tuple(mine[:1]) if len(mine) == 1 else r.digits, r.box, r.line)
                    if mine else r)
    return Page(tuple(rows), page.summary)


def unruled(img: Image.Image) -> Image.Image:
    """The image with its table rules whitened: rows and columns that are mostly dark ink."""
    import numpy as np

    a = np.asarray(img).copy()
    dark = a < 140
    rows = np.flatnonzero(dark.mean(axis=1) > 0.5)
    cols = np.flatnonzero(dark.mean(axis=0) > 0.5)
    for idx, axis in ((rows, 0), (cols, 1)):
        for i in idx:
            sl = slice(max(0, i - 1), i + 2)
            if axis == 0:
                a[sl, :] = 255
            else:
                a[:, sl] = 255
    return Image.fromarray(a)


def reread_summary(view: Image.Image, lines: list[tuple[list[str], list]], page: Page) -> Page:
    """Read the summary table (the ruled box under "Resumen de votos") again, alone, its rules removed."""
    heading = next((b for w, b in lines if "resumen" in _plain(" ".join(w))), None)
    if heading is None:
        return page
    top = max(b[3] for b in heading)
    height = max(b[3] - b[1] for b in heading)
    crop = view.crop((0, top, view.width, min(view.height, top + 14 * height)))
    crop = unruled(ImageOps.autocontrast(crop.resize((crop.width * 2, crop.height * 2), Image.Resampling.LANCZOS)))
    summary = dict(page.summary)
    for words, boxes in _ocr(crop, "--psm 6"):
        parsed = parse_line(words, boxes)
        name = parsed and _summary_name(parsed[0])
        if name and name not in summary:
            summary[name] = parsed[1]
    return Page(page.parties, summary)


ROW_REREADS = 6  # at most this many rows are read one by one per pass (each is a tesseract run)


def reread_rows(view: Image.Image, page: Page) -> Page:
    """Read the digits of each row still unconfirmed alone, as one word, at three times the size."""
    boxes = [r.box for r in page.parties if r.box and r.words in r.digits]
    if len(boxes) < 3:
        return page
    pad = _median([b[3] - b[1] for b in boxes])
    left, right = _median([b[0] for b in boxes]) - 2 * pad, _median([b[2] for b in boxes]) + 2 * pad
    rows, budget = [], ROW_REREADS
    for r in page.parties:
        if r.words in r.digits or budget == 0 or r.line == (0, 0):
            rows.append(r)
            continue
        budget -= 1
        crop = view.crop((max(0, left), max(0, r.line[0] - pad // 3), min(view.width, right),
                          min(view.height, r.line[1] + pad // 3)))
        crop = ImageOps.autocontrast(crop.resize((crop.width * 3, crop.height * 3), Image.Resampling.LANCZOS))
        found = ["".join(w) for w, _b in _ocr(crop, f"--psm 7 {DIGITS_ONLY}")]
        text = "".join(found)
        rows.append(Row(r.words, r.digits + (int(text),), r.box, r.line) if text.isdigit() and len(text) <= 4 else r)
    return Page(tuple(rows), page.summary)


SCAN_WIDTH = 640  # px: the sheet's width scanned at 200 dpi, the resolution tesseract reads it best at
MAX_TILT = 8.0  # degrees: the deskew search range (scans are seen tilted up to about 7)


def tilt(gray: Image.Image) -> float:
    """The page's tilt in degrees (counterclockwise), from its text lines: the angle that,
    undone, makes the band's rows of ink sharpest (the projection profile method)."""
    import numpy as np

    w, h = gray.size
    band = gray.crop((0, int(h * BAND[0]), w, int(h * BAND[1])))
    small = band.resize((max(1, band.width // 2), max(1, band.height // 2)), Image.Resampling.BOX)
    ink = small.point(lambda v: 255 if v < 128 else 0)  # ink bright, so rotation fills with paper (0)
    best, best_score = 0.0, -1.0
    for angle in np.arange(-MAX_TILT, MAX_TILT + 0.01, 0.25):
        rows = np.asarray(ink.rotate(-angle, resample=Image.Resampling.NEAREST), dtype=np.float32).sum(axis=1)
        score = float((np.diff(rows) ** 2).sum())
        if score > best_score:
            best, best_score = float(angle), score
    return best


def normalized(gray: Image.Image) -> Image.Image:
    """The page at about the scan resolution tesseract was measured at, its tilt undone.
    Reduced copies are scaled up, and scans at two or three times that resolution down (read
    as they are, their rows failed the checks, and a 40 Mpx page kept tesseract busy for
    minutes); a tilt under a degree is left alone (tesseract copes with it, and turning the
    page blurs its figures)."""
    if not SCAN_WIDTH * 0.85 <= gray.width <= SCAN_WIDTH * 1.5:
        factor = SCAN_WIDTH / gray.width
        gray = gray.resize((SCAN_WIDTH, round(gray.height * factor)), Image.Resampling.LANCZOS)
    angle = tilt(gray)
    if abs(angle) >= 1.0:
        gray = gray.rotate(-angle, resample=Image.Resampling.BICUBIC, expand=True, fillcolor=255)
    return gray


def _views(gray: Image.Image):
    """Views of the page to read, cheapest first: the band at scan resolution, then other settings."""
    w, h = gray.size
    band = gray.crop((0, int(h * BAND[0]), w, int(h * BAND[1])))
    yield band, "--psm 6"
    yield ImageOps.autocontrast(band.resize((int(w * 1.5), int(band.height * 1.5)), Image.Resampling.LANCZOS)), "--psm 6"
    yield gray, "--psm 4"  # the whole page, in case the table is not where it usually is


def read_print(source: str | os.PathLike | BinaryIO) -> PrintReading:
    """OCR the printed figures of one acta image (no cache); tesseract must be installed.
    A file that gives no page, or a page tesseract cannot read, is REVIEW with the reason."""
    from pytesseract import TesseractError

    from .qr import Unusable, load_page

    os.environ["OMP_THREAD_LIMIT"] = "1"  # tesseract's own threads fight the worker pool for the cores
    try:
        gray = load_page(source)  # the QR reader's loader: upright, 8-bit gray, bombs refused
    except Unusable as why:
        return PrintReading(REVIEW, None, None, None, None, why.detail)
    if min(gray.size) < MIN_SIDE:
        return PrintReading(REVIEW, None, None, None, None, f"page of {gray.width}x{gray.height} px: too small to read")
    try:
        page = normalized(gray)
        reading = _read_views(page)
        return replace(reading, code=printed_code(page)) if reading.status == CHECKED else reading
    except (TesseractError, ValueError) as exc:  # tesseract's refusal, or an empty crop of an odd page
        return PrintReading(REVIEW, None, None, None, None, f"OCR failed ({exc.__class__.__name__}: {str(exc)[:80]})")


HEADER = 0.12  # the top of the page, down to here, holds the title and the acta's code
_CODE = re.compile(r"([0-9]{9})\.([0-9]{2})\.1\.0001")


def printed_code(gray: Image.Image) -> str:
    """The acta code printed under the title ("010101002.03.1.0001") as "<center>.<table>";
    "" unless exactly one is read. The figures name no table: this code does."""
    w, h = gray.size
    found = {f"{m[1]}.{m[2]}" for words, _b in _ocr(gray.crop((0, 0, w, max(1, int(h * HEADER)))), "--psm 6")
             for m in _CODE.finditer("".join(words))}
    return found.pop() if len(found) == 1 else ""


def _read_views(gray: Image.Image) -> PrintReading:
    pages: list[Page] = []
    reading = None
    for view, config in _views(gray):
        lines = _ocr(view, config)
        page = parse_page(lines)
        if any(r.words not in r.digits for r in page.parties):
            page = reread_digits(view, page)
        if any(r.words not in r.digits for r in page.parties):
            page = reread_rows(view, page)
        if any(name not in page.summary for name in ("valid", "nulos", "total")):
            page = reread_summary(view, lines, page)
        pages.append(page)
        reading = combine(pages)
        if reading.status == CHECKED:
            return reading
        if len(pages) == 2 and any(len(p.parties) == PARTY_FIELDS for p in pages):
            break  # the table was found where it should be: the whole page would add nothing
    return reading


def cache_dir() -> Path | None:
    """Where readings are kept; None where the user has no cache folder (no XDG_CACHE_HOME and
    no home): then none is kept (expanduser gave a folder named '~' in the current one)."""
    from ..config import home

    if os.environ.get("XDG_CACHE_HOME"):
        return Path(os.environ["XDG_CACHE_HOME"]) / "acta-mirror" / "readings"
    found = home()
    return found / ".cache" / "acta-mirror" / "readings" if found else None


def cached_read_print(source: str | os.PathLike | BinaryIO, sha256: str, *, hashed: bool = False) -> PrintReading:
    """read_print, kept in the user's cache by the file's sha256. The bytes are checked first,
    unless the caller has just hashed the file it hands over (hashed=True)."""
    import hashlib

    if not hashed:
        with open(source, "rb") if isinstance(source, (str, os.PathLike)) else contextlib.nullcontext(source) as fh:
            fh.seek(0)
            actual = hashlib.file_digest(fh, "sha256").hexdigest()
        if actual != sha256:
            return PrintReading(REVIEW, None, None, None, None, "the file's bytes are not the archived ones")
    folder = cache_dir()
    if folder is None:
        return read_print(source)
    target = folder / f"ocr-v{READER_VERSION}" / sha256[:2] / f"{sha256}.json"
    try:
        obj = json.loads(target.read_text(encoding="utf-8"))
        return PrintReading(obj["status"], tuple(obj["parties"]) if obj["parties"] else None, obj["valid"],
                            obj["nulos"], obj["total"], obj["detail"], obj["code"])
    except (OSError, ValueError, KeyError, TypeError):
        pass
    reading = read_print(source)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.{os.getpid()}")
        tmp.write_text(json.dumps(asdict(reading)), encoding="utf-8")
        os.replace(tmp, target)
    except OSError:
        pass  # a cache that cannot be written only costs time
    return reading
