"""The crawl against the replay: a valid bag, faults survived or named, re-runs, versions, kills."""
from __future__ import annotations

import asyncio
import hashlib
import json
import os
import subprocess
from pathlib import Path

import bagit
import pytest

from mirror.crawl import CrawlOptions, crawl
from mirror.manifest import read_manifest, read_provenance
from mirror.replay.data import index_file
from mirror.verify import verify
from tests.conftest import ROOT, killed_crawls, run_cli


def crawl_sync(url: str, out: Path, **kw):
    return asyncio.run(crawl(CrawlOptions(site="resultados2024", root=url, out=str(out), **kw)))


def image_names(replay, n=None):
    keys = replay.replay.keys
    names = [r.filename for r in index_file(1).rows if keys is None or r.key in keys]
    return names[:n] if n else names


def test_bag_is_valid_for_bagit_and_sha256sum(replay, tmp_path):
    out = tmp_path / "m"
    result = crawl_sync(replay.url, out)
    assert result.failures == []
    n_tables = len(image_names(replay))
    assert result.counters.archived == n_tables
    bag = bagit.Bag(str(out))
    bag.validate()  # raises BagValidationError on any defect
    assert len(bag.payload_entries()) == n_tables + 1  # the actas and the index CSV
    check = subprocess.run(["sha256sum", "-c", "--quiet", "manifest-sha256.txt"], cwd=out,
                           capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    assert verify(out) == []


def test_provenance_records_every_file(replay, tmp_path):
    out = tmp_path / "m"
    crawl_sync(replay.url, out)
    entries = read_provenance(out / "provenance.jsonl")
    manifest = read_manifest(out / "manifest-sha256.txt")
    assert {e.path: e.sha256 for e in entries} == manifest
    for e in entries:
        body = (out / e.path).read_bytes()
        assert hashlib.sha256(body).hexdigest() == e.sha256 and len(body) == e.size
        assert e.fetched_at.endswith("Z") and e.status == 200 and e.etag and e.last_modified
        assert e.cid.startswith("bafkrei")
        if e.kind == "acta":
            assert e.path.startswith("data/") and e.path.endswith(f"/{e.center}/{e.key}.jpg")
            assert e.key == f"{e.center}.{e.table}" and e.state and e.parish and e.content_type == "image/jpeg"
            assert e.url.startswith(replay.url) and e.supersedes is None


def test_real_scans_are_archived_byte_for_byte(replay, tmp_path):
    out = tmp_path / "m"
    crawl_sync(replay.url, out)
    real = Path(ROOT / "mirror/replay/data/resultados2024/actas")
    by_url = {e.url.rsplit("/", 1)[1]: e for e in read_provenance(out / "provenance.jsonl")}
    for jpg in real.glob("*.jpg"):
        assert (out / by_url[jpg.name].path).read_bytes() == jpg.read_bytes()


def test_rerun_downloads_no_bodies(replay, tmp_path):
    out = tmp_path / "m"
    crawl_sync(replay.url, out)
    manifest_before = (out / "manifest-sha256.txt").read_bytes()
    info_before = (out / "bag-info.txt").read_bytes()
    bodies = replay.replay.stats["bodies"]
    second = crawl_sync(replay.url, out)
    assert second.counters.archived == 0 and second.counters.unchanged == len(image_names(replay))
    assert replay.replay.stats["bodies"] == bodies  # every answer was a 304
    assert (out / "manifest-sha256.txt").read_bytes() == manifest_before
    assert (out / "bag-info.txt").read_bytes() == info_before


def test_changed_image_becomes_a_second_version(replay_factory, tmp_path):
    r = replay_factory(faults="change=0.1")
    out = tmp_path / "m"
    crawl_sync(r.url, out)
    changing = [n for n in image_names(r) if r.replay.variant(n) == 0 and
                (r.replay.faults.kind_for(n) or None) and r.replay.faults.kind_for(n).kind == "change"]
    assert changing, "the plan should pick some files"
    first = {e.url: e for e in read_provenance(out / "provenance.jsonl")}
    r.replay.epoch = 2
    second = crawl_sync(r.url, out)
    assert second.counters.archived == len(changing)
    entries = read_provenance(out / "provenance.jsonl")
    for name in changing:
        versions = [e for e in entries if e.url.endswith("/" + name)]
        assert len(versions) == 2
        old, new = versions
        assert new.supersedes == old.sha256 and new.version == 2 and new.path.endswith(".v2.jpg")
        assert (out / old.path).exists() and (out / new.path).exists()
        assert hashlib.sha256((out / old.path).read_bytes()).hexdigest() == first[old.url].sha256
    assert verify(out) == []
    bagit.Bag(str(out)).validate()


@pytest.mark.parametrize("kind", ["429", "503", "reset", "short", "slow", "redirect"])
def test_transient_faults_are_retried_to_success(replay_factory, tmp_path, kind):
    probe = replay_factory()
    names = image_names(probe, 3)
    r = replay_factory(faults=None)
    r.replay.faults = r.replay.faults.with_files(**{n: kind for n in names})
    out = tmp_path / "m"
    result = crawl_sync(r.url, out)
    assert result.failures == []
    entries = {e.url.rsplit("/", 1)[1]: e for e in read_provenance(out / "provenance.jsonl")}
    for name in names:
        body, _etag = r.replay.image(name)
        assert entries[name].sha256 == hashlib.sha256(body).hexdigest()
        if kind in ("429", "503", "reset", "short"):
            assert r.replay.hits[name] > 1, "the fault should have forced a retry"
        if kind == "redirect":
            assert entries[name].final_url.endswith(f"/cdn/{name}") and entries[name].url.endswith(f"/{name}")
    assert verify(out) == []


@pytest.mark.parametrize("kind,reason,cause", [("404", "HTTP 404", "HTTP 404"),
                                               ("denied", "HTML page", "HTML instead of an image"),
                                               ("huge", "over the cap", "too large"), ("endless", "cap", "too large")])
def test_permanent_faults_are_named_and_never_archived(replay_factory, tmp_path, kind, reason, cause):
    probe = replay_factory()
    names = image_names(probe, 2)
    r = replay_factory()
    r.replay.faults = r.replay.faults.with_files(**{n: kind for n in names})
    out = tmp_path / "m"
    result = crawl_sync(r.url, out, max_bytes=2 * 1024 * 1024)
    failed = {f["url"].rsplit("/", 1)[1]: f for f in result.failures}
    assert set(failed) == set(names)
    assert all(reason in failed[n]["reason"] for n in names), failed
    archived = {e.url.rsplit("/", 1)[1] for e in read_provenance(out / "provenance.jsonl")}
    assert not archived & set(names)
    lines = [json.loads(x) for x in (out / "failures.jsonl").read_text().splitlines()]
    assert {x["url"].rsplit("/", 1)[1] for x in lines} == set(names)
    assert all(x["cause"] == cause and x["attempts"] == 1 and x["at"].endswith("Z") for x in lines), lines
    assert verify(out) == []
    bagit.Bag(str(out)).validate()


def test_slowloris_is_cut_off_at_the_timeout(replay_factory, tmp_path):
    probe = replay_factory()
    name = image_names(probe, 1)[0]
    r = replay_factory()
    r.replay.faults = r.replay.faults.with_files(**{name: "drip"})
    result = crawl_sync(r.url, tmp_path / "m", timeout=1.5, retry_attempts=2)
    assert [f["url"].rsplit("/", 1)[1] for f in result.failures] == [name]
    assert result.failures[0]["cause"] == "timeout" and result.failures[0]["attempts"] == 2


def test_cli_exit_codes_and_failure_listing(replay_factory, tmp_path):
    probe = replay_factory()
    name = image_names(probe, 1)[0]
    r = replay_factory()
    r.replay.faults = r.replay.faults.with_files(**{name: "404"})
    out = tmp_path / "m"
    proc = run_cli("crawl", "resultados2024", "--root", r.url, "--out", str(out), "--quiet")
    assert proc.returncode == 1
    assert "failed" in proc.stderr and name in proc.stderr and "HTTP 404" in proc.stderr
    r.replay.faults = r.replay.faults.with_files()
    r.replay.faults.explicit.clear()
    proc = run_cli("crawl", "resultados2024", "--root", r.url, "--out", str(out), "--quiet")
    assert proc.returncode == 0, proc.stderr
    assert (out / "failures.jsonl").read_text() == ""


def test_html_discovery_finds_the_same_actas(replay, tmp_path):
    a = crawl_sync(replay.url, tmp_path / "csv")
    b = crawl_sync(replay.url, tmp_path / "html", discover="html")
    assert b.failures == []
    pa = {e.key: (e.sha256, e.path) for e in read_provenance(tmp_path / "csv/provenance.jsonl") if e.kind == "acta"}
    pb = {e.key: (e.sha256, e.path) for e in read_provenance(tmp_path / "html/provenance.jsonl")}
    assert pa == pb
    both = crawl_sync(replay.url, tmp_path / "both", discover="both")
    assert both.counters.discovered == a.counters.discovered


def test_v2_index_and_local_index_file(replay, tmp_path):
    index = tmp_path / "v2.csv"
    index.write_bytes(replay.replay.index_bytes(2))
    result = crawl_sync(replay.url, tmp_path / "m", index=str(index))
    keys = replay.replay.keys
    assert result.counters.archived == sum(1 for r in index_file(2).rows if r.key in keys)


def _count_lines(path: Path) -> int:
    return sum(1 for _ in open(path)) if path.exists() else 0


def test_sigkill_then_rerun_gives_a_valid_complete_bag(replay_factory, tmp_path):
    r = replay_factory(limit=120, faults="slow=1.0")
    out = tmp_path / "m"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = killed_crawls(r.url, out, seed=7, times=4, earliest=0.4)
    final = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert final.returncode == 0, final.stderr
    bagit.Bag(str(out)).validate()
    assert verify(out) == []
    entries = read_provenance(out / "provenance.jsonl")
    keys = [e.key for e in entries if e.kind == "acta"]
    assert len(keys) == len(set(keys)) == len(image_names(r))  # nothing lost, nothing twice
