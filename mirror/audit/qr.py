"""Read the QR code of one acta image: zxing-cpp, then zbar, then a rebuilt module grid.

Real scans are rotated, folded, smudged and recompressed, and some codes are damaged (white
patches over a finder pattern or the left column, a folded corner). In order:
1. zxing-cpp on the page, then on views that rescue hard scans (bottom crop, scales,
   rotations, thresholds, sharpened);
2. zbar (pyzbar, Debian libzbar0) on a crop of the symbol, found from the image;
3. the module grid rebuilt: the symbol's outline is found, its 49x49 modules (version 8,
   the actas' codes) are sampled, the fixed patterns (finders, timing, alignment, version
   and format information, for each of the 8 masks) are redrawn, and the clean rendering
   is decoded by zxing-cpp.
A decode counts only when it passes the code's own error correction (the decoders do this),
parses (qrformat.py, strictly), names the file's own table, and no other acta QR code is on
the page (a second code of the same table with other votes would make either a guess): a
wrong reading is worse than none. Every other outcome is one named cause (CAUSES).
The page is taken upright by its EXIF orientation, flattened onto white when it has an alpha
channel, and scaled to 8 bits when it has 16; images over MAX_PIXELS, JPEGs of more than
MAX_SCANS scans, and files that are not JPEG or PNG, are refused unread.
"""
from __future__ import annotations

import contextlib
import os
import warnings
from dataclasses import dataclass
from typing import BinaryIO, Iterator

import numpy as np
import zxingcpp
from PIL import Image, ImageFilter, ImageOps

from ..imagecheck import MAX_SCANS, ImageCheck, NotImage, jpeg_scans, looks_like_html
from ..qrformat import QrFormatError, QrVotes, parse_qr

MAX_PIXELS = 40_000_000  # real actas are ~4.4 Mpx; refuse anything near a decompression bomb
Image.MAX_IMAGE_PIXELS = MAX_PIXELS
FORMATS = ("JPEG", "PNG")  # what mirror/imagecheck.py lets the crawl archive

# Why a table has no QR reading: one of these, stable, to be counted ("3 unreadable: 2 no QR code found, ...")
NOT_IMAGE, HTML, TRUNCATED, TOO_LARGE = "not an image", "HTML instead of an image", "truncated image", "image too large"
NO_QR, BAD_FORMAT, OTHER_TABLE, SEVERAL = "no QR code found", "QR not in the acta format", "QR of another table", \
    "several QR codes"
DECODER = "decoder failed"
CHANGED = "not the archived bytes"  # the file's sha256 is not its provenance record's: a copy's edit
CAUSES = (NO_QR, BAD_FORMAT, OTHER_TABLE, SEVERAL, TRUNCATED, NOT_IMAGE, HTML, TOO_LARGE, DECODER, CHANGED)


@dataclass(frozen=True)
class Reading:
    key: str  # the acta key the archive gives the file
    path: str
    votes: QrVotes | None
    status: str  # "ok", or why there is no trustworthy reading, in words
    text: str = ""
    named: str = ""  # the table a well-formed QR names when it is not this file's table
    cause: str = ""  # "" when read, else one of CAUSES


class Unusable(Exception):
    """The file gives no page to look at: cause is one of CAUSES, detail says more."""

    def __init__(self, cause: str, detail: str):
        super().__init__(detail)
        self.cause, self.detail = cause, detail


def _attempts(img: Image.Image):
    """The page, then views that rescue hard scans: bottom crop, scales, rotations, threshold, sharpened."""
    yield img
    w, h = img.size
    bottom = img.crop((0, int(h * 0.6), w, h)) if h > 2 * w else img
    yield bottom
    for scale in (0.5, 2.0):
        size = (max(1, int(bottom.width * scale)), max(1, int(bottom.height * scale)))
        if size[0] * size[1] <= MAX_PIXELS:
            yield bottom.resize(size, Image.Resampling.LANCZOS)
    for angle in (90, 180, 270):
        yield img.rotate(angle, expand=True)
    gray = ImageOps.autocontrast(bottom.convert("L"))
    for cut in (110, 150):
        yield gray.point(lambda v, c=cut: 255 if v > c else 0)
    # a blurred scan (out of focus, smeared): sharpened at about a module's size (4 px at 200 dpi)
    radius = max(2, round(w / 160))
    yield ImageOps.autocontrast(bottom.convert("L").filter(ImageFilter.UnsharpMask(radius, 300, 0)))


