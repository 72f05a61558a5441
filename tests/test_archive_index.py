"""The archive's on-disk index: agrees with provenance, is rebuilt when damaged, copied or
stale, survives kill -9, and lets an unchanged re-run skip what it need not ask."""
from __future__ import annotations

import asyncio
import json
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

from mirror import archindex
from mirror.archindex import NAME
from mirror.crawl import CrawlOptions, crawl
from mirror.manifest import read_provenance
from mirror.sites.resultados2024 import Resultados2024
from mirror.verify import verify
from tests.conftest import ROOT, killed_crawls


def crawl_sync(url: str, out: Path, **kw):
    return asyncio.run(crawl(CrawlOptions(site="resultados2024", root=url, out=str(out), **kw)))


def index_of(out: Path) -> sqlite3.Connection:
    return sqlite3.connect(out / ".acta-mirror" / NAME)


def index_files(out: Path) -> set[tuple[str, str, str]]:
    with index_of(out) as db:
        return set(db.execute("SELECT path, key, lower(hex(sha256)) FROM files"))


def provenance_files(out: Path) -> set[tuple[str, str, str]]:
    return {(e.path, e.key, e.sha256) for e in read_provenance(out / "provenance.jsonl")}


def image_requests(replay) -> int:
    return sum(path.endswith(".jpg") for path, _headers in replay.replay.requests)


def test_the_index_holds_what_provenance_says(replay, tmp_path):
    out = tmp_path / "m"
    crawl_sync(replay.url, out)
    assert index_files(out) == provenance_files(out) and len(provenance_files(out)) > 20
    with index_of(out) as db:
        urls = dict(db.execute("SELECT url, path FROM urls JOIN files ON seq = file"))
    assert urls == {e.url: e.path for e in read_provenance(out / "provenance.jsonl")}


def test_a_copy_carrying_a_doctored_index_gets_it_rebuilt(replay, tmp_path):
    out = tmp_path / "m"
    crawl_sync(replay.url, out)
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    with index_of(copy) as db:  # a copy says it has nothing: trusted, every acta would be fetched again
        db.execute("DELETE FROM files")
        db.execute("DELETE FROM urls")
    before = (copy / "provenance.jsonl").read_bytes()
    again = crawl_sync(replay.url, copy)
    assert again.counters.archived == 0 and again.counters.failed == 0
    assert (copy / "provenance.jsonl").read_bytes() == before
    assert index_files(copy) == provenance_files(copy)
    assert verify(copy) == []


def test_a_damaged_index_is_rebuilt(replay, tmp_path):
    out = tmp_path / "m"
    crawl_sync(replay.url, out)
    with open(out / ".acta-mirror" / NAME, "r+b") as fh:  # same file, bytes gone bad
        fh.seek(0)
        fh.write(os.urandom(4096))
    for name in (f"{NAME}-wal", f"{NAME}-shm"):
        if (out / ".acta-mirror" / name).exists():
            (out / ".acta-mirror" / name).unlink()
    again = crawl_sync(replay.url, out)
    assert again.counters.archived == 0 and again.counters.failed == 0
    assert index_files(out) == provenance_files(out)


def test_an_index_that_provenance_no_longer_matches_is_rebuilt(replay, tmp_path):
    out = tmp_path / "m"
    crawl_sync(replay.url, out)
    lines = (out / "provenance.jsonl").read_text().splitlines(keepends=True)
    last = read_provenance(out / "provenance.jsonl")[-1]
    assert last.kind == "acta"
    (out / "provenance.jsonl").write_text("".join(lines[:-1]))  # as a restored older copy would be
    (out / last.path).unlink()
    again = crawl_sync(replay.url, out)
    assert again.counters.archived == 1  # a trusted stale index would call it known (a 304)
    assert index_files(out) == provenance_files(out)
    assert verify(out) == []


def test_an_unchanged_rerun_asks_nothing_and_reads_no_rows(replay, tmp_path, monkeypatch):
    out = tmp_path / "m"
    first = crawl_sync(replay.url, out)
    listed = first.counters.discovered
    parsed = []
    real = Resultados2024.parse_index
    monkeypatch.setattr(Resultados2024, "parse_index", lambda self, *a, **k: parsed.append(1) or real(self, *a, **k))
    images = image_requests(replay)
    again = crawl_sync(replay.url, out, recheck_after=3600)
    c = again.counters
    assert (c.discovered, c.not_asked, c.expected, c.archived, c.failed, c.unchanged) == (listed, listed, listed, 0, 0, 0)
    assert again.requests == 1 and image_requests(replay) == images  # the index only (a 304)
    assert parsed == []  # the listing was taken from the last run, not read again
    assert verify(out) == []

    # One URL checked too long ago: the listing is read again and exactly that URL is asked.
    stale = read_provenance(out / "provenance.jsonl")[-1].url
    with index_of(out) as db:
        db.execute("UPDATE urls SET checked = 0 WHERE url = ?", (stale,))
    third = crawl_sync(replay.url, out, recheck_after=3600)
    assert parsed and third.requests == 2 and image_requests(replay) == images + 1
    # asked and found unchanged (a 304) apart from what was not asked
    assert (third.counters.discovered, third.counters.unchanged, third.counters.not_asked) == (listed, 1, listed - 1)


