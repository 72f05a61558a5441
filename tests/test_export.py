"""WARC and WACZ export, read back by warcio's and the wacz package's own tools."""
from __future__ import annotations

import asyncio
import json
import os
import subprocess
import time
import zipfile
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from warcio.archiveiterator import ArchiveIterator

from conftest import run_cli
from mirror.crawl import CrawlOptions, crawl
from mirror.export import sha256_of_digest
from mirror.manifest import iter_provenance, read_manifest


def _crawl(url: str, out: Path) -> None:
    asyncio.run(crawl(CrawlOptions(site="resultados2024", root=url, out=str(out))))


@pytest.fixture(scope="module")
def history(tmp_path_factory):
    """A mirror with three runs: first capture, an unchanged re-check, then changed images."""
    from mirror.replay import FaultPlan, Replay, ReplayThread

    thread = ReplayThread(Replay(small=True, limit=30, faults=FaultPlan.parse("change=0.2", 0)))
    thread.start()
    out = tmp_path_factory.mktemp("export") / "m"
    try:
        _crawl(thread.url, out)
        time.sleep(2.5)  # a re-check is told from a capture by its time (README: revisits)
        _crawl(thread.url, out)
        thread.replay.epoch = 2
        _crawl(thread.url, out)
    finally:
        thread.stop()
    return out


def _records(path: Path) -> list[dict]:
    rows = []
    with open(path, "rb") as fh:
        for rec in ArchiveIterator(fh):
            h = rec.rec_headers
            rows.append({"type": rec.rec_type, "uri": h.get_header("WARC-Target-URI"),
                         "date": h.get_header("WARC-Date"), "digest": h.get_header("WARC-Payload-Digest"),
                         "status": rec.http_headers.get_statuscode() if rec.http_headers and rec.rec_type != "request" else None,
                         "body": rec.content_stream().read() if rec.rec_type == "response" else b""})
    return rows


def test_warc_holds_every_version_with_its_manifest_hash(history, tmp_path):
    out = tmp_path / "m.warc.gz"
    proc = run_cli("export", str(history), "--warc", str(out))
    assert proc.returncode == 0, proc.stderr
    check = subprocess.run(["warcio", "check", "-v", str(out)], capture_output=True, text=True)
    assert check.returncode == 0 and "digest pass" in check.stdout, check.stdout + check.stderr
    index = subprocess.run(["warcio", "index", "-f", "warc-type,warc-target-uri", str(out)],
                           capture_output=True, text=True, check=True)
    types = [json.loads(line)["warc-type"] for line in index.stdout.splitlines()]
    entries = list(iter_provenance(history / "provenance.jsonl"))
    assert types.count("response") == len(entries) and types.count("request") >= len(entries)

    manifest = read_manifest(history / "manifest-sha256.txt")
    by_capture = {(e.final_url, e.fetched_at[:19]): e for e in entries}
    responses = [r for r in _records(out) if r["type"] == "response"]
    for r in responses:
        e = by_capture[(r["uri"], r["date"][:19])]
        assert sha256_of_digest(r["digest"]) == manifest[e.path] == e.sha256
        assert r["body"] == (history / e.path).read_bytes() and r["status"] == "200"
    changed = [e for e in entries if e.supersedes]
    assert changed, "the replay's change fault should have made second versions"
    for e in changed:  # a later version of the same URL is another response record
        assert sum(1 for r in responses if r["uri"] == e.final_url) == e.version


def test_unchanged_recheck_is_a_revisit(history, tmp_path):
    out = tmp_path / "m.warc.gz"
    assert run_cli("export", str(history), "--warc", str(out)).returncode == 0
    records = _records(out)
    revisits = [r for r in records if r["type"] == "revisit"]
    entries = list(iter_provenance(history / "provenance.jsonl"))
    changed = {e.final_url for e in entries if e.supersedes}
    unchanged = {e.final_url for e in entries} - changed
    # the second run found every URL unchanged, the third all but the changed ones: one revisit
    # each for those (the changed ones' last check is their new capture)
    assert unchanged and sorted(r["uri"] for r in revisits) == sorted(unchanged)
    latest = {e.final_url: e for e in entries}
    for r in revisits:
        assert sha256_of_digest(r["digest"]) == latest[r["uri"]].sha256
        assert r["date"] > latest[r["uri"]].fetched_at[:19]


