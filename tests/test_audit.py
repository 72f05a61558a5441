"""Audit: QR decoding of real and damaged actas, tallies and cross-checks (the site: test_site.py)."""
from __future__ import annotations

import asyncio
import csv
import io
import json
import shutil
import warnings
from pathlib import Path

import pytest
from PIL import Image

from mirror.audit.qr import read_acta
from mirror.crawl import CrawlOptions, crawl
from mirror.qrformat import CANDIDATES, parse_qr
from mirror.replay.data import index_file, real_images
from mirror.replay.images import qr_text
from tests.conftest import ROOT, run_cli

OUTPUT = ROOT / "test-output"


@pytest.fixture(scope="module")
def mirror(tmp_path_factory):
    from mirror.replay import Replay, ReplayThread

    out = tmp_path_factory.mktemp("audit") / "mirror"
    with ReplayThread(Replay(small=True, limit=120)) as replay:
        asyncio.run(crawl(CrawlOptions(site="resultados2024", root=replay.url, out=str(out))))
    return out


def test_the_20_real_actas_decode_and_match_the_index_exactly():
    rows = {r.filename: r for r in index_file(1).rows}
    raw = {}
    text = (ROOT / "mirror/replay/data/resultados2024/RESULTADOS_2024_CSV_V1.csv").read_text(encoding="utf-8-sig")
    for row in csv.DictReader(io.StringIO(text)):
        raw[row["URL"].rsplit("/", 1)[1]] = row
    assert len(real_images()) == 20
    for name, path in real_images().items():
        reading = read_acta(rows[name].key, str(path))
        assert reading.status == "ok", (name, reading.status)
        votes = reading.votes.by_candidate()
        row = raw[name]
        for c in CANDIDATES:  # ten candidates
            assert votes[c] == int(row[c]), (name, c)
        assert sum(votes.values()) == int(row["VOTOS_VALIDOS"])  # valid votes
        assert reading.votes.nulos == int(row["VOTOS_NULOS"])  # null votes: twelve columns in all


def test_synthesized_qr_codes_add_up_to_the_index_for_all_v1_tables():
    rows = index_file(1).rows
    totals = {c: 0 for c in CANDIDATES}
    for row in rows:
        votes = parse_qr(qr_text(row)).by_candidate()
        for c in CANDIDATES:
            totals[c] += votes[c]
    assert len(rows) == 24_532
    assert totals["EG"] == 7_156_462 and totals["NM"] == 3_241_461
    assert totals == {c: sum(dict(r.votes)[c] for r in rows) for c in CANDIDATES}


def test_tally_of_the_replay_equals_the_index(mirror):
    proc = run_cli("tally", str(mirror), "--format", "csv")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == "key,EG,NM,LM,JABE,JOBR,AE,CF,DC,EM,BERA,VOTOS_NULOS,status,detail,check,electors"
    got = {r["key"]: r for r in csv.DictReader(io.StringIO(proc.stdout))}
    index = {r.key: r for r in index_file(1).rows}
    assert got and all(r["status"] == "qr" for r in got.values())
    for key, r in got.items():
        assert {c: int(r[c]) for c in CANDIDATES} == dict(index[key].votes)
        assert int(r["VOTOS_NULOS"]) == index[key].nulos
        assert int(r["electors"]) == index[key].electors > 0  # V1 lists every table's
    summary = json.loads(run_cli("tally", str(mirror), "--format", "json").stdout)
    nation = summary["levels"]["nation"][0]
    assert nation["coverage"] == f"{len(got)} of {len(got)} tables read"
    assert nation["votes"]["EG"] == sum(int(r["EG"]) for r in got.values())
    assert {lv for lv in summary["levels"]} == {"nation", "state", "municipality", "parish", "center"}


def _damaged(tmp_path: Path) -> dict[str, Path]:
    row = next(r for r in index_file(1).rows if r.filename in real_images())
    src = Image.open(real_images()[row.filename]).convert("L")
    out = {}
    for name, img in {"rot90": src.rotate(90, expand=True), "rot180": src.rotate(180, expand=True),
                      "q30": src, "crop": src.crop((0, 0, src.width, src.height - 420)),
                      "blank": Image.new("L", src.size, 250)}.items():
        path = tmp_path / f"{name}.jpg"
        img.save(path, quality=30 if name == "q30" else 85)
        out[name] = path
    out["key"] = row.key
    return out


def test_damaged_actas_decode_or_say_why_never_a_wrong_number(tmp_path):
    cases = _damaged(tmp_path)
    key = cases.pop("key")
    truth = parse_qr(next(json.loads(x)["qr_text"] for x in [json.dumps(e) for e in json.loads(
        (ROOT / "mirror/replay/data/resultados2024/actas/decoded_qr.json").read_text())] if json.loads(x)["qr_text"].startswith(key)))
    results = {}
    for name, path in cases.items():
        reading = read_acta(key, str(path))
        results[name] = reading.status
        if reading.status == "ok":
            assert reading.votes == truth, name  # when it reads, it reads right
        else:
            assert reading.votes is None and reading.status, name
    assert results["rot90"] == results["rot180"] == results["q30"] == "ok", results
    assert results["blank"] == "no QR code found"
    print("damaged set:", results)


