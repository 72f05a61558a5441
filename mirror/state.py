"""The one validated reader of a mirror's records: provenance, manifests, bag-info, payload files.

A mirror is hostile input: someone else made the copy. Everything that reads one (verify,
evidence, tally, site, publish, merge, restore) gets its records here, and every defect is a
named Problem, never a traceback or a hang:

- paths: absolute, '..', empty or '.' parts, outside data/ (payload) or inside it (tags);
- keys that are not the site's key format, and a `kind` that contradicts the key;
- numbers out of range or not whole (models.Entry.from_json), a line that is not UTF-8;
- the same path listed twice, in provenance or in a manifest (`sha256sum -c` fails on it);
- a tag file, or a record line, too large to be one (never read whole: a planted giant would
  take all memory);
- files that are not regular files inside the mirror: symlinks (the file itself, data/ or any
  folder on the way), FIFOs, devices. Files are opened one folder at a time with O_NOFOLLOW
  and O_NONBLOCK and checked with fstat before a byte is read.

API:
    read_state(root, records=True) -> MirrorState   (NotAMirror if root is no bag at all)
    require_bag(root) -> Path                       (the same NotAMirror, nothing read)
    scan(root, rel, level, recurse) -> Scan         (the files of data/, sized or hashed on the way)
    iter_records(path, problems=None) -> Record...  (provenance lines with their exact text)
    read_records(path, problems=None) -> [Record]   (the same, as a list, faster)
    read_entries(path, problems) -> [Entry]         (the same records' entries, faster)
    open_payload(root, rel) -> binary file          (UnsafePath, FileNotFoundError)
    iter_lines(binary file) -> bytes | None...      (None: a line too long to hold, skipped)
    is_acta_key(key), is_index_key(key), is_shard_name(name)
"""
from __future__ import annotations

import errno
import fcntl
import hashlib
import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Iterator

from .manifest import (BAG_INFO, CHANGES, FAILURES, PAYLOAD_MANIFEST, PROVENANCE, TAG_MANIFEST, bag_info_pairs,
                       split_manifest_line, text_lines)
from .models import Entry, NotAMirror, Problem, UnsafePath, all_data_paths, all_sha256, unsafe_path

SIGNED_TAG_FILES = (PAYLOAD_MANIFEST, BAG_INFO, PROVENANCE, CHANGES, FAILURES)
"""The tag files whose sha256 the signed statement carries (those present when it was signed)."""

ACTA_KEY = re.compile(r"[0-9]{9}\.[0-9]{2,3}")  # ASCII, as sites.resultados2024.acta_key makes it (\d takes ０ and ٠)
INDEX_KEY = re.compile(r"index/[^/\x00-\x1f\x7f]+")
SHARD_NAME = re.compile(r"[0-9]{2}")  # ASCII: \d takes look-alikes
KINDS = ("acta", "index")

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC  # a FIFO must not block the open


def is_acta_key(key: str) -> bool:
    return isinstance(key, str) and ACTA_KEY.fullmatch(key) is not None


def is_index_key(key: str) -> bool:
    return isinstance(key, str) and INDEX_KEY.fullmatch(key) is not None and key not in ("index/.", "index/..")


def is_shard_name(name: object) -> bool:
    """A Git shard's name: exactly two digits ('01'), never a path."""
    return isinstance(name, str) and SHARD_NAME.fullmatch(name) is not None


# -- opening files safely -------------------------------------------------------------------
def _kind_of(mode: int) -> str:
    if stat.S_ISLNK(mode):
        return "a symbolic link"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "a regular file" if stat.S_ISREG(mode) else "an unknown kind of file"


