"""Tamper evidence: the signed root statement, inclusion proofs, and comparing two copies.

The statement `signed-root.json` gives the manifest's RFC 9162 Merkle root with the run's
metadata; `signed-root.json.minisig` signs it (minisign format). A proof ties one file to
a root. `diff` compares two mirrors, manifests or index CSVs by acta key.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import stat
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from . import __version__
from .manifest import BAG_INFO, PAYLOAD_MANIFEST, atomic_write, read_small_file
from .merkle import inclusion_path, leaf_data, leaf_hash, manifest_leaves, root_of_leaves, verify_inclusion
from .models import NotAMirror, Problem, UnsafePath, UsageError
from .sign import (PublicKey, SignatureError, key_id_text, load_public, load_secret, parse_public, parse_signature,
                   sign_file, verify_signature)
from .state import (MAX_MANIFEST_BYTES, MAX_RECORDS_BYTES, SIGNED_TAG_FILES, MirrorState, open_payload, parse_manifest, provenance_state,
                    read_inside, read_state)

STATEMENT = "signed-root.json"
SIGNATURE = STATEMENT + ".minisig"
MAX_STATEMENT_BYTES = 1 << 20  # a statement is a few hundred bytes; never read a planted giant whole


def manifest_items(bag: Path, name: str = PAYLOAD_MANIFEST) -> list[tuple[str, str]]:
    """The payload manifest's (path, sha256) lines, sorted; NotAMirror naming the first bad line."""
    problems: list[Problem] = []
    try:
        data = read_inside(bag, name, MAX_MANIFEST_BYTES)
    except FileNotFoundError:
        raise NotAMirror(f"{bag}: not a mirror (no {name})") from None
    except UnsafePath as exc:
        raise NotAMirror(f"{bag / name}: {exc.reason}") from None
    except OSError as exc:
        raise NotAMirror(f"{bag / name}: {exc.strerror or exc}") from None
    items = parse_manifest(data, name, problems, payload=True)
    if problems:
        raise NotAMirror(f"{bag / name}: {problems[0]}")
    return sorted(items.items())


def tree_root(items: list[tuple[str, str]]) -> str:
    return root_of_leaves(manifest_leaves(items)).hex()


def tag_file_hashes(bag: Path) -> dict[str, str]:
    """sha256 of each SIGNED_TAG_FILES file present in the bag (read without following links)."""
    hashes = {}
    for name in SIGNED_TAG_FILES:
        try:
            with open_payload(bag, name, MAX_RECORDS_BYTES) as fh:
                hashes[name] = hashlib.file_digest(fh, "sha256").hexdigest()
        except FileNotFoundError:
            continue
    return hashes


def sign_bag(bag: str | os.PathLike, key_path: str | os.PathLike, source: str = "") -> str:
    """Write and sign the root statement, then refresh the tag manifest; returns the root.

    The statement carries the manifest's Merkle root, the sha256 of every evidence tag file
    (SIGNED_TAG_FILES) and the counts, so one signature covers payload and provenance alike.
    A mirror whose records do not check out is never signed.
    """
    from .archive import write_tag_manifest

    bag = Path(bag)
    key = load_secret(key_path)
    state = read_state(bag).require_clean()
    items = sorted(state.manifest.items())
    root = tree_root(items)
    public = PublicKey(key.key_id, key.public)
    statement = {
        "merkle_root": root, "tree_size": len(items),
        "leaves": "manifest-sha256.txt lines, in order; leaf = sha256(0x00 || line), node = sha256(0x01 || l || r)",
        "source": source or state.info.get("Acta-Mirror-Source", ""),
        "signed_at": datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z"),
        "tool": f"acta-mirror {__version__}",
        "counts": state.counts(),
        "coverage": _coverage(bag, state),
        "tag_files": tag_file_hashes(bag),
        "key_id": key_id_text(key.key_id), "public_key": public.line(),
    }
    atomic_write(bag / STATEMENT, (json.dumps(statement, indent=1, sort_keys=True) + "\n").encode())
    comment = f"acta-mirror merkle root {root} size {len(items)}"
    atomic_write(bag / SIGNATURE, sign_file(bag / STATEMENT, key, comment).encode())
    write_tag_manifest(bag)
    return root


