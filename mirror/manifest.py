"""Read and write the bag's text files: manifests, bag-info, provenance lines, atomically.

Formats follow BagIt 1.0 (RFC 8493): `<hex>  <path>` manifest lines with CR, LF and % in
paths percent-encoded, and `Label: value` lines in bag-info.txt.
"""
from __future__ import annotations

import contextlib
import ctypes
import hashlib
import json
import os
import stat
import re
import secrets
import shutil
from pathlib import Path
from typing import Iterable, Iterator, NamedTuple

from .models import Entry, NotAMirror, UnsafePath

BAGIT_TXT = "BagIt-Version: 1.0\nTag-File-Character-Encoding: UTF-8\n"
PAYLOAD_MANIFEST = "manifest-sha256.txt"
TAG_MANIFEST = "tagmanifest-sha256.txt"
BAG_INFO = "bag-info.txt"
PROVENANCE = "provenance.jsonl"
FAILURES = "failures.jsonl"
CHANGES = "changes.jsonl"
RECEIPTS = "publish-receipts.jsonl"  # in the bag, outside the tag manifest and the published DAG


_LINE_END = re.compile(r"\r\n|\r|\n")


def text_lines(text: str) -> list[str]:
    """The lines of a bag's text file (a manifest, bag-info.txt, a signature): BagIt ends a line
    with LF, CR or CRLF and with nothing else, as sha256sum, minisign and bagit-python read
    them. str.splitlines() also breaks at U+2028, U+0085, VT, FF and FS to RS, which a file name
    or a value may hold: a copy could show one line to cat and grep and another to the reader."""
    lines = _LINE_END.split(text)
    if lines[-1] == "":
        lines.pop()  # the text ends with a line end (or is empty)
    return lines


def encode_path(path: str) -> str:
    return path.replace("%", "%25").replace("\n", "%0A").replace("\r", "%0D")


def decode_path(path: str) -> str:
    return path.replace("%0A", "\n").replace("%0a", "\n").replace("%0D", "\r").replace(
        "%0d", "\r").replace("%25", "%")


def _syncfs():
    """libc's syncfs(2), or None where the C library has none (not Linux)."""
    try:
        return ctypes.CDLL(None, use_errno=True).syncfs
    except (OSError, AttributeError):
        return None


_SYNCFS = _syncfs()


def sync_filesystem(path: str | os.PathLike) -> bool:
    """Make every write so far on the file system holding path durable, with one call.

    A batch of new files then costs one journal commit instead of one fsync (and commit)
    per file, and the fetcher's own file creation no longer waits behind those commits.
    Returns False where syncfs(2) does not exist: the caller fsyncs file by file instead.
    """
    if _SYNCFS is None:
        return False
    fd = os.open(path, os.O_RDONLY)
    try:
        if _SYNCFS(fd) != 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err), str(path))
    finally:
        os.close(fd)
    return True


def fsync_dir(path: str | os.PathLike) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def create_beside(path: Path, mode: int = 0o644) -> tuple[int, str]:
    """A new file to be renamed over path, made as any file of the user's is (0644 less the
    umask; a secret asks 0600): mkstemp's 0600 left the bag's manifests unreadable to those the
    user shares the mirror with (a group, a web server's user) while its images were readable."""
    tmp = f"{path.parent}/.{path.name}.{secrets.token_hex(8)}"
    return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode), tmp


def atomic_write(path: str | os.PathLike, data: bytes | Iterable[bytes]) -> None:
    """Write a whole file so that a reader sees either the old or the new one, never half.

    data is the bytes, or an iterable of chunks written as they come (a large manifest is
    never held whole). A file whose bytes would not change is left as it is, mtime too.
    """
    path = Path(path)
    chunks = [data] if isinstance(data, (bytes, bytearray)) else data
    fd, tmp = create_beside(path)
    try:
        digest, size = hashlib.sha256(), 0
        with os.fdopen(fd, "wb") as fh:
            for chunk in chunks:
                fh.write(chunk)
                digest.update(chunk)
                size += len(chunk)
            if _same_file(path, size, digest.digest()):
                os.unlink(tmp)
                return
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    fsync_dir(path.parent)