def _zxing(view: Image.Image) -> list[str]:
    return [b.text for b in zxingcpp.read_barcodes(view, formats=zxingcpp.BarcodeFormat.QRCode) if b.text]


def _zbar(view: Image.Image) -> list[str]:
    try:
        from pyzbar import pyzbar
    except ImportError:  # the Python binding, or Debian's libzbar0 under it, is missing: skip this step
        return []
    texts = []
    for found in pyzbar.decode(view, symbols=[pyzbar.ZBarSymbol.QRCODE]):
        try:
            texts.append(found.data.decode("utf-8"))
        except UnicodeDecodeError:
            continue
    return texts


CELL = 12  # px: the page is scanned for the symbol in cells of this size


def symbol_zone(gray: Image.Image) -> tuple[int, int, int, int] | None:
    """The box (left, top, right, bottom) of the largest patch of QR-like texture on the page.

    A QR code is about half ink in every small cell, with ink and paper alternating in both
    directions; text, rules and signatures are much sparser. The cells that look like that
    are grouped into connected patches; the largest is the symbol.
    """
    a = np.asarray(gray)
    dark = a < (int(a.min()) + int(a.max())) // 2
    rows, cols = dark.shape[0] // CELL, dark.shape[1] // CELL
    if rows < 3 or cols < 3:
        return None
    cells = dark[:rows * CELL, :cols * CELL].reshape(rows, CELL, cols, CELL)
    fill = cells.mean(axis=(1, 3))
    flips = (np.diff(cells, axis=3) != 0).mean(axis=(1, 3)) + (np.diff(cells, axis=1) != 0).mean(axis=(1, 3))
    like = (fill > 0.2) & (fill < 0.85) & (flips > 0.04)
    seen = np.zeros_like(like)
    best: list[tuple[int, int]] = []
    for r0, c0 in zip(*np.nonzero(like)):
        if seen[r0, c0]:
            continue
        patch, stack = [], [(r0, c0)]
        seen[r0, c0] = True
        while stack:
            r, c = stack.pop()
            patch.append((r, c))
            for dr, dc in ((1, 0), (-1, 0), (0, 1), (0, -1)):
                rr, cc = r + dr, c + dc
                if 0 <= rr < rows and 0 <= cc < cols and like[rr, cc] and not seen[rr, cc]:
                    seen[rr, cc] = True
                    stack.append((rr, cc))
        if len(patch) > len(best):
            best = patch
    if len(best) < 16:
        return None
    rs, cs = [r for r, _c in best], [c for _r, c in best]
    return (max(0, (min(cs) - 1) * CELL), max(0, (min(rs) - 1) * CELL),
            min(a.shape[1], (max(cs) + 2) * CELL), min(a.shape[0], (max(rs) + 2) * CELL))


VERSION, SIZE = 8, 49  # the actas' codes: version 8 (49x49 modules), error correction Q
ALIGN = (6, 24, 42)  # version 8's alignment pattern centres


def _function_modules() -> np.ndarray:
    """True where a version 8 symbol has a fixed pattern or format/version information."""
    f = np.zeros((SIZE, SIZE), dtype=bool)
    for r, c in ((0, 0), (0, SIZE - 8), (SIZE - 8, 0)):
        f[r:r + 8, c:c + 8] = True  # finder and separator
    f[6, :] = f[:, 6] = True  # timing
    for r in ALIGN:
        for c in ALIGN:
            if not f[r, c]:
                f[r - 2:r + 3, c - 2:c + 3] = True
    f[8, :9] = f[:9, 8] = f[8, SIZE - 8:] = f[SIZE - 8:, 8] = True  # format information, both copies
    f[:6, SIZE - 11:SIZE - 8] = f[SIZE - 11:SIZE - 8, :6] = True  # version information
    return f