def _coverage(bag: Path, state) -> dict:
    """What the signed mirror holds of the site's list of tables, the index being the
    denominator: a count without what it did not cover is not evidence."""
    from .audit.coverage import census

    found = census(bag, state, index_held=False)  # a scheduled run signs a bag of this run's files alone
    return {"summary": found.summary(), "tables": found.total, "source": found.source,
            "counts": {k: v for k, v in found.counts().items() if v},
            **({"listing_gaps": {"pages": found.gaps[0], "rows": found.gaps[1]}} if any(found.gaps) else {})}


@dataclass
class Seal:
    """What the signature says about a mirror: who signed, whether a trusted key checked it,
    and every way the mirror differs from what was signed."""

    signed: bool = False
    key_id: str = ""
    trusted: bool = False  # checked against the key the user gave (--pubkey)
    problems: list[Problem] = field(default_factory=list)
    records_signed: bool = True  # False: a statement from before tag files were signed (the payload manifest only)

    @property
    def summary(self) -> str:
        if not self.signed:
            return "not signed"
        if self.trusted:
            said = f"signed by key {self.key_id}, checked against the key you gave"
        else:
            said = f"signed by key {self.key_id}; signature not checked against a key you trust (use --pubkey)"
        if not self.records_signed:
            said += ("; the statement signs the payload manifest only, not " + ", ".join(SIGNED_TAG_FILES[1:])
                     + " (it predates signed records)")
        return said


def _small_file(bag: Path, name: str) -> bytes | None:
    try:
        with open_payload(bag, name) as fh:
            data = fh.read(MAX_STATEMENT_BYTES + 1)
    except FileNotFoundError:
        return None
    if len(data) > MAX_STATEMENT_BYTES:
        raise UnsafePath(name, f"larger than {MAX_STATEMENT_BYTES} bytes")
    return data


def check_seal(bag: str | os.PathLike, pubkey: str | os.PathLike | PublicKey | None = None,
               state: MirrorState | None = None, tag_hashes: dict[str, str] | None = None) -> Seal:
    """Check the Merkle root in bag-info and, when the mirror is signed, the signed statement:
    its signature (against --pubkey, else against the key it names), its root, the signed tag
    files and the counts. Without a signature and without --pubkey there is nothing to check.
    pubkey: the key's file, or the key read from it already; tag_hashes: tag_file_hashes(bag),
    when the caller has it already (else it is read here)."""
    bag = Path(bag)
    state = state or read_state(bag)
    seal = Seal()
    problems = seal.problems
    items = sorted(state.manifest.items())
    root = tree_root(items)
    recorded = state.info.get("Acta-Mirror-Merkle-Root")
    if recorded and recorded != root:
        problems.append(Problem("root", BAG_INFO, f"records Merkle root {recorded}, the manifest gives {root}"))
    size = state.info.get("Acta-Mirror-Merkle-Size")
    if size is not None and size != str(len(items)):
        problems.append(Problem("root", BAG_INFO, f"records a Merkle tree of {size} leaves, "
                                                  f"the manifest lists {len(items)} files"))
    public = pubkey if isinstance(pubkey, PublicKey) or pubkey is None else load_public(pubkey)
    try:
        statement_bytes, sig_bytes = _small_file(bag, STATEMENT), _small_file(bag, SIGNATURE)
    except (UnsafePath, OSError) as exc:
        problems.append(Problem("signature", STATEMENT, str(exc)))
        return seal
    if statement_bytes is None and sig_bytes is None:
        if public is not None:
            problems.append(Problem("signature", SIGNATURE, "the mirror is not signed (no signed-root.json)"))
        return seal
    seal.signed = True
    if statement_bytes is None or sig_bytes is None:
        missing = STATEMENT if statement_bytes is None else SIGNATURE
        problems.append(Problem("signature", missing, "missing: a signature needs both files"))
        return seal
    try:
        sig = parse_signature(sig_bytes.decode("utf-8", "replace"), SIGNATURE)
    except SignatureError as exc:
        problems.append(Problem("signature", SIGNATURE, str(exc)))
        return seal
    seal.key_id = key_id_text(sig.key_id)
    try:
        statement = json.loads(statement_bytes)
        signed_root, signed_size = statement["merkle_root"], statement["tree_size"]
    except (ValueError, KeyError, TypeError, RecursionError):
        problems.append(Problem("signature", STATEMENT, "not a root statement"))
        return seal
    if public is None and not isinstance(statement.get("public_key"), str):
        # Unchecked, the signature's key ID would vouch for a statement anyone can rewrite.
        problems.append(Problem("signature", STATEMENT, "names no public key, so the signature cannot be "
                                                        "checked: pass the signer's key with --pubkey"))
    elif public is None:
        try:
            public = parse_public(statement["public_key"], STATEMENT)
        except UsageError as exc:
            problems.append(Problem("signature", STATEMENT, str(exc)))
    if public is not None:
        try:
            trusted = verify_signature(statement_bytes, sig, public, STATEMENT, SIGNATURE)
        except SignatureError as exc:
            problems.append(Problem("signature", SIGNATURE, str(exc)))
            return seal
        seal.trusted = pubkey is not None
        if f"merkle root {root} " not in trusted + " ":
            problems.append(Problem("root", SIGNATURE, f"the trusted comment does not name the root {root}"))
    if signed_root != root or signed_size != len(items):
        problems.append(Problem("root", STATEMENT, f"signed root {signed_root} of {signed_size} files, "
                                                   f"the manifest gives {root} of {len(items)}"))
    seal.records_signed = statement.get("tag_files") is not None
    problems.extend(_check_signed_tags(bag, statement.get("tag_files"), tag_hashes))
    problems.extend(_check_counts(state, statement.get("counts")))
    return seal