def own_copy(path: str | os.PathLike) -> None:
    """Give a regular file that has another name too (a hard link: a backup's copy, or one
    planted to a file of ours) a copy of its own under this name, streamed, before anything is
    appended to it: the other name keeps its bytes. Nothing to do for a file with one name,
    for no file, or for one that is no regular file (the caller's reader refuses that)."""
    path = Path(path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except FileNotFoundError:
        return
    with open(fd, "rb") as src:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_nlink < 2:
            return
        out_fd, tmp = create_beside(path)
        try:
            with os.fdopen(out_fd, "wb") as out:
                shutil.copyfileobj(src, out, 1 << 20)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
    fsync_dir(path.parent)


def _same_file(path: Path, size: int, sha256: bytes) -> bool:
    try:
        if path.stat().st_size != size:
            return False
        with open(path, "rb") as fh:
            return hashlib.file_digest(fh, "sha256").digest() == sha256
    except FileNotFoundError:
        return False


def read_small_file(path: str | os.PathLike, limit: int) -> bytes:
    """A small file the user names (a key, a proof): a regular file of at most `limit` bytes.
    /dev/zero, a FIFO or a huge file raise ValueError at once instead of eating memory or hanging;
    so does one that reads more than it said (a procfs file says 0 bytes), never cut short."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise ValueError("not a regular file")
        if info.st_size > limit:
            raise ValueError(f"larger than {limit} bytes")
        with os.fdopen(fd, "rb", closefd=False) as fh:
            data = fh.read(limit + 1)
        if len(data) > limit:
            raise ValueError(f"larger than {limit} bytes")
        return data
    finally:
        os.close(fd)


def format_manifest(items: Iterable[tuple[str, str]]) -> bytes:
    """items: (relative path, hex digest); sorted by path for stable bytes."""
    lines = [f"{digest}  {encode_path(path)}\n" for path, digest in sorted(items)]
    return "".join(lines).encode("utf-8")


def read_manifest(path: str | os.PathLike) -> dict[str, str]:
    """Parse a sha256 manifest into {relative path: hex}; NotAMirror on a malformed line."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise NotAMirror(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise NotAMirror(f"{path}: unreadable ({exc.__class__.__name__})") from None
    return parse_manifest_text(text, str(path))


_HEX64 = re.compile(r"[0-9a-fA-F]{64}")


def split_manifest_line(line: str) -> tuple[str, str] | None:
    """(lowercase hex digest, decoded path) of one `<sha256>  <path>` line, or None if it is not one."""
    digest, sep, rel = line.partition(" ")
    rel = rel.lstrip(" *")
    if not sep or not rel or not _HEX64.fullmatch(digest):
        return None
    return digest.lower(), decode_path(rel)


def parse_manifest_text(text: str, path: str = "manifest") -> dict[str, str]:
    """{relative path: hex}; NotAMirror on a malformed or repeated line (sha256sum -c fails on both)."""
    result: dict[str, str] = {}
    for number, line in enumerate(text_lines(text), 1):
        if not line.strip():
            continue
        parsed = split_manifest_line(line)
        if parsed is None:
            raise NotAMirror(f"{path}:{number}: not a '<sha256>  <path>' line")
        digest, rel = parsed
        if rel in result:
            raise NotAMirror(f"{path}:{number}: {rel} is listed twice")
        result[rel] = digest
    return result


def read_bag_info(path: str | os.PathLike) -> dict[str, str]:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError) as exc:
        raise NotAMirror(f"{path}: unreadable ({exc.__class__.__name__})") from None
    return parse_bag_info(text)


def parse_bag_info(text: str) -> dict[str, str]:
    """bag-info.txt's labels and values (bag_info_pairs); a label given twice keeps its last value."""
    return dict(bag_info_pairs(text))


def bag_info_pairs(text: str) -> list[tuple[str, str]]:
    """Each `Label: value` line in order, continuation lines folded in; lines without a colon
    are skipped. A label may come more than once (BagIt lets most repeat)."""
    pairs: list[tuple[str, str]] = []
    label = None
    for line in text_lines(text):
        if line[:1] in (" ", "\t") and label:
            pairs[-1] = (label, pairs[-1][1] + " " + line.strip())
            continue
        label, sep, value = line.partition(":")
        if not sep:
            label = None
            continue
        label = label.strip()
        pairs.append((label, value.strip()))
    return pairs


def format_bag_info(info: dict[str, str]) -> bytes:
    return "".join(f"{k}: {v}\n" for k, v in info.items()).encode("utf-8")


def iter_provenance(path: str | os.PathLike) -> Iterator[Entry]:
    """Each entry of a provenance file, streamed and validated (state.iter_records);
    NotAMirror naming the first bad line."""
    return (record.entry for record in provenance_lines(path))


