"""Honest counts: every figure a command prints names its denominator, and a partial result is
never said with a success word (or exit 0). Real mirrors crawled from the replay, the real CLI."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import crawl_into, run_cli, small_replay
from mirror.audit.coverage import census
from mirror.manifest import iter_provenance


@pytest.fixture(scope="module")
def mirrors(tmp_path_factory):
    """`full`: one crawl of a replay where some images are gone (404); `shard-I`: its 3 shards."""
    base = tmp_path_factory.mktemp("counts")
    with small_replay("404=0.15") as thread:
        crawl_into(thread.url, base / "full")
        for i in (1, 2, 3):
            crawl_into(thread.url, base / f"shard-{i}", (i, 3))
    return base


def acta_files(mirror: Path) -> list[str]:
    return [e.path for e in iter_provenance(mirror / "provenance.jsonl") if e.kind == "acta"]


def test_compare_does_not_call_a_mirror_identical_when_its_files_are_missing(mirrors, tmp_path):
    full, theirs = mirrors / "full", tmp_path / "theirs"
    shutil.copytree(full, theirs)
    gone = acta_files(theirs)[:3]
    for rel in gone:
        (theirs / rel).unlink()
    proc = run_cli("compare", str(full), str(theirs), "--json")
    report = json.loads(proc.stdout)
    assert proc.returncode == 1, "their copy lacks 3 files: not agreeing"
    assert sorted(report["unread"]) == sorted(gone)
    text = run_cli("compare", str(full), str(theirs))
    assert text.returncode == 1
    total = len(report["actas"])
    assert f"3 of their {total} files could not be read" in text.stdout
    for rel in gone:  # each one listed, though its recorded sha256 matches ours
        assert any(rel in line and "not read" in line for line in text.stdout.splitlines() if line.startswith("  "))
    assert f"({total - 3:,} identical actas not listed" in text.stdout


def test_export_counts_its_responses_against_the_recorded_files(mirrors, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(mirrors / "full", copy)
    recorded = sum(1 for _ in iter_provenance(copy / "provenance.jsonl"))
    for rel in acta_files(copy)[:2]:
        (copy / rel).unlink()
    proc = run_cli("export", str(copy), "--warc", str(tmp_path / "out.warc.gz"))
    assert proc.returncode == 1
    last = proc.stdout.strip().splitlines()[-1]
    assert f"{recorded - 2} of {recorded} recorded files as responses" in last, last
    assert f"2 of {recorded} left out" in last, last


def test_merge_of_some_shards_says_what_the_merged_mirror_lacks(mirrors, tmp_path):
    merged = tmp_path / "merged"
    shards = [str(mirrors / f"shard-{i}") for i in (1, 2, 3)]
    held = sum(len(acta_files(Path(s))) + 1 for s in shards[:2])  # each shard also holds the index
    proc = run_cli("merge", str(merged), *shards[:2])
    assert proc.returncode == 1, "a shard is missing: tables of the index are in no shard"
    whole = census(mirrors / "full")  # what one crawl of the whole site holds
    total, failed = whole.total, whole.counts()["failed"]
    assert failed, "the replay's 404s give failed downloads"
    assert f"of the {held} they hold" in proc.stdout
    assert "tables archived" in proc.stdout and "absent from the mirror" in proc.stdout
    assert f"of {total} tables the index lists are not in the merged mirror" in proc.stderr
    again = run_cli("merge", str(merged), *shards)
    assert again.returncode == 0, again.stderr
    assert f"{total - failed} of {total} tables archived; {failed} failed to download" in again.stdout and "absent" not in again.stdout


UNREACHABLE = "git+http://127.0.0.1:1/nobody.git"  # loopback, nothing listens: refused at once


def _job(tmp_path: Path, url: str, output: str, targets: list[str]) -> Path:
    job = tmp_path / "mirror.toml"
    job.write_text(f'[source]\nsite = "resultados2024"\nroot = "{url}"\n\n[output]\ndir = "{output}"\n\n'
                   f'[publish]\ngit = {json.dumps(targets)}\nmanifests = "manifests"\n\n[sign]\nrequired = false\n')
    return job


def test_publish_and_run_count_the_targets_that_took_the_mirror(replay, mirrors, tmp_path):
    remote = tmp_path / "remote.git"
    subprocess.run(["git", "init", "-q", "--bare", str(remote)], check=True)
    proc = run_cli("publish", str(mirrors / "full"), "--to", f"git+file://{remote}", "--to", UNREACHABLE)
    assert proc.returncode == 1
    assert "published to 1 of 2 target(s); 1 failed" in proc.stderr, proc.stderr
    job = _job(tmp_path, replay.url, "mirror", [f"git+file://{tmp_path}/run.git", UNREACHABLE])
    subprocess.run(["git", "init", "-q", "--bare", str(tmp_path / "run.git")], check=True)
    run = run_cli("run", str(job), "--quiet")
    assert run.returncode == 1
    listed = sum(1 for _ in open(tmp_path / "mirror" / "manifest-sha256.txt"))
    assert f"verify: intact: {listed} of {listed} listed files hashed and matched" in run.stdout, run.stdout
    assert "publish: 1 of 2 target(s) took the mirror; 1 failed" in run.stdout, run.stdout


def test_a_run_without_a_local_mirror_does_not_call_unheld_files_intact(replay, tmp_path):
    subprocess.run(["git", "init", "-q", "--bare", str(tmp_path / "run.git")], check=True)
    job = _job(tmp_path, replay.url, "", [f"git+file://{tmp_path}/run.git"])
    first = run_cli("run", str(job), "--quiet")
    assert first.returncode == 0, first.stderr
    recorded = sum(1 for _ in open(tmp_path / "manifests" / "manifest-sha256.txt"))
    assert f"verify: intact: {recorded} of {recorded} listed files hashed and matched" in first.stdout, first.stdout
    second = run_cli("run", str(job), "--quiet")  # downloads nothing new: holds none of the files
    assert second.returncode == 0, second.stderr
    assert "intact" not in second.stdout, second.stdout
    assert (f"verify: 0 new file(s) hashed and matched, of {recorded} recorded; the other {recorded} are not "
            "held here") in second.stdout, second.stdout


def test_diff_gives_the_actas_of_each_side(mirrors):
    full, part = mirrors / "full", mirrors / "shard-1"
    a, b = len(acta_files(full)), len(acta_files(part))
    proc = run_cli("diff", str(full), str(part))
    assert proc.returncode == 1
    first = proc.stdout.splitlines()[0]
    assert f"{full}: {a} actas; {part}: {b} actas; {b} of the {b} in both unchanged" in first, first
    result = json.loads(run_cli("diff", str(full), str(part), "--json").stdout)
    assert result["counts"] == {"a": a, "b": b, "both": b, "unchanged": b}
    assert len(result["removed"]) == a - b and not result["added"] and not result["changed"]


def test_the_crawl_summary_line_counts_refused_index_rows(tmp_path):
    from hostile_site import HostileSite

    with HostileSite() as site:
        rows = site.good_actas(5)
        rows.insert(2, "not,a,results,row\n")
        site.serve_index(rows)
        proc = run_cli("crawl", "resultados2024", "--root", site.url, "--out", str(tmp_path / "m"), "--quiet")
        as_json = run_cli("crawl", "resultados2024", "--root", site.url, "--out", str(tmp_path / "j"), "--json")
    assert proc.returncode == 1
    summary = proc.stdout.strip().splitlines()[-1]
    assert "5 actas discovered: 5 archived" in summary and "1 of 6 index row(s) refused" in summary, summary
    report = json.loads(as_json.stdout)
    assert report["rows_failed"] == 1 and report["failed"] == 0
    assert sum(report["failures_by_cause"].values()) == report["failed"], report["failures_by_cause"]


def test_a_table_listed_under_several_urls_is_counted_as_urls_for_its_tables(tmp_path):
    """An index listing a table under several URLs: the summary said '8 actas discovered ...
    6 failed' for 4 tables, one of them archived from its third URL. Each URL is fetched and
    counted on its own, so the counts now say what they count: acta URLs, for how many tables."""
    from hostile_site import HostileSite, body, index_row, jpeg, key_of

    with HostileSite() as site:
        site.routes["/ok/1.jpg"], site.routes["/ok/5.jpg"] = body(jpeg(1)), body(jpeg(5))
        urls = {1: ["/bad/1a.jpg", "/bad/1b.jpg", "/ok/1.jpg"], 2: ["/bad/2a.jpg", "/bad/2b.jpg"], 3: ["/bad/3.jpg"],
                5: ["/ok/5.jpg", "/ok/5.jpg"]}  # the same URL twice is one URL
        site.serve_index([index_row(i, f"{site.url}{u}") for i, listed in urls.items() for u in listed])
        proc = run_cli("crawl", "resultados2024", "--root", site.url, "--out", str(tmp_path / "m"))
        as_json = run_cli("crawl", "resultados2024", "--root", site.url, "--out", str(tmp_path / "j"), "--json")
    assert proc.returncode == 1
    summary = proc.stdout.strip().splitlines()[-1]
    assert summary.startswith("7 acta URLs discovered for 4 tables: 2 archived, 0 unchanged, 5 failed;"), summary
    assert "failed: 5 of 7 acta URLs: HTTP 404: 5" in proc.stderr, proc.stderr
    report = json.loads(as_json.stdout)
    assert (report["discovered"], report["tables"], report["archived"], report["failed"]) == (7, 4, 2, 5), report
    assert {f["key"] for f in report["failures"]} == {key_of(1), key_of(2), key_of(3)}


def test_the_demo_gives_each_step_its_denominator(tmp_path):
    proc = run_cli("demo", "--out", str(tmp_path / "demo"), "--limit", "20", "--no-ipfs", "--quiet", timeout=600)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    from mirror.replay.data import subset_keys

    assert f"({len(subset_keys(20))} tables, small images)" in lines[0], lines[0]  # the first 20 and the real scans'
    shards = [line for line in lines if "crawled:" in line]
    assert len(shards) == 2 and all("actas discovered:" in line for line in shards), shards
    merged = next(line for line in lines if "merged the 2 shards" in line)
    assert "they hold" in merged and "tables archived" in merged, merged
    verified = next(line for line in lines if "verified" in line)
    listed = sum(1 for _ in open(tmp_path / "demo" / "mirror" / "manifest-sha256.txt"))
    assert f"intact: {listed} of {listed} listed files hashed and matched" in verified, verified
    assert lines[-1] == "Stopped the replay.", "no IPFS node was started (--no-ipfs)"


def test_verify_ok_says_what_the_intact_mirror_lacks(mirrors):
    full = mirrors / "full"
    whole = census(full)
    failed = whole.counts()["failed"]
    proc = run_cli("verify", str(full))
    assert proc.returncode == 0
    assert "coverage: not counted (intact says nothing of the tables the mirror lacks" in proc.stdout, proc.stdout
    proc = run_cli("verify", str(full), "--coverage")
    assert proc.returncode == 0
    assert (f"coverage: {whole.total - failed} of {whole.total} tables archived; {failed} failed to download"
            in proc.stdout), proc.stdout
    assert "coverage" not in json.loads(run_cli("verify", str(full), "--json").stdout)
    report = json.loads(run_cli("verify", str(full), "--fast", "--json", "--coverage").stdout)
    assert report["coverage"]["tables"] == whole.total and report["coverage"]["counts"]["failed"] == failed


def test_restore_counts_its_files_and_says_what_the_mirror_lacks(mirrors, tmp_path):
    full = mirrors / "full"
    remote = tmp_path / "remote.git"
    subprocess.run(["git", "init", "-q", "--bare", str(remote)], check=True)
    assert run_cli("publish", str(full), "--to", f"git+file://{remote}", "--quiet").returncode == 0
    proc = run_cli("restore", "--from", f"git+file://{remote}", "--out", str(tmp_path / "restored"), "--quiet")
    assert proc.returncode == 0, proc.stderr
    listed = sum(1 for _ in open(full / "manifest-sha256.txt"))
    whole = census(full)
    failed = whole.counts()["failed"]
    last = proc.stdout.strip().splitlines()[-1]
    assert f"{listed} of {listed} listed files hashed and matched" in last, last
    assert f"{whole.total - failed} of {whole.total} tables archived; {failed} failed to download" in last, last


def test_coverage_names_archived_tables_the_index_no_longer_lists(tmp_path):
    from hostile_site import HostileSite

    out = tmp_path / "m"
    with HostileSite() as site:
        rows = site.good_actas(5)
        site.serve_index(rows)
        assert run_cli("crawl", "resultados2024", "--root", site.url, "--out", str(out), "--quiet").returncode == 0
        site.serve_index(rows[:3])  # the site stops listing two tables it listed
        assert run_cli("crawl", "resultados2024", "--root", site.url, "--out", str(out), "--quiet").returncode == 0
    held = "2 more archived that the list no longer names (kept, not counted)"
    tally = run_cli("tally", str(out), "--quiet")
    assert tally.stdout.startswith("0 of 3 tables read") and held in tally.stdout.splitlines()[0], tally.stdout
    report = json.loads(run_cli("tally", str(out), "--format", "json", "--quiet").stdout)
    assert held in report["coverage"] and len(report["unlisted"]) == 2
    verify = run_cli("verify", str(out), "--quiet", "--coverage")
    assert f"coverage: 3 of 3 tables archived; {held}" in verify.stdout, verify.stdout


def test_progress_claims_no_failure_count_a_check_does_not_keep(mirrors, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(mirrors / "full", copy)
    for rel in acta_files(copy)[:3]:
        (copy / rel).unlink()
    proc = run_cli("verify", str(copy), env={"ACTA_MIRROR_PROGRESS_EVERY": "0.05"})
    assert proc.returncode == 1
    lines = [ln for ln in proc.stderr.splitlines() if "] verify: " in ln]
    assert lines, proc.stderr
    assert not any("failed" in ln for ln in lines), lines  # it was '0 of 39 failed' beside 4 problems


@pytest.mark.skipif(not __import__("mirror.audit.ocr", fromlist=["available"]).available(),
                    reason="tesseract-ocr and tesseract-ocr-spa are not installed")
def test_tally_ocr_counts_the_tables_it_could_not_compare(tmp_path):
    from hostile_site import HostileSite

    out = tmp_path / "m"
    with HostileSite() as site:
        site.serve_index(site.good_actas(3))  # images with no QR code and no printed figures
        assert run_cli("crawl", "resultados2024", "--root", site.url, "--out", str(out), "--quiet").returncode == 0
    proc = run_cli("tally", str(out), "--ocr", "--quiet")
    assert proc.returncode == 0, proc.stderr
    assert "QR versus print: 3 not compared (neither read) (of 3 archived tables)" in proc.stdout, proc.stdout


def test_publish_dry_run_counts_the_targets_it_could_plan(mirrors, tmp_path):
    remote = tmp_path / "remote.git"
    subprocess.run(["git", "init", "-q", "--bare", str(remote)], check=True)
    proc = run_cli("publish", str(mirrors / "full"), "--dry-run", "--to", f"git+file://{remote}", "--to", UNREACHABLE)
    assert proc.returncode == 1
    assert "planned 1 of 2 target(s); 1 could not be planned" in proc.stderr, proc.stderr


def test_a_table_the_deadline_left_is_not_downloaded_yet_not_failed(mirrors, tmp_path):
    """The crawl says '1 failed, 23 deferred to the next run', but tally, verify --coverage,
    crosscheck and the site then counted every table a deadline left as 'failed to download'.
    Such a table (cause deadline, or a host's breaker) is now 'not downloaded yet'."""
    from tests.test_hostile_evidence import _retag

    copy = tmp_path / "m"
    shutil.copytree(mirrors / "full", copy)
    lines = [json.loads(x) for x in (copy / "failures.jsonl").read_text().splitlines()]
    tables = [o for o in lines if o["key"] not in ("page", "index")]
    assert len(tables) >= 2
    tables[0].update(cause="deadline", reason="the crawl's deadline passed before it was asked")
    (copy / "failures.jsonl").write_text("".join(json.dumps(o) + "\n" for o in lines))
    _retag(copy)
    whole = census(copy)
    failed = len(tables) - 1
    assert whole.counts()["deferred"] == 1 and whole.counts()["failed"] == failed
    expect = (f"{whole.total - failed - 1} of {whole.total} tables archived; {failed} failed to download; "
              "1 not downloaded yet (left for the next run)")
    proc = run_cli("verify", str(copy), "--coverage")
    assert expect in proc.stdout, proc.stdout
    tally = run_cli("tally", str(copy), "--format", "csv")
    rows = [r.split(",") for r in tally.stdout.splitlines()]
    assert sum(1 for r in rows if tables[0]["key"] in r[0] and "deferred" in r) == 1, tally.stdout


def test_a_listing_page_the_last_run_could_not_read_makes_the_total_a_floor(mirrors, tmp_path):
    """A crawl that lost a listing page said so ('1 of 89 page(s) unreadable'), but verify
    --coverage, tally, the signed statement and the site then said '51 of 51 tables archived':
    the list counted against was short by what that page listed. Every coverage line now says
    the list may be short, and the JSON and the statement carry the gaps."""
    from tests.test_hostile_evidence import _retag

    copy = tmp_path / "m"
    shutil.copytree(mirrors / "full", copy)
    with open(copy / "failures.jsonl", "a") as fh:
        fh.write(json.dumps({"key": "page", "url": "http://127.0.0.1:1/estado/9", "reason": "HTTP 500",
                             "cause": "unreadable page", "at": "2026-11-29T00:00:00+00:00", "attempts": 3}) + "\n")
        fh.write(json.dumps({"key": "index", "url": "http://127.0.0.1:1/index.csv", "reason": "row 7: no URL",
                             "cause": "bad index row", "at": "2026-11-29T00:00:00+00:00", "attempts": 0}) + "\n")
    _retag(copy)
    short = "the list of tables may be short: the last run could not read 1 listing page(s) and 1 index row(s)"
    assert short in census(copy).summary()
    assert short in run_cli("verify", str(copy), "--coverage").stdout
    tally = run_cli("tally", str(copy), "--format", "json")
    report = json.loads(tally.stdout)
    assert short in report["coverage"] and report["listing_gaps"] == {"pages": 1, "rows": 1}, report["coverage"]
    assert census(mirrors / "full").gaps == (0, 0) and "may be short" not in census(mirrors / "full").summary()
    assert run_cli("keygen", "--out", str(tmp_path / "k")).returncode == 0
    signed = run_cli("sign", str(copy), "--key", str(tmp_path / "k.key"))
    assert signed.returncode == 0, signed.stdout + signed.stderr
    statement = json.loads((copy / "signed-root.json").read_text())["coverage"]
    assert statement["listing_gaps"] == {"pages": 1, "rows": 1} and short in statement["summary"], statement
    site = run_cli("site", str(copy))
    assert site.returncode == 0, site.stdout + site.stderr
    assert ("La lista de mesas puede estar incompleta: la última descarga no pudo leer 1 página(s) de la lista "
            "y 1 fila(s) del índice") in (copy / "site" / "index.html").read_text()


def test_diff_does_not_call_a_table_a_mirror_failed_to_download_removed(mirrors, tmp_path):
    """diff of a whole mirror against one that failed to download some tables (404) said
    'removed: N', as if the site had taken them down. Tables the other side records as failed
    are now 'not archived in B (its download failed there)', apart from removed."""
    from mirror.audit.coverage import read_failures

    whole = tmp_path / "whole"
    with small_replay("") as thread:
        crawl_into(thread.url, whole)
    holey = mirrors / "full"
    failed = sorted(read_failures(holey))
    assert failed
    result = json.loads(run_cli("diff", str(whole), str(holey), "--json").stdout)
    assert result["removed"] == [] and result["failed_in_b"] == failed and result["changed"] == [], result
    back = json.loads(run_cli("diff", str(holey), str(whole), "--json").stdout)
    assert back["added"] == [] and back["failed_in_a"] == failed, back
    text = run_cli("diff", str(whole), str(holey))
    assert text.returncode == 1
    assert f"not archived in {holey} (its download failed there): {len(failed)}" in text.stdout
    assert "removed: 0" in text.stdout, text.stdout


@pytest.mark.parametrize("output", ["mirror", ""])
def test_a_run_says_how_much_of_the_list_of_tables_it_holds(replay_factory, tmp_path, output):
    """run said 'verify: intact: 48 of 48 listed files' and published, with no word of the 5 of
    the 52 tables it failed to download (restore and sign said it). It now prints the coverage,
    with a local mirror and from the manifests folder alike."""
    from mirror.audit.coverage import read_failures

    replay = replay_factory(faults="404=0.15")
    subprocess.run(["git", "init", "-q", "--bare", str(tmp_path / "run.git")], check=True)
    job = _job(tmp_path, replay.url, output, [f"git+file://{tmp_path}/run.git"])
    proc = run_cli("run", str(job), "--quiet")
    assert proc.returncode == 1, proc.stdout + proc.stderr  # some tables failed
    failed = len(read_failures(tmp_path / (output or "manifests")))
    found = re.search(r"^coverage: (\d+) of (\d+) tables archived; (\d+) failed to download$", proc.stdout, re.M)
    assert failed and found, proc.stdout
    archived, total, said = map(int, found.groups())
    assert said == failed and archived + failed == total, proc.stdout
