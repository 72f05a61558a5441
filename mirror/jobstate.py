"""The state a scheduled job carries between runs: the manifests folder.

A hosted runner starts from a fresh checkout. What a run needs to continue is small and is
committed to the repository already: the bag's tag files (manifest, provenance with each
URL's ETag and Last-Modified, the change record, failures, bag-info, the signed root) plus
cids.txt, the CID and DAG size of each file larger than one IPFS chunk (a smaller file's CID
is its sha256's and sits on its provenance line). The images are not needed: they are in the
published shards. So a run:

1. reads the folder through the validated reader (`read_job_state`) and seeds a working bag
   with its tag files and no payload (`seed`);
2. crawls into that bag: the archive asks about every known URL with the recorded
   validators and stores only new and changed files;
3. checks what changed (`take_delta`): the old provenance is a prefix of the new one (lines
   that did not change are never rewritten), every new file hashes to its line, the
   manifest, tag manifest, bag-info and signed root agree;
4. publishes the Delta, then writes the folder back (`save`). The folder changes only when
   the bag's files changed, so a run that finds nothing new commits nothing.

checked.txt carries when each URL was last fetched or found unchanged, so that
`fetch.recheck_after` counts from the last check, as it does with a local mirror, and not from
the fetch: without it a job every six hours would ask the site about every acta on every run
once the files are a day old. It is run-length coded against the provenance lines ('<unix
seconds> <count>': the next <count> lines' URLs were checked at or after that time, rounded
down to the hour) and holds the sha256 of the lines it covers (times written for other lines
are not believed), so a run that re-checks everything rewrites a line or two and a run that
asks nothing leaves it as it was. It is the job's bookkeeping, not evidence: it is not in the
bag and is never published; one that does not parse is ignored (the site is asked again).

targets.txt names the publish targets (one per line, as the run shows them, credentials hidden;
a node with its IPNS key and pinning service) that took the state the folder records: a save
after a publish writes the job's targets, every one of which took it. A run that finds nothing
new publishes nothing, except to a target of the job that the file does not name (added to the
job since, or a folder saved before the file existed): that target is sent the unchanged state,
which it takes as nothing new when it holds the mirror and refuses, naming what it lacks, when
it does not. So a new or empty target is never passed over with exit 0. It is bookkeeping, not
evidence: never published; one that cannot be read counts as none (every target is sent the
state once).

A save writes the changed files as one: each is staged beside its place ('.save-<name>',
fsynced), then the journal ('.save-journal': '<sha256> <name>' per staged file, fsynced) is
renamed in, then the staged files are renamed over their places and the journal removed. When
the folder is next read, a save a killed run left is resolved first: with its journal in, it is
completed (the targets hold that state already: the folder is written after every publish), a
file already renamed holding its sha256; without, the staged files are removed and the folder is
the whole old state (the next run does the work again, as after a kill while publishing). The
folder never mixes the new provenance with the old signature, and cids.txt never names a file
the provenance lacks. The journal and staged files are bookkeeping, never published.
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import re
import time
from dataclasses import dataclass
from itertools import chain
from pathlib import Path

from .archindex import _epoch, read_checked_times
from .archive import CHECKED, PUBLISHED_TAG_FILES, STATE_DIR, TIMESTAMP_FILES, disk_error, read_checked, read_inside
from .cid import CHUNK_SIZE, RAW_CODEC, cid_bytes, cid_to_str, file_dag, str_to_cid
from .evidence import SIGNATURE, STATEMENT, check_seal
from .manifest import (BAG_INFO, CHANGES, FAILURES, PAYLOAD_MANIFEST, PROVENANCE, TAG_MANIFEST, atomic_write, fsync_dir,
                       text_lines)
from .models import MirrorLocked, NotAMirror, UnsafePath, UsageError
from .state import Record, open_payload, read_records, read_state

CIDS = "cids.txt"  # '<cid> <dag size> <path>' per payload file over one chunk; it only grows; a path's last line counts
CIDS_SIGNATURE = "cids.txt.minisig"  # cids.txt signed with the job's key, for the provenance it goes with
CIDS_COMMENT = "acta-mirror cids.txt for provenance.jsonl sha256"  # the trusted comment, before that sha256
CHECKS = "checked.txt"  # when each provenance line's URL was last checked, run-length coded
CHECK_GRAIN = 3600  # check times are rounded down to this many seconds: runs of equal times stay long
MAX_CHECKS_BYTES = 1 << 24  # far above a line per provenance line of 100,000 actas
TARGETS = "targets.txt"  # the publish targets (as shown) that took the state the folder records, one per line
MAX_TARGETS_BYTES = 1 << 16  # a line per target: a job has a handful
STATE_FILES = ("bagit.txt", BAG_INFO, PAYLOAD_MANIFEST, PROVENANCE, CHANGES, FAILURES, STATEMENT, SIGNATURE,
               TAG_MANIFEST, *TIMESTAMP_FILES)
# what a save writes: the only names a journal may give
SAVED_FILES = (*STATE_FILES, CIDS, CIDS_SIGNATURE, CHECKS, TARGETS)
JOURNAL = ".save-journal"  # a save under way; bookkeeping, never published
JOURNAL_NEW = ".save-journal.new"  # the journal being written, renamed to JOURNAL when whole
STAGED = ".save-"  # a staged file is STAGED + its name, beside its place
JOURNAL_HEAD, JOURNAL_END = "acta-mirror save journal 1", "end"
MAX_JOURNAL_BYTES = 1 << 16  # a line per saved file is far less


@dataclass(frozen=True)
class FileRef:
    """One file of the published copy as the publishers need it, without its bytes."""

    path: str
    size: int
    sha256: str
    cid: bytes  # binary CID under the unixfs-v1-2025 profile
    tsize: int  # the DAG's cumulative size (a directory link's Tsize)


@dataclass(frozen=True)
class JobState:
    """What the manifests folder says, validated."""

    folder: Path
    records: tuple[Record, ...]
    big_cids: dict[str, tuple[str, int]]  # path -> (CID text, DAG size), files over one chunk
    provenance_size: int  # bytes of provenance.jsonl: the next run's must start with them
    provenance_sha256: str
    checked: tuple[float, ...] = ()  # per provenance line (a prefix of them): its URL's last check
    cids: bytes = b""  # cids.txt as read (its signature is checked against these very bytes)
    targets: frozenset[str] | None = None  # targets.txt: who took this state; None when the folder does not say

    @property
    def empty(self) -> bool:
        return not self.records


@dataclass(frozen=True)
class Delta:
    """What one run changed: the working bag holds the tag files and only the new files."""

    bag: Path
    before: JobState
    added: tuple[Record, ...]  # new provenance lines; their files are in bag
    records: tuple[Record, ...]  # every line, old and new
    files: tuple[FileRef, ...]  # every payload file of the copy, then the tag files
    tags: dict[str, str]  # tag file -> sha256, as the tag manifest vouches (the tag manifest too)
    changed: bool  # did any state file change?
    new_cids: dict[str, tuple[str, int]]  # path -> (CID text, DAG size): new files over one chunk cids.txt lacks


@contextlib.contextmanager
def held(folder: str | os.PathLike, *, wait: bool = False):
    """The manifests folder, locked for one run from its read to its save: a second run would
    read the same state, and its save would put back the folder without the first one's new
    versions. The lock is on the folder itself (flock of its descriptor), so no lock file is
    left to be committed with it. MirrorLocked (exit 2) when another run holds it, unless wait."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as exc:
        raise disk_error(exc, f"opening the manifests folder {folder}") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            raise MirrorLocked(f"{folder} is being used by another run of this job (the manifests folder is "
                               "read at a run's start and written at its end)") from None
        except OSError as exc:
            if exc.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
                raise disk_error(exc, f"locking the manifests folder {folder}") from None
            # a file system without locks (some network and FUSE ones): the run goes on unlocked
        yield folder
    finally:
        os.close(fd)