def read_provenance(path: str | os.PathLike) -> list[Entry]:
    """Every entry of a provenance file; NotAMirror naming the first bad line."""
    return list(iter_provenance(path))


class Line(NamedTuple):
    """What a provenance line gives a publisher: the fields a manifest needs, and the text itself.
    (state.Record has the same attributes, and the typed entry.)"""

    path: str
    sha256: str
    size: int
    text: str  # the line exactly as archived, newline included


def provenance_lines(path: str | os.PathLike):
    """Each provenance line as a state.Record (path, sha256, size, the text byte for byte, the
    typed entry), validated by the one reader; NotAMirror naming the first bad line."""
    from .state import iter_records  # state.py reads the formats defined here

    return iter_records(path)


def iter_provenance_core(path: str | os.PathLike):
    """(path, sha256, size) of each provenance line, streamed."""
    for line in provenance_lines(path):
        yield line.path, line.sha256, line.size


TORN_LINE_BYTES = 1 << 24  # a last line longer than this is no record: cut without being parsed
_BLOCK = 1 << 20


def repair_torn_tail(path: str | os.PathLike, parse=None, keep: str | os.PathLike | None = None) -> int:
    """Cut a last line left half-written by a killed run; returns the bytes removed. A last
    line is whole when it ends in a newline and `parse` (for provenance Entry.from_json_checked,
    which for one line costs less than loading the fast decoder) takes it. With `keep`, the
    bytes cut are first copied (durably) to that new file: a last line that is damage rather
    than a torn write is then set aside, never lost. Nothing is held whole in memory: a tail
    of gigabytes without a newline costs a block at a time.

    Only the tail can be torn (lines are appended), so a bad line elsewhere is left for
    read_provenance to report: that is damage, not a crash, and is never cut.
    """
    parse = parse or Entry.from_json_checked
    try:
        fh = open(os.open(path, os.O_RDWR | os.O_NOFOLLOW), "rb+")
    except FileNotFoundError:
        return 0
    with fh:
        end = fh.seek(0, os.SEEK_END)
        if end == 0:
            return 0
        fh.seek(end - 1)
        if fh.read(1) == b"\n":
            keep_at = _after_last_newline(fh, end - 1)
            if end - keep_at <= TORN_LINE_BYTES:
                fh.seek(keep_at)
                try:
                    parse(fh.read(end - keep_at).decode("utf-8"))
                    return 0
                except (ValueError, UnicodeDecodeError, RecursionError):
                    pass
        else:
            keep_at = _after_last_newline(fh, end)
        if keep is not None:
            _keep_range(fh, keep_at, end, keep)
        fh.truncate(keep_at)
        fh.flush()
        os.fsync(fh.fileno())
        return end - keep_at


def _after_last_newline(fh, before: int) -> int:
    """The offset just after the last newline in fh before offset `before` (0 if none)."""
    while before > 0:
        start = max(0, before - _BLOCK)
        fh.seek(start)
        found = fh.read(before - start).rfind(b"\n")
        if found >= 0:
            return start + found + 1
        before = start
    return 0


def _keep_range(fh, start: int, end: int, path: str | os.PathLike) -> None:
    """Copy fh's bytes start..end to a new file (never over one, never through a link), durably."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
    with os.fdopen(fd, "wb") as out:
        fh.seek(start)
        while start < end:
            block = fh.read(min(_BLOCK, end - start))
            if not block:
                break
            out.write(block)
            start += len(block)
        out.flush()
        os.fsync(out.fileno())
    fsync_dir(path.parent)


def append_receipt(root: str | os.PathLike, receipt: dict) -> None:
    """Record a publish in the bag. Not a tag-manifest file: publishing never changes what it published."""
    path = Path(root) / RECEIPTS
    line = (json.dumps(receipt, ensure_ascii=False, sort_keys=True) + "\n").encode("utf-8")
    own_copy(path)  # a hard link's other name (a backup's copy, or a file of ours) keeps its bytes
    # O_NOFOLLOW: a copy made elsewhere may carry a symlink here, pointing at a file of ours.
    # O_RDWR: a FIFO here opens without waiting for a reader, and is then refused.
    fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK, 0o644)
    if not stat.S_ISREG(os.fstat(fd).st_mode):  # a FIFO, or a device node a copy unpacked as root could carry
        os.close(fd)
        raise UnsafePath(RECEIPTS, "not a regular file; the receipt was not written")
    with open(fd, "ab") as fh:
        fh.write(line)
        fh.flush()
        os.fsync(fh.fileno())