class Opener:
    """Opens files under one root without following a symlink anywhere below the root.

    Keeps the last folder open, so hashing many files of one folder costs one open each.
    """

    def __init__(self, root: str | os.PathLike):
        self.root = os.fspath(root)
        self._dir: tuple[str, int] | None = None

    def close(self) -> None:
        if self._dir:
            os.close(self._dir[1])
            self._dir = None

    def __enter__(self) -> "Opener":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _folder(self, parts: list[str], rel: str) -> int:
        key = "/".join(parts)
        if self._dir and self._dir[0] == key:
            return self._dir[1]
        self.close()
        fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)  # the root the user named may be a link
        try:
            for i, part in enumerate(parts):
                try:
                    nxt = os.open(part, _DIR_FLAGS, dir_fd=fd)
                except NotADirectoryError:
                    if stat.S_ISLNK(os.lstat(part, dir_fd=fd).st_mode):
                        raise UnsafePath(rel, f"{'/'.join(parts[:i + 1])} is a symbolic link, not a folder") from None
                    raise FileNotFoundError(errno.ENOENT, "no such file", rel) from None
                os.close(fd)
                fd = nxt
        except BaseException:
            os.close(fd)
            raise
        self._dir = (key, fd)
        return fd

    def open_fd(self, rel: str) -> int:
        """A read-only descriptor of a regular file; UnsafePath for anything else."""
        reason = unsafe_path(rel)
        if reason:
            raise UnsafePath(repr(rel), reason)
        *parts, name = rel.split("/")
        folder = self._folder(parts, rel)
        try:
            fd = os.open(name, _FILE_FLAGS, dir_fd=folder)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise UnsafePath(rel, "a symbolic link, not a regular file") from None
            raise
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            os.close(fd)
            raise UnsafePath(rel, f"{_kind_of(mode)}, not a regular file")
        return fd


def open_payload(root: str | os.PathLike, rel: str, limit: int | None = None) -> BinaryIO:
    """Open a file of the mirror for reading, only if it is a regular file reached through real
    folders (and, with limit, of at most limit bytes). Raises UnsafePath (symlink, FIFO, device,
    '..', absolute, too large) or FileNotFoundError."""
    with Opener(root) as opener:
        fd = opener.open_fd(rel)
    if limit is not None and (size := os.fstat(fd).st_size) > limit:
        os.close(fd)
        raise UnsafePath(rel, _too_large(size, limit))
    return os.fdopen(fd, "rb")


def read_inside(root: str | os.PathLike, rel: str, limit: int | None = None) -> bytes:
    """The bytes of a regular file inside root, reached without following a link (open_payload):
    the one bounded read of a mirror's file. With limit, a larger file is refused by its size,
    unread (UnsafePath), and one that grows while read is refused too."""
    with open_payload(root, rel, limit) as fh:
        data = fh.read() if limit is None else fh.read(limit + 1)
    if limit is not None and len(data) > limit:
        raise UnsafePath(rel, _too_large(len(data), limit))
    return data


def _too_large(size: int, limit: int) -> str:
    return f"{size:,} bytes, larger than {limit:,}; not read"


MAX_TAG_BYTES = 1 << 20  # bagit.txt, bag-info.txt, the tag manifest: a few lines each
MAX_MANIFEST_BYTES = 1 << 29  # ~3 million lines, a hundred times a national mirror's
MAX_RECORDS_BYTES = 1 << 32  # provenance, changes, failures: as many lines, each about 1 KB (a sparse TB: hours)


def _read_tag(root: Path, name: str, problems: list[Problem], limit: int = MAX_TAG_BYTES) -> bytes | None:
    """A whole tag file's bytes; None (and a problem if it is unsafe, or larger than limit: a
    copy's planted giant is never read into memory) when it cannot be read."""
    try:
        return read_inside(root, name, limit)
    except FileNotFoundError:
        return None
    except UnsafePath as exc:
        problems.append(Problem("unsafe", name, exc.reason))
    except OSError as exc:
        problems.append(Problem("unreadable", name, exc.strerror or str(exc)))
    return None


# -- records ------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Record:
    """One valid provenance line: the typed entry and the line exactly as archived."""

    entry: Entry
    text: str  # newline included; republished byte for byte
    number: int  # the line number in its file

    @property
    def path(self) -> str:
        return self.entry.path

    @property
    def sha256(self) -> str:
        return self.entry.sha256

    @property
    def size(self) -> int:
        return self.entry.size


def check_entry(entry: Entry) -> str:
    """What is wrong with an entry that parsed, in terms of the site's keys; '' if nothing."""
    if entry.kind not in KINDS:
        return f"kind {entry.kind!r} is neither 'acta' nor 'index'"
    if is_acta_key(entry.key):
        if entry.kind != "acta":
            return f"kind {entry.kind!r}, but {entry.key} is an acta key"
        if not entry.path.rsplit("/", 1)[-1].startswith(entry.key + "."):
            return f"path {entry.path} is not a file of acta {entry.key}"
        return ""
    if is_index_key(entry.key):
        if entry.kind != "index":
            return f"kind {entry.kind!r}, but {entry.key} is an index key"
        if not entry.path.startswith("data/index/"):
            return f"index path {entry.path} is not under data/index/"
        return ""
    return f"key {entry.key!r} is neither an acta key (CCCCCCCCC.MM) nor index/<name>"