def read_job_state(folder: str | os.PathLike, *, settle: bool = True) -> JobState:
    """The manifests folder's state; empty when the folder holds none yet. UsageError naming
    the first defect (a bad provenance line, an unsafe file, a damaged cids.txt, a save that
    was interrupted and cannot be completed). An interrupted save is completed first, unless
    settle=False (a dry run, which writes nothing, reads the folder as it is)."""
    folder = Path(folder)
    if settle:
        recover(folder)
    try:
        records = tuple(read_records(folder / PROVENANCE))
        size, sha256 = _head_sha256(folder, PROVENANCE) if os.path.lexists(folder / PROVENANCE) else \
            (0, hashlib.sha256().hexdigest())
        cids_raw = read_inside(folder, CIDS) if os.path.lexists(folder / CIDS) else b""
        cids_text = cids_raw.decode("utf-8")
    except (NotAMirror, OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"{folder}: the job's state is unreadable: {getattr(exc, 'strerror', None) or exc}") from None
    big: dict[str, tuple[str, int]] = {}
    for number, line in enumerate(text_lines(cids_text), 1):
        try:
            cid, tsize, path = line.split(" ", 2)
            str_to_cid(cid)
            big[path] = (cid, int(tsize))
        except (ValueError, IndexError):
            raise UsageError(f"{folder / CIDS}:{number}: not a '<cid> <size> <path>' line") from None
    return JobState(folder, records, big, size, sha256,
                    _read_checks(folder, records), cids_raw, _read_targets(folder))


