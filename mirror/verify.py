"""Verify a mirror offline: collect every Problem (missing, changed, unlisted, tags), then report.

It reads nothing but the mirror directory. Worker processes, one per core, walk the folders of
data/ and hash each file as they find it, while the main process reads the provenance and
checks the tag files. --fast (fast=True) hashes no payload file: it compares each file's size
with its provenance record instead, so a change that keeps the size goes unseen.
"""
from __future__ import annotations

import gc
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from .manifest import BAG_INFO, PAYLOAD_MANIFEST, PROVENANCE, TAG_MANIFEST
from .models import Problem, UnsafePath, UsageError
from .state import (
    HASH,
    MAX_RECORDS_BYTES,
    MAX_TAG_BYTES,
    MEASURE,
    SIGNED_TAG_FILES,
    MirrorState,
    Opener,
    Scan,
    being_written,
    digest_fd,
    open_payload,
    read_entries,
    read_state,
    require_bag,
    scan,
)
from .workers import pool

if TYPE_CHECKING:
    from .evidence import Seal

PARALLEL_FROM = 256  # payload files; below this, starting workers costs more than it saves
_OXUM = re.compile(r"[0-9]{1,20}\.[0-9]{1,20}")  # Payload-Oxum: <bytes>.<count>; int() refuses 4,300 digits


@dataclass
class Checked:
    """The mirror as verify read it (for the seal check) and every problem found."""

    state: MirrorState
    problems: list[Problem]
    hashed: bool  # False for --fast: no payload file's bytes were read
    seal: Seal  # what the signature says (evidence.check_seal); its problems are not in `problems`


def hash_files(root: Path, rels: list[str], limit: int | None = None) -> list[tuple[str, str | None]]:
    """(relative path, sha256 or None if missing or 'error:…' or 'unsafe:…') for each file,
    each opened without following a link and only if it is a regular file (with limit: of at
    most limit bytes, else unread)."""
    out = []
    with Opener(root) as opener:
        for rel in rels:
            try:
                fd = opener.open_fd(rel)
            except FileNotFoundError:
                out.append((rel, None))
                continue
            except UnsafePath as exc:
                out.append((rel, f"unsafe:{exc.reason}"))
                continue
            except OSError as exc:
                out.append((rel, f"error:{exc.strerror}"))
                continue
            try:
                size = os.fstat(fd).st_size
                if limit is not None and size > limit:
                    out.append((rel, f"unsafe:{size:,} bytes, larger than {limit:,}; not read"))
                    continue
                out.append((rel, digest_fd(fd, size)[1]))
            except OSError as exc:
                out.append((rel, f"error:{exc.strerror}"))
            finally:
                os.close(fd)
    return out


class Part(NamedTuple):
    """One Scan as verify reads it: its files as three columns (a worker sends three tuples,
    not a tuple for each file, and the columns are what the caller needs)."""

    rels: tuple[str, ...]
    sizes: tuple[int, ...]
    hashes: tuple[str | None, ...]
    problems: list[Problem]
    deferred: list[str]


def _part(found: Scan) -> Part:
    rels, sizes, hashes = zip(*found.files) if found.files else ((), (), ())
    return Part(rels, sizes, hashes, found.problems, found.deferred)


def _scan_folder(args: tuple[str, str, int]) -> Part:
    return _part(scan(*args))


class Walk:
    """The parts of a walk of data/ as they come (iterate once), and close() to stop the
    workers early: a caller that fails before reading every part must not leave them
    hashing until the interpreter exits."""

    def __init__(self, head: Scan, rest: list, executor=None):
        self._head, self._rest, self._executor = head, rest, executor

    def __iter__(self):
        try:
            yield _part(self._head)
            for part in self._rest:
                yield _part(part) if isinstance(part, Scan) else part.result()
        finally:
            self.close()

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(cancel_futures=True)


def scan_payload(root: Path, level: int, workers: int | None = None, expected: int = 0) -> Walk:
    """Start walking data/ at `level` (state.MEASURE or state.HASH); returns the Walk of its
    parts. The files directly in data/ are read here; each folder of data/ is one task
    for a pool of worker processes, handed out as workers free up, so the caller can read
    the provenance while they hash. `expected`: about how many files there are (below
    PARALLEL_FROM, no workers)."""
    head = scan(root, "data", level, recurse=False)
    workers = workers or os.cpu_count() or 1
    if workers == 1 or expected < PARALLEL_FROM:
        return Walk(head, [scan(root, folder, level) for folder in head.folders])
    executor = pool(workers)
    return Walk(head, [executor.submit(_scan_folder, (str(root), folder, level)) for folder in head.folders], executor)