def test_wacz_is_valid_and_lists_every_hash(history, tmp_path):
    out = tmp_path / "m.wacz"
    proc = run_cli("export", str(history), "--wacz", str(out))
    assert proc.returncode == 0, proc.stderr
    check = subprocess.run(["wacz", "validate", "-f", str(out)], capture_output=True, text=True)
    assert check.returncode == 0 and "is valid" in check.stdout, check.stdout + check.stderr
    import hashlib

    with zipfile.ZipFile(out) as zf:
        package = json.loads(zf.read("datapackage.json"))
        assert package["wacz_version"] == "1.1.1"
        names = set(zf.namelist())
        assert {"archive/data.warc.gz", "indexes/index.cdx", "pages/pages.jsonl", "datapackage-digest.json",
                "evidence/manifest-sha256.txt"} <= names
        for res in package["resources"]:
            assert res["hash"] == "sha256:" + hashlib.sha256(zf.read(res["path"])).hexdigest()
        assert {r["path"] for r in package["resources"]} == names - {"datapackage.json", "datapackage-digest.json"}
        assert zf.getinfo("archive/data.warc.gz").compress_type == zipfile.ZIP_STORED
        digest = json.loads(zf.read("datapackage-digest.json"))
        assert digest["hash"] == "sha256:" + hashlib.sha256(zf.read("datapackage.json")).hexdigest()
        cdx = zf.read("indexes/index.cdx").decode().splitlines()
        pages = zf.read("pages/pages.jsonl").decode().splitlines()
    entries = list(iter_provenance(history / "provenance.jsonl"))
    warc = tmp_path / "data.warc.gz"
    with zipfile.ZipFile(out) as zf:
        warc.write_bytes(zf.read("archive/data.warc.gz"))
    indexed = [r for r in _records(warc) if r["type"] in ("response", "revisit")]
    assert len(cdx) == len(indexed) and len([r for r in indexed if r["type"] == "response"]) == len(entries)
    assert json.loads(pages[0])["format"] == "json-pages-1.0" and len(pages) == 1 + len(entries)


