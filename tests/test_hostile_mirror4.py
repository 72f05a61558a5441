"""A stranger's copy, a fourth time: found by an adversarial review of verify, tally, site,
export, compare and merge on copies edited the way an attacker would (with the tag manifest
made to agree, as sha256sum lets anyone do). Each test runs the real command line under a
timeout (run_cli fails on a traceback) and failed before its fix.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from mirror.archindex import _epoch
from tests.conftest import run_cli
from tests.test_hostile_mirror3 import _images
from tests.test_hostile_evidence import LIMIT, _lines, _retag, _verify, _write_lines, pristine, signed  # noqa: F401

INDEX = "data/index/RESULTADOS_2024_CSV_V1.csv"


def _unsigned(mirror: Path) -> None:
    """The copy as a stranger hands it over unsigned: its statement would name the old records."""
    for name in ("signed-root.json", "signed-root.json.minisig"):
        (mirror / name).unlink(missing_ok=True)
    text = (mirror / "tagmanifest-sha256.txt").read_text()
    (mirror / "tagmanifest-sha256.txt").write_text("".join(
        line + "\n" for line in text.splitlines() if not line.endswith(("signed-root.json", "signed-root.json.minisig"))))


def test_a_copy_without_its_archived_index_is_refused_not_counted_against_fewer_tables(signed):
    """The records name the index; a copy that dropped it (and five actas with their records)
    was counted against the tables it held, '47 of 47 tables read', exit 0, where the index
    lists 52; one that edited the index was already refused (exit 2)."""
    objs = _lines(signed)
    dropped = [o for o in objs if o["kind"] == "acta"][:5]
    for o in dropped:
        (signed / o["path"]).unlink()
    _write_lines(signed, [o for o in objs if o not in dropped])
    whole = run_cli("tally", str(signed), timeout=LIMIT)
    assert whole.returncode == 0 and "5 absent from the mirror" in whole.stdout, whole.stdout + whole.stderr
    (signed / INDEX).unlink()
    for args in (["tally", str(signed)], ["tally", str(signed), "--format", "csv"]):
        proc = run_cli(*args, timeout=LIMIT)
        assert proc.returncode == 2, proc.stdout + proc.stderr
        assert f"{INDEX}: the archived index cannot be read" in proc.stderr and proc.stdout == "", proc.stderr


@pytest.mark.parametrize("field", ["etag", "cid", "page", "center_name", "url", "fetched_at", "path"])
def test_a_lone_surrogate_in_a_record_is_a_bad_line_not_a_traceback(signed, tmp_path, field):
    """JSON's "\\ud800" is no character and no writer of records makes one. A record holding
    one passed verify ('OK ... intact'), and export, site, tally, compare and merge then ended
    in UnicodeEncodeError tracebacks, site leaving its half-written folder behind."""
    objs = _lines(signed)
    victim = next(o for o in objs if o["kind"] == "acta")
    victim[field] = victim[field] + "\ud800" if field != "path" else victim["path"].replace("/", "/x\ud800", 2)
    (signed / "provenance.jsonl").write_text("".join(json.dumps(o) + "\n" for o in objs))  # ASCII: \ud800 escaped
    _retag(signed)
    _unsigned(signed)
    rc, problems, _report = _verify(signed)
    assert rc == 1 and ("provenance", "provenance.jsonl") in problems, problems
    line = next(p for p in _verify(signed)[2]["problems"] if p["kind"] == "provenance")
    assert "lone surrogate" in line["detail"], line
    for args in (["tally", str(signed)], ["site", str(signed)],
                 ["export", str(signed), "--warc", str(tmp_path / "m.warc.gz")],
                 ["merge", str(tmp_path / "merged"), str(signed)]):
        proc = run_cli(*args, timeout=LIMIT)
        assert proc.returncode in (1, 2) and "lone surrogate" in proc.stdout + proc.stderr, (args, proc.stderr)
    assert not (tmp_path / "m.warc.gz").exists()
    assert [p.name for p in signed.iterdir() if p.name.startswith("site")] == []  # nor a half-written site.part


def test_a_payload_oxum_of_thousands_of_digits_is_a_problem_not_a_traceback(signed):
    """int() refuses a number of over 4,300 digits: verify ended in a ValueError traceback on a
    5 KB bag-info.txt."""
    info = (signed / "bag-info.txt").read_text()
    oxum = next(line for line in info.splitlines() if line.startswith("Payload-Oxum: "))
    (signed / "bag-info.txt").write_text(info.replace(oxum, "Payload-Oxum: " + "1" * 5000 + ".53"))
    _retag(signed)
    for extra in ((), ("--fast",)):
        proc = run_cli("verify", str(signed), *extra, timeout=LIMIT)
        assert proc.returncode == 1 and "Payload-Oxum '11111" in proc.stdout + proc.stderr, proc.stdout + proc.stderr
        assert "(5,003 characters)' is not <bytes>.<count>" in proc.stdout + proc.stderr


@pytest.mark.parametrize("label", ["Acta-Mirror-Merkle-Root", "Acta-Mirror-Merkle-Size"])
def test_a_merkle_label_given_twice_is_named_as_payload_oxum_is(signed, label):
    """bag-info.txt with a false Merkle root first and the true one last: verify read the last
    (a dict keeps it) and said OK, while bagit-python and a reader of the file take the first."""
    info = (signed / "bag-info.txt").read_text()
    line = next(x for x in info.splitlines() if x.startswith(label + ": "))
    false = f"{label}: " + ("0" * 64 if label.endswith("Root") else "7")
    (signed / "bag-info.txt").write_text(info.replace(line, f"{false}\n{line}"))
    _retag(signed)
    _unsigned(signed)
    rc, problems, report = _verify(signed)
    assert rc == 1 and ("root", "bag-info.txt") in problems, report["problems"]
    assert any(p["detail"].startswith(f"{label} given 2 times: ") for p in report["problems"]), report["problems"]


def test_export_reads_a_date_without_a_zone_as_utc_not_as_a_traceback(signed, tmp_path):
    """A fetched_at with no zone in year 1 is a date; export read it in the local zone, before
    the first instant a time can hold, and ended in 'ValueError: year 0 is out of range'. A date
    without a zone is read as UTC, as the WARC date of the same record already was."""
    objs = _lines(signed)
    next(o for o in objs if o["kind"] == "acta")["fetched_at"] = "0001-01-01T00:00:00"
    _write_lines(signed, objs)
    _retag(signed)
    _unsigned(signed)
    proc = run_cli("export", str(signed), "--warc", str(tmp_path / "m.warc.gz"), timeout=LIMIT,
                   env={"TZ": "JST-9"})  # a POSIX zone: no tzdata needed
    assert proc.returncode == 0 and (tmp_path / "m.warc.gz").stat().st_size > 0, proc.stderr  # read as UTC, as written
    # the one reading of a record's time, the on-disk index's included
    assert _epoch("0001-01-01T00:00:00") == _epoch("0001-01-01T00:00:00Z") == -62135596800.0
    assert _epoch("2024-07-29T01:00:00+01:00") == _epoch("2024-07-29T00:00:00Z") and _epoch("not a date") == 0.0


def test_compare_does_not_call_a_copy_that_contradicts_its_own_records_in_agreement(signed, tmp_path):
    """Another acta-mirror whose latest file is not the bytes its own provenance records is not
    a sound copy, even where its bytes happen to be ours: compare said every acta identical,
    exit 0, with only a note. It is now named (text and JSON `contradicted`) and exit 1; the
    same copy with its records mended agrees again."""
    import shutil

    theirs = tmp_path / "theirs"
    shutil.copytree(signed, theirs, symlinks=True)
    objs = _lines(theirs)
    victim = next(o for o in objs if o["kind"] == "acta")
    genuine = victim["sha256"]
    victim["sha256"] = "0" * 64
    _write_lines(theirs, objs)
    _retag(theirs)
    proc = run_cli("compare", str(signed), str(theirs), "--json", timeout=LIMIT)
    report = json.loads(proc.stdout)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert report["contradicted"] == [victim["path"]], report
    assert report["counts"]["identical"] == report["total"]  # the bytes are ours: the label stays
    assert any("1 of their" in n and "differ from their own provenance" in n for n in report["notes"]), report
    text = run_cli("compare", str(signed), str(theirs), timeout=LIMIT)
    assert text.returncode == 1, text.stdout
    assert f"{victim['key']}  {victim['path']}  their own provenance records other bytes" in text.stdout, text.stdout
    victim["sha256"] = genuine
    _write_lines(theirs, objs)
    mended = run_cli("compare", str(signed), str(theirs), "--json", timeout=LIMIT)
    assert mended.returncode == 0 and json.loads(mended.stdout)["contradicted"] == [], mended.stdout


def _big_png(path: Path, size: tuple[int, int]) -> None:
    """A PNG of the acta's proportions and over 40 Mpx: a few hundred KB of zeros."""
    from PIL import Image

    Image.MAX_IMAGE_PIXELS = None  # this test's own picture
    scale = 3.2  # a real acta (4.4 Mpx) so enlarged has 45 Mpx
    Image.new("L", (round(size[0] * scale), round(size[1] * scale))).save(path, "PNG")