def _read_targets(folder: Path) -> frozenset[str] | None:
    """targets.txt's targets; None when there is none, or one that cannot be read (not a regular
    file, too large, not UTF-8): then every target is sent the state once, the safe way, and
    the save replaces the file (never following a link)."""
    try:
        raw = read_inside(folder, TARGETS, MAX_TARGETS_BYTES)
        return frozenset(line.strip() for line in text_lines(raw.decode("utf-8")) if line.strip())
    except (NotAMirror, OSError, UnicodeDecodeError):
        return None


def _read_checks(folder: Path, records: tuple[Record, ...]) -> tuple[float, ...]:
    """The check time of each provenance line from checked.txt; () when there is none, it
    does not parse or it was written for other lines (its sha256 of the lines it covers
    differs: then every URL counts from its fetch). A time in the future counts as no check: a
    state that claims a check nobody made, or a clock set back since, must not keep the site
    from being asked (as now, it spared every URL again at each run until the clock caught up)."""
    try:
        if not os.path.lexists(folder / CHECKS):
            return ()
        text = read_inside(folder, CHECKS, MAX_CHECKS_BYTES).decode("ascii")
    except (OSError, NotAMirror, UnsafePath, UnicodeDecodeError):
        return ()
    now, times, covered = time.time(), [], ""
    try:
        for line in text.splitlines():
            if line.startswith("#") or not line.strip():
                continue
            when, count = line.split(" ")
            if when == "sha256":
                covered = count
                continue
            if not (when.isdigit() and count.isdigit()) or len(times) + int(count) > len(records):
                return ()
            times += [float(when) if float(when) <= now else 0.0] * int(count)
    except ValueError:
        return ()
    return tuple(times) if covered == _lines_sha256(records[:len(times)]) else ()


def _lines_sha256(records) -> str:
    digest = hashlib.sha256()
    for r in records:
        digest.update(r.text.encode())
    return digest.hexdigest()