def _patched(img: Image.Image, kind: str) -> Image.Image:
    """Damage seen on real scans, painted on the QR code with Pillow."""
    import zxingcpp
    from PIL import ImageDraw

    pos = zxingcpp.read_barcodes(img)[0].position
    xs = [p.x for p in (pos.top_left, pos.top_right, pos.bottom_left, pos.bottom_right)]
    ys = [p.y for p in (pos.top_left, pos.top_right, pos.bottom_left, pos.bottom_right)]
    x0, x1, y0, y1 = min(xs), max(xs), min(ys), max(ys)
    m = (x1 - x0) / 49  # one module
    out = img.copy()
    draw = ImageDraw.Draw(out)
    if kind == "finder":  # a white patch over the top-left finder pattern
        draw.rectangle((x0 - 5, y0 - 5, x0 + 9 * m, y0 + 9 * m), fill=255)
    elif kind == "left column":  # the left three module columns wiped
        draw.rectangle((x0 - 5, y0 - 5, x0 + 3 * m, y1 + 5), fill=255)
    else:  # a folded corner: the bottom-right triangle shows the paper's back
        draw.polygon([(x1 + 5, y1 - 22 * m), (x1 + 5, y1 + 5), (x1 - 22 * m, y1 + 5)], fill=235)
    return out


@pytest.mark.parametrize("kind,floor", [("finder", 9), ("left column", 9), ("fold", 10)])
def test_damaged_qr_codes_are_recovered_never_misread(tmp_path, kind, floor):
    """Measured on all 20 (scripts/bench_tally.py): finder 19, left column 19, fold 20 recovered;
    zxing-cpp alone read none of the finder and left-column cases."""
    import zxingcpp

    truth = {e["filename"]: parse_qr(e["qr_text"]) for e in json.loads(
        (ROOT / "mirror/replay/data/resultados2024/actas/decoded_qr.json").read_text())}
    rows = {r.filename: r for r in index_file(1).rows}
    names = sorted(real_images())[::2]  # every other acta: ten, to bound the cost
    read = zxing_alone = 0
    for name in names:
        path = tmp_path / name
        damaged = _patched(Image.open(real_images()[name]).convert("L"), kind)
        damaged.save(path, quality=85)
        zxing_alone += bool(zxingcpp.read_barcodes(Image.open(path)))
        reading = read_acta(rows[name].key, str(path))
        if reading.status == "ok":
            assert reading.votes == truth[name], name  # a wrong reading is worse than none
            read += 1
        else:
            assert reading.votes is None
    print(kind, read, "of", len(names), "read; zxing alone on the page:", zxing_alone)
    assert read >= floor
    if kind != "fold":
        assert zxing_alone < floor  # the fallbacks are what read these


def test_wrong_key_bomb_and_garbage_are_findings_not_crashes(tmp_path):
    name, path = next(iter(real_images().items()))
    assert read_acta("999999999.99", str(path)).status.startswith("QR is for table")
    bomb = tmp_path / "bomb.png"
    Image.new("1", (12000, 12000)).save(bomb)
    assert "refused" in read_acta("010101001.01", str(bomb)).status
    junk = tmp_path / "junk.jpg"
    junk.write_bytes(b"\xff\xd8\xff not really")
    assert read_acta("010101001.01", str(junk)).status.startswith("unreadable image")


def _runner_up_gains(rows: list[dict], altered: set[str], path: Path) -> Path:
    """An 'official' per-table CSV of the tally's rows where the runner-up gains 2,000 votes on
    each altered table (where the printouts say otherwise)."""
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["level", "code", *CANDIDATES, "VOTOS_NULOS"])
        for r in rows:
            votes = {c: int(r[c]) for c in CANDIDATES}
            votes["NM"] += 2_000 if r["key"] in altered else 0
            w.writerow(["table", r["key"], *[votes[c] for c in CANDIDATES], r["VOTOS_NULOS"]])
    return path


def test_crosscheck_reports_exactly_the_11_altered_tables_and_the_flip(mirror, tmp_path):
    tally_csv = run_cli("tally", str(mirror), "--format", "csv").stdout
    rows = list(csv.DictReader(io.StringIO(tally_csv)))
    by_state: dict[str, list] = {}
    for r in rows:
        by_state.setdefault(r["key"][:2], []).append(r)
    state, members = max(by_state.items(), key=lambda kv: len(kv[1]))
    assert len(members) >= 11
    altered = sorted(r["key"] for r in members[:11])
    official = _runner_up_gains(rows, set(altered), tmp_path / "official.csv")
    index = mirror / "data" / "index" / "RESULTADOS_2024_CSV_V1.csv"
    proc = run_cli("crosscheck", str(mirror), "--against", str(official), "--against", str(index), "--json")
    assert proc.returncode == 1, proc.stderr
    report = json.loads(proc.stdout)
    assert report["tables_in_disagreement"] == altered
    assert {(d["code"], d["column"]) for d in report["disagreements"]} == {(k, "NM") for k in altered}
    races = {(r["level"], r["code"]): r for r in report["races"]}
    assert races[("state", state)]["votes_in_dispute"] == 22_000 and races[("state", state)]["could_flip"]
    totals = sorted((sum(int(r[c]) for r in rows) for c in CANDIDATES), reverse=True)
    nation = races[("nation", "VE")]
    assert nation["margin"] == totals[0] - totals[1] and nation["votes_in_dispute"] == 22_000
    assert nation["could_flip"] == (22_000 >= nation["margin"])
    assert report["summary"] == {"table vs official.csv": {"units": 11, "figures": 11}}
    assert {d["code"]: d["minus"] for d in report["differences"]} == {
        k: {"official.csv": -2_000, "RESULTADOS_2024_CSV_V1.csv": 0} for k in altered}
    text = run_cli("crosscheck", str(mirror), "--against", str(official), "--against", str(index))
    assert text.returncode == 1
    assert text.stdout.splitlines()[0] == f"{len(rows)} of {len(rows)} tables read"
    assert f"{altered[0]}  NM  " in text.stdout and "-2000  +0" in text.stdout
    assert "11 of " in text.stdout and " checked table(s) disagree; 11 unit(s) in all: 11 table vs official.csv " \
        "(11 figures)" in text.stdout, text.stdout
    agree = run_cli("crosscheck", str(mirror), "--against", str(index))
    assert agree.returncode == 0 and "\n0 of " in agree.stdout and "unit(s) in all" not in agree.stdout


