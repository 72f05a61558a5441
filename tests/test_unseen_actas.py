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


def _variants() -> dict[str, tuple[bytes, str | None]]:
    """file name -> (bytes the site serves for it, the cause expected; None: read right)."""
    import io

    import numpy as np
    from PIL import Image, ImageDraw

    def jpeg(img: Image.Image, **kw) -> bytes:
        buf = io.BytesIO()
        img.save(buf, "JPEG", **{"quality": 85, **kw})
        return buf.getvalue()

    def png(img: Image.Image) -> bytes:
        buf = io.BytesIO()
        img.save(buf, "PNG")
        return buf.getvalue()

    names = sorted(TRUTH)
    pages = {n: Image.open(real_images()[n]).convert("L") for n in names}
    w, h = pages[names[0]].size
    photo = pages[names[0]].transform((w, h), Image.Transform.QUAD, (30, 0, -30, h, w + 30, h, w - 30, 0),
                                      Image.Resampling.BICUBIC, fillcolor=255).rotate(2, expand=True, fillcolor=60)
    torn = pages[names[1]].copy()
    w, h = torn.size
    ImageDraw.Draw(torn).polygon([(w, int(h * 0.93)), (w, h), (w - 250, h)], fill=20)  # the scanner lid in the tear
    crease = pages[names[2]].copy()
    w, h = crease.size
    crease.paste(pages[names[2]].crop((0, int(h * 0.94), w, h)), (3, int(h * 0.94) + 2))
    one, two = pages[names[5]], pages[names[6]]
    side = Image.new("L", (one.width + two.width + 40, max(one.height, two.height)), 255)
    side.paste(one, (0, 0))
    side.paste(two, (one.width + 40, 0))
    half, k_ink, cut = pages[names[3]], pages[names[4]], pages[names[8]]
    return {
        names[0]: (jpeg(Image.merge("RGB", (photo, photo, photo.point(lambda v: v * 0.8))), quality=70), None),
        names[1]: (jpeg(torn), None),
        names[2]: (jpeg(crease), None),
        names[3]: (png(half.resize((half.width // 2, half.height // 2), Image.Resampling.LANCZOS).convert("1")), None),
        names[4]: (jpeg(Image.merge("CMYK", (*(Image.new("L", k_ink.size, 0),) * 3, k_ink.point(lambda v: 255 - v)))),
                   None),
        names[5]: (jpeg(side), "several QR codes"),
        names[6]: (real_images()[names[8]].read_bytes(), "QR of another table"),  # another table's scan
        names[7]: (jpeg(Image.fromarray((245 + np.random.default_rng(7).normal(0, 4, (h, w))).clip(0, 255)
                                        .astype(np.uint8))), "no QR code found"),
        names[8]: (jpeg(cut.crop((0, 0, cut.width, int(cut.height * 0.88)))), "no QR code found"),
        names[9]: (real_images()[names[9]].read_bytes() + real_images()[names[10]].read_bytes(), None),
        names[10]: (b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 100 100\n{ } loop\n", "failed"),
        names[11]: (jpeg(Image.new("L", (1, 1))), "no QR code found"),
        names[12]: (jpeg(pages[names[12]].rotate(270, expand=True), progressive=True), None),
    }


def test_a_mirror_of_unseen_actas_reads_right_or_names_why_and_its_counts_add_up(tmp_path):
    """The real CLI on a mirror whose 20 real actas are served as scans it has not seen."""
    import asyncio

    from mirror.crawl import CrawlOptions, crawl
    from mirror.qrformat import CANDIDATES
    from mirror.replay import Replay, ReplayThread
    from tests.conftest import run_cli

    cache = tmp_path / "cache" / "s0-small-v0"
    cache.mkdir(parents=True)
    served = _variants()
    for name, (body, _cause) in served.items():
        (cache / name).write_bytes(body)
    out = tmp_path / "mirror"
    with ReplayThread(Replay(small=True, limit=1, cache_dir=str(tmp_path / "cache"))) as thread:
        asyncio.run(crawl(CrawlOptions(site="resultados2024", root=thread.url, out=str(out), retry_attempts=1)))
    proc = run_cli("tally", str(out), "--format", "json")
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    report = json.loads(proc.stdout)
    tables = {t["key"]: t for t in report["tables"]}
    for name, key in KEYS.items():
        t, expected = tables[key], served.get(name, (b"", None))[1]
        if expected is None:
            assert (t["status"], t["votes"]) == ("qr", TRUTH[name].by_candidate()), (name, t["detail"])
        elif expected == "failed":
            assert t["status"] == "failed", (name, t)
        else:
            assert (t["status"], t["cause"], t["votes"]) == ("unreadable", expected, None), (name, t)
    index_votes = {r.key: dict(r.votes) for r in index_file(1).rows if r.key in tables}
    for key, t in tables.items():  # the synthesized tables too: every table read is read right
        assert t["status"] != "qr" or t["votes"] == index_votes[key], key
    counts = report["counts"]
    assert sum(counts.values()) == len(tables) and report["denominator"].startswith("index ")
    assert sum(report["unreadable"].values()) == counts["unreadable"]
    assert report["coverage"].startswith(f"{counts['qr']} of {len(tables)} tables read; 1 failed to download; "
                                         f"{counts['unreadable']} unreadable (")
    for units in report["levels"].values():
        for u in units:
            assert u["read"] + u["printed"] + len(u["unread"]) == u["tables"] == sum(u["counts"].values())
    nation = report["levels"]["nation"][0]
    read = [t for t in tables.values() if t["status"] == "qr"]
    assert nation["votes"] == {c: sum(t["votes"][c] for t in read) for c in CANDIDATES}
    index = out / "data" / "index" / "RESULTADOS_2024_CSV_V1.csv"
    cc = run_cli("crosscheck", str(out), "--against", str(index), "--json")
    assert cc.returncode == 3, cc.stderr  # some tables unchecked, and none disagrees with the index
    cross = json.loads(cc.stdout)
    assert cross["disagreements"] == [] and cross["checked"] == len(read)
    assert sum(len(k) for k in cross["unchecked"].values()) == len(tables) - len(read)


def test_a_jpeg_of_a_thousand_scans_is_refused_not_decoded(tmp_path):
    """A progressive JPEG's last scan repeated: libjpeg decodes every block again for each scan,
    so a 200 KB file of 1,000 scans took 14 s to open at 36 Mpx (and 10,000 scans ten times
    that), for every read. A progressive scan has about 10."""
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("L", (800, 800), 255).save(buf, "JPEG", quality=50, progressive=True)
    data = buf.getvalue()
    last = data.rindex(b"\xff\xda")
    path = tmp_path / "scans.jpg"
    path.write_bytes(data[:-2] + data[last:-2] * 1_000 + b"\xff\xd9")
    from mirror.imagecheck import check_bytes

    assert check_bytes(path.read_bytes()).kind == "image/jpeg"  # well formed: a crawl archives it
    reading = read_acta("010101001.01", str(path))
    assert (reading.votes, reading.cause) == (None, "image too large"), reading.status
    assert "1,00" in reading.status and "scans" in reading.status
    assert ocr.read_print(path).detail == reading.status


def test_an_acta_changed_after_it_was_archived_is_not_counted(tmp_path):
    """A copy whose acta file no longer has the bytes its manifest records (here the real scan
    with a QR code of 50 more votes for one party drawn over its own) was tallied with the
    forged votes and '21 of 21 tables read'; the printed-figures reading already refused it."""
    import asyncio
    import io

    import segno
    import zxingcpp
    from PIL import Image

    from mirror.crawl import CrawlOptions, crawl
    from mirror.replay import Replay, ReplayThread
    from tests.conftest import run_cli

    out = tmp_path / "mirror"
    with ReplayThread(Replay(small=True, limit=1)) as thread:
        asyncio.run(crawl(CrawlOptions(site="resultados2024", root=thread.url, out=str(out))))
    name = sorted(TRUTH)[0]
    key, text = KEYS[name], next(e["qr_text"] for e in json.loads(
        (ROOT / "mirror/replay/data/resultados2024/actas/decoded_qr.json").read_text()) if e["filename"] == name)
    head, parties, nulos, third = text.split("!")
    fields = parties.split(",")
    forged = "!".join([head, ",".join([str(int(fields[0]) + 50)] + fields[1:]), nulos, third])
    page = Image.open(real_images()[name]).convert("L")
    pos = zxingcpp.read_barcodes(page)[0].position
    x0, y0 = min(p.x for p in (pos.top_left, pos.bottom_left)), min(p.y for p in (pos.top_left, pos.top_right))
    side = max(p.x for p in (pos.top_right, pos.bottom_right)) - x0
    buf = io.BytesIO()
    segno.make(forged, error="q", micro=False, boost_error=False).save(buf, kind="png", scale=4, border=0)
    page.paste(Image.open(buf).convert("L").resize((side, side), Image.Resampling.NEAREST), (x0, y0))
    target = next(out.rglob(f"{key}.jpg"))
    target.chmod(0o644)
    page.save(target, quality=90)
    assert read_acta(key, str(target)).votes == parse_qr(forged)  # the forged code itself reads
    proc = run_cli("tally", str(out), "--format", "json")
    assert proc.returncode == 1 and "1 of 21 archived actas are not the bytes" in proc.stderr, proc.stderr
    report = json.loads(proc.stdout)
    table = next(t for t in report["tables"] if t["key"] == key)
    assert (table["status"], table["votes"], table["cause"]) == ("unreadable", None, "not the archived bytes"), table
    assert report["coverage"].endswith("1 unreadable (1 not the archived bytes)")
