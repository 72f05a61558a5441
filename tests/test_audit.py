"""Audit: QR decoding of real and damaged actas, tallies and cross-checks (the site: test_site.py)."""
from __future__ import annotations

import asyncio
import csv
import io
import json
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
    assert lines[0] == "key,EG,NM,LM,JABE,JOBR,AE,CF,DC,EM,BERA,VOTOS_NULOS,status,detail"
    got = {r["key"]: r for r in csv.DictReader(io.StringIO(proc.stdout))}
    index = {r.key: r for r in index_file(1).rows}
    assert got and all(r["status"] == "qr" for r in got.values())
    for key, r in got.items():
        assert {c: int(r[c]) for c in CANDIDATES} == dict(index[key].votes)
        assert int(r["VOTOS_NULOS"]) == index[key].nulos
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


def test_wrong_key_bomb_and_garbage_are_findings_not_crashes(tmp_path):
    name, path = next(iter(real_images().items()))
    assert read_acta("999999999.99", str(path)).status.startswith("QR is for table")
    bomb = tmp_path / "bomb.png"
    Image.new("1", (12000, 12000)).save(bomb)
    assert "refused" in read_acta("010101001.01", str(bomb)).status
    junk = tmp_path / "junk.jpg"
    junk.write_bytes(b"\xff\xd8\xff not really")
    assert read_acta("010101001.01", str(junk)).status.startswith("unreadable image")


def test_crosscheck_reports_exactly_the_11_altered_tables_and_the_flip(mirror, tmp_path):
    tally_csv = run_cli("tally", str(mirror), "--format", "csv").stdout
    rows = list(csv.DictReader(io.StringIO(tally_csv)))
    by_state: dict[str, list] = {}
    for r in rows:
        by_state.setdefault(r["key"][:2], []).append(r)
    state, members = max(by_state.items(), key=lambda kv: len(kv[1]))
    assert len(members) >= 11
    altered = sorted(r["key"] for r in members[:11])
    official = tmp_path / "official.csv"
    with open(official, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["level", "code", *CANDIDATES, "VOTOS_NULOS"])
        for r in rows:
            votes = {c: int(r[c]) for c in CANDIDATES}
            if r["key"] in altered:
                votes["NM"] += 2_000  # the runner-up gains where the printouts say otherwise
            w.writerow(["table", r["key"], *[votes[c] for c in CANDIDATES], r["VOTOS_NULOS"]])
    index = mirror / "data" / "index" / "RESULTADOS_2024_CSV_V1.csv"
    proc = run_cli("crosscheck", str(mirror), "--against", str(official), "--against", str(index), "--json")
    assert proc.returncode == 1, proc.stderr
    report = json.loads(proc.stdout)
    assert report["tables_in_disagreement"] == altered
    assert {(d["code"], d["column"]) for d in report["disagreements"]} == {(k, "NM") for k in altered}
    races = {(r["level"], r["code"]): r for r in report["races"]}
    assert races[("state", state)]["votes_in_dispute"] == 22_000 and races[("state", state)]["could_flip"]
    assert not races[("nation", "VE")]["could_flip"] or races[("nation", "VE")]["margin"] <= 22_000
    agree = run_cli("crosscheck", str(mirror), "--against", str(index))
    assert agree.returncode == 0 and "0 table(s) disagree" in agree.stdout


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