def test_crosscheck_against_aggregated_state_totals(mirror, tmp_path):
    report = json.loads(run_cli("tally", str(mirror), "--format", "json").stdout)
    states = report["levels"]["state"]
    official = tmp_path / "states.csv"
    with open(official, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["level", "code", *CANDIDATES])
        for i, s in enumerate(states):
            votes = dict(s["votes"])
            if i == 0:
                votes["EG"] -= 728  # the 2017 Bolívar gap, in one state's official total
            w.writerow(["state", s["code"], *[votes[c] for c in CANDIDATES]])
    out = json.loads(run_cli("crosscheck", str(mirror), "--against", str(official), "--json").stdout)
    assert [(d["level"], d["code"], d["column"], d["qr"] - d["other"]) for d in out["disagreements"]] == \
        [("state", states[0]["code"], "EG", 728)]
    bad = tmp_path / "bad.csv"
    bad.write_text("foo,bar\n1,2\n")
    proc = run_cli("crosscheck", str(mirror), "--against", str(bad))
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1



@pytest.mark.parametrize("rows, error", [
    (["nation,VE,1", "nation,VE,9305"], ":3: nation VE is given again with other figures (first on line 2)"),
    (["state,01,5", "nation,VE,7", "state,01,5"], None),  # the same row again: one unit, counted once
    ([f"state,01,{'9' * 200_000}"], "field larger than field limit"),
])
def test_a_results_file_that_gives_a_unit_twice_or_a_huge_field_is_refused(tmp_path, rows, error):
    """A unit given twice with other figures would be compared by its last row only (the
    first could hide a disagreement): refused, naming both lines. csv's own errors are a
    usage error too, never a traceback."""
    from mirror.audit.crosscheck import load_figures
    from mirror.models import UsageError

    official = tmp_path / "official.csv"
    official.write_text("level,code,EG\n" + "".join(r + "\n" for r in rows))
    if error is None:
        assert load_figures(official) == {("state", "01"): {"EG": 5}, ("nation", "VE"): {"EG": 7}}
        return
    with pytest.raises(UsageError) as caught:
        load_figures(official)
    assert error in str(caught.value) and str(caught.value).startswith(f"--against {official}")
    table = tmp_path / "index.csv"  # the site's index: one table under two spellings of its code
    table.write_text("CENTRO,MESA,EG\n10113042,1,9999\n010113042,01,232\n")
    with pytest.raises(UsageError, match="table 010113042.01 is given again"):
        load_figures(table)


# -- coverage: the index is the denominator ------------------------------------------------------
FAILED, UNREADABLE, VANISHED = 4, 3, 2


@pytest.fixture(scope="module")
def holey(tmp_path_factory):
    """A mirror whose index lists tables that failed to download (404), whose QR is unreadable
    (the replay serves a blank page for them), and that the site stopped listing (a second crawl
    with a smaller index)."""
    from mirror.replay import FaultPlan, Replay, ReplayThread

    base = tmp_path_factory.mktemp("holey")
    replay = Replay(small=True, limit=60, cache_dir=str(base / "cache"))
    synthesized = sorted(r.filename for r in index_file(1).rows[:60] if r.filename not in real_images())
    failing, blank = synthesized[:FAILED], synthesized[FAILED:FAILED + UNREADABLE]
    (base / "cache" / "s0-small-v0").mkdir(parents=True)
    for name in blank:
        Image.new("L", (150, 190), 245).save(base / "cache" / "s0-small-v0" / name, quality=60)
    replay.faults = FaultPlan().with_files(**{n: "404" for n in failing})
    out = base / "mirror"
    with ReplayThread(replay) as thread:
        asyncio.run(crawl(CrawlOptions(site="resultados2024", root=thread.url, out=str(out), retry_attempts=1)))
        index = out / "data" / "index" / "RESULTADOS_2024_CSV_V1.csv"
        lines = index.read_bytes().splitlines(keepends=True)
        gone_names = synthesized[FAILED + UNREADABLE:FAILED + UNREADABLE + VANISHED]
        smaller = base / "smaller.csv"
        smaller.write_bytes(b"".join(ln for ln in lines if not any(n.encode() in ln for n in gone_names)))
        asyncio.run(crawl(CrawlOptions(site="resultados2024", root=thread.url, out=str(out), retry_attempts=1,
                                       index=str(smaller))))
    text = index.read_text(encoding="utf-8-sig")
    keys = {f"{int(r['CENTRO']):09d}.{int(r['MESA']):02d}": r["URL"].rsplit("/", 1)[1]
            for r in csv.DictReader(io.StringIO(text))}
    by_name = {v: k for k, v in keys.items()}
    return {"mirror": out, "index": index, "keys": keys, "failed": sorted(by_name[n] for n in failing),
            "unreadable": sorted(by_name[n] for n in blank), "vanished": sorted(by_name[n] for n in gone_names)}