def _manifest_lines_at_most(root: Path) -> int:
    """How many lines the payload manifest can hold (each is at least 72 bytes), read before
    the manifest is: it only decides whether starting workers pays."""
    try:
        return os.lstat(root / PAYLOAD_MANIFEST).st_size // 72
    except OSError:
        return 0


def verify(root: str | os.PathLike, *, fast: bool = False, workers: int | None = None,
           cids: bool = False, progress=None, pubkey: str | os.PathLike | None = None) -> list[Problem]:
    """Every problem in the bag, the signed statement's included (a statement that no longer
    matches is one: what was published, restored or merged must pass 'acta-mirror verify');
    an empty list means intact (with fast=True: intact as far as names, sizes, tag files and
    provenance show). With pubkey, a mirror not signed by that key is a problem too.
    NotAMirror if it is no bag at all."""
    checked = check(root, fast=fast, workers=workers, cids=cids, progress=progress, pubkey=pubkey)
    return checked.problems + checked.seal.problems


def check(root: str | os.PathLike, *, fast: bool = False, workers: int | None = None,
          cids: bool = False, progress=None, pubkey: str | os.PathLike | None = None) -> Checked:
    """verify, with the mirror as read and its seal (evidence.check_seal, against pubkey if
    given). progress(done, total), if given, is told as payload files are read."""
    collecting = gc.isenabled()
    gc.disable()  # tens of thousands of records and hashes, kept to the end, in no cycle: collecting only costs
    try:
        return _check(root, fast, workers, cids, progress, pubkey)
    finally:
        if collecting:
            gc.enable()


def _check(root: str | os.PathLike, fast: bool, workers: int | None, cids: bool, progress,
           pubkey: str | os.PathLike | None) -> Checked:
    root = require_bag(root)
    lock = being_written(root)
    if lock:
        raise UsageError(f"{root} is being written by another run (lock {lock}); it is a whole bag again "
                         "when that run ends: verify it then")
    public = None
    if pubkey is not None:  # unreadable: a UsageError before any worker hashes
        from .sign import load_public

        public = load_public(pubkey)
    # The workers start first, so they hash while this process reads the records and checks the seal.
    pending = scan_payload(root, MEASURE if fast else HASH, workers, _manifest_lines_at_most(root))
    try:
        from .evidence import check_seal, tag_file_hashes  # imported while the workers hash (they need none of it)

        head = read_state(root, records=False, payload=False)
        manifest = head.manifest
        reading = list(head.problems)
        entries = read_entries(root / PROVENANCE, reading)
        state = MirrorState(root, manifest, head.tags, head.info, entries, [], reading)
        try:  # hashed once, for the tag manifest and for the signed statement
            signed_tags = tag_file_hashes(root)
        except (UnsafePath, OSError):
            signed_tags = None  # each check reads them again and names what is wrong
        seal = check_seal(root, public, state, signed_tags)  # needs no payload file: done while the workers hash
        # So is what reads only the records: the records against the manifest, and their sizes.
        record_problems = _check_provenance(state)
        recorded = {e.path: e.size for e in entries}
    except BaseException:
        pending.close()
        raise

    hashes: dict[str, str | None] = {}  # each regular file under data/: its sha256 (None: not read)
    sizes: dict[str, int] = {}
    deferred: list[str] = []  # too large to hash before the records were read
    listed_read = 0  # the progress counts listed files against the listed: a planted one is no progress
    # Whether each part read so far is as listed and recorded (its sha256s the manifest's, its
    # sizes the records'): compared part by part while the workers hash the rest, so an intact
    # mirror needs only counts when the last part comes.
    matching = True
    for part in pending:
        if part.rels:
            part_hashes, part_sizes = dict(zip(part.rels, part.hashes)), dict(zip(part.rels, part.sizes))
            listed = part_hashes.keys() <= manifest.keys()
            matching = matching and listed and part_sizes.items() <= recorded.items() and \
                (fast or part_hashes.items() <= manifest.items())
            hashes.update(part_hashes)
            sizes.update(part_sizes)
            listed_read += len(part_hashes) if listed else sum(map(manifest.__contains__, part_hashes))
        reading.extend(part.problems)
        deferred.extend(part.deferred)
        if progress:
            progress(listed_read, len(manifest))
    reading.extend(_hash_large(root, deferred, manifest, recorded, hashes, sizes))
    state.payload = sorted(hashes)
    problems = list(reading)
    # Every file read is listed (and, hashed, as listed) and recorded with its size, and as many
    # were read as are listed: none missing, unlisted or changed.
    matched = matching and len(hashes) == len(manifest)
    listing, changed = ([], []) if matched else _compare_payload(manifest, hashes, sizes, recorded, reading, fast)
    problems.extend(listing)
    problems.extend(_check_tags(root, state, {p.path for p in reading if p.kind == "unsafe"}, signed_tags))
    problems.extend(record_problems)
    problems.extend(changed)

    if cids and not fast:
        problems.extend(_check_cids(root, state))

    oxum = state.info.get("Payload-Oxum", "")
    if not _OXUM.fullmatch(oxum):  # ASCII digits only: int() would also take '+', '_' and other scripts' digits
        shown = oxum if len(oxum) <= 60 else f"{oxum[:60]}… ({len(oxum):,} characters)"
        problems.append(Problem("oxum", BAG_INFO, f"Payload-Oxum {shown!r} is not <bytes>.<count>"))
    else:
        want_bytes, want_count = (int(x) for x in oxum.split("."))
        have = (sum(sizes.values()), len(sizes))
        if have != (want_bytes, want_count):
            problems.append(Problem("oxum", BAG_INFO, f"Payload-Oxum says {want_bytes}.{want_count}, "
                                                      f"data/ holds {have[0]}.{have[1]}"))
    return Checked(state, problems, hashed=not fast, seal=seal)