def _checks_text(records, before: tuple[float, ...], checked: dict[str, float]) -> str:
    """checked.txt for these provenance lines: each line's latest of its fetch, its earlier
    check (before) and this run's (checked: url -> time), rounded down to CHECK_GRAIN."""
    runs: list[list[int]] = []
    for i, r in enumerate(records):
        when = max(_epoch(r.entry.fetched_at), before[i] if i < len(before) else 0.0, checked.get(r.entry.url, 0.0))
        when = int(when) // CHECK_GRAIN * CHECK_GRAIN
        if runs and runs[-1][0] == when:
            runs[-1][1] += 1
        else:
            runs.append([when, 1])
    return ("# acta-mirror: '<unix seconds> <count>': the URLs of the next <count> lines of provenance.jsonl "
            "were last fetched or found unchanged at or after that time; 'sha256 <hex>': of those lines\n"
            f"sha256 {_lines_sha256(records)}\n" + "".join(f"{when} {count}\n" for when, count in runs))


def check_signed(state: JobState, key_path: str | None) -> None:
    """A state that was signed must still match its signature, made by the job's own key when
    the job has one: the folder is committed where others can write, and a run re-signs what
    it builds on. UsageError naming the first mismatch."""
    if state.empty or not os.path.lexists(state.folder / STATEMENT):
        return
    try:
        seal = check_seal(state.folder, state=read_state(state.folder))
    except NotAMirror as exc:
        raise UsageError(f"{state.folder}: the job's state is unreadable: {exc}") from None
    problems = [str(p) for p in seal.problems]
    if key_path and not problems:
        from .sign import key_id_text, load_secret

        ours = key_id_text(load_secret(key_path).key_id)
        if seal.key_id != ours:
            problems.append(f"signed by key {seal.key_id}, not by this job's key {ours}")
    if not problems and (why := cids_unsigned(state)):
        problems.append(why)
    if problems:
        raise UsageError(f"{state.folder}: the job's state does not match its signature ({problems[0]}); "
                         "not building on it")


def cids_unsigned(state: JobState) -> str | None:
    """Why the CIDs of a signed state's cids.txt cannot be believed (None: they can, or the state
    is not signed). A run builds the published tree from them, for files whose bytes it does
    not hold: a CID written there by anyone else (the folder is committed where others can
    write) would publish other bytes under a file's name. So cids.txt is signed with the job's
    key, for the provenance it goes with (the trusted comment names that provenance's sha256)."""
    folder = state.folder
    if not state.big_cids or not os.path.lexists(folder / STATEMENT):
        return None
    if not os.path.lexists(folder / CIDS_SIGNATURE):
        return f"{CIDS} is not signed ({CIDS_SIGNATURE} is missing): its CIDs could name other bytes"
    from .sign import SignatureError, parse_public, parse_signature, verify_signature

    try:
        public = parse_public(json.loads(read_inside(folder, STATEMENT))["public_key"], STATEMENT)
        sig = parse_signature(read_inside(folder, CIDS_SIGNATURE).decode("utf-8"), CIDS_SIGNATURE)
        comment = verify_signature(state.cids, sig, public, CIDS, CIDS_SIGNATURE)
    except (SignatureError, UsageError) as exc:  # each names its file
        return str(exc)
    except (NotAMirror, OSError, ValueError, KeyError, TypeError) as exc:
        return f"{CIDS}: its signature cannot be checked ({getattr(exc, 'strerror', None) or exc!r})"
    if comment != f"{CIDS_COMMENT} {state.provenance_sha256}":
        return f"{CIDS} is signed for another provenance.jsonl than the folder's"
    return None


def seed(state: JobState, bag: Path) -> None:
    """Make bag a payload-less copy of the state: its tag files, byte for byte, and the check
    times the archive reads (its checked.json), so a URL checked recently is not asked again."""
    bag.mkdir(parents=True, exist_ok=True)
    for name in STATE_FILES:
        if os.path.lexists(state.folder / name):
            atomic_write(bag / name, _blocks(state.folder, name))  # streamed: provenance is tens of MB
    if state.checked:
        when: dict[str, float] = {}
        for r, t in zip(state.records, state.checked):
            when[r.entry.url] = max(t, when.get(r.entry.url, 0.0))
        (bag / STATE_DIR).mkdir(exist_ok=True)
        atomic_write(bag / STATE_DIR / CHECKED, json.dumps(when).encode())