def test_every_table_of_the_index_has_one_status_in_tally(holey, tmp_path):
    n = len(holey["keys"])
    read = n - FAILED - UNREADABLE - VANISHED
    summary = (f"{read} of {n} tables read; {FAILED} failed to download; {UNREADABLE} unreadable "
               f"({UNREADABLE} no QR code found); {VANISHED} no longer served by the site")
    proc = run_cli("tally", str(holey["mirror"]), "--coverage", str(tmp_path / "coverage.csv"))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[0] == summary
    report = json.loads(run_cli("tally", str(holey["mirror"]), "--format", "json").stdout)
    assert report["coverage"] == summary
    assert report["counts"] == {"qr": read, "print": 0, "unreadable": UNREADABLE, "failed": FAILED, "deferred": 0,
                                "absent": 0, "vanished": VANISHED}
    statuses = {t["key"]: t for t in report["tables"]}
    assert set(statuses) == set(holey["keys"])  # the index's tables, no more, no fewer
    for status in ("failed", "unreadable", "vanished"):
        assert sorted(k for k, t in statuses.items() if t["status"] == status) == holey[status], status
    assert all(statuses[k]["detail"].startswith("HTTP 404") for k in holey["failed"])
    assert all(statuses[k]["detail"] == statuses[k]["cause"] == "no QR code found" for k in holey["unreadable"])
    assert report["unreadable"] == {"no QR code found": UNREADABLE}
    nation = report["levels"]["nation"][0]
    assert (nation["tables"], nation["read"]) == (n, read)
    assert sum(s["tables"] for s in report["levels"]["state"]) == n
    rows = list(csv.DictReader(open(tmp_path / "coverage.csv", encoding="utf-8")))
    assert len(rows) == n and {r["key"] for r in rows} == set(holey["keys"])
    assert sorted(r["key"] for r in rows if r["status"] == "failed") == holey["failed"]
    electors = {r.key: r.electors for r in index_file(1).rows}  # the denominator, failed tables' too
    assert all(int(r["electors"]) == electors[r["key"]] > 0 for r in rows)