def _hash_large(root: Path, rels: list[str], manifest: dict[str, str], recorded: dict[str, int],
                hashes: dict[str, str | None], sizes: dict[str, int]) -> list[Problem]:
    """The files the walk left unhashed for their size (state.HASH_UNASKED): each listed one whose
    provenance record gives that size is hashed now; any other is not read, as no archived file
    could be those bytes (an unlisted one needs no hash to be named, and a sparse terabyte planted
    in a copy would hold verify for an hour). recorded: each provenance record's size by path."""
    problems = []
    for rel in sorted(rels):
        if rel not in manifest:
            continue  # named unlisted
        if recorded.get(rel) == sizes[rel]:
            for _rel, got in hash_files(root, [rel]):
                if got is not None and ":" in got:
                    problems.append(Problem("unreadable", rel, got.partition(":")[2]))
                    got = None
                hashes[rel] = got
        elif rel in recorded:
            problems.append(Problem("changed", rel, f"{sizes[rel]:,} bytes, provenance.jsonl says {recorded[rel]:,} "
                                                    "(too large to be the archived file: not hashed)"))
        else:
            problems.append(Problem("unreadable", rel, f"{sizes[rel]:,} bytes and no provenance record gives "
                                                       "its size: not hashed"))
    return problems


def _compare_payload(manifest: dict[str, str], hashes: dict[str, str | None], sizes: dict[str, int],
                     recorded: dict[str, int], reading: list[Problem], fast: bool) -> tuple[list[Problem], list[Problem]]:
    """data/ as read against the manifest: (missing and unlisted files, changed files); with
    fast, a file is changed when its size differs from its provenance record (recorded: each
    record's size by path). Hashed, a file that matches its manifest line must still have the
    size its provenance record gives."""
    problems, changed = [], []
    unsafe = {p.path for p in reading if p.kind == "unsafe"}
    for rel in sorted(manifest.keys() - hashes.keys() - unsafe):
        problems.append(Problem("missing", rel, "listed in the manifest, not on disk"))
    for rel in sorted(hashes.keys() - manifest.keys()):
        problems.append(Problem("unlisted", rel, "on disk, not in the manifest"))
    for rel in sorted(hashes.keys() & manifest.keys()):
        got, size = hashes[rel], sizes[rel]
        if got is not None and got != manifest[rel]:
            changed.append(Problem("changed", rel, f"sha256 {got} but the manifest says {manifest[rel]}"))
        elif fast and rel in recorded and size != recorded[rel]:
            changed.append(Problem("changed", rel, f"{size} bytes, provenance.jsonl says {recorded[rel]} "
                                                   "(sizes only: not hashed)"))
        elif got is not None and rel in recorded and size != recorded[rel]:
            changed.append(Problem("provenance", rel, f"{size} bytes, as the manifest's sha256 gives, but "
                                                      f"provenance.jsonl records {recorded[rel]}"))
    return problems, changed


