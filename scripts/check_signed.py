"""Are these the files the signed statement signs? Python's standard library only, short on purpose.

Run it in the folder that holds signed-root.json, after `minisign -Vm signed-root.json -p KEY`
said the statement is signed by a key you trust (this script checks no signature). It checks
that every file the statement names (manifest-sha256.txt, bag-info.txt, provenance.jsonl,
changes.jsonl, failures.jsonl) is here with the sha256 the statement gives, and that the
statement's Merkle root is the RFC 9162 root of manifest-sha256.txt's lines, in file order.
Exit 0: they are the signed files; 1: they are not (each reason printed).
"""
import hashlib
import json
import sys


def sha256(data):
    return hashlib.sha256(data).digest()


def tree_hash(leaves):
    """RFC 9162, 2.1.1: the Merkle tree hash of a list of leaves (here: manifest lines)."""
    if len(leaves) <= 1:
        return sha256(b"\0" + leaves[0]) if leaves else sha256(b"")
    k = 1
    while 2 * k < len(leaves):  # k: the largest power of two smaller than the count
        k *= 2
    return sha256(b"\1" + tree_hash(leaves[:k]) + tree_hash(leaves[k:]))


try:
    statement = json.load(open("signed-root.json", encoding="utf-8"))
    signed = dict(statement["tag_files"])
    signed_root, signed_size = str(statement["merkle_root"]), int(statement["tree_size"])
except (OSError, ValueError, KeyError, TypeError) as exc:
    print(f"NOT SIGNED: signed-root.json cannot be read ({exc.__class__.__name__}: {exc})")
    sys.exit(1)
bad = []
lines = []
for name in sorted(set(signed) | {"manifest-sha256.txt"}):
    try:
        data = open(name, "rb").read()
    except FileNotFoundError:
        if signed.get(name) == hashlib.sha256(b"").hexdigest():
            continue  # signed as empty: a WACZ leaves empty records out
        bad.append(f"{name}: missing")
        continue
    except OSError as exc:
        bad.append(f"{name}: {exc.strerror}")
        continue
    if hashlib.sha256(data).hexdigest() != signed.get(name):
        bad.append(f"{name}: not the file the statement signs")
    if name == "manifest-sha256.txt":
        lines = data.splitlines(keepends=True)
root = tree_hash(lines).hex()
if (root, len(lines)) != (signed_root, signed_size):
    bad.append(f"manifest-sha256.txt: Merkle root {root} of {len(lines)} lines; "
               f"the statement signs {signed_root} of {signed_size}")
for reason in bad:
    print("NOT SIGNED:", reason)
if not bad:
    print(f"OK: the signed files; Merkle root {root} of {len(lines)} manifest lines")
sys.exit(1 if bad else 0)