_ACTA_KEYS = re.compile(f"{ACTA_KEY.pattern}(?:\x00{ACTA_KEY.pattern})*")  # ACTA_KEY's, joined by NUL


def entries_fit(entries: list[Entry]) -> bool:
    """not any(map(check_entry, entries)), with the acta records (nearly all) checked in bulk:
    their keys matched at once, joined by NUL (which no key holds), and each file name's start."""
    actas = [e for e in entries if e.kind == "acta"]
    if any(map(check_entry, [e for e in entries if e.kind != "acta"])):
        return False
    if not actas:
        return True
    keys = "\x00".join([e.key for e in actas])
    return (keys.count("\x00") == len(actas) - 1 and _ACTA_KEYS.fullmatch(keys) is not None
            and all([e.path[e.path.rfind("/") + 1:].startswith(e.key + ".") for e in actas]))


def iter_records(path: str | os.PathLike, problems: list[Problem] | None = None) -> Iterator[Record]:
    """Each valid line of a provenance file, streamed. A bad line (not UTF-8, not a valid
    entry, a repeated path) is appended to `problems` and skipped; without a list, the first
    one raises NotAMirror. A missing file has no records; a symlinked one is refused."""
    path = Path(path)
    try:
        fh = open_payload(path.parent, path.name, MAX_RECORDS_BYTES)
    except FileNotFoundError:
        return
    except UnsafePath as exc:
        if problems is None:
            raise
        problems.append(Problem("unsafe", path.name, exc.reason))
        return
    except OSError as exc:  # a copy whose files are not this user's to read (made under umask 077)
        if problems is None:
            raise NotAMirror(f"{path}: cannot be read ({exc.strerror or exc})") from None
        problems.append(Problem("unreadable", path.name, exc.strerror or str(exc)))
        return
    seen: dict[str, int] = {}
    with fh:
        for number, raw in enumerate(iter_lines(fh), 1):
            if raw is None:
                reason = f"longer than {MAX_LINE_BYTES:,} bytes; not read"
                if problems is None:
                    raise NotAMirror(f"{path}:{number}: bad provenance line: {reason}")
                problems.append(Problem("provenance", path.name, f"line {number}: {reason}"))
                continue
            if not raw.strip():
                continue
            reason = ""
            try:
                text = raw.decode("utf-8")
                entry = Entry.from_json(text)
            except UnicodeDecodeError:
                reason = "not UTF-8"
            except ValueError as exc:
                reason = str(exc)
            else:
                reason = check_entry(entry)
                if not reason and entry.path in seen:
                    reason = f"{entry.path} is listed twice (lines {seen[entry.path]} and {number})"
            if reason:
                if problems is None:
                    raise NotAMirror(f"{path}:{number}: bad provenance line: {reason}")
                problems.append(Problem("provenance", path.name, f"line {number}: {reason}"))
                continue
            seen[entry.path] = number
            yield Record(entry, text if text.endswith("\n") else text + "\n", number)


def read_entries(path: str | os.PathLike, problems: list[Problem]) -> list[Entry]:
    """[r.entry for r in iter_records(path, problems)], faster: a file whose every line is
    valid is decoded a block of lines at a time (Entry.from_json_block); any other is read
    again through iter_records, which names each bad line."""
    entries = _read_valid(Path(path), lines=False)
    return entries if entries is not None else [r.entry for r in iter_records(path, problems)]


def read_records(path: str | os.PathLike, problems: list[Problem] | None = None) -> list[Record]:
    """list(iter_records(path, problems)), faster: a file whose every line is valid is decoded
    a block of lines at a time, as read_entries does, each record keeping its line and its
    number; any other is read again through iter_records, which names each bad line."""
    records = _read_valid(Path(path), lines=True)
    return records if records is not None else list(iter_records(path, problems))