OTHER_MANIFEST = re.compile(r"(tag)?manifest-[^/]+\.txt")


def _check_tags(root: Path, state: MirrorState, unsafe: set[str], known: dict[str, str] | None = None) -> list[Problem]:
    """Each file of the tag manifest against its sha256 (the tag files are small: hashed even by --fast),
    and no manifest of another algorithm: BagIt has every manifest checked, and this reads only sha256.
    known: sha256 by tag file, read already (evidence.tag_file_hashes); the others are read here."""
    problems = [Problem("format", name, "a manifest acta-mirror neither writes nor checks (bagit-python does)")
                for name in sorted(os.listdir(root))
                if OTHER_MANIFEST.fullmatch(name) and name not in (PAYLOAD_MANIFEST, TAG_MANIFEST)]
    if state.tags is None:
        return problems + [Problem("tag-missing", TAG_MANIFEST, "no tag manifest")]
    # The records may be large; any other tag file is a few lines (a line naming a planted sparse
    # terabyte would hold verify for an hour): over MAX_TAG_BYTES it is not read.
    known = {rel: sha for rel, sha in (known or {}).items() if rel in state.tags}
    records = sorted((set(state.tags) & set(SIGNED_TAG_FILES)) - set(known))
    hashed = list(known.items()) + hash_files(root, records, MAX_RECORDS_BYTES) + \
        hash_files(root, sorted(set(state.tags) - set(SIGNED_TAG_FILES)), MAX_TAG_BYTES)
    for rel, got in sorted(hashed):
        if got is None:
            problems.append(Problem("tag-missing", rel, "listed in the tag manifest, not on disk"))
        elif rel in unsafe:
            continue  # named already
        elif ":" in got:
            kind, _, why = got.partition(":")
            problems.append(Problem("unsafe" if kind == "unsafe" else "unreadable", rel, why))
        elif got != state.tags[rel]:
            problems.append(Problem("tag-changed", rel, "sha256 differs from the tag manifest"))
    return problems


def _check_provenance(state: MirrorState) -> list[Problem]:
    """Provenance and the manifest must name the same files with the same sha256."""
    if any(p.path == PROVENANCE and p.kind in ("provenance", "unsafe") for p in state.problems):
        return []  # unusable: named already
    problems = []
    manifest = state.manifest
    recorded = {e.path: e.sha256 for e in state.entries}
    if recorded == manifest:
        return []
    for rel, want in manifest.items():
        if rel not in recorded:
            problems.append(Problem("provenance", rel, "in the manifest, no provenance line"))
        elif recorded[rel] != want:
            problems.append(Problem("provenance", rel, "provenance sha256 differs from the manifest"))
    for rel in sorted(set(recorded) - set(manifest)):
        problems.append(Problem("provenance", rel, "has a provenance line, not in the manifest"))
    return problems


def _check_cids(root: Path, state) -> list[Problem]:
    """Every provenance CID must be the one the unixfs-v1-2025 profile gives the file's bytes."""
    from .cid import CHUNK_SIZE, file_cid, raw_cid

    problems = []
    on_disk = set(state.payload)
    for e in state.entries:
        if e.path not in state.manifest or e.path not in on_disk:
            continue  # missing or unlisted: named already
        if e.size <= CHUNK_SIZE:
            want = raw_cid(state.manifest[e.path])
        else:
            try:
                with open_payload(root, e.path) as fh:  # never through a link, never a FIFO
                    want = file_cid(fh, e.size)
            except (OSError, UnsafePath) as exc:
                problems.append(Problem("cid", e.path, f"cannot be read to compute its CID ({exc})"))
                continue
        if e.cid != want:
            problems.append(Problem("cid", e.path, f"provenance says {e.cid or 'nothing'}, the bytes give {want}"))
    return problems