def save_checks(delta: "Delta", targets=None) -> list[str]:
    """Write checked.txt into the manifests folder when this run checked anything, and
    targets.txt when targets (every target that holds the state) is given and differs; the
    names written. Called when a run found nothing new (save() writes them with the rest)."""
    return _save(delta.before.folder, [(CHECKS, _new_checks(delta)), *_targets_file(targets)],
                 f"{CHECKS} or {TARGETS}" if targets is not None else CHECKS)


def _targets_file(targets) -> list[tuple[str, bytes]]:
    """targets.txt as (name, bytes) for _save, sorted, one target a line; none for None."""
    return [] if targets is None else [(TARGETS, "".join(f"{t}\n" for t in sorted(set(targets))).encode())]


def _new_checks(delta: "Delta") -> bytes:
    return _checks_text(delta.records, delta.before.checked,
                        dict(read_checked_times(delta.bag / STATE_DIR / CHECKED))).encode()


def take_delta(before: JobState, bag: Path) -> Delta:
    """Check the working bag after a crawl and name what changed. UsageError when the bag's
    records do not check out: nothing of it is then published or saved."""
    mirror = read_state(bag)
    problems = [str(p) for p in mirror.problems]
    head = _head_sha256(bag, PROVENANCE, before.provenance_size)[1]
    if head != before.provenance_sha256:
        problems.append(f"{PROVENANCE}: the lines of the last run were rewritten; it only grows")
    records = tuple(read_records(bag / PROVENANCE)) if not mirror.problems else ()
    old = {r.path for r in before.records}
    added = tuple(r for r in records if r.path not in old)
    if {r.path: r.sha256 for r in records} != mirror.manifest:
        problems.append(f"{PAYLOAD_MANIFEST} and {PROVENANCE} list different files")
    for r in added:
        try:
            read_checked(bag, r.path, r.sha256, r.size)
        except (OSError, NotAMirror) as exc:
            problems.append(f"{r.path}: {getattr(exc, 'strerror', None) or exc}")
    tags = _checked_tags(bag, mirror.tags, problems)
    oxum = f"{sum(r.size for r in records)}.{len(records)}"
    if mirror.info.get("Payload-Oxum") != oxum:
        problems.append(f"{BAG_INFO}: Payload-Oxum {mirror.info.get('Payload-Oxum')!r}, the records give {oxum}")
    problems.extend(str(p) for p in check_seal(bag, state=mirror).problems)
    if problems:
        raise UsageError(f"{bag}: what this run downloaded does not check out: {problems[0]}"
                         + (f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""))
    big = dict(before.big_cids)
    files = []
    for r in records:
        if r.size <= CHUNK_SIZE:
            cid, tsize = cid_bytes(RAW_CODEC, bytes.fromhex(r.sha256)), r.size
        elif r.path not in old:  # its bytes are here: a line for it (a killed old save's) is not believed
            cid, tsize, _nodes = file_dag(_chunks_of(bag, r))
            big[r.path] = (cid_to_str(cid), tsize)
        elif r.path in big:
            cid, tsize = str_to_cid(big[r.path][0]), big[r.path][1]
        else:
            raise UsageError(f"{before.folder / CIDS}: no CID for {r.path}; the state is incomplete")
        files.append(FileRef(r.path, r.size, r.sha256, cid, tsize))
    for name, sha in sorted(tags.items()):
        size = os.lstat(bag / name).st_size
        files.append(FileRef(name, size, sha, b"", size))
    changed = any(_file_sha256(bag, n) != _file_sha256(before.folder, n) for n in STATE_FILES)
    return Delta(bag, before, added, records, tuple(files), tags, changed,
                 {p: v for p, v in big.items() if before.big_cids.get(p) != v})


