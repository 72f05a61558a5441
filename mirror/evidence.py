"""Tamper evidence: the signed root statement, inclusion proofs, and comparing two copies.

The statement `signed-root.json` gives the manifest's RFC 9162 Merkle root with the run's
metadata; `signed-root.json.minisig` signs it (minisign format). A proof ties one file to
a root. `diff` compares two mirrors, manifests or index CSVs by acta key.
"""
from __future__ import annotations

import json
import os
import re
from datetime import datetime, timezone
from pathlib import Path

from . import __version__
from .manifest import (BAG_INFO, PAYLOAD_MANIFEST, PROVENANCE, atomic_write, provenance_lines, read_bag_info,
                       read_manifest)
from .merkle import inclusion_path, leaf_data, leaf_hash, manifest_leaves, root_of_leaves, verify_inclusion
from .models import NotAMirror, Problem, UsageError
from .sign import SignatureError, load_public, load_secret, sign_file, verify_file

STATEMENT = "signed-root.json"
SIGNATURE = STATEMENT + ".minisig"


def manifest_root(bag: Path) -> tuple[str, int]:
    items = list(read_manifest(bag / PAYLOAD_MANIFEST).items())
    return root_of_leaves(manifest_leaves(items)).hex(), len(items)


def sign_bag(bag: str | os.PathLike, key_path: str | os.PathLike, source: str = "") -> str:
    """Write and sign the root statement, then refresh the tag manifest; returns the root."""
    from .archive import write_tag_manifest

    bag = Path(bag)
    if not (bag / PAYLOAD_MANIFEST).exists():
        raise NotAMirror(f"{bag}: not a mirror (no {PAYLOAD_MANIFEST})")
    key = load_secret(key_path)
    root, size = manifest_root(bag)
    info = read_bag_info(bag / BAG_INFO)
    lines = list(provenance_lines(bag / PROVENANCE))
    statement = {
        "merkle_root": root, "tree_size": size,
        "leaves": "manifest-sha256.txt lines, in order; leaf = sha256(0x00 || line), node = sha256(0x01 || l || r)",
        "source": source or info.get("Acta-Mirror-Source", ""),
        "signed_at": datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z"),
        "tool": f"acta-mirror {__version__}",
        "counts": {"files": size, "bytes": sum(x.size for x in lines),
                   "actas": len({json.loads(x.text).get("key") for x in lines if '"kind": "acta"' in x.text})},
    }
    atomic_write(bag / STATEMENT, (json.dumps(statement, indent=1, sort_keys=True) + "\n").encode())
    comment = f"acta-mirror merkle root {root} size {size}"
    atomic_write(bag / SIGNATURE, sign_file(bag / STATEMENT, key, comment).encode())
    write_tag_manifest(bag)
    return root


def check_root(bag: Path, pubkey: str | os.PathLike | None) -> list[Problem]:
    """The Merkle root in bag-info (and, with a key, the signed statement) must match the manifest."""
    problems = []
    root, size = manifest_root(bag)
    recorded = read_bag_info(bag / BAG_INFO).get("Acta-Mirror-Merkle-Root")
    if recorded and recorded != root:
        problems.append(Problem("root", BAG_INFO, f"records Merkle root {recorded}, the manifest gives {root}"))
    if pubkey is None:
        return problems
    public = load_public(pubkey)
    try:
        trusted = verify_file(bag / STATEMENT, bag / SIGNATURE, public)
    except SignatureError as exc:
        return problems + [Problem("signature", SIGNATURE, str(exc))]
    try:
        statement = json.loads((bag / STATEMENT).read_text(encoding="utf-8"))
        signed_root = statement["merkle_root"]
    except (OSError, ValueError, KeyError, TypeError):
        return problems + [Problem("signature", STATEMENT, "not a root statement")]
    if signed_root != root or f"merkle root {root} " not in trusted + " ":
        problems.append(Problem("root", STATEMENT, f"signed root {signed_root}, the manifest gives {root}"))
    return problems