def _scans_jpeg(path: Path, size: tuple[int, int]) -> None:
    """A progressive JPEG of the acta's size whose last scan is repeated a thousand times."""
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("L", size, 255).save(buf, "JPEG", quality=50, progressive=True)
    data = buf.getvalue()
    last = data.rindex(b"\xff\xda")
    path.write_bytes(data[:-2] + data[last:-2] * 1_000 + b"\xff\xd9")


def _postscript(path: Path, size: tuple[int, int]) -> None:
    """PostScript of the acta's proportions, named .jpg, that loops for ever when run."""
    path.write_bytes(b"%%!PS-Adobe-3.0 EPSF-3.0\n%%%%BoundingBox: 0 0 %d %d\n{} loop\n" % size)


@pytest.mark.parametrize("plant, detail", [
    (_big_png, "not decoded: "),
    (_scans_jpeg, "not decoded: a JPEG of 1,00"),
    (_postscript, "not a readable image (UnidentifiedImageError)"),
])
def test_compare_never_decodes_a_picture_built_to_hold_it(signed, tmp_path, plant, detail):
    """compare decoded any picture of theirs that Pillow would open and that had the acta's
    proportions: a 0.5 MB PNG of 13,000 x 13,000 took 2 s and 850 MB (a copy may hold
    thousands), a JPEG of 1,000 scans is decoded a thousand times over, and a PostScript file
    named .jpg went to Pillow's PostScript reader, which ended compare in a TypeError traceback
    (given a path, it hands the file to Ghostscript, which runs it). Each is now refused unread,
    a different picture with the reason."""
    from PIL import Image

    files = _images(signed, tmp_path / "theirs")
    victim = sorted(files)[0]
    with Image.open(files[victim]) as im:
        size = im.size
    plant(files[victim], size)
    proc = run_cli("compare", str(signed), str(tmp_path / "theirs"), "--json", timeout=60)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    report = json.loads(proc.stdout)
    row = next(a for a in report["actas"] if a["key"] == victim)
    assert row["label"] == "different_picture" and row["detail"].startswith(detail), row
    if plant is _big_png:
        assert "is more than 40,000,000 pixels" in row["detail"], row
    assert report["counts"]["identical"] == len(files) - 1
