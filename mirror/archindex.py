"""The archive's on-disk index: what a crawl looks up per file, URL and acta, kept in SQLite.

provenance.jsonl and changes.jsonl are the truth; this is a cache of them in the mirror's
working state (.acta-mirror/, outside the bag), so a run's memory does not grow with the
archive and a re-run does not read the whole provenance again. It is trusted only when it
names its own file (a copy carried in from elsewhere has another inode) and both records
still hash to what it says it covers; anything else, or any damage, and it is rebuilt from
the records. Writes come in batches, one transaction each (WAL, synchronous=NORMAL: a lost
transaction only means a rebuild). Lookups come from a second connection, so the event loop
never waits for the writer.
"""
from __future__ import annotations

import hashlib
import itertools
import json
import os
import sqlite3
from collections import Counter
from pathlib import Path
from typing import Iterable, Iterator

SCHEMA = 3  # 2: files.folded; 3: the layout below (an index of another schema is rebuilt, never read)
NAME = "index.sqlite"
FILES = (NAME, f"{NAME}-wal", f"{NAME}-shm")  # SQLite's own companions, in STATE_DIR
CHUNK_ROWS = 4096  # rows turned into text, or rebuilt, at a time
# SQLite's log is copied into the index once it holds this many pages of 4 KiB (its default:
# 1,000) and then cut back to them: a log left at its largest stays on disk for the whole run.
WAL_PAGES = 256

# The index is per-acta working state on a scheduled run's disk, so each fact is kept once:
# a path only in files (urls point at its seq), sha256 as its 32 bytes, and of the folded path
# (the case-blind check) only 64 bits. About 595 bytes an acta at the full 24,532-table index;
# schema 2 took 934.
_TABLES = """
CREATE TABLE meta (name TEXT PRIMARY KEY, value) WITHOUT ROWID;
CREATE TABLE files (seq INTEGER PRIMARY KEY, path TEXT NOT NULL UNIQUE, key TEXT NOT NULL,
                    sha256 BLOB NOT NULL, size INTEGER NOT NULL, kind TEXT NOT NULL, fold_hash INTEGER NOT NULL);
CREATE INDEX files_key ON files (key, seq);
CREATE INDEX files_fold_hash ON files (fold_hash);
CREATE TABLE urls (url TEXT PRIMARY KEY, etag TEXT, last_modified TEXT, file INTEGER NOT NULL,
                   checked REAL NOT NULL) WITHOUT ROWID;
CREATE TABLE dirs (dir TEXT PRIMARY KEY, n INTEGER NOT NULL) WITHOUT ROWID;
-- an acta's last change (NULL: none recorded) and the URL it was listed with in run (NULL: never listed)
CREATE TABLE actas (key TEXT PRIMARY KEY, change TEXT, url TEXT, run INTEGER) WITHOUT ROWID;
"""


_SET_CHANGE = "INSERT INTO actas (key, change) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET change = excluded.change"


def fold(path: str) -> str:
    """A path as a case-blind disk (macOS, Windows) sees it: two paths that fold alike are one file there."""
    return path.casefold()


def fold_hash(folded: str) -> int:
    """What the index keeps of a folded path (the text and its index were a fifth of the file).
    Stable across processes, unlike hash(); paths that share it are told apart by their text."""
    return int.from_bytes(hashlib.blake2b(folded.encode(), digest_size=8).digest(), "big", signed=True)


class Digest:
    """A file's identity as the index records it: device, inode, size and sha256 of its bytes,
    kept up to date as the archive appends (so nothing is hashed twice in one run)."""

    def __init__(self, path: Path):
        self.path = path
        self.hasher = hashlib.sha256()
        self.size = 0
        self.node = ""
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        except FileNotFoundError:
            return
        with open(fd, "rb") as fh:
            st = os.fstat(fh.fileno())
            self.node = f"{st.st_dev}:{st.st_ino}"
            while chunk := fh.read(1 << 20):
                self.hasher.update(chunk)
                self.size += len(chunk)

    def appended(self, data: bytes) -> None:
        if not self.node:  # the append created the file
            st = os.lstat(self.path)
            self.node = f"{st.st_dev}:{st.st_ino}"
        self.hasher.update(data)
        self.size += len(data)

    @property
    def value(self) -> str:
        return f"{self.node} {self.size} {self.hasher.hexdigest()}"