def save(delta: Delta, key=None, targets=None) -> None:
    """Write the run's state into the manifests folder, as one: the changed tag files,
    cids.txt with the new files' lines appended, checked.txt, and targets.txt (the targets,
    every one of which took it). Called after every publish succeeded."""
    folder = delta.before.folder
    _save(folder, chain(_state_files(delta.bag, delta.before.cids, delta.new_cids, key),
                        [(CHECKS, _new_checks(delta)), *_targets_file(targets)]))


def _state_files(bag: Path, old_cids: bytes, new_cids: dict[str, tuple[str, int]], key=None,
                 rewrite: bool = False):
    """(name, where) of the bag's state files (where: the bag, to stream the file from), then
    cids.txt (where: its bytes): old_cids (the folder's, as read) with the new lines appended,
    written when there are new lines or rewrite says so; signed with key (a sign.SecretKey)
    for the bag's provenance."""
    for name in STATE_FILES:
        if os.path.lexists(bag / name):
            yield name, bag
    lines = "".join(f"{cid} {tsize} {path}\n" for path, (cid, tsize) in sorted(new_cids.items()))
    cids = old_cids + lines.encode()
    if new_cids or rewrite:
        yield CIDS, cids
    if key is not None and cids:
        from .sign import sign_bytes

        yield CIDS_SIGNATURE, sign_bytes(cids, key, f"{CIDS_COMMENT} {_head_sha256(bag, PROVENANCE)[1]}").encode()


def _save(folder: Path, files, what: str = "the job's state") -> list[str]:
    """Write (name, where) files into the folder, those that differ, as one (the module's
    docstring says how): where is the file's bytes, or the folder to stream the file of that
    name from (provenance is tens of MB at full size: never held whole). The names written.
    Exit 3 when the disk refuses (full, read-only): the folder is then the old state, or the
    new one once the journal was in."""
    staged: dict[str, str] = {}
    try:
        folder.mkdir(parents=True, exist_ok=True)
        try:
            for name, where in files:
                streamed = isinstance(where, Path)
                new = _file_sha256(where, name) if streamed else hashlib.sha256(where).hexdigest()
                if new != _current(folder, name):
                    staged[name] = _stage(folder, STAGED + name, _blocks(where, name) if streamed else [where])
            if staged:
                journal = "".join(f"{sha} {name}\n" for name, sha in staged.items())
                _stage(folder, JOURNAL_NEW, [f"{JOURNAL_HEAD}\n{journal}{JOURNAL_END}\n".encode()])
        except BaseException:  # nothing is in place yet: leave no staged file to be committed
            _remove_staged(folder)
            raise
        if staged:
            os.replace(folder / JOURNAL_NEW, folder / JOURNAL)
            fsync_dir(folder)  # the journal is in: from here on the save is completed, never undone
            _complete(folder, staged)
    except OSError as exc:  # full, read-only: one line and exit 3
        raise disk_error(exc, f"writing {what} into {folder}") from None
    return list(staged)


def _current(folder: Path, name: str) -> str | None:
    """A state file's sha256; None when absent, or not a regular file (a symlink, a FIFO: it is
    replaced, never followed). UsageError for a folder in its place, which cannot be."""
    try:
        return _file_sha256(folder, name)
    except (OSError, NotAMirror):
        if os.path.isdir(folder / name) and not os.path.islink(folder / name):
            what = "the job's check times belong" if name == CHECKS else "a file of the job's state belongs"
            raise UsageError(f"{folder / name}: a folder where {what}; remove it") from None
        return None


def _stage(folder: Path, name: str, blocks) -> str:
    """Write a new file at folder/name from blocks of bytes (what was there is removed, never
    followed) and fsync it; the sha256 of what was written."""
    path = folder / name
    if os.path.lexists(path):
        os.unlink(path)
    digest = hashlib.sha256()
    with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644), "wb") as fh:
        for block in blocks:
            digest.update(block)
            fh.write(block)
        fh.flush()
        os.fsync(fh.fileno())
    return digest.hexdigest()


