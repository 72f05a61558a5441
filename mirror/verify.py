"""Verify a mirror offline: collect every Problem (missing, changed, unlisted, tags), then report.

It reads nothing but the mirror directory. Payload hashing runs in a pool of worker
processes, one per core, while the main process checks the tag files and provenance.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

from .manifest import (BAG_INFO, PAYLOAD_MANIFEST, PROVENANCE, TAG_MANIFEST, iter_provenance_core,
                       read_bag_info, read_manifest)
from .models import NotAMirror, Problem
from .workers import pool


READ_SIZE = 1 << 20


def _digest(path: str | os.PathLike) -> tuple[str, int]:
    """sha256 and size of a file, read with plain os.read: for the many small files of a
    mirror the buffered-file machinery costs more than the hashing."""
    fd = os.open(path, os.O_RDONLY)
    try:
        digest, size = hashlib.sha256(), 0
        while block := os.read(fd, READ_SIZE):
            digest.update(block)
            size += len(block)
        return digest.hexdigest(), size
    finally:
        os.close(fd)


def sha256_file(path: str | os.PathLike) -> str:
    return _digest(path)[0]


def _hash_slice(args: tuple[str, list[str]]) -> list[tuple[str, str | None, int]]:
    """(relative path, sha256 or None if missing or 'error:…', size) for each file."""
    root, rels = args
    out = []
    for rel in rels:
        try:
            out.append((rel, *_digest(os.path.join(root, rel))))
        except FileNotFoundError:
            out.append((rel, None, 0))
        except OSError as exc:
            out.append((rel, f"error:{exc.strerror}", 0))
    return out


def hash_many(root: Path, rels: list[str], workers: int | None = None):
    """Start hashing many files across processes; returns an iterator of _hash_slice results.

    Slices are interleaved so every worker gets a similar mix; the caller can do other
    work before it iterates.
    """
    workers = workers or os.cpu_count() or 1
    if workers == 1 or len(rels) < 256:
        return iter([_hash_slice((str(root), rels))])
    n = workers * 4
    executor = pool(workers)
    futures = [executor.submit(_hash_slice, (str(root), rels[i::n])) for i in range(n)]

    def results():
        try:
            for f in futures:
                yield f.result()
        finally:
            executor.shutdown()
    return results()


def _payload_files(root: Path) -> list[str]:
    """Relative paths of every file under data/ (no stat calls)."""
    found: list[str] = []
    stack = [(str(root / "data"), "data")]
    while stack:
        path, rel = stack.pop()
        try:
            with os.scandir(path) as it:
                for entry in it:
                    if entry.is_dir(follow_symlinks=False):
                        stack.append((entry.path, f"{rel}/{entry.name}"))
                    else:
                        found.append(f"{rel}/{entry.name}")
        except FileNotFoundError:
            pass
    return found


def verify(root: str | os.PathLike, *, fast: bool = False, workers: int | None = None,
           cids: bool = False, progress=None) -> list[Problem]:
    """Every problem in the bag; an empty list means intact. NotAMirror if it is no bag at all.
    progress(done, total), if given, is told as payload files are hashed."""
    root = Path(root)
    if not root.is_dir():
        raise NotAMirror(f"{root}: not a directory")
    if not (root / "bagit.txt").is_file() or not (root / PAYLOAD_MANIFEST).is_file():
        raise NotAMirror(f"{root}: not a mirror (no bagit.txt or {PAYLOAD_MANIFEST})")
    problems: list[Problem] = []
    manifest = read_manifest(root / PAYLOAD_MANIFEST)
    on_disk = set(_payload_files(root))
    present = sorted(set(manifest) & on_disk)
    pending = None if fast else hash_many(root, present, workers)

    for rel in sorted(set(manifest) - on_disk):
        problems.append(Problem("missing", rel, "listed in the manifest, not on disk"))
    for rel in sorted(on_disk - set(manifest)):
        problems.append(Problem("unlisted", rel, "on disk, not in the manifest"))

    if not fast:
        tags = read_manifest(root / TAG_MANIFEST) if (root / TAG_MANIFEST).exists() else None
        if tags is None:
            problems.append(Problem("tag-missing", TAG_MANIFEST, "no tag manifest"))
        else:
            for rel, want in sorted(tags.items()):
                if not (root / rel).is_file():
                    problems.append(Problem("tag-missing", rel, "listed in the tag manifest, not on disk"))
                elif sha256_file(root / rel) != want:
                    problems.append(Problem("tag-changed", rel, "sha256 differs from the tag manifest"))
        try:
            recorded = {p: h for p, h, _size in iter_provenance_core(root / PROVENANCE)}
        except NotAMirror as exc:
            problems.append(Problem("provenance", PROVENANCE, str(exc)))
        else:
            for rel, want in sorted(manifest.items()):
                if rel not in recorded:
                    problems.append(Problem("provenance", rel, "in the manifest, no provenance line"))
                elif recorded[rel] != want:
                    problems.append(Problem("provenance", rel, "provenance sha256 differs from the manifest"))
            for rel in sorted(set(recorded) - set(manifest)):
                problems.append(Problem("provenance", rel, "has a provenance line, not in the manifest"))

    sizes: dict[str, int] = {}
    if pending is not None:
        found = []
        for part in pending:
            found.extend(part)
            if progress:
                progress(len(found), len(present))
        for rel, got, size in sorted(found):
            sizes[rel] = size
            if got is None:
                problems.append(Problem("missing", rel, "vanished while checking"))
            elif got.startswith("error:"):
                problems.append(Problem("unreadable", rel, got[6:]))
            elif got != manifest[rel]:
                problems.append(Problem("changed", rel, f"sha256 {got} but the manifest says {manifest[rel]}"))
    for rel in on_disk:
        if rel not in sizes:
            try:
                sizes[rel] = os.stat(root / rel).st_size
            except OSError:
                sizes[rel] = 0

    if cids and not fast:
        problems.extend(_check_cids(root, manifest))

    info = read_bag_info(root / BAG_INFO)
    oxum = info.get("Payload-Oxum", "")
    try:
        want_bytes, want_count = (int(x) for x in oxum.split("."))
    except ValueError:
        problems.append(Problem("oxum", BAG_INFO, f"Payload-Oxum {oxum!r} is not <bytes>.<count>"))
    else:
        have = (sum(sizes.values()), len(on_disk))
        if have != (want_bytes, want_count):
            problems.append(Problem("oxum", BAG_INFO, f"Payload-Oxum says {want_bytes}.{want_count}, "
                                                      f"data/ holds {have[0]}.{have[1]}"))
    return problems


def _check_cids(root: Path, manifest: dict[str, str]) -> list[Problem]:
    """Every provenance CID must be the one the unixfs-v1-2025 profile gives the file's bytes."""
    import json

    from .cid import CHUNK_SIZE, file_cid, raw_cid

    problems = []
    with open(root / PROVENANCE, encoding="utf-8", errors="replace") as fh:
        for line in fh:
            try:
                obj = json.loads(line)
                path, cid, size = obj["path"], obj.get("cid", ""), int(obj["size"])
            except (ValueError, KeyError, TypeError, AttributeError):
                continue  # a damaged line: the provenance check has named it already
            if not isinstance(path, str) or path not in manifest or not (root / path).is_file():
                continue
            want = raw_cid(manifest[path]) if size <= CHUNK_SIZE else file_cid(root / path, size)
            if cid != want:
                problems.append(Problem("cid", path, f"provenance says {cid or 'nothing'}, the bytes give {want}"))
    return problems