def test_a_vanished_acta_that_is_listed_again_is_recorded_on_a_reused_listing(replay, tmp_path):
    out = tmp_path / "m"
    crawl_sync(replay.url, out)
    key = read_provenance(out / "provenance.jsonl")[-1].key
    crawl_sync(replay.url, out, recheck_after=3600)  # the listing is now reusable
    with index_of(out) as db:  # as if an earlier run had found it gone
        db.execute("UPDATE actas SET change = 'vanished' WHERE key = ?", (key,))
    crawl_sync(replay.url, out, recheck_after=3600)
    changes = (out / "changes.jsonl").read_text().splitlines()
    assert json.loads(changes[-1])["change"] == "reappeared" and json.loads(changes[-1])["key"] == key


def test_after_kill_9_the_index_agrees_with_provenance(replay_factory, tmp_path):
    r = replay_factory(limit=120, faults="slow=1.0")
    out = tmp_path / "m"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}

    def check():
        # the next run opens the index: whatever it trusts or rebuilds must be what provenance says
        probe = subprocess.run([sys.executable, "-c", "import sys; from mirror.archive import Archive\n"
                                "with Archive(sys.argv[1]): pass", str(out)], env=env, capture_output=True, text=True)
        assert probe.returncode == 0, probe.stderr
        assert index_files(out) == provenance_files(out)

    cmd = killed_crawls(r.url, out, seed=11, times=3, earliest=0.6, after=check)
    final = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert final.returncode == 0, final.stderr
    assert index_files(out) == provenance_files(out)
    assert verify(out) == []


def test_a_full_folder_overflows_into_siblings_and_a_later_run_counts_on(tmp_path, monkeypatch):
    """A center's folder holds at most MAX_DIR_ENTRIES files (GitHub lists no more); the count
    comes from the index and this run's pending files, and is remembered from file to file."""
    import hashlib

    from mirror import archive as archive_mod
    from mirror.archive import Archive
    from mirror.models import Acta, Fetched, Place

    monkeypatch.setattr(archive_mod, "MAX_DIR_ENTRIES", 3)
    monkeypatch.setattr(archive_mod, "FILTER_AFTER", 0)  # as in a large crawl: lookups filtered first
    place = Place(state_code="1", state="DTTO. CAPITAL", municipality_code="1", municipality="LIBERTADOR",
                  parish_code="1", parish="ALTAGRACIA", center="010101001")
    out = tmp_path / "m"

    def run(tables: range) -> list[str]:
        with Archive(out) as a:
            paths = []
            for t in tables:
                body = b"\xff\xd8acta %d\xff\xd9" % t
                tmp = a.tmp / f"t{t}.part"
                tmp.write_bytes(body)
                url = f"http://127.0.0.1:9/{t}.jpg"
                fetched = Fetched(url=url, final_url=url, status=200, tmp_path=str(tmp),
                                  sha256=hashlib.sha256(body).hexdigest(), size=len(body), etag="",
                                  last_modified="", content_type="image/jpeg",
                                  fetched_at="2024-07-29T00:00:00Z", host="127.0.0.1")
                paths.append(a.add(Acta("resultados2024", f"010101001.{t:02d}", url, "", place), fetched).path)
            a.finish()
        return paths

    first, second = run(range(1, 6)), run(range(6, 9))
    folders = [p.rsplit("/", 1)[0] for p in first + second]
    center = folders[0]
    assert folders == [center] * 3 + [f"{center}/more-2"] * 3 + [f"{center}/more-3"] * 2, folders
    assert verify(out) == []


def add_index_file(a, name: str, body: bytes):
    """Queue an index file under its own name, as the crawl archives one."""
    import hashlib

    from mirror.models import Acta, Fetched

    tmp = a.tmp / f"{name}.part"
    tmp.write_bytes(body)
    url = f"http://127.0.0.1:9/{name}"
    fetched = Fetched(url=url, final_url=url, status=200, tmp_path=str(tmp), sha256=hashlib.sha256(body).hexdigest(),
                      size=len(body), etag="", last_modified="", content_type="text/csv",
                      fetched_at="2024-07-29T00:00:00Z", host="127.0.0.1")
    return a.add(Acta("resultados2024", f"index/{name}", url, url), fetched, kind="index", name=name).path