class ArchiveIndex:
    """The index of one mirror. `open` says whether an existing index could be trusted; if not,
    the caller fills a fresh one (`rebuild`)."""

    def __init__(self, state_dir: Path):
        self.path = state_dir / NAME
        self.w: sqlite3.Connection | None = None  # the writer: open, rebuild, batches, finish
        self.r: sqlite3.Connection | None = None  # lookups from the event loop
        self.run = 0  # this run's number: the listing rows it writes carry it
        self.previous_listing: tuple[str, int | None] = ("", None)  # (identity, run) of the last whole listing

    # -- opening ---------------------------------------------------------------------------
    def open(self, provenance: Digest, changes: Digest) -> bool:
        """Open the index; True when it is ours and matches both records exactly. Otherwise
        (missing, damaged, foreign, stale) it is replaced by an empty one and False returned."""
        try:
            if os.path.lexists(self.path) and self._connect() and self._matches(provenance, changes):
                return True
        except sqlite3.DatabaseError:
            pass
        self.close()
        for name in FILES:
            try:
                os.unlink(self.path.parent / name)
            except FileNotFoundError:
                pass
        self._connect()
        self.w.executescript(_TABLES)
        self.w.execute("INSERT INTO meta VALUES ('schema', ?), ('self', ?), ('run', 0), ('clean', 0)",
                       (SCHEMA, self._node()))
        self.w.commit()
        return False

    def _connect(self) -> bool:
        self.w = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        # A copy may carry an index made elsewhere: no function or view its schema names runs
        # before _matches has said whether it is ours.
        self.w.execute("PRAGMA trusted_schema=OFF")
        self.w.execute("PRAGMA journal_mode=WAL")
        self.w.execute("PRAGMA synchronous=NORMAL")
        self.w.execute(f"PRAGMA wal_autocheckpoint={WAL_PAGES}")
        self.w.execute(f"PRAGMA journal_size_limit={WAL_PAGES * 4096}")
        self.r = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self.r.execute("PRAGMA trusted_schema=OFF")
        return True

    def _node(self) -> str:
        st = os.lstat(self.path)
        return f"{st.st_dev}:{st.st_ino}"

    def _matches(self, provenance: Digest, changes: Digest) -> bool:
        meta = self.meta()
        return (meta.get("schema") == SCHEMA and meta.get("self") == self._node()
                and meta.get("provenance") == provenance.value and meta.get("changes") == changes.value)

    def meta(self) -> dict:
        return dict(self.w.execute("SELECT name, value FROM meta"))

    def begin_run(self) -> None:
        """Number this run and mark the index in use: a run that never closes leaves it unclean,
        and its listing rows may overwrite the last whole listing's, which no longer counts
        until a run records it again (`previous_listing` keeps it for this run to reuse)."""
        meta = self.meta()
        self.previous_listing = (meta.get("listing", ""), meta.get("listing_run"))
        with self.w:
            self.w.execute("BEGIN")
            self.w.execute("UPDATE meta SET value = value + 1 WHERE name = 'run'")
            self.w.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)", (("clean", 0), ("listing", "")))
        self.run = self.meta()["run"]

    def close(self, *, clean: bool = False) -> None:
        try:
            if clean and self.w is not None:
                self.w.execute("UPDATE meta SET value = 1 WHERE name = 'clean'")
        finally:
            for db in (self.w, self.r):
                if db is not None:
                    db.close()
            self.w = self.r = None

    # -- rebuilding from the records -------------------------------------------------------
    def rebuild(self, entries: Iterable, changes: Iterator[dict], checked: Iterable[tuple[str, float]]) -> list:
        """Fill the empty index from provenance entries and change records (streamed) and, for
        mirrors made before the index, the old check times. Returns the acta entries that have
        no change record (a run killed between the two appends).

        It commits every CHUNK_ROWS rows, so SQLite's log never holds a second copy of the
        whole index; a rebuild cut short is not trusted (the records' identities come last)."""
        w = self.w
        w.execute("CREATE TEMP TABLE recorded (key TEXT, sha256 TEXT, PRIMARY KEY (key, sha256)) WITHOUT ROWID")
        w.execute("BEGIN")
        for n, change in enumerate(changes, 1):
            w.execute(_SET_CHANGE, (change["key"], change["change"]))
            if change.get("sha256"):
                w.execute("INSERT OR IGNORE INTO recorded VALUES (?, ?)", (change["key"], change["sha256"]))
            self._chunk(n)
        lost = []
        entries = iter(entries)
        while block := list(itertools.islice(entries, CHUNK_ROWS)):
            self._add_files(block)
            lost += [e for e in block if e.kind == "acta" and not w.execute(
                "SELECT 1 FROM recorded WHERE key = ? AND sha256 = ?", (e.key, e.sha256)).fetchone()]
            self._chunk(CHUNK_ROWS)
        w.executemany("UPDATE urls SET checked = max(checked, ?) WHERE url = ?", ((when, url) for url, when in checked))
        w.execute("COMMIT")
        w.execute("DROP TABLE temp.recorded")
        return lost

    def _chunk(self, rows: int) -> None:
        if rows % CHUNK_ROWS == 0:
            self.w.execute("COMMIT")
            self.w.execute("BEGIN")

    def _add_files(self, entries: list) -> None:
        """Entries' files, their URLs (each checked when its file was fetched) and their folders'
        counts, a statement for each table over the whole list (one call into SQLite per
        table, not three per file)."""
        w = self.w
        w.executemany("INSERT INTO files (path, key, sha256, size, kind, fold_hash) VALUES (?, ?, ?, ?, ?, ?)",
                      [(e.path, e.key, bytes.fromhex(e.sha256), e.size, e.kind, fold_hash(fold(e.path)))
                       for e in entries])
        w.executemany("INSERT INTO urls SELECT ?, ?, ?, seq, ? FROM files WHERE path = ? ON CONFLICT (url) DO UPDATE "
                      "SET etag = excluded.etag, last_modified = excluded.last_modified, file = excluded.file, "
                      "checked = max(checked, excluded.checked)",
                      [(e.url, e.etag, e.last_modified, _epoch(e.fetched_at), e.path) for e in entries])
        dirs = Counter(e.path.rsplit("/", 1)[0] for e in entries)
        w.executemany("INSERT INTO dirs VALUES (?, ?) ON CONFLICT (dir) DO UPDATE SET n = n + excluded.n",
                      dirs.items())

    # -- a batch ---------------------------------------------------------------------------
    def write(self, entries: list, changes: list[dict], checked: dict[str, float], listed: dict[str, str],
              digests: tuple[Digest, Digest]) -> None:
        """One batch in one transaction, left open for the caller to `commit`: its files, their
        change records, the URLs checked and the actas listed since the last batch, and the
        records' new identities."""
        w = self.w
        w.execute("BEGIN")
        try:
            self._add_files(entries)
            self.write_changes(changes, commit=False)
            w.executemany("UPDATE urls SET checked = max(checked, ?) WHERE url = ?",
                          ((when, url) for url, when in checked.items()))
            w.executemany("INSERT INTO actas (key, url, run) VALUES (?, ?, ?) ON CONFLICT (key) DO UPDATE "
                          "SET url = excluded.url, run = excluded.run",
                          ((key, url, self.run) for key, url in listed.items()))
            self._identities(*digests)
        except BaseException:
            if w.in_transaction:  # SQLite ends it itself on some errors (a full disk): its ROLLBACK
                w.execute("ROLLBACK")  # would then fail, and that error would hide the one that counts
            raise

    def commit(self) -> None:
        self.w.execute("COMMIT")

    def write_changes(self, changes: list[dict], commit: bool = True,
                      digests: tuple[Digest, Digest] | None = None) -> None:
        w = self.w
        if commit:
            w.execute("BEGIN")
        w.executemany(_SET_CHANGE, ((c["key"], c["change"]) for c in changes))
        if digests:
            self._identities(*digests)
        if commit:
            w.execute("COMMIT")

    def _identities(self, provenance: Digest, changes: Digest) -> None:
        self.w.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)",
                           (("provenance", provenance.value), ("changes", changes.value)))

    def set_meta(self, **values) -> None:
        with self.w:
            self.w.execute("BEGIN")
            self.w.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)", values.items())

    # -- lookups (the event loop's connection) ------------------------------------------------
    def url(self, url: str) -> tuple | None:
        """(etag, last_modified, path, checked) of a URL archived before."""
        return self.r.execute("SELECT u.etag, u.last_modified, f.path, u.checked FROM urls u JOIN files f "
                              "ON f.seq = u.file WHERE u.url = ?", (url,)).fetchone()

    def versions(self, key: str) -> list[tuple[str, str, int]]:
        """(path, sha256, seq) of each version of key, oldest first."""
        return [(path, sha.hex(), seq) for path, sha, seq in
                self.r.execute("SELECT path, sha256, seq FROM files WHERE key = ? ORDER BY seq", (key,))]

    def place(self, directory: str, folded: str) -> tuple[int, int]:
        """(files in directory, 1 if a path that folds to `folded` is taken else 0)."""
        rows = self.r.execute("SELECT n, path FROM (SELECT coalesce((SELECT n FROM dirs WHERE dir = ?), 0) AS n) "
                              "LEFT JOIN files ON fold_hash = ?", (directory, fold_hash(folded))).fetchall()
        return rows[0][0], int(any(path is not None and fold(path) == folded for _n, path in rows))

    def listing_and_status(self, key: str, run: int) -> tuple[str | None, str | None]:
        """(the URL key was listed with in that run, its last change)."""
        return self.r.execute("SELECT (SELECT url FROM actas WHERE key = ?1 AND run = ?2), "
                              "(SELECT change FROM actas WHERE key = ?1)", (key, run)).fetchone()

    def names(self, run: int) -> Iterator[str]:
        """Every archived key ('k'), key with a change ('s'), key listed in that run ('l'), URL
        ('u'), folder ('d') and path ('p', folded) the index holds, streamed."""
        for sql, tag in (("SELECT DISTINCT key FROM files", "k"),
                         ("SELECT key FROM actas WHERE change IS NOT NULL", "s"),
                         ("SELECT key FROM actas WHERE run = ?1", "l"), ("SELECT url FROM urls", "u"),
                         ("SELECT dir FROM dirs", "d"), ("SELECT path FROM files", "p")):
            for (name,) in self.r.execute(sql, (run,) if "?1" in sql else ()):
                yield tag + (fold(name) if tag == "p" else name)

    def last_seq(self) -> int:
        return self.r.execute("SELECT coalesce(max(seq), 0) FROM files").fetchone()[0]

    def paths(self) -> set[str]:
        """Every archived path: only to find orphans after a crash, where a set is unavoidable
        for a walk of data/ (a run that closed cleanly leaves none)."""
        return {p for (p,) in self.r.execute("SELECT path FROM files")}

    # -- the listing ---------------------------------------------------------------------------
    def listing_size(self, run: int) -> int:
        return self.r.execute("SELECT count(*) FROM actas WHERE run = ?", (run,)).fetchone()[0]

    def listing_fresh(self, run: int, since: float, until: float) -> int:
        """How many of that run's listed URLs were fetched or confirmed after `since` and not after `until`
        (each for its own acta: a URL whose last file is another acta's says nothing of this one)."""
        return self.r.execute("SELECT count(*) FROM actas a JOIN urls u ON u.url = a.url JOIN files f "
                              "ON f.seq = u.file AND f.key = a.key "
                              "WHERE a.run = ? AND u.checked > ? AND u.checked <= ?", (run, since, until)).fetchone()[0]

    def listed_vanished(self, run: int) -> list[tuple[str, str]]:
        """(key, url) of the listed actas whose last change is 'vanished'."""
        return self.r.execute("SELECT key, url FROM actas WHERE run = ? AND change = 'vanished' ORDER BY key",
                              (run,)).fetchall()

    def unlisted(self, run: int) -> Iterator[tuple[str, str | None]]:
        """(key, last change) of each archived acta not listed in that run."""
        return self.r.execute("SELECT DISTINCT f.key, a.change FROM files f LEFT JOIN actas a ON a.key = f.key "
                              "WHERE f.kind = 'acta' AND a.run IS NOT ? ORDER BY f.key", (run,))

    def checked_times(self) -> Iterator[bytes]:
        """{url: when last fetched or confirmed} as JSON (what `export` reads), CHUNK_ROWS URLs
        to a line, each line made by SQLite: read_checked_times reads it back a line at a time."""
        yield b"{\n"
        after, sep = "", b""
        while True:
            row = self.r.execute("SELECT max(url), substr(json_group_object(url, checked), 2) FROM "
                                 "(SELECT url, checked FROM urls WHERE url > ? ORDER BY url LIMIT ?)",
                                 (after, CHUNK_ROWS)).fetchone()
            if row[0] is None:
                break
            after = row[0]
            yield sep + row[1][:-1].encode("utf-8")
            sep = b",\n"
        yield b"\n}\n"

    def manifest(self) -> Iterator[tuple[str, str, int]]:
        """(path, sha256, size) of every file, sorted by path (UTF-8 byte order is code point order)."""
        return self.r.execute("SELECT path, lower(hex(sha256)), size FROM files ORDER BY path")