def _templates() -> list[np.ndarray]:
    """A version 8, level Q symbol for each mask: the source of the fixed patterns to redraw."""
    import segno

    return [np.array([list(row) for row in segno.make_qr("0", version=VERSION, error="q", mask=m,
                                                         boost_error=False).matrix], dtype=bool)
            for m in range(8)]


_FUNCTION = None
_TEMPLATES: list[np.ndarray] = []


def _outline(a: np.ndarray) -> tuple[int, int, int, int] | None:
    """The symbol's outline in a crop: the extent of rows and columns with ink, made square."""
    dark = a < (int(a.min()) + int(a.max())) // 2
    ys, xs = np.flatnonzero(dark.mean(axis=1) > 0.08), np.flatnonzero(dark.mean(axis=0) > 0.08)
    if len(ys) < SIZE or len(xs) < SIZE:
        return None
    return int(xs[0]), int(ys[0]), int(xs[-1]) + 1, int(ys[-1]) + 1


def _pitch(edges: np.ndarray, anchor: int, step: int, guess: float) -> float:
    """The module size along one axis, from where ink edges fall counting modules from an intact
    edge of the symbol (anchor, counting in direction step = +1 or -1)."""
    best, best_score = guess, -1.0
    for p in np.linspace(guess * 0.9, guess * 1.1, 81):
        at = np.rint(anchor + step * np.arange(1, SIZE) * p).astype(int)
        at = at[(at >= 1) & (at < len(edges) - 1)]
        score = float(edges[at].sum() + 0.5 * (edges[at - 1].sum() + edges[at + 1].sum()))
        if score > best_score:
            best, best_score = p, score
    return best


def _boxes(crop: np.ndarray, box: tuple[int, int, int, int]):
    """(left, top, width, height) of the symbol: the outline as found, then, when one side looks
    short (a wiped edge), that side measured by its module pitch from the opposite, intact edge.
    Scans are not quite square, so the other side's length is not used."""
    x0, y0, x1, y1 = box
    yield x0, y0, x1 - x0, y1 - y0
    w, h = x1 - x0, y1 - y0
    if abs(w - h) <= 0.03 * max(w, h):
        return
    dark = crop < (crop.min() + crop.max()) / 2
    if w < h:
        edges = np.abs(np.diff(dark[y0:y1].astype(np.int8), axis=1)).sum(axis=0).astype(float)
        for anchor, step in ((x1, -1), (x0, 1)):
            width = _pitch(edges, anchor, step, h / SIZE) * SIZE
            yield (int(round(x1 - width)) if step < 0 else x0), y0, int(round(width)), h
    else:
        edges = np.abs(np.diff(dark[:, x0:x1].astype(np.int8), axis=0)).sum(axis=1).astype(float)
        for anchor, step in ((y1, -1), (y0, 1)):
            height = _pitch(edges, anchor, step, w / SIZE) * SIZE
            yield x0, (int(round(y1 - height)) if step < 0 else y0), w, int(round(height))


def skew(crop: np.ndarray) -> float:
    """The symbol's tilt in degrees (counterclockwise), from its four edges.

    Each edge is traced in seven stretches (the outermost ink of each, since a module on the
    edge is dark somewhere in every stretch); a robust slope (the median of the pairwise slopes)
    is fitted per edge, and the median over the edges ignores an edge that a patch has cut.
    """
    dark = crop < (crop.min() + crop.max()) / 2
    angles = []
    for picture, sign in ((dark, -1.0), (dark.T, 1.0)):
        height = picture.shape[0]
        has = picture.any(axis=0)
        xs = np.flatnonzero(has)
        if len(xs) < 2 * SIZE:
            continue
        first = picture.argmax(axis=0)
        last = height - 1 - picture[::-1].argmax(axis=0)
        for edge, pick in ((first, np.argmin), (last, np.argmax)):
            points = []
            for stretch in np.array_split(xs, 7):
                i = stretch[pick(edge[stretch])]
                points.append((i, edge[i]))
            slopes = [(y2 - y1) / (x2 - x1) for k, (x1, y1) in enumerate(points) for x2, y2 in points[k + 1:]]
            angles.append(sign * float(np.degrees(np.arctan(np.median(slopes)))))
    return float(np.median(angles)) if angles else 0.0