def statement_stale(bag: str | os.PathLike) -> bool:
    """Does the mirror hold a signed statement whose signed tag files are no longer its own (a
    run without the key changed it)? An unreadable statement vouches for nothing: stale too."""
    bag = Path(bag)
    try:
        data = _small_file(bag, STATEMENT)
        if data is None:
            return False
        signed = json.loads(data)
    except (UnsafePath, OSError, ValueError, RecursionError):
        return True
    return not isinstance(signed, dict) or bool(_check_signed_tags(bag, signed.get("tag_files")))


def _check_signed_tags(bag: Path, signed, found: dict[str, str] | None = None) -> list[Problem]:
    if signed is None:
        return []  # a statement from before tag files were signed: it covers the payload manifest only
    if not isinstance(signed, dict):
        return [Problem("signature", STATEMENT, "tag_files is not a table of sha256 by file")]
    problems = []
    try:
        found = tag_file_hashes(bag) if found is None else found
    except (UnsafePath, OSError) as exc:
        return [Problem("signed", STATEMENT, f"cannot hash the tag files: {exc}")]
    for name in SIGNED_TAG_FILES:
        want, got = signed.get(name), found.get(name)
        if want == got:
            continue
        if want is None:
            problems.append(Problem("signed", name, "present, but not there when the statement was signed"))
        elif got is None:
            problems.append(Problem("signed", name, "signed, but missing"))
        else:
            problems.append(Problem("signed", name, f"sha256 {got}, the signed statement says {want}"))
    for name in sorted(set(signed) - set(SIGNED_TAG_FILES), key=str):
        problems.append(Problem("signed", STATEMENT, f"signs an unknown tag file {name!r}"))
    return problems


def _check_counts(state: MirrorState, signed) -> list[Problem]:
    if not isinstance(signed, dict):
        return [Problem("signed", STATEMENT, "no counts")]
    have = state.counts()
    return [Problem("signed", STATEMENT, f"signed count of {what} is {signed.get(what)!r}, the mirror has {n}")
            for what, n in have.items() if signed.get(what) != n]


def prove(bag: str | os.PathLike, path: str) -> dict:
    """An inclusion proof for one payload file of the bag, as a small JSON-able dict."""
    bag = Path(bag)
    rel = _relative(bag, path)
    items = manifest_items(bag)
    index = next((i for i, (p, _h) in enumerate(items) if p == rel), None)
    if index is None:
        raise UsageError(f"{rel} is not in {bag / PAYLOAD_MANIFEST}")
    leaves = manifest_leaves(items)
    return {"version": 1, "path": rel, "sha256": items[index][1], "leaf_index": index,
            "tree_size": len(items), "root": root_of_leaves(leaves).hex(),
            "audit_path": [h.hex() for h in inclusion_path(leaves, index)]}