def read_checked_times(path: Path) -> Iterator[tuple[str, float]]:
    """(url, time) of a checked.json, a line at a time as checked_times writes it (one written
    before the index is read whole). Nothing, or what came before the damage, when it is not
    a mapping of URLs to times: a lost record only means asking the site again."""
    try:
        fh = open(os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK), encoding="utf-8")
    except OSError:
        return
    with fh:
        try:
            if fh.readline() == "{\n":
                pieces = (json.loads("{" + line.rstrip().rstrip(",") + "}") for line in fh if line.strip() != "}")
            else:
                fh.seek(0)
                pieces = iter([json.load(fh)])
            for piece in pieces:
                for url, when in piece.items():
                    if isinstance(url, str) and isinstance(when, (int, float)) and not isinstance(when, bool):
                        yield url, float(when)
        except (OSError, ValueError, AttributeError, RecursionError):
            return


def _epoch(iso: str) -> float:
    """A record's fetched_at in seconds since 1970 (one without a zone read as UTC, as export's
    WARC dates read it: in the local zone, year 1 was no instant); 0.0 for no date."""
    from datetime import datetime, timezone

    try:
        when = datetime.fromisoformat(iso.replace("Z", "+00:00"))
    except ValueError:
        return 0.0
    return (when if when.tzinfo else when.replace(tzinfo=timezone.utc)).timestamp()  # never fails once zoned