def test_crosscheck_exit_codes_and_the_unchecked_tables_by_reason(holey, tmp_path):
    mirror, index = str(holey["mirror"]), str(holey["index"])
    proc = run_cli("crosscheck", mirror, "--against", index)
    assert proc.returncode == 3, proc.stdout + proc.stderr  # some tables unchecked, none disagree
    out = proc.stdout
    assert out.splitlines()[0].startswith(f"{len(holey['keys']) - 9} of {len(holey['keys'])} tables read")
    assert f"{FAILED + UNREADABLE + VANISHED} table(s) not checked:" in out
    assert f"failed to download ({FAILED}): {' '.join(holey['failed'])}" in out
    assert f"unreadable ({UNREADABLE}): {' '.join(holey['unreadable'])}" in out
    assert f"no longer served by the site ({VANISHED}): {' '.join(holey['vanished'])}" in out
    assert run_cli("crosscheck", mirror, "--against", index, "--allow-incomplete").returncode == 0
    report = json.loads(run_cli("crosscheck", mirror, "--against", index, "--json").stdout)
    assert report["unchecked"]["failed to download"] == holey["failed"]
    assert report["checked"] == len(holey["keys"]) - 9
    changed = tmp_path / "changed.csv"
    text = holey["index"].read_text(encoding="utf-8-sig").splitlines()
    rows = list(csv.DictReader(io.StringIO("\n".join(text))))
    victim = next(r for r in rows if f"{int(r['CENTRO']):09d}.{int(r['MESA']):02d}" not in
                  holey["failed"] + holey["unreadable"] + holey["vanished"])
    victim["EG"] = str(int(victim["EG"]) + 5)
    with open(changed, "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    proc = run_cli("crosscheck", mirror, "--against", str(changed), "--allow-incomplete")
    assert proc.returncode == 1 and " checked table(s) disagree; 1 unit(s) in all: 1 table vs changed.csv (1 figures)" \
        in proc.stdout
    assert "--allow-incomplete" in run_cli("crosscheck", "--help").stdout


def test_a_site_without_an_index_counts_what_was_discovered(tmp_path):
    """The cne adapter walks HTML: its list of tables is what was archived plus what failed."""
    from mirror.replay import FaultPlan, ReplayThread, replay_for

    replay = replay_for("cne", small=True, limit=12)
    names = sorted(replay.expected().values())
    replay.faults = FaultPlan().with_files(**{n: "404" for n in names[:2]})
    out = tmp_path / "cne"
    with ReplayThread(replay) as thread:
        asyncio.run(crawl(CrawlOptions(site="cne", root=thread.url, out=str(out), discover="html", retry_attempts=1)))
    report = json.loads(run_cli("tally", str(out), "--format", "json").stdout)
    n = len(replay.expected())
    assert report["denominator"] == "discovered (no index file)"
    assert report["coverage"] == f"{n - 2} of {n} tables read; 2 failed to download"
    assert {t["key"] for t in report["tables"]} == set(replay.expected())


def test_tables_a_shard_never_fetched_are_absent(tmp_path):
    """A shard's mirror holds the whole index but fetched only its part: the rest is absent."""
    from mirror.crawl import in_shard
    from mirror.replay import Replay, ReplayThread

    out = tmp_path / "shard"
    with ReplayThread(Replay(small=True, limit=16)) as thread:
        asyncio.run(crawl(CrawlOptions(site="resultados2024", root=thread.url, out=str(out), shard=(1, 2))))
    report = json.loads(run_cli("tally", str(out), "--format", "json").stdout)
    tables = {t["key"]: t["status"] for t in report["tables"]}
    mine = {k for k in tables if in_shard(k, (1, 2))}
    assert 0 < len(mine) < len(tables)
    assert {k for k, s in tables.items() if s == "absent"} == set(tables) - mine
    assert report["coverage"] == f"{len(mine)} of {len(tables)} tables read; {len(tables) - len(mine)} absent from the mirror"


def test_the_signed_statement_counts_the_index_tables(holey, tmp_path):
    """The evidence names what it did not cover: its coverage is taken against the index."""
    mirror = tmp_path / "mirror"
    shutil.copytree(holey["mirror"], mirror, symlinks=True)
    assert run_cli("keygen", "--out", str(tmp_path / "k")).returncode == 0
    proc = run_cli("sign", str(mirror), "--key", str(tmp_path / "k.key"))
    assert proc.returncode == 0, proc.stderr
    n = len(holey["keys"])
    summary = (f"{n - FAILED - VANISHED} of {n} tables archived; {FAILED} failed to download; "
               f"{VANISHED} no longer served by the site")
    assert summary in proc.stdout
    coverage = json.loads((mirror / "signed-root.json").read_text())["coverage"]
    assert coverage["summary"] == summary and coverage["tables"] == n
    assert coverage["counts"] == {"archived": n - FAILED - VANISHED, "failed": FAILED, "vanished": VANISHED}
    assert run_cli("verify", str(mirror), "--pubkey", str(tmp_path / "k.pub")).returncode == 0


# -- actas it has not seen: variants of the real scans made at test time -----------------------
def _real(n: int = 0) -> tuple[str, str, Image.Image, str]:
    """(file name, key, page in gray, QR text) of the n-th real acta."""
    rows = {r.filename: r for r in index_file(1).rows}
    truth = {e["filename"]: e["qr_text"] for e in json.loads(
        (ROOT / "mirror/replay/data/resultados2024/actas/decoded_qr.json").read_text())}
    name = sorted(real_images())[n]
    return name, rows[name].key, Image.open(real_images()[name]).convert("L"), truth[name]


def _with_qr(page: Image.Image, text: str, at: tuple[int, int] | None = None) -> Image.Image:
    """The page with a clean QR code of text (version 8, level Q like the actas') over its own, or at `at`."""
    import segno
    import zxingcpp

    pos = zxingcpp.read_barcodes(page)[0].position
    pts = (pos.top_left, pos.top_right, pos.bottom_left, pos.bottom_right)
    x0, y0 = min(p.x for p in pts), min(p.y for p in pts)
    side = max(p.x for p in pts) - x0
    buf = io.BytesIO()
    segno.make(text, error="q", micro=False, boost_error=False).save(buf, kind="png", scale=4, border=0)
    code = Image.open(io.BytesIO(buf.getvalue())).convert("L").resize((side, side), Image.Resampling.NEAREST)
    out = page.copy()
    out.paste(code, at or (x0, y0))
    return out


def _payload(text: str, first: str = "", key: str = "") -> str:
    """The acta's QR text with its first party field (and its key) replaced."""
    head, parties, nulos, third = text.split("!")
    fields = parties.split(",")
    return "!".join([key or head, ",".join([first or fields[0]] + fields[1:]), nulos, third])


@pytest.mark.parametrize("first", ["\u00b2", "\u0663", "99999", "9000"])
def test_a_qr_outside_the_format_is_a_named_cause_never_votes(tmp_path, first):
    """Python's isdigit takes '²' (int() then raised: a traceback) and '٣' (read as 3 votes);
    a field of 99999 or parties adding to more than 9,999 cannot be printed on an acta."""
    _name, key, page, text = _real()
    forged = _payload(text, first)
    if first == "9000":  # two fields of 9,000: each fits, the table's total does not
        head, parties, nulos, third = forged.split("!")
        fields = parties.split(",")
        fields[33] = "9000"
        forged = "!".join([head, ",".join(fields), nulos, third])
    path = tmp_path / "forged.jpg"
    _with_qr(page, forged).save(path, quality=90)
    reading = read_acta(key, str(path))
    assert (reading.votes, reading.cause) == (None, "QR not in the acta format"), reading.status
    assert reading.text == forged


def test_a_second_acta_qr_on_the_page_is_not_a_reading(tmp_path):
    """A pasted code of the same table with other votes: whichever the decoder met first used
    to be counted. Two acta codes on one page are a finding, not a choice."""
    _name, key, page, text = _real()
    up = page.height - 1400  # above the real code, in the blank part of the sheet's foot
    for other in (_payload(text, str(int(text.split("!")[1].split(",")[0]) + 50)),
                  _payload(text, key=key[:10] + "99.1.0001")):
        path = tmp_path / "two.jpg"
        _with_qr(page, other, (40, up)).save(path, quality=90)
        reading = read_acta(key, str(path))
        assert (reading.votes, reading.cause) == (None, "several QR codes"), reading.status


def test_every_kind_of_file_gets_one_named_cause_or_reads(tmp_path):
    """Image formats and broken files a mirror can hold: each reads right or names its cause."""
    import numpy as np

    _name, key, page, text = _real(1)
    truth = parse_qr(text)
    ink = Image.new("LA", page.size, 0)
    ink.putalpha(page.point(lambda v: 255 - v))  # ink opaque, paper transparent
    exif = Image.Exif()
    exif[0x0112] = 6  # stored turned: "rotate 90 clockwise to display"
    good = tmp_path / "good.jpg"
    page.save(good, quality=90)
    raw = good.read_bytes()
    files = {
        "png16.png": lambda p: Image.fromarray(np.asarray(page, dtype=np.uint16) * 257).save(p),
        "alpha.png": lambda p: ink.save(p),
        "exif.jpg": lambda p: page.transpose(Image.Transpose.ROTATE_90).save(p, quality=90, exif=exif.tobytes()),
        "cmyk.jpg": lambda p: page.convert("CMYK").save(p, quality=90),
        "progressive.jpg": lambda p: page.save(p, quality=85, progressive=True),
        "truncated.jpg": lambda p: p.write_bytes(raw[:len(raw) // 2]),
        "page.html.jpg": lambda p: p.write_bytes(b"<!DOCTYPE html><html><body>Just a moment...</body></html>"),
        "empty.jpg": lambda p: p.write_bytes(b""),
        "one-pixel.png": lambda p: Image.new("L", (1, 1)).save(p),
        "60mpx.png": lambda p: Image.new("1", (6000, 10000), 1).save(p),
        "bad-exif.jpg": lambda p: page.save(p, quality=90, exif=b"Exif\x00\x00II*\x00\x08\x00\x00\x00\xff\xff\x12\x01"),
    }
    expected = {"truncated.jpg": "truncated image", "page.html.jpg": "HTML instead of an image",
                "empty.jpg": "not an image", "one-pixel.png": "no QR code found", "60mpx.png": "image too large"}
    got = {}
    for name, make in files.items():
        path = tmp_path / name
        make(path)
        with warnings.catch_warnings(record=True) as said:
            warnings.simplefilter("always")
            reading = read_acta(key, str(path))
        assert not said, (name, [str(w.message) for w in said])  # one clear line, not Pillow's warnings
        got[name] = "read" if reading.votes == truth else (reading.cause or reading.status)
    assert got == {**{n: "read" for n in files if n not in expected}, **expected}


def test_a_mirror_of_altered_real_actas_is_tallied_without_a_lie(tmp_path):
    """The real CLI on a mirror whose real actas are served altered: one QR with a '²' used to
    stop the whole tally with a traceback, and a pasted second code of the same table was counted."""
    from mirror.replay import Replay, ReplayThread

    names = sorted(real_images())
    truth = {e["filename"]: parse_qr(e["qr_text"]) for e in json.loads(
        (ROOT / "mirror/replay/data/resultados2024/actas/decoded_qr.json").read_text())}
    cache = tmp_path / "cache" / "s0-small-v0"
    cache.mkdir(parents=True)
    altered = {}
    for n, (how, cause) in enumerate([("superscript", "QR not in the acta format"), ("second", "several QR codes"),
                                      ("tilted", None), ("other", "QR of another table")]):
        name, key, page, text = _real(n)
        if how == "superscript":
            page = _with_qr(page, _payload(text, "\u00b2"))
        elif how == "second":
            page = _with_qr(page, _payload(text, str(int(text.split("!")[1].split(",")[0]) + 7)),
                            (40, page.height - 1400))
        elif how == "tilted":
            page = page.rotate(4, expand=True, fillcolor=255, resample=Image.Resampling.BICUBIC)
        else:
            page = _with_qr(page, _payload(text, key=_real(n + 1)[1] + ".1.0001"))
        page.save(cache / name, quality=85)
        altered[key] = (name, cause)
    out = tmp_path / "mirror"
    with ReplayThread(Replay(small=True, limit=1, cache_dir=str(tmp_path / "cache"))) as thread:
        asyncio.run(crawl(CrawlOptions(site="resultados2024", root=thread.url, out=str(out))))
    proc = run_cli("tally", str(out), "--format", "json")
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    report = json.loads(proc.stdout)
    tables = {t["key"]: t for t in report["tables"]}
    keys = {r.filename: r.key for r in index_file(1).rows if r.filename in names}
    for key, (name, cause) in altered.items():
        t = tables[key]
        if cause is None:
            assert (t["status"], t["votes"]) == ("qr", truth[name].by_candidate())
        else:
            assert (t["status"], t["cause"], t["votes"]) == ("unreadable", cause, None), t
    read = [t for t in report["tables"] if t["status"] == "qr"]
    for name in names:  # every table read is read right
        t = tables[keys[name]]
        assert t["status"] != "qr" or t["votes"] == truth[name].by_candidate(), name
    assert report["coverage"] == f"{len(read)} of {len(tables)} tables read; 3 unreadable (1 QR not in the acta " \
        "format, 1 QR of another table, 1 several QR codes)"
    nation = report["levels"]["nation"][0]
    assert nation["votes"] == {c: sum(t["votes"][c] for t in read) for c in CANDIDATES}
    index = out / "data" / "index" / "RESULTADOS_2024_CSV_V1.csv"
    cc = run_cli("crosscheck", str(out), "--against", str(index), "--json")
    assert cc.returncode == 3 and json.loads(cc.stdout)["disagreements"] == [], cc.stderr


def test_an_out_of_focus_scan_is_read_sharpened(tmp_path):
    """A Gaussian blur of 5 px (about a module) defeated every view; sharpened, the code reads."""
    from PIL import ImageFilter

    read = 0
    for n in (0, 1, 2):
        _name, key, page, text = _real(n)
        path = tmp_path / f"blur{n}.jpg"
        page.filter(ImageFilter.GaussianBlur(5)).save(path, quality=90)
        reading = read_acta(key, str(path))
        assert reading.votes in (None, parse_qr(text))  # never a wrong reading
        read += reading.votes is not None
    assert read >= 2, read


def test_a_qr_counting_more_votes_than_the_table_has_electors_is_named_with_its_denominator(tmp_path):
    """tally counted a QR of 9,000 votes at a table of 666 registered electors as any other, exit 0,
    and said nothing: an acta cannot hold more votes than its table's electors (the index's RE)."""
    import dataclasses

    from mirror.replay import Replay, ReplayThread
    from mirror.replay.images import render

    rows = index_file(1).rows
    over, full = rows[0], rows[1]  # one table one vote over its electors, one exactly at them
    cache = tmp_path / "cache" / "s0-small-v0"
    cache.mkdir(parents=True)
    for row, total in ((over, over.electors + 1), (full, full.electors)):
        votes = tuple((c, total - row.nulos if c == "EG" else 0) for c, _v in row.votes)
        (cache / row.filename).write_bytes(render(dataclasses.replace(row, votes=votes), row.filename, small=True))
    out = tmp_path / "mirror"
    with ReplayThread(Replay(small=True, limit=3, cache_dir=str(tmp_path / "cache"))) as thread:
        asyncio.run(crawl(CrawlOptions(site="resultados2024", root=thread.url, out=str(out))))
    report = json.loads(run_cli("tally", str(out), "--format", "json").stdout)
    tables = {t["key"]: t for t in report["tables"]}
    read = [t for t in report["tables"] if t["status"] == "qr"]
    assert tables[over.key]["votes"]["EG"] == over.electors + 1 - over.nulos  # counted as read, never changed
    assert tables[over.key]["electors"] == over.electors and tables[full.key]["electors"] == full.electors
    from mirror.audit.tally import tally, to_csv

    counted = tally(out)  # the CSV gives each table's denominator, and an empty cell where the index gives none
    unlisted = counted.tables[full.key]
    counted.tables[full.key] = dataclasses.replace(unlisted, state=dataclasses.replace(unlisted.state, electors=None))
    in_csv = {r["key"]: r["electors"] for r in csv.DictReader(io.StringIO(to_csv(counted)))}
    assert in_csv[over.key] == str(over.electors) and in_csv[full.key] == ""
    assert report["electors"] == {"checked": len(read), "read": len(read), "over": [
        {"key": over.key, "votes": over.electors + 1, "electors": over.electors, "status": "qr"}]}
    text = run_cli("tally", str(out))
    assert text.returncode == 0, text.stderr
    lines = text.stdout.splitlines()
    at = lines.index(f"votes over the registered electors: 1 of {len(read)} read tables (the index lists "
                     f"electors for {len(read)} of the {len(read)} read)")
    assert lines[at + 1] == f"  OVER {over.key}: {over.electors + 1:,} votes (valid and nulos, from the QR), " \
        f"{over.electors:,} registered electors"
    assert not lines[at + 2].startswith("  OVER")
    index = (out / "data" / "index" / "RESULTADOS_2024_CSV_V1.csv").read_bytes().splitlines(keepends=True)
    others = tmp_path / "others.csv"  # the index without the two altered tables: every figure it gives agrees
    others.write_bytes(b"".join(line for line in index if f"/{over.filename}".encode() not in line
                                and f"/{full.filename}".encode() not in line))
    cc = run_cli("crosscheck", str(out), "--against", str(others), "--allow-incomplete", "--json")
    report = json.loads(cc.stdout)
    assert report["disagreements"] == [] and [x["key"] for x in report["electors"]["over"]] == [over.key]
    assert cc.returncode == 1, cc.stdout  # no figure disagrees, but one table cannot be right
    cc = run_cli("crosscheck", str(out), "--against", str(others), "--allow-incomplete")
    assert cc.returncode == 1 and f"  OVER {over.key}: " in cc.stdout, cc.stdout
    site = run_cli("site", str(out))  # the voter's page of each table says so too
    assert site.returncode == 1, site.stderr  # written; unsigned, so a visitor's check would fail
    page = next((out / "site").rglob(f"{over.key}.html")).read_text()
    es = lambda n: f"{n:,}".replace(",", ".")  # noqa: E731 (as Venezuela writes a count: 1.234)
    assert f'<p id="electors">Electores inscritos en la mesa, según el índice: {es(over.electors)}</p>' in page
    assert f'id="over-electors">El acta cuenta {es(over.electors + 1)} votos, más que los {es(over.electors)} ' in page
    page = next((out / "site").rglob(f"{full.key}.html")).read_text()
    assert f"según el índice: {es(full.electors)}</p>" in page and "over-electors" not in page


def test_electors_are_read_only_where_the_index_gives_one_number_for_the_table():
    """A hostile index listing a table twice, with 5,000 electors then 100, had its first row
    believed: a QR of 900 votes passed as under its electors ('0 of 23'), exit 0."""
    from mirror.audit.coverage import index_tables

    header = b"COD_EDO,EDO,COD_MUN,MUN,COD_PAR,PAR,CENTRO,MESA,RE,VOTOS_VALIDOS,VOTOS_NULOS," \
             b"EG,NM,LM,JABE,JOBR,AE,CF,DC,EM,BERA,URL\n"

    def row(table: int, re_: str) -> bytes:
        return f"1,D,1,M,1,P,10113042,{table},{re_},0,0,0,0,0,0,0,0,0,0,0,0,https://x.test/a{table}.jpg\n".encode()

    raw = header + b"".join([row(1, "5000"), row(1, "100"), row(2, "300"), row(2, "300"), row(3, " 12 "),
                             row(4, "000000000000050"), row(5, "1e3"), row(6, "-1"), row(7, "\u0663"),
                             row(8, ""), row(9, "1000000000"), row(10, "0")])
    got = {key: electors for key, (_place, electors) in index_tables(raw, "idx.csv").items()}
    assert got == {"010113042.01": None, "010113042.02": 300, "010113042.03": 12, "010113042.04": 50,
                   "010113042.05": None, "010113042.06": None, "010113042.07": None, "010113042.08": None,
                   "010113042.09": None, "010113042.10": 0}


def test_the_voters_site_writes_a_count_as_venezuela_does():
    """1,234 reads as one and a fraction to a Venezuelan voter: every count on the site is 1.234."""
    from mirror.audit.site import _cifra

    assert [_cifra(n) for n in (0, 999, 1000, 1234567)] == ["0", "999", "1.000", "1.234.567"]


def test_votes_in_dispute_count_a_figure_once_however_many_files_dispute_it(mirror, tmp_path):
    """The same +2,000 for the runner-up on 11 tables, in two files, and again in a third file's
    state total, was 66,000 votes in dispute (each file's difference added, and the state's
    total on top of its tables'), enough for a false 'could flip'. A figure is now counted
    once (the largest difference any file gives), and nested levels are not added up."""
    import shutil

    rows = list(csv.DictReader(io.StringIO(run_cli("tally", str(mirror), "--format", "csv").stdout)))
    by_state: dict[str, list] = {}
    for r in rows:
        by_state.setdefault(r["key"][:2], []).append(r)
    state, members = max(by_state.items(), key=lambda kv: len(kv[1]))
    official = _runner_up_gains(rows, {r["key"] for r in members[:11]}, tmp_path / "official.csv")
    shutil.copy(official, tmp_path / "again.csv")
    totals = tmp_path / "totals.csv"
    with open(totals, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["level", "code", *CANDIDATES, "VOTOS_NULOS"])
        votes = {c: sum(int(r[c]) for r in members) for c in CANDIDATES}
        votes["NM"] += 22_000
        w.writerow(["state", state, *[votes[c] for c in CANDIDATES], sum(int(r["VOTOS_NULOS"]) for r in members)])
    proc = run_cli("crosscheck", str(mirror), "--against", str(official), "--against", str(tmp_path / "again.csv"),
                   "--against", str(totals), "--json")
    assert proc.returncode == 1, proc.stderr
    report = json.loads(proc.stdout)
    races = {(r["level"], r["code"]): r for r in report["races"]}
    assert races[("state", state)]["votes_in_dispute"] == 22_000, races[("state", state)]
    assert races[("nation", "VE")]["votes_in_dispute"] == 22_000, races[("nation", "VE")]
    # the text line gives the race's base: its margin is only that of the tables read
    text = run_cli("crosscheck", str(mirror), "--against", str(official))
    nation = races[("nation", "VE")]
    line = next(x for x in text.stdout.splitlines() if x.startswith("race nation VE"))
    assert f"({nation['coverage']}): " in line and f"by {nation['margin']:,} in the tables read" in line, line