def test_paths_whose_folded_forms_share_a_hash_are_told_apart_by_the_paths(tmp_path, monkeypatch):
    """The index keeps 64 bits of each folded path, not the path folded: a path is taken only
    when an archived path folds to the very same text, not when their bits merely agree."""
    from mirror.archive import Archive

    monkeypatch.setattr(archindex, "fold_hash", lambda folded: 7)  # every path collides with every other
    out = tmp_path / "m"
    with Archive(out) as a:
        first = add_index_file(a, "Index.csv", b"a,b\n1,2\n")
        a.finish()
    with Archive(out) as a:  # the first file is in the index now, not in a pending batch
        assert a.index.place("data/index", archindex.fold("data/index/Other.csv")) == (1, 0)
        assert a.index.place("data/index", archindex.fold("data/index/INDEX.CSV")) == (1, 1)
        other = add_index_file(a, "Other.csv", b"c,d\n3,4\n")
        upper = add_index_file(a, "INDEX.CSV", b"e,f\n5,6\n")
        a.finish()
    assert (first, other, upper) == ("data/index/Index.csv", "data/index/Other.csv", "data/index/INDEX.v2.CSV")
    assert verify(out) == []


# The schema-2 tables (files.folded, hex sha256, urls.path), as a mirror made before schema 3 holds them.
SCHEMA_2 = """
CREATE TABLE meta (name TEXT PRIMARY KEY, value) WITHOUT ROWID;
CREATE TABLE files (seq INTEGER PRIMARY KEY, path TEXT NOT NULL UNIQUE, key TEXT NOT NULL,
                    sha256 TEXT NOT NULL, size INTEGER NOT NULL, kind TEXT NOT NULL, folded TEXT NOT NULL);
CREATE INDEX files_key ON files (key, seq);
CREATE INDEX files_folded ON files (folded);
CREATE TABLE urls (url TEXT PRIMARY KEY, etag TEXT, last_modified TEXT, path TEXT, size INTEGER,
                   kind TEXT, checked REAL NOT NULL) WITHOUT ROWID;
CREATE TABLE dirs (dir TEXT PRIMARY KEY, n INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE status (key TEXT PRIMARY KEY, change TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE listed (key TEXT PRIMARY KEY, url TEXT NOT NULL, run INTEGER NOT NULL) WITHOUT ROWID;
"""


def test_an_index_of_an_older_schema_is_rebuilt_not_read(replay, tmp_path):
    """An index left by an older version, ours and covering the very same records, is of
    another layout: it is rebuilt from the records, never read (here it would say that
    nothing is archived, and every acta would be archived again)."""
    out = tmp_path / "m"
    crawl_sync(replay.url, out)
    state = out / ".acta-mirror"
    with index_of(out) as db:
        meta = dict(db.execute("SELECT name, value FROM meta"))
    db.close()
    for name in archindex.FILES:
        (state / name).unlink(missing_ok=True)
    old = sqlite3.connect(state / NAME)
    old.executescript(SCHEMA_2)
    st = os.lstat(state / NAME)
    old.executemany("INSERT INTO meta VALUES (?, ?)", [
        ("schema", 2), ("self", f"{st.st_dev}:{st.st_ino}"), ("run", meta["run"]), ("clean", 1),
        ("provenance", meta["provenance"]), ("changes", meta["changes"])])
    old.commit()
    old.close()
    before = (out / "provenance.jsonl").read_bytes()
    again = crawl_sync(replay.url, out)
    assert again.counters.archived == 0 and again.counters.failed == 0
    assert again.counters.unchanged == first_listed(out)
    assert (out / "provenance.jsonl").read_bytes() == before
    assert index_files(out) == provenance_files(out)
    with index_of(out) as db:
        assert db.execute("SELECT value FROM meta WHERE name = 'schema'").fetchone() == (archindex.SCHEMA,)
    assert verify(out) == []


def first_listed(out: Path) -> int:
    return len({e.key for e in read_provenance(out / "provenance.jsonl") if e.kind == "acta"})