def _blocks(root: Path, name: str):
    """A file inside root a MiB at a time, through the validated opener (no link, no FIFO)."""
    with open_payload(root, name) as fh:
        while block := fh.read(1 << 20):
            yield block


def _complete(folder: Path, staged: dict[str, str]) -> None:
    """Rename each staged file over its place, then remove the journal. A file no longer staged
    must be in place already (an earlier attempt renamed it) and hold its sha256; every file is
    checked before the first rename, so a journal that cannot be completed changes nothing."""
    for name, sha in staged.items():
        if os.path.lexists(folder / (STAGED + name)):
            if _sha256_or_none(folder, STAGED + name) != sha:
                raise _stuck(folder, f"{STAGED + name} is not the file the journal names")
        elif _sha256_or_none(folder, name) != sha:
            raise _stuck(folder, f"{name} is neither staged nor the file the journal names")
    for name in staged:
        if os.path.lexists(folder / (STAGED + name)):
            os.replace(folder / (STAGED + name), folder / name)
    fsync_dir(folder)
    os.unlink(folder / JOURNAL)
    fsync_dir(folder)


def recover(folder: Path) -> None:
    """Complete a save a killed run left in the folder (its journal is in), or remove what it
    staged (its journal is not: the folder is the old state). UsageError when a journal cannot
    be followed: not a regular file, not what a save writes, or naming files that are not there."""
    if not os.path.lexists(folder / JOURNAL):
        try:
            _remove_staged(folder)
        except OSError as exc:
            raise disk_error(exc, f"removing what an interrupted save left in {folder}") from None
        return
    try:
        with open_payload(folder, JOURNAL) as fh:
            data = fh.read(MAX_JOURNAL_BYTES + 1)
    except UnsafePath as exc:
        raise _stuck(folder, exc.reason) from None
    except OSError as exc:
        raise _stuck(folder, exc.strerror or str(exc)) from None
    lines = data.decode("ascii", "replace").split("\n")
    if len(data) > MAX_JOURNAL_BYTES or lines[:1] != [JOURNAL_HEAD] or lines[-2:] != [JOURNAL_END, ""]:
        raise _stuck(folder, "not a journal this tool writes")
    staged: dict[str, str] = {}
    for number, line in enumerate(lines[1:-2], 2):
        sha, _, name = line.partition(" ")
        if not re.fullmatch("[0-9a-f]{64}", sha) or name not in SAVED_FILES or name in staged:
            raise _stuck(folder, f"line {number} is not '<sha256> <name>' of a file of the job's state")
        staged[name] = sha
    try:
        _complete(folder, staged)
    except OSError as exc:
        raise disk_error(exc, f"completing an interrupted save in {folder}") from None


def _remove_staged(folder: Path) -> None:
    """Remove what a save staged (never following a link). Only what is there: a read-only
    folder with nothing staged is read, not refused."""
    for name in (*(STAGED + n for n in SAVED_FILES), JOURNAL_NEW):
        if os.path.lexists(folder / name):
            os.unlink(folder / name)


def _stuck(folder: Path, why: str) -> UsageError:
    return UsageError(f"{folder / JOURNAL}: an interrupted save cannot be completed ({why}); "
                      f"restore the folder from its last commit and remove {JOURNAL}")


def _sha256_or_none(folder: Path, name: str) -> str | None:
    """The sha256 of a regular file inside folder, streamed; None for anything else."""
    try:
        return _head_sha256(folder, name)[1]
    except (OSError, NotAMirror):
        return None


