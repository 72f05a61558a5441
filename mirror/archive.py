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
import json
import os
import re
import shutil
import stat
import time
import unicodedata
from collections import defaultdict
from datetime import datetime, timezone
from pathlib import Path
from functools import lru_cache
from typing import Iterable

from . import __version__
from .cid import CHUNK_SIZE, IPFS_PROFILE, raw_cid
from .merkle import ManifestLines
from .manifest import (BAG_INFO, BAGIT_TXT, CHANGES, FAILURES, PAYLOAD_MANIFEST, PROVENANCE, RECEIPTS,
                       TAG_MANIFEST, atomic_write, format_bag_info, format_manifest, fsync_dir,
                       iter_provenance, iter_provenance_core, read_bag_info, repair_torn_tail,
                       sync_filesystem)
from .publish import redact
from .models import Acta, ArchiveWriteError, Entry, Fetched, MirrorError, MirrorLocked, NotAMirror, UnsafePath, UsageError
from .state import open_payload, read_state

CHECKED = "checked.json"  # in STATE_DIR: url -> when last fetched or found unchanged
STATE_DIR = ".acta-mirror"  # lock, temp files, quarantine; outside data/, not part of the bag
MAX_DIR_ENTRIES = 2900  # under GitHub's 3,000 entries per directory
BATCH_FILES = 64  # commit after this many files...
BATCH_SECONDS = 1.0  # ...or this long, whichever comes first
TAG_FILES = ("bagit.txt", BAG_INFO, PAYLOAD_MANIFEST, PROVENANCE, FAILURES, CHANGES,
             "signed-root.json", "signed-root.json.minisig")

_UNSAFE = re.compile(r"[^\w.,()+\- ]+", re.UNICODE)


def safe_component(name: str, fallback: str = "_") -> str:
    """One path component from server text: NFC, no separators or controls, no dot tricks."""
    name = unicodedata.normalize("NFC", name).strip()
    name = _UNSAFE.sub("_", name)
    name = re.sub(r"\s+", "_", name).strip("._ ")
    return name[:80] or fallback


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


DISK_REFUSED = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG, errno.EACCES, errno.EPERM}


def disk_error(exc: OSError, what: str) -> MirrorError:
    """The one translation of a failed write outside the archive (a CAR, a key, a report):
    exit 3 when the disk refused it (full, read-only, no permission), else a usage error."""
    if exc.errno in DISK_REFUSED:
        return _io_error(exc, what)
    return UsageError(f"cannot write while {what}: {exc.strerror or exc}" + (f" ({exc.filename})" if exc.filename else ""))