def rebuilt_texts(gray: Image.Image, zone: tuple[int, int, int, int]) -> Iterator[str]:
    """Sample the symbol's module grid, redraw its fixed patterns, and decode the clean rendering;
    a tilted symbol is also tried turned upright. Texts come as found (the caller validates)."""
    global _FUNCTION
    if _FUNCTION is None:
        _FUNCTION, _TEMPLATES[:] = _function_modules(), _templates()
    view = ImageOps.autocontrast(gray.crop(zone))
    yield from _grid_texts(np.asarray(view, dtype=np.float32))
    angle = skew(np.asarray(view, dtype=np.float32))
    if abs(angle) > 0.15:
        upright = view.rotate(-angle, resample=Image.Resampling.BICUBIC, expand=True, fillcolor=255)
        yield from _grid_texts(np.asarray(upright, dtype=np.float32))


def _grid_texts(crop: np.ndarray) -> Iterator[str]:
    box = _outline(crop)
    if box is None:
        return
    for left, top, width, height in _boxes(crop, box):
        half = max(1, int(min(width, height) / SIZE * 0.25))
        grid = np.zeros((SIZE, SIZE))
        for i, cy in enumerate((np.arange(SIZE) + 0.5) * height / SIZE + top):
            for j, cx in enumerate((np.arange(SIZE) + 0.5) * width / SIZE + left):
                y, x = int(cy), int(cx)
                grid[i, j] = crop[max(0, y - half):y + half + 1, max(0, x - half):x + half + 1].mean() \
                    if 0 <= y < crop.shape[0] and 0 <= x < crop.shape[1] else 255
        modules = grid < (grid.min() + grid.max()) / 2
        for template in _TEMPLATES:
            clean = np.where(_FUNCTION, template, modules)
            picture = np.pad(~clean, 4, constant_values=True).astype(np.uint8) * 255
            view = Image.fromarray(picture).resize((picture.shape[1] * 6, picture.shape[0] * 6), Image.Resampling.NEAREST)
            yield from _zxing(view)


def candidate_texts(img: Image.Image) -> Iterator[list[str]]:
    """The texts each decoding pass finds, one list per pass, cheapest first: zxing on the page
    and its views, zbar on the symbol, the rebuilt grid. The first pass is the whole page."""
    for view in _attempts(img):
        yield _zxing(view)
    zone = symbol_zone(img)
    if zone is None:
        return
    crop = img.crop(zone)
    yield _zbar(crop)
    yield _zbar(ImageOps.autocontrast(crop).point(lambda v: 255 if v > 128 else 0))
    for text in rebuilt_texts(img, zone):
        yield [text]


def _to_gray(img: Image.Image) -> Image.Image:
    """8-bit gray: 16-bit and float pages scaled (Pillow's convert clips them to white),
    transparent ones laid on white paper (converting drops alpha, which can leave black)."""
    # float32 in place, and alpha laid on white in one gray channel: in float64 and RGBA a 40 Mpx
    # page peaked at 0.8 GB a worker, twice a gray one's (scripts/bench_unseen.py --memory)
    if img.mode in ("I", "F") or img.mode.startswith("I;16"):
        a = np.asarray(img).astype(np.float32)
        a -= min(0.0, float(a.min()))
        top = float(a.max())
        if top > 255:
            a *= 255.0 / top
        return Image.fromarray(np.clip(a, 0, 255, out=a).astype(np.uint8))
    if img.mode in ("RGBA", "LA", "PA", "La", "RGBa") or "transparency" in img.info:
        if img.mode not in ("RGBA", "LA"):
            img = img.convert("RGBA")  # palette, tRNS and premultiplied alpha made plain
        gray, alpha = (img if img.mode == "LA" else img.convert("LA")).split()
        return Image.composite(gray, Image.new("L", img.size, 255), alpha)
    return img.convert("L")


