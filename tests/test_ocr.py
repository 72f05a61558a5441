"""The fourth count: the printed figures read by OCR, on the real actas and on doctored ones."""
from __future__ import annotations

import asyncio
import csv
import hashlib
import io
import json
import os

import pytest
import zxingcpp
from PIL import Image

from mirror.audit import ocr
from mirror.crawl import CrawlOptions, crawl
from mirror.qrformat import BALLOT, CANDIDATES, parse_qr
from mirror.replay.data import index_file, real_images
from mirror.workers import pool
from tests.conftest import ROOT, run_cli

needs_tesseract = pytest.mark.skipif(not ocr.available(), reason="tesseract-ocr and tesseract-ocr-spa are not installed")
CHECKED_FLOOR = 12  # measured: 14 of the 20 real actas pass every check (scripts/bench_ocr.py)
FORGED, SWAPPED, BLANKED = "408106_014130_0159Acta0159.jpg", "408106_017285_0055Acta0055.jpg", \
    "408106_077248_0121Acta0121.jpg"


def _csv_rows() -> dict[str, dict]:
    text = (ROOT / "mirror/replay/data/resultados2024/RESULTADOS_2024_CSV_V1.csv").read_text(encoding="utf-8-sig")
    return {r["URL"].rsplit("/", 1)[1]: r for r in csv.DictReader(io.StringIO(text))}


def _read(path: str) -> ocr.PrintReading:
    with open(path, "rb") as fh:
        return ocr.cached_read_print(path, hashlib.file_digest(fh, "sha256").hexdigest())


@pytest.fixture(scope="module")
def readings(tmp_path_factory):
    """One reading cache for the tests that read the 20 real actas: a reading is kept by the
    file's sha256, so each real acta is read by OCR once in this module, not once a test
    (about 2.5 s an acta here)."""
    return tmp_path_factory.mktemp("readings")


@pytest.fixture
def shared_readings(readings, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(readings))


@needs_tesseract
def test_the_20_real_actas_read_from_print_equal_the_csv_when_checked(shared_readings):
    rows = _csv_rows()
    names = sorted(real_images())
    with pool(2) as executor:
        readings = dict(zip(names, executor.map(_read, [str(real_images()[n]) for n in names])))
    checked = {n: r for n, r in readings.items() if r.status == ocr.CHECKED}
    print({n: r.detail for n, r in readings.items() if r.status != ocr.CHECKED})
    assert len(checked) >= CHECKED_FLOOR, len(checked)
    for name, r in checked.items():  # a checked reading is never wrong
        row = rows[name]
        assert r.by_candidate() == {c: int(row[c]) for c in CANDIDATES}, name
        assert (r.valid, r.nulos) == (int(row["VOTOS_VALIDOS"]), int(row["VOTOS_NULOS"])), name
        assert r.total == r.valid + r.nulos
    for r in readings.values():
        assert r.status in (ocr.CHECKED, ocr.REVIEW) and (r.parties is None) == (r.status == ocr.REVIEW)


def _qr_box(img: Image.Image, margin: int = 8) -> tuple[int, int, int, int]:
    pos = zxingcpp.read_barcodes(img)[0].position
    xs = [p.x for p in (pos.top_left, pos.top_right, pos.bottom_left, pos.bottom_right)]
    ys = [p.y for p in (pos.top_left, pos.top_right, pos.bottom_left, pos.bottom_right)]
    return min(xs) - margin, min(ys) - margin, max(xs) + margin, max(ys) + margin