class Archive:
    """A BagIt bag being filled. Use as a context manager: it holds the mirror's lock.

    In memory it keeps only what a run needs per file (sha256 per key, validators per URL,
    paths), never whole provenance records, so memory stays small as the archive grows.
    """

    def __init__(self, root: str | os.PathLike, *, wait_lock: bool = False):
        self.root = Path(root)
        self.state = self.root / STATE_DIR
        self.tmp = self.state / "tmp"
        self.wait_lock = wait_lock
        self.count = 0  # files archived, this run and before
        self.added = 0  # files archived this run
        self.versions: dict[str, list[str]] = defaultdict(list)  # key -> sha256 of each version
        self.validators: dict[str, tuple[str, str, str]] = {}  # url -> (etag, last_modified, path)
        self.checked: dict[str, float] = {}  # url -> when it was last fetched or found unchanged
        self.paths: set[str] = set()
        self.dir_counts: dict[str, int] = defaultdict(int)
        self._pending: list[tuple[str, str, Entry, dict | None]] = []  # (temp, path, entry, change)
        self._made_dirs: set[Path] = set()  # directories this run has made or found
        self._last_commit = time.monotonic()
        self._lock_fd: int | None = None
        self.quarantined: list[str] = []
        self.foreign_state = ""  # the name a copy's working state was moved aside to, if any
        self.status: dict[str, str] = {}  # key -> its last change (added, changed, vanished, reappeared)
        self.changes: list[dict] = []  # vanished and reappeared, appended to changes.jsonl by finish()
        self.run_at = datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")

    # -- opening and recovery -------------------------------------------------
    def __enter__(self) -> "Archive":
        self.open()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def open(self) -> None:
        if self.root.exists() and not self.root.is_dir():
            raise UsageError(f"{self.root} exists and is not a directory")
        ours = any(os.path.lexists(self.root / name) for name in ("bagit.txt", PROVENANCE, STATE_DIR))
        if self.root.exists() and not ours and any(self.root.iterdir()):
            raise UsageError(f"{self.root} is not empty and is not an acta-mirror bag; choose another --out")
        if self.root.exists():
            self._check_layout()
        try:
            self._own_state()
            self.tmp.mkdir(parents=True, exist_ok=True)
            (self.root / "data").mkdir(exist_ok=True)
        except OSError as exc:
            raise _io_error(exc, f"creating {self.root}") from None
        self._lock()
        repair_torn_tail(self.root / PROVENANCE)
        recorded = self._read_changes()
        lost = []
        for entry in iter_provenance(self.root / PROVENANCE):
            self._index(entry)
            if entry.kind == "acta" and (entry.key, entry.sha256) not in recorded:
                lost.append(entry)
        del recorded
        try:
            # A run killed between recording a batch's files and its change records: write
            # them now, the same way every time, so merged copies do not tell them twice.
            self._append_changes([self._change(e.key, "changed" if e.supersedes else "added", at=e.fetched_at,
                                               sha256=e.sha256, url=e.url, recovered=True,
                                               **({"old_sha256": e.supersedes} if e.supersedes else {}))
                                  for e in lost])
        except OSError as exc:
            raise _io_error(exc, "recording changes") from None
        try:
            with open(os.open(self.state / CHECKED, os.O_RDONLY | os.O_NOFOLLOW), encoding="utf-8") as fh:
                checked = json.load(fh)
            self.checked.update({url: float(when) for url, when in checked.items()
                                 if isinstance(url, str) and isinstance(when, (int, float))})
        except (OSError, ValueError, AttributeError):
            pass  # a lost or damaged record only means asking the site again
        for leftover in self.tmp.iterdir():
            if leftover.is_file():
                leftover.unlink()
        self._quarantine_orphans()

    def _read_changes(self) -> set[tuple[str, str]]:
        """Load each acta's last change; return the (key, sha256) pairs that have a record.
        A torn last line (a run killed while appending) is cut so the next record starts clean."""
        recorded: set[tuple[str, str]] = set()
        try:
            fh = open(os.open(self.root / CHANGES, os.O_RDWR | os.O_NOFOLLOW), "rb+")
        except FileNotFoundError:
            return recorded
        with fh:
            try:
                _cut_torn_line(fh)
            except OSError as exc:
                raise _io_error(exc, f"repairing {CHANGES}") from None
            fh.seek(0)
            for line in fh:  # streamed: the record grows with the archive
                try:
                    change = json.loads(line)
                    self.status[change["key"]] = change["change"]
                    if change.get("sha256"):
                        recorded.add((change["key"], change["sha256"]))
                except (ValueError, KeyError, TypeError):
                    continue  # damage is reported by verify (changes.jsonl is a tag file)
        return recorded

    def _check_layout(self) -> None:
        """Refuse a mirror whose bag files or data/ hold a symlink, a FIFO or a device: writing
        into it (appending provenance, renaming into data/) would write elsewhere."""
        for name in (*TAG_FILES, TAG_MANIFEST, RECEIPTS, "data"):
            try:
                mode = os.lstat(self.root / name).st_mode
            except FileNotFoundError:
                continue
            if not (stat.S_ISDIR(mode) if name == "data" else stat.S_ISREG(mode)):
                raise UsageError(f"{self.root / name} is a symlink or not a plain "
                                 f"{'directory' if name == 'data' else 'file'}; not writing into this mirror")
        stack = [self.root / "data"]
        while stack:
            try:
                with os.scandir(stack.pop()) as it:
                    for entry in it:
                        if entry.is_dir(follow_symlinks=False):
                            stack.append(Path(entry.path))
                        elif not entry.is_file(follow_symlinks=False):
                            raise UsageError(f"{entry.path} is a symlink or a special file; a mirror holds only "
                                             "regular files and directories; not writing into this mirror")
            except FileNotFoundError:
                continue

    def _own_state(self) -> None:
        """The working state (.acta-mirror: lock, temp files, quarantine) is used only when it is
        plain directories and files of this user's. Anything else, e.g. a copy made elsewhere
        with a symlink where tmp/ or the lock belongs, is moved aside whole (a rename never
        follows a link) and a fresh one made: a copy's state is never followed or deleted."""
        try:
            st = os.lstat(self.state)
        except FileNotFoundError:
            return
        plain = stat.S_ISDIR(st.st_mode) and st.st_uid == os.geteuid()
        for name, want in (("tmp", stat.S_ISDIR), ("quarantine", stat.S_ISDIR), ("lock", stat.S_ISREG),
                           (CHECKED, stat.S_ISREG)):
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

    def _lock(self) -> None:
        fd = os.open(self.state / "lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if self.wait_lock else fcntl.LOCK_NB))
        except BlockingIOError:
            os.close(fd)
            raise MirrorLocked(f"{self.root} is being written by another run (lock {self.state / 'lock'})") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._lock_fd = fd

    def close(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def _quarantine_orphans(self) -> None:
        """Files in data/ that no provenance line names: a run died between rename and record."""
        data = self.root / "data"
        for dirpath, _dirs, files in os.walk(data):
            for name in files:
                full = Path(dirpath) / name
                rel = full.relative_to(self.root).as_posix()
                if rel in self.paths:
                    continue
                target = self.state / "quarantine" / datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S") / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                os.replace(full, target)
                self.quarantined.append(rel)

    def _index(self, entry: Entry) -> None:
        self.count += 1
        self.versions[entry.key].append(entry.sha256)
        self.validators[entry.url] = (entry.etag, entry.last_modified, entry.path)
        self.checked[entry.url] = max(self.checked.get(entry.url, 0.0), _epoch(entry.fetched_at))
        self.paths.add(entry.path)
        self.dir_counts[entry.path.rsplit("/", 1)[0]] += 1

    # -- adding files -----------------------------------------------------------
    def conditional_headers(self, url: str) -> tuple[str, str]:
        prev = self.validators.get(redact(url))
        return (prev[0], prev[1]) if prev else ("", "")

    def path_of(self, url: str) -> str | None:
        prev = self.validators.get(redact(url))
        return prev[2] if prev else None

    def fresh(self, url: str, max_age: float) -> bool:
        """Was url fetched or confirmed unchanged less than max_age seconds ago?"""
        url = redact(url)
        return max_age > 0 and url in self.validators and time.time() - self.checked.get(url, 0.0) < max_age

    def add(self, acta: Acta, fetched: Fetched, *, kind: str = "acta", name: str | None = None) -> Entry | None:
        """Queue a fetched file as a new version; None (and the temp file removed) if not new."""
        self.checked[redact(fetched.url)] = time.time()
        if fetched.status == 304:
            return None
        versions = self.versions.get(acta.key, [])
        if fetched.sha256 in versions:
            os.unlink(fetched.tmp_path)
            return None
        version = len(versions) + 1
        if kind == "index":
            directory, stem, ext = "data/index", Path(name or acta.key).stem, Path(name or acta.key).suffix
        else:
            directory, stem, ext = acta_dir(acta.place), acta.key, extension(fetched.content_type)
        directory = self._roomy(directory)
        path = f"{directory}/{stem}{'' if version == 1 else f'.v{version}'}{ext}"
        while path in self.paths:
            version += 1
            path = f"{directory}/{stem}.v{version}{ext}"
        p = acta.place
        entry = Entry(
            key=acta.key, kind=kind, version=version, path=path, sha256=fetched.sha256,
            size=fetched.size, cid=raw_cid(fetched.sha256) if fetched.size <= CHUNK_SIZE else "",
            url=redact(fetched.url), final_url=redact(fetched.final_url), host=fetched.host,
            fetched_at=fetched.fetched_at, status=fetched.status, etag=fetched.etag,
            last_modified=fetched.last_modified, content_type=fetched.content_type,
            site=acta.site, page=redact(acta.page), state_code=p.state_code, state=p.state,
            municipality_code=p.municipality_code, municipality=p.municipality,
            parish_code=p.parish_code, parish=p.parish, center=p.center, table=p.table, center_name=p.center_name,
            supersedes=versions[-1] if versions else None,
            redirects=fetched.redirects, trailing_bytes=fetched.trailing_bytes,
        )
        self._index(entry)
        self.added += 1
        change = None
        if kind == "acta":  # recorded with its file, in the same commit
            what = {"change": "changed", "old_sha256": entry.supersedes} if entry.supersedes else {"change": "added"}
            change = self._change(acta.key, **what, sha256=entry.sha256, url=entry.url)
        self._pending.append((fetched.tmp_path, path, entry, change))
        return entry

    def _change(self, key: str, change: str, at: str = "", **details) -> dict:
        self.status[key] = change
        return {"at": at or self.run_at, "key": key, "change": change, **details}

    def note(self, key: str, change: str, **details) -> None:
        self.changes.append(self._change(key, change, **details))

    def seen_upstream(self, key: str, url: str) -> None:
        """The site lists this acta in this run: one that had vanished has reappeared."""
        if self.status.get(key) == "vanished":
            self.note(key, "reappeared", url=redact(url))

    def mark_vanished(self, listed, in_scope) -> int:
        """Actas archived before that the site no longer lists. They stay archived, marked."""
        n = 0
        for key in self.versions:
            if key.startswith("index/") or key in listed or not in_scope(key) or self.status.get(key) == "vanished":
                continue
            self.note(key, "vanished")
            n += 1
        return n

    def _roomy(self, directory: str) -> str:
        """The directory, or an overflow sibling once it holds MAX_DIR_ENTRIES files."""
        n = 1
        candidate = directory
        while self.dir_counts[candidate] >= MAX_DIR_ENTRIES:
            n += 1
            candidate = f"{directory}/more-{n}"
        return candidate

    @property
    def backlog(self) -> int:
        return len(self._pending)

    def due(self) -> bool:
        return len(self._pending) >= BATCH_FILES or (
            bool(self._pending) and time.monotonic() - self._last_commit >= BATCH_SECONDS)

    def take_batch(self) -> list[tuple[str, str, Entry, dict | None]]:
        batch, self._pending = self._pending, []
        self._last_commit = time.monotonic()
        return batch

    def commit(self, batch: list[tuple[str, str, Entry, dict | None]]) -> None:
        """Make a batch durable, rename it into data/, make the renames durable, then record
        provenance, then the batch's change records: one syncfs for the files and one for
        the renames (fsync per file and directory where there is no syncfs)."""
        if not batch:
            return
        try:
            if not sync_filesystem(self.tmp):
                for tmp, *_ in batch:
                    fd = os.open(tmp, os.O_RDONLY)
                    try:
                        os.fsync(fd)
                    finally:
                        os.close(fd)
            dirs = set()
            for tmp, rel, *_ in batch:
                final = self.root / rel
                if final.parent not in self._made_dirs:
                    final.parent.mkdir(parents=True, exist_ok=True)
                    self._made_dirs.add(final.parent)
                if final.exists():  # never overwrite evidence
                    raise ArchiveWriteError(f"refusing to overwrite {rel}")
                os.rename(tmp, final)
                dirs.add(final.parent)
            if not sync_filesystem(self.root):
                for d in dirs:
                    fsync_dir(d)
            append_durably(self.root / PROVENANCE, "".join(entry.to_json() + "\n" for _t, _r, entry, _c in batch))
            self._append_changes([change for *_, change in batch if change])
        except OSError as exc:
            raise _io_error(exc, "archiving a batch of files") from None

    def commit_all(self) -> None:
        self.commit(self.take_batch())

    def _append_changes(self, changes: list[dict]) -> None:
        if not changes:
            return
        append_durably(self.root / CHANGES,
                       "".join(json.dumps(c, ensure_ascii=False, sort_keys=True) + "\n" for c in changes))

    # -- the bag files ----------------------------------------------------------
    def finish(self, *, failures: Iterable[dict] = (), info: dict[str, str] | None = None,
               rewrite_bag: bool = True) -> None:
        """Write failures, and when the payload changed, the manifest, bag-info and tag manifest.

        A run that archived nothing new leaves the bag's files byte for byte as they were
        (failures aside), so a scheduled job with nothing new commits nothing.
        """
        self.commit_all()
        try:
            atomic_write(self.root / FAILURES, "".join(
                json.dumps(f, ensure_ascii=False, sort_keys=True) + "\n" for f in failures).encode())
            self._append_changes(self.changes)
            self.changes = []
            if rewrite_bag:
                write_bag_files(self.root, info or {})
            else:
                write_tag_manifest(self.root)
            atomic_write(self.state / CHECKED, json.dumps(self.checked).encode())
        except OSError as exc:
            raise _io_error(exc, "writing the bag's manifests") from None
        shutil.rmtree(self.tmp, ignore_errors=True)
        self.tmp.mkdir(parents=True, exist_ok=True)


def append_durably(path: Path, text: str) -> None:
    """Append to a bag file and fsync; never through a symlink."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o644)
    with open(fd, "a", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())


def _cut_torn_line(fh) -> None:
    """Cut a last line without its newline, reading only the file's tail."""
    end = fh.seek(0, os.SEEK_END)
    pos = end
    while pos > 0:
        step = min(65536, pos)
        fh.seek(pos - step)
        block = fh.read(step)
        if pos == end and block.endswith(b"\n"):
            return
        cut = block.rfind(b"\n")
        if cut >= 0:
            fh.truncate(pos - step + cut + 1)
            return
        pos -= step
    if end:
        fh.truncate(0)


def _epoch(iso: str) -> float:
    try:
        return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return 0.0


def write_bag_files(root: Path, extra_info: dict[str, str]) -> None:
    """(Re)write bagit.txt, manifest-sha256.txt, bag-info.txt and tagmanifest-sha256.txt
    from provenance.jsonl, read as a stream."""
    items, total = [], 0
    for path, sha, size in iter_provenance_core(root / PROVENANCE):
        items.append((path, sha))
        total += size
    items.sort()
    manifest = ManifestLines(items)
    atomic_write(root / "bagit.txt", BAGIT_TXT.encode())
    atomic_write(root / PAYLOAD_MANIFEST, manifest)
    root_hash = manifest.root
    del manifest
    old = read_bag_info(root / BAG_INFO)
    info = {
        "Bag-Software-Agent": f"acta-mirror {__version__}",
        "Bagging-Date": datetime.now(timezone.utc).strftime("%Y-%m-%d"),
        "Payload-Oxum": f"{total}.{len(items)}",
        "IPFS-Profile": IPFS_PROFILE,
        "Acta-Mirror-Merkle-Root": root_hash,
        "Acta-Mirror-Merkle-Size": str(len(items)),
    }
    for label, value in old.items():
        info.setdefault(label, value)
    info.update(extra_info)
    info["Acta-Mirror-Merkle-Root"] = root_hash
    atomic_write(root / BAG_INFO, format_bag_info(info))
    write_tag_manifest(root)


def write_tag_manifest(root: Path) -> None:
    items = []
    for name in TAG_FILES:
        try:
            # never through a symlink (UnsafePath); provenance.jsonl grows with the archive: stream it
            with open_payload(root, name) as fh:
                items.append((name, hashlib.file_digest(fh, "sha256").hexdigest()))
        except FileNotFoundError:
            continue
    atomic_write(root / TAG_MANIFEST, format_manifest(items))


def read_inside(root: str | os.PathLike, rel: str, limit: int | None = None) -> bytes:
    """The bytes of a regular file inside root, reached without following a symlink
    (state.open_payload); UnsafePath for anything else, or when it holds more than limit."""
    with open_payload(root, rel) as fh:
        if limit is not None and os.fstat(fh.fileno()).st_size > limit:
            raise UnsafePath(rel, "larger than its record says")
        return fh.read()


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


def published_files(root: str | os.PathLike) -> list[tuple[str, int, str]]:
    """What a published copy holds, as (path, size, sha256): the payload, as the validated
    reader gives it and where provenance and the manifest agree; the tag files this tool
    writes, each checked against the tag manifest (and the tag manifest itself); the site/
    folder. Payload bytes are not read here: a publisher checks each file it sends
    (read_checked). Never the receipts, the working state or anything else at the top; never
    a symlink, FIFO or device. NotAMirror (UnsafePath, Corrupt) naming what is wrong."""
    root = Path(root)
    state = read_state(root).require_clean()
    files = [(e.path, e.size, e.sha256) for e in state.entries]
    if {p: s for p, _n, s in files} != state.manifest:
        raise Corrupt(f"{root}: provenance and the manifest list different files")
    tags = state.tags or {}
    for name in PUBLISHED_TAG_FILES:
        if name in TIMESTAMP_FILES and not os.path.lexists(root / name):
            continue
        if name not in (TAG_MANIFEST, *TIMESTAMP_FILES) and name not in tags:
            continue  # a file the tag manifest does not vouch for is not published
        data = read_inside(root, name)
        digest = hashlib.sha256(data).hexdigest()
        if name in tags and digest != tags[name]:
            raise Corrupt(f"{name}: its bytes do not match the tag manifest")
        files.append((name, len(data), digest))
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
                data = read_inside(root, rel)  # refuses symlinks and special files
                files.append((rel, len(data), hashlib.sha256(data).hexdigest()))
    return files