def _read_valid(path: Path, lines: bool) -> list | None:
    """Every record of a provenance file whose every line is valid, decoded a block of lines at
    a time: Entries, or with lines, Records (each with its line and its number, blank lines
    counted and skipped as iter_records does). None when a line may not be valid, a path is
    listed twice or the file cannot be opened: iter_records then says which, or finds no file."""
    items: list = []
    paths: set[str] = set()
    number = 0  # lines before this block, blank ones included
    try:
        with open_payload(path.parent, path.name, MAX_RECORDS_BYTES) as fh:
            while block := _line_block(fh):
                if lines:
                    split = block.split(b"\n")
                    if not split[-1]:
                        split.pop()  # the block's last newline: no line after it
                    kept = [(n, raw) for n, raw in enumerate(split, number + 1) if raw.strip()]
                    number += len(split)
                    batch = Entry.from_json_lines([raw for _n, raw in kept])
                else:
                    batch = Entry.from_json_block(block)
                if batch is None or not entries_fit(batch):
                    return None
                paths.update([e.path for e in batch])
                items += [Record(e, raw.decode() + "\n", n) for e, (n, raw) in zip(batch, kept)] if lines else batch
                if len(paths) != len(items):
                    return None  # a path listed twice
    except (OSError, UnsafePath, ValueError):  # a line too long
        return None
    return items


MAX_LINE_BYTES = 1 << 24  # a provenance record is a few hundred bytes; a planted giant line is never held whole


def iter_lines(fh: BinaryIO) -> Iterator[bytes | None]:
    """Each line of a binary file, newline included; None for one longer than MAX_LINE_BYTES,
    which is skipped a block at a time, never read whole."""
    while raw := fh.readline(MAX_LINE_BYTES + 1):
        if len(raw) <= MAX_LINE_BYTES or raw.endswith(b"\n"):
            yield raw
            continue
        while (rest := fh.readline(READ_SIZE)) and not rest.endswith(b"\n"):
            pass
        yield None


def _line_block(fh: BinaryIO) -> bytes:
    """The next whole lines, about READ_SIZE bytes of them (b'' at the end); ValueError when the
    last of them may be longer than iter_lines reads (then iter_records says what it is). At most
    MAX_LINE_BYTES are read at first, so that no whole line before the last is longer either."""
    block = fh.read(min(READ_SIZE, MAX_LINE_BYTES))
    if block and not block.endswith(b"\n"):
        start = block.rfind(b"\n") + 1
        block += fh.readline(MAX_LINE_BYTES + 1)
        if len(block) - start > MAX_LINE_BYTES:
            raise ValueError("a line too long")
    return block


def parse_manifest(data: bytes, name: str, problems: list[Problem], *, payload: bool) -> dict[str, str]:
    """{path: sha256} of a manifest; each malformed, unsafe or repeated line is a problem.

    payload=True: every path must lie under data/. False (the tag manifest): none may.
    """
    result: dict[str, str] = {}
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        problems.append(Problem("format", name, "not UTF-8"))
        return result
    if payload and (plain := _plain_payload(text)) is not None:
        return plain  # every line plain and valid, none repeated: what the loop below would find
    for number, line in enumerate(text_lines(text), 1):
        if not line.strip():
            continue
        parsed = split_manifest_line(line)
        if parsed is None:
            problems.append(Problem("format", name, f"line {number}: not a '<sha256>  <path>' line"))
            continue
        digest, rel = parsed
        reason = unsafe_path(rel)
        if not reason and payload != rel.startswith("data/"):
            reason = "outside data/" if payload else "a payload path in the tag manifest"
        if reason:
            problems.append(Problem("unsafe", name, f"line {number}: {rel!r}: {reason}"))
        elif rel in result:
            problems.append(Problem("duplicate", rel, f"listed twice in {name} (line {number} again)"))
        else:
            result[rel] = digest
    return result


# Characters no line of a plain payload manifest holds: '%' (a path with nothing to decode) and
# '\r', the one line end but '\n' that text_lines breaks at (a NUL all_data_paths refuses).
_NOT_PLAIN = ("%", "\r")


def _plain_payload(text: str) -> dict[str, str] | None:
    """{path: sha256} of a payload manifest whose every line is as this tool writes it
    (lowercase sha256, two spaces, a path under data/ whose parts are neither empty, '.' nor
    '..', with nothing to decode and no '\r'), none
    repeated; None for any other, which parse_manifest's loop reads line by line. Checked over
    the whole text at once: a few searches and joins in C, not a pattern matched per line."""
    if any(c in text for c in _NOT_PLAIN):
        return None
    rows = text.split("\n")
    if rows[-1] == "":
        rows.pop()  # the text ends with a newline
    if not rows or "".join([row[64:66] for row in rows]) != "  " * len(rows):
        return None
    digests, paths = [row[:64] for row in rows], [row[66:] for row in rows]
    if not (all_sha256(digests) and all_data_paths(paths)):
        return None
    result = dict(zip(paths, digests))
    return result if len(result) == len(rows) else None