def _swap_rows(img: Image.Image, i: int, j: int) -> Image.Image:
    """Paint party row i's printed figures (digits and words) over row j's, and j's over i's."""
    w, h = img.size
    top = int(h * ocr.BAND[0])
    view = img.crop((0, top, w, int(h * ocr.BAND[1])))
    page = ocr.parse_page(ocr._ocr(view, "--psm 6"))
    a, b = page.parties[i], page.parties[j]
    assert a.box and b.box, "the rows' digits were found"
    left = min(a.box[0], b.box[0]) - 12
    half = max(a.box[3] - a.box[1], b.box[3] - b.box[1])  # strips of one size, centred on the digits
    boxes = [(left, top + (r.box[1] + r.box[3]) // 2 - half, w - 4, top + (r.box[1] + r.box[3]) // 2 + half)
             for r in (a, b)]
    strips = [img.crop(box) for box in boxes]
    out = img.copy()
    out.paste(strips[1], boxes[0][:2])
    out.paste(strips[0], boxes[1][:2])
    return out


@pytest.fixture(scope="module")
def doctored(tmp_path_factory):
    """A mirror of the 20 real actas (and one synthesized table) in which the replay serves
    three doctored scans: printed figures swapped between two parties of two candidates, a QR
    code replaced by another table's, and a QR code painted out."""
    from mirror.replay import Replay, ReplayThread

    base = tmp_path_factory.mktemp("doctored")
    cache = base / "cache" / "s0-small-v0"
    cache.mkdir(parents=True)
    images = {n: Image.open(p).convert("L") for n, p in real_images().items() if n in (FORGED, SWAPPED, BLANKED)}
    truth = parse_qr(next(e["qr_text"] for e in json.loads(
        (ROOT / "mirror/replay/data/resultados2024/actas/decoded_qr.json").read_text()) if e["filename"] == FORGED))
    maduro = range(0, BALLOT[0][1])
    gonzalez = range(33, 36)
    i, j = next((a, b) for a in maduro for b in gonzalez if truth.parties[a] != truth.parties[b])
    _swap_rows(images[FORGED], i, j).save(cache / FORGED, quality=90)
    swapped = images[SWAPPED].copy()
    box = _qr_box(images[FORGED])
    swapped.paste(images[FORGED].crop(box), _qr_box(swapped)[:2])
    swapped.save(cache / SWAPPED, quality=90)
    blanked = images[BLANKED].copy()
    blanked.paste(245, _qr_box(blanked, 14))
    blanked.save(cache / BLANKED, quality=90)
    out = base / "mirror"
    with ReplayThread(Replay(small=True, limit=1, cache_dir=str(base / "cache"))) as thread:
        asyncio.run(crawl(CrawlOptions(site="resultados2024", root=thread.url, out=str(out))))
    keys = {r.filename: r.key for r in index_file(1).rows if r.filename in real_images()}
    return {"mirror": out, "keys": keys, "swap": (i, j), "truth": truth}


@needs_tesseract
def test_doctored_print_and_swapped_qr_are_flagged_a_lost_qr_is_read_from_print(doctored, shared_readings):
    mirror, keys = str(doctored["mirror"]), doctored["keys"]
    proc = run_cli("tally", mirror, "--ocr", "--format", "json", timeout=900)
    assert proc.returncode == 0, proc.stderr
    tables = {t["key"]: t for t in json.loads(proc.stdout)["tables"]}
    rows = _csv_rows()
    forged = tables[keys[FORGED]]
    assert forged["check"] == "MISMATCH" and forged["status"] == "qr"
    i, j = doctored["swap"]
    assert forged["printed"]["NM"] - forged["votes"]["NM"] == doctored["truth"].parties[j] - doctored["truth"].parties[i]
    swapped = tables[keys[SWAPPED]]
    assert swapped["check"] == "MISMATCH" and f"QR is for table {keys[FORGED]}" in swapped["detail"]
    blanked = tables[keys[BLANKED]]
    assert (blanked["status"], blanked["check"]) == ("print", "read from print"), blanked
    assert blanked["votes"] == {c: int(rows[BLANKED][c]) for c in CANDIDATES}
    by_key = {keys[n]: rows[n] for n in keys}
    consistent = [k for k, t in tables.items() if t["check"] == "consistent"]
    assert len(consistent) >= CHECKED_FLOOR - 3
    for key in consistent:  # consistent means the print equals the QR, and both equal the index
        assert tables[key]["printed"] == {**{c: int(by_key[key][c]) for c in CANDIDATES},
                                          "VOTOS_NULOS": int(by_key[key]["VOTOS_NULOS"])}
    summary = run_cli("tally", mirror, "--ocr", timeout=900).stdout.splitlines()
    from_print = sum(t["status"] == "print" for t in tables.values())  # the blanked QR, the swapped one if its print checks
    unread = sum(t["status"] == "unreadable" for t in tables.values())
    assert from_print + unread == 2
    causes = {t["cause"] for t in tables.values() if t["status"] == "unreadable"}
    assert summary[0] == f"{len(tables) - unread} of {len(tables)} tables read ({from_print} from the printed figures " \
        "only)" + (f"; {unread} unreadable (1 {causes.pop()})" if unread else "")
    report = json.loads(proc.stdout)
    nation = report["levels"]["nation"][0]  # print-only tables are summed apart, never into the QR's votes
    by_status = {s: [t for t in tables.values() if t["status"] == s] for s in ("qr", "print")}
    assert (nation["read"], nation["printed"]) == (len(by_status["qr"]), from_print)
    for column, part in (("votes", "qr"), ("print_votes", "print")):
        assert nation[column] == {c: sum(t["votes"][c] for t in by_status[part]) for c in CANDIDATES}, column
    assert nation["coverage"].startswith(f"{len(by_status['qr'])} of {len(tables)} tables read from the QR; "
                                         f"{from_print} read from the printed figures only (summed apart)")
    assert {t["cause"] for t in by_status["print"]} <= {"no QR code found", "QR of another table"}
    assert summary[2].startswith(f"QR versus print: {len(consistent)} consistent; 2 MISMATCH")
    index = doctored["mirror"] / "data" / "index" / "RESULTADOS_2024_CSV_V1.csv"
    cc = run_cli("crosscheck", mirror, "--ocr", "--against", str(index), "--json", timeout=900)
    assert cc.returncode == 1
    report = json.loads(cc.stdout)
    assert sorted(m["key"] for m in report["mismatches"]) == sorted([keys[FORGED], keys[SWAPPED]])
    assert {(d["code"], d["source"]) for d in report["disagreements"]} == {(keys[FORGED], "printed figures")}


def test_without_tesseract_ocr_is_skipped_and_said(doctored):
    env = {"PATH": "/nonexistent"}
    with_ocr = run_cli("tally", str(doctored["mirror"]), "--ocr", env=env)
    plain = run_cli("tally", str(doctored["mirror"]))
    assert with_ocr.returncode == 0 and "OCR skipped: tesseract" in with_ocr.stderr
    assert with_ocr.stdout == plain.stdout
    assert plain.stdout.splitlines()[0].endswith("2 unreadable (1 QR of another table, 1 no QR code found)")
    assert os.environ.get("PATH")  # the test's own environment is untouched


@needs_tesseract
def test_a_reading_is_kept_by_content_and_never_read_twice(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    path = str(real_images()[FORGED])
    with open(path, "rb") as fh:
        sha = hashlib.file_digest(fh, "sha256").hexdigest()
    first = ocr.cached_read_print(path, sha)
    assert list((tmp_path / "cache" / "acta-mirror" / "readings").rglob(f"{sha}.json"))
    monkeypatch.setattr(ocr, "read_print", lambda p: pytest.fail("the same bytes were read twice"))
    assert ocr.cached_read_print(path, sha) == first
    other = ocr.cached_read_print(path, "0" * 64)  # bytes that are not the ones archived under that hash
    assert other.status == ocr.REVIEW and "not the archived ones" in other.detail


@needs_tesseract
def test_odd_files_are_needs_review_and_a_turned_page_is_read_upright(tmp_path):
    """A 1x1 JPEG (a valid image, so a mirror can hold it) stopped `tally --ocr` with a traceback;
    a page stored turned with its EXIF orientation tag was read sideways and never checked."""
    page = Image.open(real_images()[FORGED]).convert("L")
    raw = io.BytesIO()
    page.save(raw, "JPEG", quality=90)
    odd = {"pixel.jpg": lambda p: Image.new("L", (1, 1)).save(p), "cut.jpg": lambda p: p.write_bytes(raw.getvalue()[:9000]),
           "page.jpg": lambda p: p.write_bytes(b"<html><body>blocked</body></html>")}
    for name, make in odd.items():
        make(tmp_path / name)
        reading = ocr.read_print(tmp_path / name)
        assert (reading.status, reading.parties) == (ocr.REVIEW, None) and reading.detail, name
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 clockwise to display"
    turned = tmp_path / "turned.jpg"
    page.transpose(Image.Transpose.ROTATE_90).save(turned, quality=90, exif=exif.tobytes())
    reading = ocr.read_print(turned)
    row = _csv_rows()[FORGED]
    assert reading.status == ocr.CHECKED, reading.detail
    assert reading.by_candidate() == {c: int(row[c]) for c in CANDIDATES}


@needs_tesseract
def test_a_page_scanned_askew_is_read_straightened(tmp_path):
    """Scans come tilted by a few degrees; tesseract alone lost the summary rows of this one at 3."""
    page = Image.open(real_images()[FORGED]).convert("L")
    askew = page.rotate(-3, expand=True, fillcolor=255, resample=Image.Resampling.BICUBIC)
    assert abs(ocr.tilt(askew) + 3) <= 0.25 and ocr.tilt(page) == 0
    askew.save(tmp_path / "askew.jpg", quality=90)
    reading = ocr.read_print(tmp_path / "askew.jpg")
    row = _csv_rows()[FORGED]
    assert reading.status == ocr.CHECKED, reading.detail
    assert reading.by_candidate() == {c: int(row[c]) for c in CANDIDATES}
