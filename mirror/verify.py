"""Verify a mirror offline: collect every Problem (missing, changed, unlisted, tags), then report.

It reads nothing but the mirror directory. Payload hashing runs in a pool of worker
processes, one per core, each hashing a slice of the files.
"""
from __future__ import annotations

import hashlib
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from .manifest import (BAG_INFO, PAYLOAD_MANIFEST, PROVENANCE, TAG_MANIFEST, read_bag_info,
                       read_manifest, read_provenance)
from .models import NotAMirror, Problem

READ_SIZE = 1024 * 1024


def sha256_file(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb", buffering=0) as fh:
        buf = bytearray(READ_SIZE)
        view = memoryview(buf)
        while n := fh.readinto(buf):
            digest.update(view[:n])
    return digest.hexdigest()


def _hash_slice(args: tuple[str, list[str]]) -> list[tuple[str, str | None]]:
    root, rels = args
    out = []
    for rel in rels:
        try:
            out.append((rel, sha256_file(os.path.join(root, rel))))
        except FileNotFoundError:
            out.append((rel, None))
        except OSError as exc:
            out.append((rel, f"error:{exc.strerror}"))
    return out


def hash_many(root: Path, rels: list[str], workers: int | None = None) -> dict[str, str | None]:
    """sha256 of many files under root, spread over processes in a few large slices."""
    workers = workers or os.cpu_count() or 1
    if workers == 1 or len(rels) < 64:
        return dict(_hash_slice((str(root), rels)))
    slices = [rels[i::workers * 4] for i in range(workers * 4)]
    result: dict[str, str | None] = {}
    with ProcessPoolExecutor(max_workers=workers) as pool:
        for part in pool.map(_hash_slice, [(str(root), s) for s in slices if s]):
            result.update(part)
    return result


def _payload_files(root: Path) -> set[str]:
    found = set()
    for dirpath, _dirs, files in os.walk(root / "data"):
        for name in files:
            found.add((Path(dirpath) / name).relative_to(root).as_posix())
    return found


def verify(root: str | os.PathLike, *, fast: bool = False, workers: int | None = None) -> list[Problem]:
    """Every problem in the bag; an empty list means intact. NotAMirror if it is no bag at all."""
    root = Path(root)
    if not root.is_dir():
        raise NotAMirror(f"{root}: not a directory")
    if not (root / "bagit.txt").is_file() or not (root / PAYLOAD_MANIFEST).is_file():
        raise NotAMirror(f"{root}: not a mirror (no bagit.txt or {PAYLOAD_MANIFEST})")
    problems: list[Problem] = []
    manifest = read_manifest(root / PAYLOAD_MANIFEST)
    on_disk = _payload_files(root)

    info = read_bag_info(root / BAG_INFO)
    oxum = info.get("Payload-Oxum", "")
    try:
        want_bytes, want_count = (int(x) for x in oxum.split("."))
    except ValueError:
        problems.append(Problem("oxum", BAG_INFO, f"Payload-Oxum {oxum!r} is not <bytes>.<count>"))
    else:
        have_bytes = sum((root / rel).stat().st_size for rel in on_disk)
        if (have_bytes, len(on_disk)) != (want_bytes, want_count):
            problems.append(Problem("oxum", BAG_INFO,
                                    f"Payload-Oxum says {want_bytes}.{want_count}, data/ holds {have_bytes}.{len(on_disk)}"))

    for rel in sorted(set(manifest) - on_disk):
        problems.append(Problem("missing", rel, "listed in the manifest, not on disk"))
    for rel in sorted(on_disk - set(manifest)):
        problems.append(Problem("unlisted", rel, "on disk, not in the manifest"))
    if fast:
        return problems

    tags = read_manifest(root / TAG_MANIFEST) if (root / TAG_MANIFEST).exists() else None
    if tags is None:
        problems.append(Problem("tag-missing", TAG_MANIFEST, "no tag manifest"))
    else:
        for rel, want in sorted(tags.items()):
            if not (root / rel).is_file():
                problems.append(Problem("tag-missing", rel, "listed in the tag manifest, not on disk"))
            elif sha256_file(root / rel) != want:
                problems.append(Problem("tag-changed", rel, "sha256 differs from the tag manifest"))

    present = sorted(set(manifest) & on_disk)
    for rel, got in sorted(hash_many(root, present, workers).items()):
        if got is None:
            problems.append(Problem("missing", rel, "vanished while checking"))
        elif got.startswith("error:"):
            problems.append(Problem("unreadable", rel, got[6:]))
        elif got != manifest[rel]:
            problems.append(Problem("changed", rel, f"sha256 {got} but the manifest says {manifest[rel]}"))

    try:
        entries = read_provenance(root / PROVENANCE)
    except NotAMirror as exc:
        problems.append(Problem("provenance", PROVENANCE, str(exc)))
    else:
        recorded = {e.path: e.sha256 for e in entries}
        for rel, want in sorted(manifest.items()):
            if rel not in recorded:
                problems.append(Problem("provenance", rel, "in the manifest, no provenance line"))
            elif recorded[rel] != want:
                problems.append(Problem("provenance", rel, "provenance sha256 differs from the manifest"))
        for rel in sorted(set(recorded) - set(manifest)):
            problems.append(Problem("provenance", rel, "has a provenance line, not in the manifest"))
    return problems