# -- the whole mirror ------------------------------------------------------------------------
@dataclass
class MirrorState:
    """What a mirror says about itself, validated. `problems` names every defect found."""

    root: Path
    manifest: dict[str, str]  # payload manifest: path -> sha256, in file order
    tags: dict[str, str] | None  # tag manifest, None when there is none
    info: dict[str, str]  # bag-info.txt
    entries: list[Entry]  # every valid provenance record, in file order (empty unless records=True)
    payload: list[str]  # regular files found under data/, never through a link
    problems: list[Problem] = field(default_factory=list)

    def latest_actas(self) -> dict[str, Entry]:
        """Each acta's latest version (the highest version number). An acta is what has an
        acta key; `kind` cannot hide one (a contradiction is already a problem)."""
        latest: dict[str, Entry] = {}
        for e in self.entries:
            if is_acta_key(e.key) and (e.key not in latest or e.version >= latest[e.key].version):
                latest[e.key] = e
        return latest

    def latest_index(self) -> Entry | None:
        """The most recently archived index file (the last index record)."""
        return next((e for e in reversed(self.entries) if is_index_key(e.key)), None)

    def counts(self) -> dict[str, int]:
        """What the signed statement counts: manifest lines, provenance bytes, distinct actas."""
        return {"files": len(self.manifest), "bytes": sum(e.size for e in self.entries),
                "actas": len({e.key for e in self.entries if is_acta_key(e.key)})}

    def open(self, rel: str) -> BinaryIO:
        return open_payload(self.root, rel)

    def require_clean(self) -> "MirrorState":
        """Raise NotAMirror naming the first problem: for commands that must not work on a
        mirror whose records do not check out (tally, site, publish)."""
        if self.problems:
            first = self.problems[0]
            more = f" (and {len(self.problems) - 1} more problem(s); run 'acta-mirror verify')" \
                if len(self.problems) > 1 else ""
            raise NotAMirror(f"{self.root}: {first}{more}")
        return self


@dataclass
class Scan:
    """What a walk of data/ (or of one folder in it) found: each regular file as (path, size,
    sha256), the size 0 and sha256 None when not asked for; the folders it was told not to
    enter; every defect; and the files too large to hash unasked (sha256 None, size known)."""

    files: list[tuple[str, int, str | None]] = field(default_factory=list)
    folders: list[str] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    deferred: list[str] = field(default_factory=list)


READ_SIZE = 1 << 20
MEASURE, HASH = 1, 2  # scan levels beyond names: lstat each file; open, read and hash it
HASH_UNASKED = 64 << 20  # HASH reads a larger file only when the caller asks (a copy's sparse terabyte: an hour)
HEAD_BYTES = 64 << 10  # HASH reads this much of each file first: a smaller one needs no fstat


def scan(root: str | os.PathLike, rel: str = "data", level: int = 0, recurse: bool = True) -> Scan:
    """Walk the folder rel of a mirror one folder at a time: each folder is opened once, with
    O_NOFOLLOW relative to its parent, and its files relative to it, so no link is followed
    anywhere. Names come from d_type (no stat per file) unless level asks for sizes or sha256.
    Anything that is not a regular file or a real folder is a problem and is never opened.
    recurse=False: the subfolders are listed in Scan.folders, not entered (to hand them out)."""
    found = Scan()
    try:
        top = _open_folder(root, rel, found.problems)
    except FileNotFoundError:
        return found
    if top is None:
        return found
    stack = [(top, rel, iter(_scan_folder(top, rel, level, found)))]
    try:
        while stack:
            fd, here, subfolders = stack[-1]
            name = next(subfolders, None)
            if name is None:
                os.close(fd)
                stack.pop()
                continue
            path = f"{here}/{name}"
            if not recurse:
                found.folders.append(path)
                continue
            try:
                sub = os.open(name, _DIR_FLAGS, dir_fd=fd)
            except FileNotFoundError:
                continue  # removed while walking: not on disk
            except OSError as exc:
                found.problems.append(_folder_problem(fd, name, path, exc))
                continue
            stack.append((sub, path, iter(_scan_folder(sub, path, level, found))))
    finally:
        for fd, _here, _sub in stack:
            os.close(fd)
    return found