def not_behind(mirror: Path, folder: Path, before: JobState | None = None) -> None:
    """UsageError unless the manifests folder may take the mirror's state: its provenance must
    be where the mirror's begins (it only grows). A folder another mirror's runs filled (a
    scheduled job's, a local one pointed at the same folder) would lose its records."""
    before = before or read_job_state(folder, settle=False)
    if not before.provenance_size:
        return
    try:
        head = _head_sha256(mirror, PROVENANCE, before.provenance_size)
    except (OSError, NotAMirror):
        head = (0, "")
    if head != (before.provenance_size, before.provenance_sha256):
        raise UsageError(f"{folder / PROVENANCE}: its {len(before.records)} records are not where "
                         f"{mirror / PROVENANCE} begins: the folder holds another mirror's state, which this "
                         "run would replace; give an empty folder, or the mirror it was saved from")


def save_from_mirror(mirror: Path, folder: Path, key=None, targets=None) -> None:
    """Write a full local mirror's state into the manifests folder (a job with output.dir), so
    the job can later run without the local mirror; never over another mirror's (not_behind).
    The CIDs of a signed folder whose cids.txt is not signed for its provenance are computed
    again from the mirror's bytes (cids_unsigned), and cids.txt is signed with key. targets:
    the job's targets, every one of which took the mirror (targets.txt), or None."""
    before = read_job_state(folder)
    not_behind(mirror, folder, before)
    trusted = cids_unsigned(before) is None  # else cids.txt is written anew, every CID computed here
    believed = before.big_cids if trusted else {}
    new_cids = {}
    records = tuple(read_records(mirror / PROVENANCE))
    for r in records:
        if r.size > CHUNK_SIZE and r.path not in believed:
            cid, tsize, _nodes = file_dag(_chunks_of(mirror, r))
            new_cids[r.path] = (cid_to_str(cid), tsize)
    prefix = before.checked
    checks = _checks_text(records, prefix, dict(read_checked_times(mirror / STATE_DIR / CHECKED))).encode()
    _save(folder, chain(_state_files(mirror, before.cids if trusted else b"", new_cids, key, rewrite=not trusted),
                        [(CHECKS, checks), *_targets_file(targets)]))


def _checked_tags(bag: Path, listed: dict[str, str] | None, problems: list) -> dict[str, str]:
    """The publishable tag files the tag manifest vouches for, each hashed; the tag manifest and
    the timestamp files (checked by their own signature, as archive.published_files has it)."""
    tags: dict[str, str] = {}
    for name in PUBLISHED_TAG_FILES:
        digest = _file_sha256(bag, name)
        if digest is None:
            continue
        if name not in (TAG_MANIFEST, *TIMESTAMP_FILES):
            if listed is None or name not in listed:
                continue
            if listed[name] != digest:
                problems.append(f"{name}: its bytes do not match the tag manifest")
        tags[name] = digest
    if listed is not None:
        for name in listed:
            if name not in tags and name in PUBLISHED_TAG_FILES:
                problems.append(f"{name}: listed in the tag manifest, not in the bag")
    return tags


def _head_sha256(root: Path, name: str, size: int | None = None) -> tuple[int, str]:
    """(bytes read, their sha256) of the first `size` bytes of a file inside root (all of it
    without size), streamed, through the validated opener (no link, no FIFO)."""
    digest, read = hashlib.sha256(), 0
    if size != 0:
        with open_payload(root, name) as fh:
            while block := fh.read(min(1 << 20, size - read) if size is not None else 1 << 20):
                digest.update(block)
                read += len(block)
    return read, digest.hexdigest()


def _file_sha256(root: Path, name: str) -> str | None:
    """The sha256 of a file inside root, streamed; None when there is none. UnsafePath, as
    read_inside gives, for a link, a FIFO or a folder in its place."""
    return _head_sha256(root, name)[1] if os.path.lexists(root / name) else None


def _chunks_of(bag: Path, r: Record) -> list[tuple[bytes, int]]:
    from .cid import _chunks
    from .state import open_payload

    with open_payload(bag, r.path) as fh:
        return [(cid_bytes(RAW_CODEC, hashlib.sha256(d).digest()), len(d)) for d in _chunks(fh)]

