"""Read the QR code of one acta image with zxing-cpp, with fallbacks for damaged scans.

Real scans are rotated, folded, smudged and recompressed. The first read is of the whole
page; then the bottom of the sheet (where the code is printed), rescaled, rotated and
thresholded. Pillow's decompression-bomb guard caps the image size.
"""
from __future__ import annotations

from dataclasses import dataclass

import zxingcpp
from PIL import Image, ImageOps, UnidentifiedImageError

from ..qrformat import QrFormatError, QrVotes, parse_qr

MAX_PIXELS = 40_000_000  # real actas are ~4.4 Mpx; refuse anything near a decompression bomb
Image.MAX_IMAGE_PIXELS = MAX_PIXELS


@dataclass(frozen=True)
class Reading:
    key: str  # the acta key the archive gives the file
    path: str
    votes: QrVotes | None
    status: str  # "ok", or why there is no trustworthy reading
    text: str = ""
    named: str = ""  # the table a well-formed QR names when it is not this file's table


def _attempts(img: Image.Image):
    """The page, then views that rescue hard scans: bottom crop, scales, rotations, threshold."""
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


def decode_text(img: Image.Image) -> str | None:
    for view in _attempts(img):
        found = zxingcpp.read_barcodes(view, formats=zxingcpp.BarcodeFormat.QRCode)
        texts = [b.text for b in found if b.text]
        if texts:
            return texts[0]
    return None


def read_acta(key: str, path: str) -> Reading:
    """Decode, parse and validate one acta; never raises for bad images or bad codes."""
    try:
        with Image.open(path) as img:
            img.load()
            text = decode_text(img.convert("L"))
    except Image.DecompressionBombError:
        return Reading(key, path, None, f"image over {MAX_PIXELS} pixels: refused")
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        return Reading(key, path, None, f"unreadable image ({exc.__class__.__name__})")
    if text is None:
        return Reading(key, path, None, "no QR code found")
    try:
        votes = parse_qr(text)
    except QrFormatError as exc:
        return Reading(key, path, None, f"QR format: {exc}", text)
    if votes.key != key:
        return Reading(key, path, None, f"QR is for table {votes.key}, not {key}", text, votes.key)
    return Reading(key, path, votes, "ok", text)