def _open_folder(root: str | os.PathLike, rel: str, problems: list[Problem]) -> int | None:
    """A descriptor of the folder rel below root, reached without following a link (root
    itself may be one: the user named it); None, with the problem named, when it is not a
    real folder. FileNotFoundError when it is not there."""
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    parts = rel.split("/")
    for i, part in enumerate(parts):
        try:
            sub = os.open(part, _DIR_FLAGS, dir_fd=fd)
        except FileNotFoundError:
            os.close(fd)
            raise
        except OSError as exc:
            problems.append(_folder_problem(fd, part, "/".join(parts[:i + 1]), exc))
            os.close(fd)
            return None
        os.close(fd)
        fd = sub
    return fd


def _folder_problem(parent: int, name: str, path: str, exc: OSError) -> Problem:
    if exc.errno in (errno.ELOOP, errno.ENOTDIR):
        try:
            what = _kind_of(os.lstat(name, dir_fd=parent).st_mode)
        except OSError:
            what = "not a folder"
        return Problem("unsafe", path, f"{what}, not a folder; nothing in it was read")
    return Problem("unreadable", path, exc.strerror or str(exc))


def _scan_folder(fd: int, rel: str, level: int, found: Scan) -> list[str]:
    """Record the files of one open folder in found; return its subfolders' names."""
    subfolders = []
    try:
        with os.scandir(fd) as items:
            for item in items:
                if item.is_dir(follow_symlinks=False):
                    subfolders.append(item.name)
                elif item.is_file(follow_symlinks=False):
                    if level == HASH:
                        _hash_file(fd, item.name, f"{rel}/{item.name}", found)
                    else:
                        _measure_file(item, f"{rel}/{item.name}", level, found)
                else:
                    try:
                        what = _kind_of(item.stat(follow_symlinks=False).st_mode)
                    except FileNotFoundError:
                        continue
                    found.problems.append(Problem("unsafe", f"{rel}/{item.name}", f"{what}, not a regular file; not read"))
    except OSError as exc:
        found.problems.append(Problem("unreadable", rel, exc.strerror or str(exc)))
    return subfolders


def _measure_file(item: os.DirEntry, rel: str, level: int, found: Scan) -> None:
    try:
        size = item.stat(follow_symlinks=False).st_size if level else 0
    except FileNotFoundError:
        return  # removed while walking: not on disk
    found.files.append((rel, size, None))


def _hash_file(folder: int, name: str, rel: str, found: Scan) -> None:
    """Open one file the folder listed as regular, check it still is one, hash it."""
    try:
        fd = os.open(name, _FILE_FLAGS, dir_fd=folder)
    except FileNotFoundError:
        return
    except OSError as exc:
        if exc.errno == errno.ELOOP:  # became a link after the folder was listed
            found.problems.append(Problem("unsafe", rel, "a symbolic link, not a regular file"))
            return
        found.problems.append(Problem("unreadable", rel, exc.strerror or str(exc)))
        found.files.append((rel, 0, None))
        return
    try:
        head = os.read(fd, HEAD_BYTES)
        if len(head) < HEAD_BYTES:  # a small file, whole: the folder listed a regular file, whose short read is its end
            found.files.append((rel, len(head), hashlib.sha256(head).hexdigest()))
            return
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            found.problems.append(Problem("unsafe", rel, f"{_kind_of(info.st_mode)}, not a regular file"))
            return
        if info.st_size > HASH_UNASKED:  # the caller hashes it if its records say it is that large
            found.files.append((rel, info.st_size, None))
            found.deferred.append(rel)
            return
        found.files.append((rel, *digest_fd(fd, info.st_size, head)))
    except OSError as exc:
        found.problems.append(Problem("unreadable", rel, exc.strerror or str(exc)))
        found.files.append((rel, 0, None))
    finally:
        os.close(fd)


def digest_fd(fd: int, size_now: int, head: bytes = b"") -> tuple[int, str]:
    """Size and sha256 of an open regular file, read with plain os.read: for the many small
    files of a mirror the buffered-file machinery costs more than the hashing. One read
    takes a small file whole; a short read of a regular file is its end. head: what was read
    of it already, from its start."""
    want = size_now + 1 if size_now < READ_SIZE else READ_SIZE  # after a head, more than is left: still one read
    block = os.read(fd, want)
    if len(block) < want and not head:
        return len(block), hashlib.sha256(block).hexdigest()
    digest, size = hashlib.sha256(head), len(head)
    digest.update(block)
    size += len(block)
    if len(block) < want:
        return size, digest.hexdigest()
    while block := os.read(fd, READ_SIZE):
        digest.update(block)
        size += len(block)
        if len(block) < READ_SIZE:
            break
    return size, digest.hexdigest()