def check_proof(file: str | os.PathLike, proof: dict, root: str) -> None:
    """Raise SignatureError unless the file's bytes sit in the tree with this root."""
    try:
        path, index, size = proof["path"], proof["leaf_index"], proof["tree_size"]
        if not isinstance(path, str) or not all(type(n) is int for n in (index, size)):
            raise TypeError
        path.encode("utf-8")  # a lone surrogate (JSON's "\ud800") names no file: UnicodeEncodeError
        audit = [bytes.fromhex(h) for h in proof["audit_path"]]
        want_root = bytes.fromhex(root)
    except (KeyError, TypeError, ValueError):
        raise UsageError("the proof or the root is malformed (expected the JSON of 'acta-mirror prove')") from None
    try:
        # O_NONBLOCK and the check before reading: a FIFO or a device named as the file would hang
        fd = os.open(file, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        with open(fd, "rb") as fh:
            kind = os.fstat(fd).st_mode
            if not stat.S_ISREG(kind):
                raise UsageError(f"{file}: not a regular file")
            digest = hashlib.file_digest(fh, "sha256").hexdigest()
    except OSError as exc:
        raise UsageError(f"{file}: {exc.strerror}") from None
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
_ACTA_FILE = re.compile(r"([0-9]{9}\.[0-9]{2,3})(?:\.v([0-9]+))?\.[A-Za-z0-9]+")  # KEY.jpg, KEY.v2.jpg


def keyed(source: str | os.PathLike) -> dict[str, str]:
    """Acta key -> what identifies its evidence: latest sha256 (mirror, manifest) or image URL (index).
    The latest version is the highest version number (v10 after v9), not the last in text order."""
    from .sites.resultados2024 import parse_index_bytes

    path = Path(source)
    if path.is_dir():
        return {k: e.sha256 for k, e in provenance_state(path).require_clean().latest_actas().items()}
    if not path.is_file():
        raise UsageError(f"{path}: no such file or directory")
    if kind_of(path) == "hashes":  # a manifest (a folder was read above)
        best: dict[str, tuple[int, str]] = {}
        for rel, digest in manifest_items(path.parent, path.name):
            found = _ACTA_FILE.fullmatch(rel.rsplit("/", 1)[-1])
            if found and not rel.startswith("data/index/"):
                version = int(found.group(2) or 1)
                if found.group(1) not in best or version >= best[found.group(1)][0]:
                    best[found.group(1)] = (version, digest)
        return {key: digest for key, (_v, digest) in best.items()}
    try:
        raw = read_small_file(path, MAX_MANIFEST_BYTES)  # a regular file, never a planted giant read whole
    except (OSError, ValueError) as exc:
        raise UsageError(f"{path}: cannot be read as an index ({getattr(exc, 'strerror', None) or exc})") from None
    names: dict[str, str] = {}
    for acta in parse_index_bytes(raw, str(path)):
        name = acta.url.rsplit("/", 1)[-1]
        if names.setdefault(acta.key, name) != name:  # the last row alone would hide the first's image
            raise UsageError(f"{path}: table {acta.key} is listed twice with other images ({names[acta.key]}, "
                             f"{name}): which is the site's cannot be told")
    return names


def kind_of(source: str | os.PathLike) -> str:
    """What keyed() gives for a source: 'images' (an index's image names) or 'hashes'."""
    path = Path(source)
    return "hashes" if path.is_dir() or (path.name.startswith("manifest-") and path.suffix == ".txt") else "images"


def diff_sources(a: str | os.PathLike, b: str | os.PathLike) -> tuple[dict[str, str], dict[str, str]]:
    """keyed() of both; UsageError for an index against a mirror or manifest (image names are
    no hashes: every table would be 'changed')."""
    left, right = keyed(a), keyed(b)  # each read first: a path that names nothing is said as such
    if kind_of(a) != kind_of(b):
        raise UsageError(f"{a} and {b} are not of a kind: an index gives image names, a mirror or manifest "
                         "sha256 hashes; compare two indexes, or two mirrors or manifests")
    return left, right


def diff(a: str | os.PathLike, b: str | os.PathLike) -> dict[str, list[str]]:
    return diff_keyed(*diff_sources(a, b))


def diff_keyed(left: dict[str, str], right: dict[str, str]) -> dict[str, list[str]]:
    return {"added": sorted(set(right) - set(left)), "removed": sorted(set(left) - set(right)),
            "changed": sorted(k for k in set(left) & set(right) if left[k] != right[k])}
