"""Real actas the tools have not seen: variants of the 20 real scans, made at test time with Pillow.

Every reading is right or names why there is none (scripts/bench_unseen.py measures the whole set).
"""
from __future__ import annotations

import json

import pytest

from mirror.audit import ocr
from mirror.audit.qr import read_acta
from mirror.audit.tally import _verdict
from mirror.qrformat import parse_qr
from mirror.replay.data import index_file, real_images
from tests.conftest import ROOT

needs_tesseract = pytest.mark.skipif(not ocr.available(), reason="tesseract-ocr and tesseract-ocr-spa are not installed")
TRUTH = {e["filename"]: parse_qr(e["qr_text"]) for e in json.loads(
    (ROOT / "mirror/replay/data/resultados2024/actas/decoded_qr.json").read_text())}
KEYS = {r.filename: r.key for r in index_file(1).rows if r.filename in TRUTH}
CHECKS_IN_PRINT = "408106_014130_0159Acta0159.jpg"  # its printed figures pass every OCR check


@needs_tesseract
def test_a_misfiled_acta_is_not_counted_from_its_print():
    """Another table's scan filed under this table (a duplicate or a swapped upload): its QR names
    the other table, and its print, which names no table the OCR checks, was counted as this
    table's votes (status print)."""
    path = str(real_images()[CHECKS_IN_PRINT])
    here = next(k for n, k in KEYS.items() if n != CHECKS_IN_PRINT)
    qr, printed = read_acta(here, path), ocr.read_print(path)
    assert qr.named == KEYS[CHECKS_IN_PRINT] and printed.status == ocr.CHECKED
    assert printed.parties == TRUTH[CHECKS_IN_PRINT].parties  # the print is the other table's
    status, detail, check, cause = _verdict(qr, printed)
    assert (status, cause, check) == ("unreadable", "QR of another table", "MISMATCH"), (status, detail)
    assert KEYS[CHECKS_IN_PRINT] in detail


def test_a_file_in_another_image_format_is_not_handed_to_its_renderer(tmp_path):
    """A mirror holds only what the crawl accepts, JPEG and PNG; a copy made by someone else can
    hold anything under an acta's name. Pillow identified PostScript and ran Ghostscript on it:
    this page rendered (a blank page: 'no QR code found'), and one that says '{ } loop' never
    returned, so one file stopped the whole tally."""
    eps = tmp_path / "acta.jpg"
    eps.write_bytes(b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 100 100\nnewpath 10 10 moveto 90 90 lineto stroke\n")
    reading = read_acta("010101001.01", str(eps))
    assert (reading.votes, reading.cause) == (None, "not an image"), reading.status
    assert ocr.read_print(eps).detail == reading.status


@needs_tesseract
def test_a_scan_at_three_times_the_resolution_is_read_from_print(tmp_path):
    """A sheet scanned at 600 dpi (1,932 px wide) was read as it was: a digit row went illegible
    and the summary unread ('needs review'), after 14 s instead of 4."""
    from PIL import Image

    page = Image.open(real_images()[CHECKS_IN_PRINT]).convert("L")
    path = tmp_path / "600dpi.jpg"
    page.resize((page.width * 3, page.height * 3), Image.Resampling.LANCZOS).save(path, quality=85)
    reading = ocr.read_print(path)
    assert reading.status == ocr.CHECKED, reading.detail
    truth = TRUTH[CHECKS_IN_PRINT]
    assert (reading.parties, reading.nulos) == (truth.parties, truth.nulos)


@needs_tesseract
def test_a_print_reading_counts_only_for_the_table_its_acta_names(tmp_path):
    """Another table's scan filed here with its QR code cut off (cropped, or torn away): the QR
    gives nothing, the print checks, and its figures were counted as this table's (status
    print). The code printed under the acta's title now has to be this table's."""
    from PIL import Image

    page = Image.open(real_images()[CHECKS_IN_PRINT]).convert("L")
    path = tmp_path / "cut.jpg"
    page.crop((0, 0, page.width, int(page.height * 0.88))).save(path, quality=90)
    here = next(k for n, k in KEYS.items() if n != CHECKS_IN_PRINT)
    qr, printed = read_acta(here, str(path)), ocr.read_print(path)
    assert qr.cause == "no QR code found" and printed.status == ocr.CHECKED
    status, detail, _check, cause = _verdict(qr, printed)
    assert (status, cause) == ("unreadable", "no QR code found"), (status, detail)
    assert printed.code == KEYS[CHECKS_IN_PRINT] and KEYS[CHECKS_IN_PRINT] in detail
    own = read_acta(KEYS[CHECKS_IN_PRINT], str(path))  # filed under its own table, it is read from print
    assert _verdict(own, printed)[:3] == ("print", "QR: no QR code found", "read from print")
