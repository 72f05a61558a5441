"""The archive: where a file lives in the bag, atomic durable writes, versions, the bag files.

Evidence is never overwritten. A file is renamed into data/ only after it is on disk, and
its provenance line is appended (and fsynced) only after the rename is durable, so the
manifest never names a file that might not be there. Writes are committed in small batches
off the event loop. A run that was killed leaves at most a torn provenance tail and files
that no line names yet; `open()` repairs the first and quarantines the second, never
deleting a byte that was archived.
"""
from __future__ import annotations

import errno
import fcntl
import hashlib
import itertools
import json
import os
import re
import shutil
import sqlite3
import stat
import threading
import time
import unicodedata
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from functools import lru_cache
from typing import Iterable, Iterator

from . import __version__
from .archindex import FILES as INDEX_FILES, ArchiveIndex, Digest, fold, read_checked_times
from .cid import CHUNK_SIZE, IPFS_PROFILE, raw_cid
from .merkle import ManifestLines
from .manifest import (BAG_INFO, BAGIT_TXT, CHANGES, FAILURES, PAYLOAD_MANIFEST, PROVENANCE, RECEIPTS,
                       TAG_MANIFEST, atomic_write, format_bag_info, format_manifest, fsync_dir,
                       iter_provenance, iter_provenance_core, own_copy, parse_manifest_text, read_bag_info,
                       repair_torn_tail, sync_filesystem)
from .publish import redact
from .models import JSON_LINE, Acta, ArchiveWriteError, Entry, Fetched, MirrorError, MirrorLocked, NotAMirror, UnsafePath, UsageError
from .state import MAX_TAG_BYTES, MirrorState, open_payload, read_inside, read_state, scan  # read_inside: also for importers here

CHECKED = "checked.json"  # in STATE_DIR: url -> when last fetched or found unchanged (for `export`)
STATE_DIR = ".acta-mirror"  # lock, temp files, quarantine; outside data/, not part of the bag
MAX_DIR_ENTRIES = 2900  # under GitHub's 3,000 entries per directory
MAX_COMPONENT_CHARS = 80  # a folder name a person can read in a listing...
MAX_COMPONENT_BYTES = 200  # ...and one every file system takes (255 bytes), with room for ".v2.jpg"
# A commit writes every index page its batch touched, and URLs fall on pages at random: at 64
# files a batch, the full index wrote 150 MB to SQLite's log; at 512, about 85 MB.
BATCH_FILES = 512  # commit after this many files...
BATCH_SECONDS = 1.0  # ...or this long, whichever comes first
FILTER_AFTER = 256  # lookups made before the filter is worth making
MEMO_ENTRIES = 4096  # answers remembered per kind of lookup (a few hundred kilobytes)
MAX_CHECKED_DIRS = 4096  # folders remembered as checked; files come center by center
BATCH_RECORDS = 4096  # ...or once this many checks and listed actas wait for the index
TAG_FILES = ("bagit.txt", BAG_INFO, PAYLOAD_MANIFEST, PROVENANCE, FAILURES, CHANGES,
             "signed-root.json", "signed-root.json.minisig")

_UNSAFE = re.compile(r"[^\w.,()+\- ]+", re.UNICODE)


def safe_component(name: str, fallback: str = "_") -> str:
    """One path component from server text: NFC, no separators or controls, no dot tricks."""
    name = unicodedata.normalize("NFC", name).strip()
    name = _UNSAFE.sub("_", name)
    name = re.sub(r"\s+", "_", name).strip("._ ")
    # File systems count bytes: 80 four-byte letters would be 320. A cut never splits a letter.
    name = name[:MAX_COMPONENT_CHARS].encode()[:MAX_COMPONENT_BYTES].decode("utf-8", "ignore")
    return name or fallback


@lru_cache(maxsize=4096)  # a state, municipality or parish names many centers
def _level(code: str, name: str) -> str:
    code = safe_component(code, "")
    name = safe_component(name, "")
    return "_".join(part for part in (code.zfill(2) if code.isdigit() else code, name) if part) or "_"


@lru_cache(maxsize=1024)  # index rows come center by center
def acta_dir(p) -> str:
    """data/<state>/<municipality>/<parish>/<center>, each level '<CNE code>_<name>'.

    The codes come from the 9-digit CNE center code (EEMMPPCCC) when there is one, so every
    discovery mode files a table in the same place (the index's own COD_PAR is a site number).
    """
    center = p.center if len(p.center) == 9 and p.center.isdigit() else ""
    codes = (center[0:2], center[2:4], center[4:6]) if center else (p.state_code, p.municipality_code, p.parish_code)
    return "/".join(("data", _level(codes[0], p.state), _level(codes[1], p.municipality),
                     _level(codes[2], p.parish), safe_component(p.center, "unknown-center")))


def extension(content_type: str, sha_head: bytes | None = None) -> str:
    return ".png" if "png" in content_type.lower() else ".jpg"


def _io_error(exc: OSError, what: str) -> ArchiveWriteError:
    if exc.errno == errno.ENOSPC:
        return ArchiveWriteError(f"disk full while {what}; everything archived before is intact, re-run when there is space")
    return ArchiveWriteError(f"cannot write while {what}: {exc.strerror or exc}")


def sqlite_refusal(exc: sqlite3.Error, what: str) -> ArchiveWriteError:
    """A write of `what` (the on-disk index, a count, a plan) that SQLite refused. Its "database
    or disk is full" (SQLITE_FULL) is the full disk every other write names: which write meets
    it first is chance."""
    if getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL:
        return _io_error(OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)), f"writing {what}")
    return ArchiveWriteError(f"cannot write {what}: {exc}")