def test_damaged_files_are_left_out_and_named(history, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(history, copy, symlinks=True)
    entries = [e for e in iter_provenance(copy / "provenance.jsonl") if e.kind == "acta"]
    (copy / entries[0].path).write_bytes(b"not the archived bytes")
    os.unlink(copy / entries[1].path)
    secret = tmp_path / "secret.jpg"
    secret.write_bytes(b"outside the mirror")
    os.symlink(secret, copy / entries[1].path)
    os.unlink(copy / entries[2].path)
    out = tmp_path / "c.warc.gz"
    proc = run_cli("export", str(copy), "--warc", str(out))
    assert proc.returncode == 1
    assert f"changed: {entries[0].path}" in proc.stderr
    assert f"unsafe: {entries[1].path} (a symbolic link, not a regular file)" in proc.stderr
    assert f"missing: {entries[2].path}" in proc.stderr
    bodies = [r["body"] for r in _records(out) if r["type"] == "response"]
    assert b"outside the mirror" not in bodies and b"not the archived bytes" not in bodies
    assert len(bodies) == len(list(iter_provenance(copy / "provenance.jsonl"))) - 3


def test_bad_input_is_one_line(history, tmp_path):
    proc = run_cli("export", str(tmp_path), "--warc", str(tmp_path / "x.warc.gz"))
    assert proc.returncode == 2 and "not an acta-mirror bag" in proc.stderr
    (tmp_path / "exists.wacz").write_text("keep me")
    proc = run_cli("export", str(history), "--wacz", str(tmp_path / "exists.wacz"))
    assert proc.returncode == 2 and "never overwrites" in proc.stderr
    assert (tmp_path / "exists.wacz").read_text() == "keep me"
    proc = run_cli("export", str(history))
    assert proc.returncode == 2 and "--warc" in proc.stderr
    import shutil

    hostile = tmp_path / "hostile"
    shutil.copytree(history, hostile)
    text = (hostile / "provenance.jsonl").read_text()
    first = json.loads(text.splitlines()[1])
    first["etag"] = '"x"\r\nSet-Cookie: evil'
    lines = text.splitlines()
    lines[1] = json.dumps(first)
    (hostile / "provenance.jsonl").write_text("\n".join(lines) + "\n")
    proc = run_cli("export", str(hostile), "--warc", str(tmp_path / "h.warc.gz"))
    assert proc.returncode == 2 and "control character" in proc.stderr
    assert not (tmp_path / "h.warc.gz").exists()


def test_damaged_recheck_times_mean_no_revisits(history, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(history, copy)
    checked = copy / ".acta-mirror" / "checked.json"
    times = json.loads(checked.read_text())
    first = next(iter(times))
    checked.write_text(json.dumps({first: 1e300, "x": "not a time"}))
    proc = run_cli("export", str(copy), "--warc", str(tmp_path / "a.warc.gz"))
    assert proc.returncode == 0 and "0 revisits" in proc.stdout, proc.stdout + proc.stderr
    checked.write_text("[" * 100_000)
    proc = run_cli("export", str(copy), "--warc", str(tmp_path / "b.warc.gz"))
    assert proc.returncode == 0 and "unreadable" in proc.stdout and "0 revisits" in proc.stdout


def test_a_revisit_names_the_last_version_recorded_even_after_the_clock_went_back(tmp_path, monkeypatch):
    """The first run on a clock a year ahead, then a changed image captured at the right time:
    the revisit of a later re-check belongs to the new version, the last one provenance records.
    Chosen by the latest fetched_at, it named the old one, or (the re-check being 'before' it)
    none. The export itself is readable by those the user shares it with (0644 less the umask)."""
    from mirror import fetch
    from mirror.replay import FaultPlan, Replay, ReplayThread

    real = time.time
    thread = ReplayThread(Replay(small=True, limit=10, faults=FaultPlan.parse("change=0.3", 0)))
    thread.start()
    out = tmp_path / "m"
    try:
        with monkeypatch.context() as m:
            m.setattr(time, "time", lambda: real() + 365 * 86400)
            ahead = datetime.now(timezone.utc) + timedelta(days=365)
            m.setattr(fetch, "utc_now", lambda: ahead.isoformat(timespec="microseconds").replace("+00:00", "Z"))
            _crawl(thread.url, out)
        thread.replay.epoch = 2
        _crawl(thread.url, out)
        with monkeypatch.context() as m:  # a re-check an hour on: nothing changed
            m.setattr(time, "time", lambda: real() + 3600)
            _crawl(thread.url, out)
    finally:
        thread.stop()
    warc = tmp_path / "m.warc.gz"
    assert run_cli("export", str(out), "--warc", str(warc)).returncode == 0
    assert warc.stat().st_mode & 0o777 == 0o666 & ~_umask()
    entries = list(iter_provenance(out / "provenance.jsonl"))
    changed = {e.final_url: e for e in entries if e.supersedes}
    assert changed, "the replay's change fault should have made second versions"
    revisits = {r["uri"]: r for r in _records(warc) if r["type"] == "revisit"}
    for url, e in changed.items():
        assert url in revisits, url
        assert sha256_of_digest(revisits[url]["digest"]) == e.sha256


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_an_export_onto_a_file_system_without_hard_links_is_renamed_into_place(history, tmp_path, monkeypatch):
    """FAT and exFAT (a USB stick) refuse hard links (EPERM): the finished file is renamed
    instead. No such file system can be mounted on the test machines (no vfat module), so the
    refusal is the kernel's answer put in os.link's place."""
    import errno

    import mirror.export as export

    def no_links(src, dst, **_):
        raise OSError(errno.EPERM, os.strerror(errno.EPERM), src, None, dst)

    monkeypatch.setattr(export.os, "link", no_links)
    for name, write in (("m.warc.gz", export.export_warc), ("m.wacz", export.export_wacz)):
        out = tmp_path / name
        write(history, out)
        assert out.stat().st_size > 0
        assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []  # no temp left
    with zipfile.ZipFile(tmp_path / "m.wacz") as zf:
        assert "archive/data.warc.gz" in zf.namelist()