def load_page(source: str | os.PathLike | BinaryIO) -> Image.Image:
    """The page, upright by its EXIF orientation, in 8-bit gray; Unusable names why there is none.
    source: a path, or a file the caller opened (and checked: tally hashes it first), read from
    its start and left open.

    Pillow raises many types for bad data; they are translated here, and the cause is named
    by the structural check the crawler uses (mirror/imagecheck.py)."""
    if isinstance(source, (str, os.PathLike)):
        try:
            opened = open(source, "rb")
        except OSError as exc:
            raise Unusable(NOT_IMAGE, f"cannot open the file ({exc.strerror})") from None
    else:
        source.seek(0)
        opened = contextlib.nullcontext(source)
    with opened as fh:
        head = fh.read(4096)
        if not head:
            raise Unusable(NOT_IMAGE, "empty file")
        if looks_like_html(head):
            raise Unusable(HTML, "an HTML page, not an image")
        if head.startswith(b"\xff\xd8") and (scans := jpeg_scans(fh)) > MAX_SCANS:
            raise Unusable(TOO_LARGE, f"JPEG of {scans:,} scans (a progressive one has about 10): refused")
        fh.seek(0)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # "Corrupt EXIF data" and the like: the pixels still count
                # Pillow only warns between MAX_PIXELS and twice that: refuse those too, unread
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                # only what the crawl archives: Pillow would hand PostScript to Ghostscript, which
                # runs it (a loop never returns), and other formats to their own decoders
                with Image.open(fh, formats=FORMATS) as img:
                    img.load()
                    return _to_gray(ImageOps.exif_transpose(img))
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            raise Unusable(TOO_LARGE, f"image over {MAX_PIXELS:,} pixels: refused") from None
        except Exception as exc:  # noqa: BLE001 - any decoding failure of the file is the same finding
            raise Unusable(*_why_broken(fh, exc)) from None


def _why_broken(fh, exc: Exception) -> tuple[str, str]:
    """The cause the crawler's structural check names, the file streamed through it (not held whole)."""
    check = ImageCheck()
    try:
        fh.seek(0)
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            check.feed(chunk)
        check.finish()
    except NotImage as found:
        cause = found.cause if found.cause in CAUSES else NOT_IMAGE
        return cause, f"unreadable image: {found.reason}"
    except OSError:
        pass
    return NOT_IMAGE, f"unreadable image ({exc.__class__.__name__})"


def read_acta(key: str, path: str, fh: BinaryIO | None = None) -> Reading:
    """Decode, parse and validate one acta (from fh when the caller opened it); never raises
    for bad images or bad codes.

    Its status is "ok" only for one acta QR text of this table on the page; otherwise it
    names the first thing that went wrong (cause, one of CAUSES)."""
    try:
        page = load_page(path if fh is None else fh)
    except Unusable as why:
        return Reading(key, path, None, why.detail, cause=why.cause)
    first: Reading | None = None  # why no decode validated: the first other table's code, else the first misfit
    acta_texts: set[str] = set()  # every distinct text in the acta format seen so far
    try:
        for texts in candidate_texts(page):
            found = None
            for text in dict.fromkeys(texts):
                try:
                    votes = parse_qr(text)
                except QrFormatError as exc:
                    first = first or Reading(key, path, None, f"QR format: {exc}", text, cause=BAD_FORMAT)
                    continue
                acta_texts.add(text)
                if votes.key != key:
                    if first is None or first.cause != OTHER_TABLE:
                        first = Reading(key, path, None, f"QR is for table {votes.key}, not {key}", text, votes.key,
                                        OTHER_TABLE)
                elif found is None:
                    found = Reading(key, path, votes, "ok", text)
            if found is not None:
                if len(acta_texts) > 1:  # this pass or an earlier one (the first is the whole page) saw another
                    others = sorted(acta_texts - {found.text})
                    return Reading(key, path, None, f"{len(acta_texts)} different acta QR codes on the page "
                                   f"(another: {others[0][:40]}...)", found.text, cause=SEVERAL)
                return found
    except Exception as exc:  # noqa: BLE001 - a decoder's fault on one odd image must not stop a tally
        return Reading(key, path, None, f"decoder failed ({exc.__class__.__name__})", cause=DECODER)
    return first or Reading(key, path, None, NO_QR, cause=NO_QR)