def _walk_payload(root: Path, problems: list[Problem]) -> list[str]:
    """Relative paths of the regular files under data/; anything else there is a problem."""
    found = scan(root)
    problems.extend(found.problems)
    return [rel for rel, _size, _sha in found.files]


WRITER_LOCK = ".acta-mirror/lock"  # held (flock) by a run writing into the mirror (archive.Archive)


def being_written(root: Path) -> str | None:
    """The lock file of a run writing into root right now, or None. Between its first new
    file and its bag files such a mirror is no whole bag, and checking it would call an intact
    copy damaged. Nothing is written: the lock is tried shared and let go at once; one that is
    not a regular file (a copy's) is not a run's."""
    path = root / WRITER_LOCK
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        if stat.S_ISREG(os.fstat(fd).st_mode):
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return str(path)
    except OSError:
        pass
    finally:
        os.close(fd)
    return None


def require_bag(root: str | os.PathLike) -> Path:
    """root as a Path; NotAMirror when it is no bag at all (no bagit.txt or no payload manifest)."""
    root = Path(root)
    if not root.is_dir():
        raise NotAMirror(f"{root}: not a directory")
    if not all(os.path.lexists(root / name) for name in ("bagit.txt", PAYLOAD_MANIFEST)):
        raise NotAMirror(f"{root}: not a mirror (no bagit.txt or {PAYLOAD_MANIFEST})")
    return root


def read_state(root: str | os.PathLike, *, records: bool = True, payload: bool = True) -> MirrorState:
    """Read and validate a mirror. NotAMirror when root is not a bag at all (no bagit.txt or
    no payload manifest); every other defect is a Problem in the result.

    records=False skips provenance; payload=False does not walk data/ (verify walks it
    itself, hashing as it goes).
    """
    root = require_bag(root)
    problems: list[Problem] = []
    _read_tag(root, "bagit.txt", problems)  # only that it is a regular file: its text is not evidence
    raw = _read_tag(root, PAYLOAD_MANIFEST, problems, MAX_MANIFEST_BYTES)
    manifest = parse_manifest(raw, PAYLOAD_MANIFEST, problems, payload=True) if raw is not None else {}
    raw_tags = _read_tag(root, TAG_MANIFEST, problems)
    tags = parse_manifest(raw_tags, TAG_MANIFEST, problems, payload=False) if raw_tags is not None else None
    raw_info = _read_tag(root, BAG_INFO, problems)
    info = {}
    if raw_info is not None:
        try:
            pairs = bag_info_pairs(raw_info.decode("utf-8"))
        except UnicodeDecodeError:
            problems.append(Problem("format", BAG_INFO, "not UTF-8"))
        else:
            info = dict(pairs)
            # which one counts would be a reader's guess (bagit-python takes the first, dict the last)
            for name, kind in (("Payload-Oxum", "oxum"), ("Acta-Mirror-Merkle-Root", "root"),
                               ("Acta-Mirror-Merkle-Size", "root")):
                given = [value for label, value in pairs if label == name]
                if len(given) > 1:
                    problems.append(Problem(kind, BAG_INFO, f"{name} given {len(given)} times: "
                                                            + ", ".join(map(repr, given))))
    entries = read_entries(root / PROVENANCE, problems) if records else []
    files = _walk_payload(root, problems) if payload else []
    return MirrorState(root, manifest, tags, info, entries, files, problems)


def provenance_state(root: str | os.PathLike) -> MirrorState:
    """The records of a folder that holds provenance.jsonl (a mirror, a shard, a staging copy),
    bag or not: for readers that need entries only. NotAMirror without provenance.jsonl."""
    root = Path(root)
    if not os.path.lexists(root / PROVENANCE):
        raise NotAMirror(f"{root}: not a mirror (no {PROVENANCE})")
    problems: list[Problem] = []
    entries = read_entries(root / PROVENANCE, problems)
    return MirrorState(root, {}, None, {}, entries, [], problems)
