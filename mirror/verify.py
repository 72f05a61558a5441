"""Verify a mirror offline: collect every Problem (missing, changed, unlisted, tags), then report.

It reads nothing but the mirror directory. Payload hashing runs in a pool of worker
processes, one per core, while the main process checks the tag files and provenance.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

from .manifest import BAG_INFO, PROVENANCE, TAG_MANIFEST
from .models import Problem, UnsafePath
from .state import MirrorState, Opener, read_state
from .workers import pool


READ_SIZE = 1 << 20


def _digest_fd(fd: int) -> tuple[str, int]:
    """sha256 and size of an open file, read with plain os.read: for the many small files of a
    mirror the buffered-file machinery costs more than the hashing."""
    try:
        digest, size = hashlib.sha256(), 0
        while block := os.read(fd, READ_SIZE):
            digest.update(block)
            size += len(block)
        return digest.hexdigest(), size
    finally:
        os.close(fd)


def sha256_file(path: str | os.PathLike) -> str:
    return _digest_fd(os.open(path, os.O_RDONLY))[0]


def _hash_slice(args: tuple[str, list[str]]) -> list[tuple[str, str | None, int]]:
    """(relative path, sha256 or None if missing or 'error:…' or 'unsafe:…', size) for each file, each
    opened without following a link and only if it is a regular file."""
    root, rels = args
    out = []
    with Opener(root) as opener:
        for rel in rels:
            try:
                out.append((rel, *_digest_fd(opener.open_fd(rel))))
            except FileNotFoundError:
                out.append((rel, None, 0))
            except UnsafePath as exc:
                out.append((rel, f"unsafe:{exc.reason}", 0))
            except OSError as exc:
                out.append((rel, f"error:{exc.strerror}", 0))
    return out


def hash_many(root: Path, rels: list[str], workers: int | None = None):
    """Start hashing many files across processes; returns an iterator of _hash_slice results.

    Each worker takes runs of neighbouring paths (four per worker, handed out as workers
    free up), so a folder is opened once per run, not once per file; the caller can do
    other work before it iterates.
    """
    workers = workers or os.cpu_count() or 1
    if workers == 1 or len(rels) < 256:
        return iter([_hash_slice((str(root), rels))])
    size = -(-len(rels) // (workers * 4))
    executor = pool(workers)
    futures = [executor.submit(_hash_slice, (str(root), rels[i:i + size])) for i in range(0, len(rels), size)]

    def results():
        try:
            for f in futures:
                yield f.result()
        finally:
            executor.shutdown()
    return results()


def verify(root: str | os.PathLike, *, fast: bool = False, workers: int | None = None,
           cids: bool = False, state: MirrorState | None = None, progress=None) -> list[Problem]:
    """Every problem in the bag; an empty list means intact. NotAMirror if it is no bag at all.
    `state`: the mirror as read_state already read it (saves reading it twice); progress(done,
    total), if given, is told as payload files are hashed."""
    root = Path(root)
    state = state or read_state(root, records=not fast)
    problems: list[Problem] = list(state.problems)
    manifest = state.manifest
    on_disk = set(state.payload)
    present = sorted(set(manifest) & on_disk)
    pending = None if fast else hash_many(root, present, workers)
    unsafe = {p.path for p in state.problems if p.kind == "unsafe"}

    for rel in sorted(set(manifest) - on_disk - unsafe):
        problems.append(Problem("missing", rel, "listed in the manifest, not on disk"))
    for rel in sorted(on_disk - set(manifest)):
        problems.append(Problem("unlisted", rel, "on disk, not in the manifest"))

    if not fast:
        if state.tags is None:
            problems.append(Problem("tag-missing", TAG_MANIFEST, "no tag manifest"))
        else:
            tag_hashes = hash_many(root, sorted(state.tags), 1)
            for rel, got, _size in next(tag_hashes):
                if got is None:
                    problems.append(Problem("tag-missing", rel, "listed in the tag manifest, not on disk"))
                elif rel in unsafe:
                    continue  # named already
                elif ":" in got:
                    kind, _, why = got.partition(":")
                    problems.append(Problem("unsafe" if kind == "unsafe" else "unreadable", rel, why))
                elif got != state.tags[rel]:
                    problems.append(Problem("tag-changed", rel, "sha256 differs from the tag manifest"))
        recorded = {e.path: e.sha256 for e in state.entries}
        if not any(p.path == PROVENANCE and p.kind in ("provenance", "unsafe") for p in state.problems):
            for rel, want in manifest.items():
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
            elif ":" in got:
                kind, _, why = got.partition(":")
                problems.append(Problem("unsafe" if kind == "unsafe" else "unreadable", rel, why))
            elif got != manifest[rel]:
                problems.append(Problem("changed", rel, f"sha256 {got} but the manifest says {manifest[rel]}"))
    for rel in on_disk:
        if rel not in sizes:
            try:
                sizes[rel] = os.lstat(root / rel).st_size
            except OSError:
                sizes[rel] = 0

    if cids and not fast:
        problems.extend(_check_cids(root, state))

    oxum = state.info.get("Payload-Oxum", "")
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


def _check_cids(root: Path, state) -> list[Problem]:
    """Every provenance CID must be the one the unixfs-v1-2025 profile gives the file's bytes."""
    from .cid import CHUNK_SIZE, file_cid, raw_cid

    problems = []
    on_disk = set(state.payload)
    for e in state.entries:
        if e.path not in state.manifest or e.path not in on_disk:
            continue  # missing or unlisted: named already
        want = raw_cid(state.manifest[e.path]) if e.size <= CHUNK_SIZE else file_cid(root / e.path, e.size)
        if e.cid != want:
            problems.append(Problem("cid", e.path, f"provenance says {e.cid or 'nothing'}, the bytes give {want}"))
    return problems