DISK_REFUSED = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG, errno.EACCES, errno.EPERM}


def disk_error(exc: OSError, what: str) -> MirrorError:
    """The one translation of a failed write outside the archive (a CAR, a key, a report):
    exit 3 when the disk refused it (full, read-only, no permission), else a usage error."""
    if exc.errno in DISK_REFUSED:
        return _io_error(exc, what)
    return UsageError(f"cannot write while {what}: {exc.strerror or exc}" + (f" ({exc.filename})" if exc.filename else ""))


@dataclass
class _Batch:
    """What the archive took in since the last commit: files to make durable and record, and
    what the index learns with them (URLs checked, actas listed, last changes). Lookups see
    it until the index holds it."""

    files: list[tuple[str, str, Entry, dict | None]] = field(default_factory=list)  # (temp, path, entry, change)
    by_path: dict[str, Entry] = field(default_factory=dict)  # by folded path (archindex.fold)
    by_key: dict[str, list[Entry]] = field(default_factory=dict)
    by_url: dict[str, Entry] = field(default_factory=dict)
    dirs: dict[str, int] = field(default_factory=dict)
    checked: dict[str, float] = field(default_factory=dict)
    listed: dict[str, str] = field(default_factory=dict)
    status: dict[str, str] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.files) + len(self.checked) + len(self.listed) + len(self.status)


class _Filter:
    """A Bloom filter of the names the index holds (keys, URLs, folders, paths), of fixed size:
    a lookup it rules out needs no query, so a crawl into a new or small mirror (every acta a
    miss) costs the event loop no SQLite call per acta. It answers "maybe" wrongly for a few
    names in a thousand per 100,000 archived files, which then cost a query."""

    BITS = 1 << 24  # 2 MB

    def __init__(self, names: Iterable[str]):
        self.bits = bytearray(self.BITS >> 3)
        for name in names:
            self.add(name)

    def _spots(self, name: str) -> tuple[int, int, int]:
        h = hash(name) & 0xFFFFFFFFFFFFFFFF
        m = self.BITS - 1
        return h & m, (h >> 24) & m, ((h >> 40) ^ (h * 0x9E3779B1)) & m

    def add(self, name: str) -> None:
        for spot in self._spots(name):
            self.bits[spot >> 3] |= 1 << (spot & 7)

    def __contains__(self, name: str) -> bool:
        a, b, c = self._spots(name)
        bits = self.bits
        return bool(bits[a >> 3] >> (a & 7) & bits[b >> 3] >> (b & 7) & bits[c >> 3] >> (c & 7) & 1)