def test_a_rebuild_leaves_no_second_copy_of_the_index_in_sqlites_log(replay, tmp_path, monkeypatch):
    """A rebuild commits a chunk at a time and the log is cut back after each copy into the
    index: the log a whole-index transaction leaves would stay on disk all run (a scheduled
    run rebuilds every time)."""
    from mirror.archive import Archive

    out = tmp_path / "m"
    crawl_sync(replay.url, out)
    for name in archindex.FILES:
        (out / ".acta-mirror" / name).unlink(missing_ok=True)
    monkeypatch.setattr(archindex, "CHUNK_ROWS", 4)
    monkeypatch.setattr(archindex, "WAL_PAGES", 2)
    with Archive(out):
        wal = (out / ".acta-mirror" / f"{NAME}-wal").stat().st_size
        size = (out / ".acta-mirror" / NAME).stat().st_size
        # at most 3 frames: the log's cap and the last meta write
        assert size > 8 * 4096 and wal <= 3 * (4096 + 24) + 32, (size, wal)
    assert index_files(out) == provenance_files(out)


def test_a_rebuild_cut_short_is_not_trusted(replay, tmp_path, monkeypatch):
    """Chunks of a rebuild are committed as it goes, but the records' identities only at its end:
    an index whose rebuild was stopped is rebuilt again, never taken as whole."""
    from mirror import archive as archive_mod
    from mirror.archive import Archive

    out = tmp_path / "m"
    crawl_sync(replay.url, out)
    for name in archindex.FILES:
        (out / ".acta-mirror" / name).unlink(missing_ok=True)
    monkeypatch.setattr(archindex, "CHUNK_ROWS", 4)
    real = archive_mod.iter_provenance

    def stopped(path):
        for n, e in enumerate(real(path)):
            if n == 10:
                raise KeyboardInterrupt  # as a run stopped mid-rebuild
            yield e

    monkeypatch.setattr(archive_mod, "iter_provenance", stopped)
    try:
        Archive(out).open()
    except KeyboardInterrupt:
        pass
    with index_of(out) as db:
        assert db.execute("SELECT count(*) FROM files").fetchone()[0] == 8  # two chunks were committed
    db.close()
    monkeypatch.setattr(archive_mod, "iter_provenance", real)
    again = crawl_sync(replay.url, out)
    assert again.counters.archived == 0 and again.counters.failed == 0
    assert index_files(out) == provenance_files(out)


def test_an_index_the_disk_has_no_room_for_is_a_full_disk_and_the_next_run_completes(replay, tmp_path, monkeypatch):
    """SQLite's own "database or disk is full" (made here for real: the index may not grow a
    page past the size it has when the run starts) is the full disk every other write names,
    not a failed ROLLBACK of a transaction SQLite had already ended; what the run recorded
    stays, and the next run, with room, completes a mirror that verifies."""
    from mirror.models import ArchiveWriteError

    out = tmp_path / "m"
    begin_run = archindex.ArchiveIndex.begin_run

    def no_room(self):
        begin_run(self)
        pages = self.w.execute("PRAGMA page_count").fetchone()[0]
        self.w.execute(f"PRAGMA max_page_count = {pages}")

    monkeypatch.setattr(archindex.ArchiveIndex, "begin_run", no_room)
    try:
        crawl_sync(replay.url, out)
    except ArchiveWriteError as exc:
        message = str(exc)
    else:
        raise AssertionError("the crawl ended although its index could not grow")
    assert message.startswith("disk full while writing the index in ") and "\n" not in message, message
    assert message.endswith("everything archived before is intact, re-run when there is space"), message
    recorded = provenance_files(out)
    monkeypatch.setattr(archindex.ArchiveIndex, "begin_run", begin_run)
    crawl_sync(replay.url, out)
    assert recorded <= provenance_files(out) == index_files(out) and verify(out) == []


def test_an_index_that_refuses_the_runs_last_write_is_one_error_not_a_traceback(replay, tmp_path, monkeypatch):
    """The last write of a run (its listing, for the next run to reuse) refused by SQLite (here
    for real: the connection made read-only) ends the run with the archive's one-line error,
    as every other write of the index does; the next run completes a mirror that verifies."""
    from mirror.models import ArchiveWriteError

    out = tmp_path / "m"
    set_meta = archindex.ArchiveIndex.set_meta

    def refused(self, **values):
        self.w.execute("PRAGMA query_only = 1")
        return set_meta(self, **values)

    monkeypatch.setattr(archindex.ArchiveIndex, "set_meta", refused)
    try:
        crawl_sync(replay.url, out)
    except ArchiveWriteError as exc:
        assert str(exc).startswith("cannot write the index in ") and "readonly" in str(exc), str(exc)
    else:
        raise AssertionError("the crawl ended although its index refused a write")
    monkeypatch.setattr(archindex.ArchiveIndex, "set_meta", set_meta)
    crawl_sync(replay.url, out)
    assert provenance_files(out) == index_files(out) and verify(out) == []