def prove(bag: str | os.PathLike, path: str) -> dict:
    """An inclusion proof for one payload file of the bag, as a small JSON-able dict."""
    bag = Path(bag)
    rel = _relative(bag, path)
    items = sorted(read_manifest(bag / PAYLOAD_MANIFEST).items())
    index = next((i for i, (p, _h) in enumerate(items) if p == rel), None)
    if index is None:
        raise UsageError(f"{rel} is not in {bag / PAYLOAD_MANIFEST}")
    leaves = manifest_leaves(items)
    return {"version": 1, "path": rel, "sha256": items[index][1], "leaf_index": index,
            "tree_size": len(items), "root": root_of_leaves(leaves).hex(),
            "audit_path": [h.hex() for h in inclusion_path(leaves, index)]}


def check_proof(file: str | os.PathLike, proof: dict, root: str) -> None:
    """Raise SignatureError unless the file's bytes sit in the tree with this root."""
    import hashlib

    try:
        with open(file, "rb") as fh:
            digest = hashlib.file_digest(fh, "sha256").hexdigest()
    except OSError as exc:
        raise UsageError(f"{file}: {exc.strerror}") from None
    try:
        path, index, size = proof["path"], int(proof["leaf_index"]), int(proof["tree_size"])
        audit = [bytes.fromhex(h) for h in proof["audit_path"]]
        want_root = bytes.fromhex(root)
    except (KeyError, TypeError, ValueError):
        raise UsageError("the proof or the root is malformed (expected the JSON of 'acta-mirror prove')") from None
    if digest != proof.get("sha256"):
        raise SignatureError(f"{file}: sha256 {digest} is not the one the proof is for ({proof.get('sha256')})")
    if not verify_inclusion(leaf_hash(leaf_data(path, digest)), index, size, audit, want_root):
        raise SignatureError(f"{file}: the proof does not lead to root {root}")


def _relative(bag: Path, path: str) -> str:
    candidate = Path(path)
    if candidate.is_absolute() or candidate.exists():
        try:
            return candidate.resolve().relative_to(bag.resolve()).as_posix()
        except ValueError:
            pass
    return path.lstrip("./") if not path.startswith("data/") else path


# -- diff ---------------------------------------------------------------------------------
def keyed(source: str | os.PathLike) -> dict[str, str]:
    """Acta key -> what identifies its evidence: latest sha256 (mirror, manifest) or image URL (index)."""
    from .sites.resultados2024 import parse_index_bytes

    path = Path(source)
    if path.is_dir():
        if not (path / PROVENANCE).exists():
            raise NotAMirror(f"{path}: not a mirror (no {PROVENANCE})")
        out: dict[str, str] = {}
        for line in provenance_lines(path / PROVENANCE):
            obj = json.loads(line.text)
            if obj.get("kind") == "acta":
                out[obj["key"]] = line.sha256  # later versions win
        return out
    if not path.is_file():
        raise UsageError(f"{path}: no such file or directory")
    if path.name.startswith("manifest-") and path.suffix == ".txt":
        out = {}
        for rel, digest in sorted(read_manifest(path).items()):
            if rel.startswith("data/") and not rel.startswith("data/index/"):
                stem = Path(rel).name.rsplit(".", 1)[0]
                out[re.sub(r"\.v\d+$", "", stem)] = digest  # KEY.jpg, KEY.v2.jpg: the latest wins
        return out
    return {a.key: a.url.rsplit("/", 1)[-1] for a in parse_index_bytes(path.read_bytes(), str(path))}


def diff(a: str | os.PathLike, b: str | os.PathLike) -> dict[str, list[str]]:
    left, right = keyed(a), keyed(b)
    return {"added": sorted(set(right) - set(left)), "removed": sorted(set(left) - set(right)),
            "changed": sorted(k for k in set(left) & set(right) if left[k] != right[k])}