class Archive:
    """A BagIt bag being filled. Use as a context manager: it holds the mirror's lock.

    What a run looks up per file, URL and acta lives in the on-disk index (archindex), not
    in memory; in memory are only the files and checks taken in since the last commit, so
    memory stays flat as the archive grows.
    """

    def __init__(self, root: str | os.PathLike, *, wait_lock: bool = False, scan: bool = True):
        """scan=False: do not walk data/ for symlinks when the last run closed cleanly; every
        folder a file is renamed into is checked instead (the crawl). A caller that writes into
        data/ by itself (merge) keeps the walk."""
        self.root = Path(root)
        self.scan = scan
        self.state = self.root / STATE_DIR
        self.tmp = self.state / "tmp"
        self.wait_lock = wait_lock
        self.added = 0  # files archived this run
        self.index = ArchiveIndex(self.state)
        self.listing_run = 0  # the run whose listing this run's actas are in (an earlier one when reused)
        self._first_new = 0  # index seq of this run's first file
        self._open_batch = _Batch()
        self._flying: list[_Batch] = []  # taken, being committed
        self._seen = threading.Lock()  # a lookup sees a batch either in flight or in the index, never both
        self._committing = threading.Lock()  # one batch at a time
        self._digests: tuple[Digest, Digest] | None = None  # provenance.jsonl, changes.jsonl
        self._checks = 0  # URLs checked this run
        self._memo_url: dict[str, tuple | None] = {}
        self._memo_versions: dict[str, list[tuple[str, str, bool]]] = {}
        self._memo_listed: dict[str, str | None] = {}
        self._memo_status: dict[str, str | None] = {}
        self._memo_dirs: dict[str, int] = {}  # files in a folder, the index's and the pending ones
        self._known: _Filter | None = None  # made once lookups add up (a re-run that reuses its listing makes none)
        self._unfiltered = 0  # lookups before the filter was made
        self._made_dirs: set[str] = set()  # folders this run has made or checked (bounded: MAX_CHECKED_DIRS)
        self._last_commit = time.monotonic()
        self._lock_fd: int | None = None
        self.quarantined: list[str] = []
        self.cut_tails: list[tuple[str, int, str]] = []  # (record file, bytes cut, where they were kept)
        self.foreign_state = ""  # the name a copy's working state was moved aside to, if any
        self.stale_bag = False  # the last run stopped before its bag files caught up with its records
        self.changes: list[dict] = []  # vanished and reappeared, appended to changes.jsonl by finish()
        self.run_at = datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")

    # -- opening and recovery -------------------------------------------------
    def __enter__(self) -> "Archive":
        self.open()
        return self

    def __exit__(self, exc_type, *exc) -> None:
        self.close(clean=exc_type is None)

    def open(self) -> None:
        if self.root.exists() and not self.root.is_dir():
            raise UsageError(f"{self.root} exists and is not a directory")
        ours = any(os.path.lexists(self.root / name) for name in ("bagit.txt", PROVENANCE, STATE_DIR))
        if self.root.exists() and not ours and any(self.root.iterdir()):
            raise UsageError(f"{self.root} is not empty and is not an acta-mirror bag; choose another --out")
        if self.root.exists():
            self._check_layout()
        while True:
            try:
                self._own_state()
                self.tmp.mkdir(parents=True, exist_ok=True)
                (self.root / "data").mkdir(exist_ok=True)
            except OSError as exc:
                raise _io_error(exc, f"creating {self.root}") from None
            if self._lock():
                break
        try:
            for name in (PROVENANCE, CHANGES):  # the files a run appends to, once it holds the lock
                self._unshare(self.root / name)
            self._recover()
        except BaseException:
            self.close()
            raise

    def _recover(self) -> None:
        """Repair what a killed run left, open (or rebuild) the index, and look for orphans."""
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%f")
        for name, parse in ((PROVENANCE, None), (CHANGES, json.loads)):  # a change record: one JSON object a line
            kept = self.state / "quarantine" / stamp / f"{name}.tail"
            try:
                cut = repair_torn_tail(self.root / name, parse, keep=kept)
            except OSError as exc:
                raise _io_error(exc, f"setting aside the end of {name}") from None
            if cut:
                self.cut_tails.append((name, cut, kept.relative_to(self.root).as_posix()))
        try:
            self._digests = (Digest(self.root / PROVENANCE), Digest(self.root / CHANGES))
            trusted = self.index.open(*self._digests)
            if not trusted:
                self._rebuild()
            clean = trusted and self.index.meta().get("clean") == 1
            self.stale_bag = self._bag_lags()
            self.index.begin_run()
        except sqlite3.Error as exc:
            raise sqlite_refusal(exc, f"the index in {self.state}") from None
        except OSError as exc:
            raise _io_error(exc, "opening the archive's index") from None
        self.listing_run = self.index.run
        self._first_new = self.index.last_seq() + 1
        for leftover in self.tmp.iterdir():
            if leftover.is_file():
                leftover.unlink()
        if self.scan or not clean:
            self._scan_data(orphans=not clean)

    def _bag_lags(self) -> bool:
        """Does the tag manifest give provenance.jsonl or changes.jsonl another sha256 than
        theirs? It is written last, so it does when a run was stopped (killed, the disk full)
        after recording files and before its bag files were all rewritten."""
        try:
            tags = parse_manifest_text(read_inside(self.root, TAG_MANIFEST, MAX_TAG_BYTES).decode("utf-8"))
        except FileNotFoundError:
            tags = {}
        except (OSError, UnicodeDecodeError, NotAMirror):  # UnsafePath, a damaged one: write it anew
            return True
        return any(d.node and tags.get(d.path.name) != d.hasher.hexdigest() for d in self._digests)

    def _rebuild(self) -> None:
        """Fill a fresh index from the records; write the change records a killed run lost."""
        # the check times `export` reads also keep what the site confirmed across a rebuild
        lost = self.index.rebuild(iter_provenance(self.root / PROVENANCE), self._read_changes(),
                                  read_checked_times(self.state / CHECKED))
        # A run killed between recording a batch's files and its change records: write
        # them now, the same way every time, so merged copies do not tell them twice.
        recovered = [self._change(e.key, "changed" if e.supersedes else "added", at=e.fetched_at,
                                  sha256=e.sha256, url=e.url, recovered=True,
                                  **({"old_sha256": e.supersedes} if e.supersedes else {}))
                     for e in lost]
        self._append_changes(recovered)
        self.index.write_changes(recovered, digests=self._digests)

    def _read_changes(self) -> Iterator[dict]:
        """Each change record, streamed (the record grows with the archive)."""
        try:
            fh = open(os.open(self.root / CHANGES, os.O_RDONLY | os.O_NOFOLLOW), "rb")
        except FileNotFoundError:
            return
        with fh:
            for line in fh:
                try:
                    change = json.loads(line)
                    if isinstance(change["key"], str) and isinstance(change["change"], str):
                        yield change
                except (ValueError, KeyError, TypeError, RecursionError):
                    continue  # damage is reported by verify (changes.jsonl is a tag file)

    def _check_layout(self) -> None:
        """Refuse a mirror whose bag files or data/ are a symlink, a FIFO or a device: writing
        into it (appending provenance, renaming into data/) would write elsewhere."""
        for name in (*TAG_FILES, TAG_MANIFEST, RECEIPTS, "data"):
            try:
                mode = os.lstat(self.root / name).st_mode
            except FileNotFoundError:
                continue
            if not (stat.S_ISDIR(mode) if name == "data" else stat.S_ISREG(mode)):
                raise UsageError(f"{self.root / name} is a symlink or not a plain "
                                 f"{'directory' if name == 'data' else 'file'}; not writing into this mirror")

    @staticmethod
    def _unshare(path: Path) -> None:
        """A file with another name too gets a copy of its own before anything is appended."""
        try:
            own_copy(path)
        except OSError as exc:
            raise _io_error(exc, f"making {path.name} a file of its own") from None

    def _scan_data(self, orphans: bool) -> None:
        """One walk of data/: refuse a symlink or special file anywhere in it (a rename into it
        would write elsewhere), and with `orphans`, quarantine the files no provenance line
        names (a run died between rename and record). A run that closed cleanly leaves none,
        so its paths are then not loaded."""
        found = scan(self.root)  # the one walk of data/ that follows no link (state.scan)
        if found.problems:
            first = found.problems[0]
            raise UsageError(f"{self.root / first.path}: {first.detail}; a mirror holds only regular files "
                             "and folders it can read; not writing into this mirror")
        if not orphans:
            return
        known = self.index.paths()
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S")
        for rel, _size, _sha in found.files:
            if rel not in known:
                target = self.state / "quarantine" / stamp / rel
                try:
                    target.parent.mkdir(parents=True, exist_ok=True)
                    os.replace(self.root / rel, target)
                except OSError as exc:
                    raise _io_error(exc, f"setting aside {rel}, a file no record names") from None
                self.quarantined.append(rel)

    def _own_state(self) -> None:
        """The working state (.acta-mirror: lock, temp files, quarantine, index) is used only
        when it is plain directories and files of this user's. Anything else, e.g. a copy made
        elsewhere with a symlink where tmp/ or the lock belongs, is moved aside whole (a rename
        never follows a link) and a fresh one made: a copy's state is never followed or deleted.
        (An index that is a plain file but not this mirror's own is caught by ArchiveIndex.open.)"""
        try:
            st = os.lstat(self.state)
        except FileNotFoundError:
            return
        plain = stat.S_ISDIR(st.st_mode) and st.st_uid == os.geteuid()
        for name, want in (("tmp", stat.S_ISDIR), ("quarantine", stat.S_ISDIR), ("lock", stat.S_ISREG),
                           (CHECKED, stat.S_ISREG), *((name, stat.S_ISREG) for name in INDEX_FILES)):
            if not plain:
                break
            try:
                inner = os.lstat(self.state / name)
                plain = want(inner.st_mode) and inner.st_uid == os.geteuid()
            except FileNotFoundError:
                pass
        if not plain:
            aside = self.root / f"{STATE_DIR}.foreign-{datetime.now(timezone.utc).strftime('%Y%m%dT%H%M%S%f')}"
            os.rename(self.state, aside)
            self.foreign_state = aside.name

    def _lock(self) -> bool:
        """Take the mirror's lock; False when the lock file was removed while this run waited for
        it (the run that held it removed the folder it had made and archived nothing into): the
        caller makes the folder again."""
        try:
            fd = os.open(self.state / "lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
        except OSError as exc:
            raise _io_error(exc, f"taking the lock {self.state / 'lock'}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if self.wait_lock else fcntl.LOCK_NB))
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
        except BlockingIOError:
            os.close(fd)
            raise MirrorLocked(f"{self.root} is being written by another run (lock {self.state / 'lock'})") from None
        except OSError as exc:
            os.close(fd)
            raise _io_error(exc, f"taking the lock {self.state / 'lock'}") from None
        if os.fstat(fd).st_nlink == 0:
            os.close(fd)
            return False
        self._lock_fd = fd
        return True

    def close(self, *, clean: bool = False) -> None:
        """Release the lock. `clean`: the run ended without an error and recorded every file it
        renamed into data/, so the next run need not look for orphans."""
        try:
            self.index.close(clean=clean and not self._open_batch.files and not self._flying)
        except sqlite3.Error:
            pass  # an unclean index only costs the next run a walk of data/
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    # -- lookups: the pending batches first, then the index ------------------------
    # An answer is remembered (MEMO_ENTRIES per kind) until this run changes it: the event loop
    # asks about one acta several times (listing, freshness, validators, versions), and only
    # this run adds to the index, so a remembered answer stays exact.
    def _batches(self) -> list[_Batch]:
        return [self._open_batch, *reversed(self._flying)]  # newest first

    def _maybe(self, name: str) -> bool:
        """Might the index or a pending batch hold this name ('k' an archived key, 's' a key with a
        change record, 'l' a key listed in this run, 'u' URL, 'd' folder, 'p' folded path)?"""
        if self._known is None:
            self._unfiltered += 1
            if self._unfiltered <= FILTER_AFTER:  # a run that looks up little (the index alone) asks SQLite
                return True
            with self._seen:  # no batch moves from pending to the index meanwhile
                pending = [(f"k{e.key}", f"u{e.url}", f"p{fold(e.path)}", f"d{e.path.rsplit('/', 1)[0]}")
                           for b in self._batches() for _t, _r, e, _c in b.files]
                keys = [f"{tag}{key}" for b in self._batches() for tag, keys in (("l", b.listed), ("s", b.status))
                        for key in keys]
                self._known = _Filter(itertools.chain(self.index.names(self.listing_run), keys, *pending))
        return name in self._known

    def _knows(self, name: str) -> None:
        if self._known is not None:
            self._known.add(name)

    def _remember(self, memo: dict, key: str, value):
        if len(memo) >= MEMO_ENTRIES:
            memo.clear()
        memo[key] = value
        return value

    def _url(self, url: str) -> tuple[str, str, str, float] | None:
        """(etag, last_modified, path, when last checked) of a URL archived before, or None."""
        if url in self._memo_url:
            return self._memo_url[url]
        if not self._maybe("u" + url):
            return None
        with self._seen:
            batches = self._batches()
            row = self.index.url(url)
        checked = max([b.checked[url] for b in batches if url in b.checked] + [row[3] if row else 0.0])
        found = (row[0], row[1], row[2], checked) if row else None
        for b in batches:
            if url in b.by_url:
                e = b.by_url[url]
                found = (e.etag, e.last_modified, e.path, checked)
                break
        return self._remember(self._memo_url, url, found)

    def _url_of(self, url: str, key: str | None) -> tuple[str, str, str, float] | None:
        """_url, but with `key` only when the URL's last file is one of key's versions: a URL
        the site lists under two tables was archived for the other, whose validators and check
        time say nothing of this one (a 304 to them would count it unchanged, never archived)."""
        prev = self._url(redact(url))
        if prev is None or key is None or any(path == prev[2] for path, _sha, _new in self._versions(key)):
            return prev
        return None

    def conditional_headers(self, url: str, key: str | None = None) -> tuple[str, str]:
        """The validators to send for url (for key's copy of it, when given)."""
        prev = self._url_of(url, key)
        return (prev[0], prev[1]) if prev else ("", "")

    def path_of(self, url: str) -> str | None:
        prev = self._url(redact(url))
        return prev[2] if prev else None

    def fresh(self, url: str, max_age: float, key: str | None = None) -> bool:
        """Was url fetched or confirmed unchanged (for key, when given) less than max_age seconds
        ago? A check time later than now is not (the clock was set back since, a board without
        a real-time clock that starts in 1970): it would spare the URL until the clock caught up."""
        if max_age <= 0:
            return False
        prev = self._url_of(url, key)
        return prev is not None and 0 <= time.time() - prev[3] < max_age

    def versions(self, key: str) -> list[str]:
        """The sha256 of each version of an acta (or index file), oldest first."""
        return [sha for _path, sha, _new in self._versions(key)]

    def is_known(self, key: str, url: str, sha256: str) -> bool:
        """Are these bytes nothing new from url: one of key's versions, and not a return to an
        older one after url gave another (A, B, then A again is a change, recorded)?"""
        versions = self._versions(key)
        if not any(sha == sha256 for _path, sha, _new in versions):
            return False
        last = self.path_of(url)
        return last is None or next((sha for path, sha, _new in versions if path == last), sha256) == sha256

    def new_versions(self, key: str) -> int:
        """Versions of key archived in this run."""
        return sum(new for *_, new in self._versions(key))

    def _versions(self, key: str) -> list[tuple[str, str, bool]]:
        if key in self._memo_versions:
            return self._memo_versions[key]
        if not self._maybe("k" + key):
            return []
        with self._seen:
            pending = [e for b in reversed(self._batches()) for e in b.by_key.get(key, ())]
            rows = self.index.versions(key)
        return self._remember(self._memo_versions, key, [(path, sha, seq >= self._first_new) for path, sha, seq in rows]
                              + [(e.path, e.sha256, True) for e in pending])

    def _place(self, directory: str, path: str) -> tuple[int, bool]:
        """(files in directory, whether path is taken), in one look. Index rows come center by
        center: a folder's count is mostly remembered from its previous file. A path is taken
        when one that differs only in case is (Index.csv, INDEX.CSV): on a case-blind disk,
        where a copy may go, they are one file."""
        folded = fold(path)
        maybe_taken = self._maybe("p" + folded)
        known = self._memo_dirs.get(directory)
        if known is not None and not maybe_taken:
            return known, False
        if known is None and not maybe_taken and not self._maybe("d" + directory):
            return 0, False
        with self._seen:
            batches = self._batches()
            n, taken = self.index.place(directory, folded)
        return (n + sum(b.dirs.get(directory, 0) for b in batches),
                bool(taken) or any(folded in b.by_path for b in batches))

    def status(self, key: str) -> str | None:
        """An acta's last change (added, changed, vanished, reappeared), None if it has none."""
        if key not in self._memo_status:
            self.listed_url(key)
        return self._memo_status[key]

    # -- the listing: which actas the site lists in this run ----------------------------
    def listed_url(self, key: str) -> str | None:
        """The first URL key was listed with in this run (redacted), None if it was not listed yet.
        (Its last change is looked up with it: the crawl asks for both.)"""
        if key in self._memo_listed and key in self._memo_status:
            return self._memo_listed[key]
        if not self._maybe("l" + key) and not self._maybe("s" + key):
            self._remember(self._memo_status, key, None)
            return self._remember(self._memo_listed, key, None)
        with self._seen:
            batches = self._batches()
            url, change = self.index.listing_and_status(key, self.listing_run)
        url = next((b.listed[key] for b in batches if key in b.listed), url)
        change = next((b.status[key] for b in batches if key in b.status), change)
        self._remember(self._memo_status, key, change)
        return self._remember(self._memo_listed, key, url)

    def list_acta(self, key: str, url: str) -> None:
        """Note that this run lists key, first with url (kept redacted, as every URL the mirror keeps)."""
        self._open_batch.listed[key] = redact(url)
        self._memo_listed.pop(key, None)
        self._knows("l" + key)

    def reuse_listing(self, identity: str, max_age: float) -> int | None:
        """When an earlier run read the very same listing (identity: the index files' sha256,
        site, shard) whole, and every URL in it was fetched or confirmed less than max_age
        seconds ago, this run has nothing to ask: take that listing as this run's and return
        how many actas it lists. None otherwise."""
        previous, run = self.index.previous_listing
        if max_age <= 0 or not identity or previous != identity or not isinstance(run, int):
            return None
        size = self.index.listing_size(run)
        now = time.time()
        if self.index.listing_fresh(run, now - max_age, now) != size:
            return None
        self.listing_run = run
        return size

    def record_listing(self, identity: str) -> None:
        """Remember this run's listing as whole (identity) or not ('') for the next run."""
        self.commit_all()
        try:
            self.index.set_meta(listing=identity, listing_run=self.listing_run)
        except sqlite3.Error as exc:
            raise sqlite_refusal(exc, f"the index in {self.state}") from None

    # -- adding files -----------------------------------------------------------
    def add(self, acta: Acta, fetched: Fetched, *, kind: str = "acta", name: str | None = None) -> Entry | None:
        """Queue a fetched file as a new version; None (and the temp file removed) if not new."""
        self._open_batch.checked[redact(fetched.url)] = time.time()
        self._memo_url.pop(redact(fetched.url), None)
        self._checks += 1
        if fetched.status == 304:
            return None
        if self.is_known(acta.key, fetched.url, fetched.sha256):
            if kind != "index" or not self._put_back(acta.key, fetched):
                os.unlink(fetched.tmp_path)
            return None
        versions = self.versions(acta.key)
        version = len(versions) + 1
        if kind == "index":
            directory, stem, ext = "data/index", Path(name or acta.key).stem, Path(name or acta.key).suffix
        else:
            directory, stem, ext = acta_dir(acta.place), acta.key, extension(fetched.content_type)
        path = f"{directory}/{stem}{'' if version == 1 else f'.v{version}'}{ext}"
        n, taken = self._place(directory, path)
        if n >= MAX_DIR_ENTRIES:  # full: an overflow sibling
            directory = self._roomy(directory)
            path = f"{directory}/{stem}{'' if version == 1 else f'.v{version}'}{ext}"
            n, taken = self._place(directory, path)
        while taken:
            version += 1
            path = f"{directory}/{stem}.v{version}{ext}"
            taken = self._place(directory, path)[1]
        p = acta.place
        entry = Entry(
            key=acta.key, kind=kind, version=version, path=path, sha256=fetched.sha256,
            size=fetched.size, cid=raw_cid(fetched.sha256) if fetched.size <= CHUNK_SIZE else "",
            url=redact(fetched.url), final_url=redact(fetched.final_url), host=fetched.host,
            fetched_at=fetched.fetched_at, status=fetched.status, etag=redact(fetched.etag),  # a site may echo a credential
            last_modified=redact(fetched.last_modified), content_type=fetched.content_type,
            site=acta.site, page=redact(acta.page), state_code=p.state_code, state=p.state,
            municipality_code=p.municipality_code, municipality=p.municipality,
            parish_code=p.parish_code, parish=p.parish, center=p.center, table=p.table, center_name=p.center_name,
            supersedes=versions[-1] if versions else None,
            redirects=tuple(map(redact, fetched.redirects)), trailing_bytes=fetched.trailing_bytes,
        )
        self.added += 1
        change = None
        if kind == "acta":  # recorded with its file, in the same commit
            what = {"change": "changed", "old_sha256": entry.supersedes} if entry.supersedes else {"change": "added"}
            change = self._change(acta.key, **what, sha256=entry.sha256, url=entry.url)
        b = self._open_batch
        b.files.append((fetched.tmp_path, path, entry, change))
        b.by_path[fold(path)] = entry
        b.by_key.setdefault(entry.key, []).append(entry)
        b.by_url[entry.url] = entry
        self._memo_versions.pop(entry.key, None)
        self._memo_url.pop(entry.url, None)
        for name in ("k" + entry.key, "u" + entry.url, "d" + directory, "p" + fold(path)):
            self._knows(name)
        b.dirs[directory] = b.dirs.get(directory, 0) + 1
        self._remember(self._memo_dirs, directory, n + 1)
        return entry

    def _put_back(self, key: str, fetched: Fetched) -> bool:
        """An index file the bag records but does not hold (a scheduled run's working bag holds
        only the run's new files) is put back at its recorded path from the bytes just fetched,
        which are the recorded ones (the same sha256): so the run's coverage counts against the
        index. Nothing new is recorded. True if it was put back."""
        last = self.path_of(fetched.url)
        paths = [path for path, sha, _new in self._versions(key) if sha == fetched.sha256]
        path = last if last in paths else paths[-1] if paths else None
        if path is None or os.path.lexists(self.root / path):
            return False
        self._real_folder(path.rpartition("/")[0])
        os.rename(fetched.tmp_path, self.root / path)
        return True

    def _change(self, key: str, change: str, at: str = "", **details) -> dict:
        self._open_batch.status[key] = change
        self._memo_status.pop(key, None)
        self._knows("s" + key)
        return {"at": at or self.run_at, "key": key, "change": change, **details}

    def note(self, key: str, change: str, **details) -> None:
        self.changes.append(self._change(key, change, **details))

    def seen_upstream(self, key: str, url: str) -> None:
        """The site lists this acta in this run: one that had vanished has reappeared."""
        if self.status(key) == "vanished":
            self.note(key, "reappeared", url=redact(url))

    def mark_vanished(self, in_scope) -> int:
        """Actas archived before that this run's listing does not name. They stay archived, marked."""
        self.commit_all()
        n = 0
        for key, change in self.index.unlisted(self.listing_run):
            if key.startswith("index/") or not in_scope(key) or change == "vanished":
                continue
            self.note(key, "vanished")
            n += 1
        return n

    def reappeared(self) -> None:
        """For a reused listing: its actas whose last change is 'vanished' have reappeared."""
        for key, url in self.index.listed_vanished(self.listing_run):
            self.note(key, "reappeared", url=redact(url))

    def _roomy(self, directory: str) -> str:
        """The directory, or an overflow sibling once it holds MAX_DIR_ENTRIES files."""
        n = 1
        candidate = directory
        while self._place(candidate, "")[0] >= MAX_DIR_ENTRIES:
            n += 1
            candidate = f"{directory}/more-{n}"
        return candidate

    @property
    def backlog(self) -> int:
        return len(self._open_batch.files)

    def due(self) -> bool:
        b = self._open_batch
        return len(b.files) >= BATCH_FILES or len(b) >= BATCH_RECORDS or (
            len(b) > 0 and time.monotonic() - self._last_commit >= BATCH_SECONDS)

    def take_batch(self) -> _Batch:
        batch, self._open_batch = self._open_batch, _Batch()
        self._flying.append(batch)
        self._last_commit = time.monotonic()
        return batch

    def commit(self, batch: _Batch) -> None:
        """Make a batch durable, rename it into data/, make the renames durable, then record
        provenance, then the batch's change records, then the index: one syncfs for the files
        and one for the renames (fsync per file and directory where there is no syncfs)."""
        try:
            with self._committing:  # an aborted run's last batch may still be on its thread
                if batch.files:
                    self._commit_files(batch.files)
                self.index.write([e for _t, _r, e, _c in batch.files], [c for *_, c in batch.files if c],
                                 batch.checked, batch.listed, self._digests)
                with self._seen:
                    self.index.commit()
                    self._flying.remove(batch)
        except sqlite3.Error as exc:
            raise sqlite_refusal(exc, f"the index in {self.state}") from None
        finally:
            if batch in self._flying:  # the run stops; the next one rebuilds the index
                with self._seen:
                    self._flying.remove(batch)

    def _commit_files(self, files: list[tuple[str, str, Entry, dict | None]]) -> None:
        try:
            if not sync_filesystem(self.tmp):
                for tmp, *_ in files:
                    fd = os.open(tmp, os.O_RDONLY)
                    try:
                        os.fsync(fd)
                    finally:
                        os.close(fd)
            dirs = set()
            root = os.fspath(self.root)
            for tmp, rel, *_ in files:
                folder = rel.rpartition("/")[0]
                self._real_folder(folder)
                final = f"{root}/{rel}"
                if os.path.lexists(final):  # never overwrite evidence
                    raise ArchiveWriteError(f"refusing to overwrite {rel}")
                os.rename(tmp, final)
                dirs.add(folder)
            if not sync_filesystem(self.root):
                for d in dirs:
                    fsync_dir(self.root / d)
            text = b"".join([JSON_LINE(entry) + b"\n" for _t, _r, entry, _c in files])
            append_durably(self.root / PROVENANCE, text)
            self._digests[0].appended(text)
            self._append_changes([change for *_, change in files if change])
        except OSError as exc:
            raise _io_error(exc, "archiving a batch of files") from None

    def _real_folder(self, rel: str) -> None:
        """Make (or find) a folder under data/, each part a real folder, never a symlink: a
        rename into it must not land elsewhere."""
        if rel in self._made_dirs:
            return
        parent = rel.rpartition("/")[0]
        if parent:
            self._real_folder(parent)
        path = os.path.join(self.root, rel)
        try:
            os.mkdir(path)
        except FileExistsError:
            if not stat.S_ISDIR(os.lstat(path).st_mode):
                raise UsageError(f"{path} is a symlink or not a plain directory; "
                                 "not writing into this mirror") from None
        if len(self._made_dirs) >= MAX_CHECKED_DIRS:
            self._made_dirs.clear()
        self._made_dirs.add(rel)

    def commit_all(self) -> None:
        if len(self._open_batch):
            self.commit(self.take_batch())

    def _append_changes(self, changes: list[dict]) -> None:
        if not changes:
            return
        text = b"".join([JSON_LINE(c) + b"\n" for c in changes])
        append_durably(self.root / CHANGES, text)
        self._digests[1].appended(text)

    # -- the bag files ----------------------------------------------------------
    def finish(self, *, failures: Iterable[dict] = (), info: dict[str, str] | None = None,
               rewrite_bag: bool = True) -> None:
        """Write failures, and when the payload changed, the manifest, bag-info and tag manifest.

        A run that archived nothing new leaves the bag's files byte for byte as they were
        (failures aside), so a scheduled job with nothing new commits nothing; unless the last
        run was killed (or the disk stopped it) after recording files and before its bag files
        were all rewritten: then the manifest and bag-info lag provenance, and only a rewrite
        makes the bag whole again.
        """
        self.commit_all()
        try:
            atomic_write(self.root / FAILURES, b"".join([JSON_LINE(f) + b"\n" for f in failures]))
            self._append_changes(self.changes)
            self.index.write_changes(self.changes, digests=self._digests)
            self.changes = []
            hashed = {d.path.name: d.hasher.hexdigest() for d in self._digests if d.node}
            if rewrite_bag or self.stale_bag:
                write_bag_files(self.root, info or {}, items=self.index.manifest(), hashed=hashed)
            else:
                write_tag_manifest(self.root, hashed)
            if self._checks:  # what `export` reads for its revisit records
                atomic_write(self.state / CHECKED, self.index.checked_times())
        except sqlite3.Error as exc:
            raise sqlite_refusal(exc, f"the index in {self.state}") from None
        except OSError as exc:
            raise _io_error(exc, "writing the bag's manifests") from None
        shutil.rmtree(self.tmp, ignore_errors=True)
        self.tmp.mkdir(parents=True, exist_ok=True)


def append_durably(path: Path, text: str | bytes) -> None:
    """Append to a bag file and fsync; never through a symlink. An append the disk refuses
    part way (full) is cut back, so no torn line is left for anyone to read."""
    data = text.encode("utf-8") if isinstance(text, str) else text
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o644)
    try:
        size = os.fstat(fd).st_size
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        except OSError:
            try:
                os.ftruncate(fd, size)
            except OSError:
                pass  # the next open cuts a torn tail (repair_torn_tail)
            raise
    finally:
        os.close(fd)


def write_bag_files(root: Path, extra_info: dict[str, str], items: Iterable[tuple[str, str, int]] | None = None,
                    hashed: dict[str, str] | None = None) -> None:
    """(Re)write bagit.txt, manifest-sha256.txt, bag-info.txt and tagmanifest-sha256.txt from
    (path, sha256, size) of every file sorted by path (the archive's index gives them), or
    from provenance.jsonl read as a stream, sorted here. hashed: the sha256 of tag files the
    caller has hashed already (write_tag_manifest)."""
    if items is None:
        items = sorted(iter_provenance_core(root / PROVENANCE))
    totals = [0, 0]

    def counted():
        for path, sha, size in items:
            totals[0] += size
            totals[1] += 1
            yield path, sha

    manifest = ManifestLines(counted())
    atomic_write(root / "bagit.txt", BAGIT_TXT.encode())
    atomic_write(root / PAYLOAD_MANIFEST, manifest)
    root_hash = manifest.root
    del manifest
    old = read_bag_info(root / BAG_INFO)
    info = {
        "Bag-Software-Agent": f"acta-mirror {__version__}",
        "Bagging-Date": datetime.now(timezone.utc).strftime("%Y-%m-%d"),
        "Payload-Oxum": f"{totals[0]}.{totals[1]}",
        "IPFS-Profile": IPFS_PROFILE,
        "Acta-Mirror-Merkle-Root": root_hash,
        "Acta-Mirror-Merkle-Size": str(totals[1]),
    }
    for label, value in old.items():
        info.setdefault(label, value)
    info.update(extra_info)
    # what the manifest just written says, whatever an older bag-info or the caller carried
    info.update({"Payload-Oxum": f"{totals[0]}.{totals[1]}", "Acta-Mirror-Merkle-Root": root_hash,
                 "Acta-Mirror-Merkle-Size": str(totals[1])})
    atomic_write(root / BAG_INFO, format_bag_info(info))
    write_tag_manifest(root, hashed)


def write_tag_manifest(root: Path, known: dict[str, str] | None = None) -> None:
    """known: the sha256 of tag files whose every byte the caller has hashed already."""
    items = []
    for name in TAG_FILES:
        if known and name in known:
            items.append((name, known[name]))
            continue
        try:
            # never through a symlink (UnsafePath); provenance.jsonl grows with the archive: stream it
            with open_payload(root, name) as fh:
                items.append((name, hashlib.file_digest(fh, "sha256").hexdigest()))
        except FileNotFoundError:
            continue
    atomic_write(root / TAG_MANIFEST, format_manifest(items))


class Corrupt(NotAMirror):
    """A file whose bytes no longer hash to what the manifest records."""


def read_checked(root: str | os.PathLike, rel: str, sha256_hex: str, size: int | None = None) -> bytes:
    """The bytes of a file inside root, only when they hash to sha256_hex (and have size):
    what publishers and merge send on. UnsafePath or Corrupt otherwise."""
    data = read_inside(root, rel, size)
    got = hashlib.sha256(data).hexdigest()
    if (size is not None and len(data) != size) or got != sha256_hex:
        raise Corrupt(f"{rel}: its bytes do not match the manifest (sha256 {got}, the manifest says {sha256_hex})")
    return data


# RFC 3161 token of signed-root.json and its certificate chain (mirror/timestamp.py): outside
# the tag manifest, each checks itself against signed-root.json (`openssl ts -verify`).
TIMESTAMP_FILES = ("signed-root.json.tsr", "signed-root.json.tsr.chain.pem")
PUBLISHED_TAG_FILES = TAG_FILES + (TAG_MANIFEST,) + TIMESTAMP_FILES  # the only top-level files published
SITE_DIR = "site"  # the browsable index `acta-mirror site` writes
MAX_SITE_FILE_BYTES = 64 << 20  # its largest file, a state's list of centres, is well under 1 MB


def published_files(root: str | os.PathLike, state: MirrorState | None = None) -> list[tuple[str, int, str]]:
    """What a published copy holds, as (path, size, sha256): the payload, as the validated
    reader gives it and where provenance and the manifest agree; the tag files this tool
    writes, each checked against the tag manifest (and the tag manifest itself); the site/
    folder. Payload bytes are not read here: a publisher checks each file it sends
    (read_checked). Never the receipts, the working state or anything else at the top; never
    a symlink, FIFO or device. NotAMirror (UnsafePath, Corrupt) naming what is wrong.
    state: the mirror as verify.check read it, when that check found no problem (a publisher
    verifies first): its records and manifests are then not read a second time."""
    root = Path(root)
    state = (read_state(root) if state is None else state).require_clean()
    files = [(e.path, e.size, e.sha256) for e in state.entries]
    if {p: s for p, _n, s in files} != state.manifest:
        raise Corrupt(f"{root}: provenance and the manifest list different files")
    tags = state.tags or {}
    for name in PUBLISHED_TAG_FILES:
        if name in TIMESTAMP_FILES and not os.path.lexists(root / name):
            continue
        if name not in (TAG_MANIFEST, *TIMESTAMP_FILES) and name not in tags:
            continue  # a file the tag manifest does not vouch for is not published
        size, digest = _measure(root, name)
        if name in tags and digest != tags[name]:
            raise Corrupt(f"{name}: its bytes do not match the tag manifest")
        files.append((name, size, digest))
    try:
        mode = os.lstat(root / SITE_DIR).st_mode
    except FileNotFoundError:
        return files
    if not stat.S_ISDIR(mode):
        raise UnsafePath(SITE_DIR, "a symbolic link or not a folder; not publishing it")
    stack = [SITE_DIR]
    while stack:
        rel_dir = stack.pop()
        with os.scandir(root / rel_dir) as it:
            for entry in sorted(it, key=lambda e: e.name):
                rel = f"{rel_dir}/{entry.name}"
                if entry.is_dir(follow_symlinks=False):
                    stack.append(rel)
                    continue
                files.append((rel, *_measure(root, rel, MAX_SITE_FILE_BYTES)))  # refuses links, special files, giants
    return files


def _measure(root: Path, rel: str, limit: int | None = None) -> tuple[int, str]:
    """Size and sha256 of a file inside root, streamed through the validated opener (UnsafePath,
    unread, when it is larger than limit)."""
    with open_payload(root, rel, limit) as fh:
        return os.fstat(fh.fileno()).st_size, hashlib.file_digest(fh, "sha256").hexdigest()
