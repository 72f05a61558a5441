"""The evidence core, in process and fast (scripts/mutation.sh runs this file against every mutant).

Merkle roots and proofs are checked against RFC 9162's recursive definitions written out here,
and against the Certificate Transparency test vectors (roots of the first 1..8 leaves, derived
once with those definitions and matching the published values). Signatures are checked against
Debian's minisign in both directions. Mirrors are built by hand in a temporary folder.
"""
from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import stat
import subprocess
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import msgspec
import pytest

from mirror import evidence, manifest, merkle, sign, state, verify
from mirror.archive import write_bag_files
from mirror.cid import raw_cid
from mirror.models import Entry, NotAMirror, Problem, UnsafePath, UsageError


# -- RFC 9162, written plainly --------------------------------------------------------------
def _h(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def _k(n: int) -> int:
    """The largest power of two smaller than n."""
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def mth(d: list[bytes]) -> bytes:
    """MTH(D[n]) of RFC 9162 section 2.1.1."""
    if not d:
        return _h(b"")
    if len(d) == 1:
        return _h(b"\x00" + d[0])
    k = _k(len(d))
    return _h(b"\x01" + mth(d[:k]) + mth(d[k:]))


def rfc_path(m: int, d: list[bytes]) -> list[bytes]:
    """PATH(m, D[n]) of RFC 9162 section 2.1.3.1."""
    if len(d) == 1:
        return []
    k = _k(len(d))
    if m < k:
        return rfc_path(m, d[:k]) + [mth(d[k:])]
    return rfc_path(m - k, d[k:]) + [mth(d[:k])]


def rfc_root_from_path(leaf: bytes, m: int, n: int, path: list[bytes]) -> bytes | None:
    """The root a proof leads to, read back through PATH's recursion; None if it has the wrong length."""
    if n == 1:
        return None if path else leaf
    if not path:
        return None
    k = _k(n)
    if m < k:
        below = rfc_root_from_path(leaf, m, k, path[:-1])
        return below and _h(b"\x01" + below + path[-1])
    below = rfc_root_from_path(leaf, m - k, n - k, path[:-1])
    return below and _h(b"\x01" + path[-1] + below)


CT_LEAVES = [b"", b"\x00", b"\x10", b"\x20\x21", b"\x30\x31", b"\x40\x41\x42\x43", bytes(range(0x50, 0x58)),
             bytes(range(0x60, 0x70))]
CT_ROOTS = [
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]
EMPTY_ROOT = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"


def _data(n: int) -> list[bytes]:
    return [f"leaf {i}".encode() for i in range(n)]


def test_known_answer_roots():
    assert merkle.root_of_leaves([]).hex() == EMPTY_ROOT
    for n, want in enumerate(CT_ROOTS, 1):
        assert mth(CT_LEAVES[:n]).hex() == want  # the plain definition gives the published vectors
        assert merkle.root_of_leaves([merkle.leaf_hash(d) for d in CT_LEAVES[:n]]).hex() == want


def test_leaf_and_node_hashes_have_their_prefixes():
    assert merkle.leaf_hash(b"x") == _h(b"\x00x")
    assert merkle.node_hash(b"a" * 32, b"b" * 32) == _h(b"\x01" + b"a" * 32 + b"b" * 32)
    assert merkle.leaf_data("data/a%b\nc", "ab" * 32) == ("ab" * 32 + "  data/a%25b%0Ac\n").encode()


@pytest.mark.parametrize("n", range(1, 21))
def test_roots_and_every_proof_match_the_rfc(n):
    d = _data(n)
    leaves = [merkle.leaf_hash(x) for x in d]
    root = merkle.root_of_leaves(leaves)
    assert root == mth(d)
    for m in range(n):
        path = merkle.inclusion_path(leaves, m)
        assert path == rfc_path(m, d)
        assert merkle.verify_inclusion(leaves[m], m, n, path, root)
        assert not merkle.verify_inclusion(leaves[m], m, n, path + [leaves[0]], root)  # padded
        assert not merkle.verify_inclusion(leaves[m], m, n, path, _h(root))
        if path:
            assert not merkle.verify_inclusion(leaves[m], m, n, path[:-1], root)  # cut short
            bent = [bytes([path[0][0] ^ 1]) + path[0][1:]] + path[1:]
            assert not merkle.verify_inclusion(leaves[m], m, n, bent, root)
            assert not merkle.verify_inclusion(leaves[(m + 1) % n], m, n, path, root)
        for other in (m - 1, m + 1):
            if 0 <= other < n:
                assert not merkle.verify_inclusion(leaves[m], other, n, path, root)
        for size in range(1, 2 * n + 2):  # a size that changes the proof's shape fails; one that keeps it, not
            want = m < size and rfc_root_from_path(leaves[m], m, size, path) == root
            assert merkle.verify_inclusion(leaves[m], m, size, path, root) == want, size
    assert not merkle.verify_inclusion(leaves[0], n, n, [], root)  # out of range
    assert not merkle.verify_inclusion(leaves[0], -1, n, [], root)


def test_all_proofs_at_once_match_the_rfc():
    assert merkle.all_inclusion_paths([]) == []
    for n in range(1, 21):
        d = _data(n)
        leaves = [merkle.leaf_hash(x) for x in d]
        assert merkle.all_inclusion_paths(leaves) == [rfc_path(m, d) for m in range(n)]


def test_single_leaf_proof_is_empty_and_checks():
    leaf = merkle.leaf_hash(b"only")
    assert merkle.inclusion_path([leaf], 0) == []
    assert merkle.verify_inclusion(leaf, 0, 1, [], leaf)
    assert not merkle.verify_inclusion(leaf, 0, 1, [leaf], leaf)
    assert not merkle.verify_inclusion(leaf, 0, 0, [], leaf)


def test_manifest_lines_stream_the_manifest_and_its_root():
    items = sorted([("data/b.jpg", "b" * 64), ("data/a.jpg", "a" * 64), ("data/c\nd.jpg", "c" * 64)])
    lines = merkle.ManifestLines(items)
    assert b"".join(lines) == manifest.format_manifest(items)
    assert lines.root == merkle.merkle_root(items) == mth([merkle.leaf_data(p, h) for p, h in items]).hex()
    assert b"".join(lines) == manifest.format_manifest(items) and lines.root == merkle.merkle_root(items)  # a second pass restarts
    for n in (0, 1, 2, 5, 8, 13, 64, 100):  # from a stream (the archive's index), keeping one root per level
        many = [(f"data/{i:03d}.jpg", f"{i:064x}") for i in range(n)]
        streamed = merkle.ManifestLines(iter(many))
        assert b"".join(streamed) == manifest.format_manifest(many) and streamed.root == merkle.merkle_root(many)
    assert merkle.manifest_leaves(list(reversed(items))) == [merkle.leaf_hash(merkle.leaf_data(p, h)) for p, h in items]


@pytest.mark.parametrize("odd", ["", "%", "%25", "\n", "\r", "ñ", " "])
def test_manifest_leaves_are_the_leaves_of_the_manifest_lines_whatever_the_paths_hold(odd):
    # One step for paths with nothing to encode, leaf_data's encoding otherwise: the same leaves
    # as the definition (H(0x00 || line) of each manifest line, sorted), for every path in the list.
    items = [(f"data/{i:02d}{odd if i == 3 else ''}.jpg", f"{i:064x}") for i in range(7)]
    lines = manifest.format_manifest(sorted(items)).splitlines(keepends=True)
    if odd in ("\n", "\r"):
        assert b"%0" in b"".join(lines)  # encoded, so each is still one line
    want = [hashlib.sha256(b"\x00" + line).digest() for line in lines]
    assert merkle.manifest_leaves(items[::-1]) == want
    assert merkle.merkle_root(items) == mth([line for line in lines]).hex()


# -- signatures ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def keypair(tmp_path_factory):
    folder = tmp_path_factory.mktemp("keys")
    secret, public = sign.generate()
    (folder / "k.key").write_text(secret.text())
    (folder / "k.pub").write_text(public.text())
    return folder / "k", secret, public


def test_keys_round_trip_and_sign(tmp_path, keypair):
    base, secret, public = keypair
    assert sign.load_secret(f"{base}.key") == secret
    assert sign.load_public(f"{base}.pub") == public
    assert public.text().splitlines()[0].endswith(sign.key_id_text(public.key_id))
    assert sign.key_id_text(bytes(range(8))) == "0706050403020100"
    assert sign.parse_public(public.line()) == public
    target = tmp_path / "f"
    target.write_bytes(b"evidence")
    text = sign.sign_file(target, secret, "a comment")
    assert text.splitlines()[0].endswith(sign.key_id_text(secret.key_id))
    (tmp_path / "f.minisig").write_text(text)
    assert sign.verify_file(target, tmp_path / "f.minisig", public) == "a comment"
    parsed = sign.parse_signature(text)
    assert parsed.prehashed and parsed.key_id == public.key_id and parsed.trusted_comment == "a comment"
    with pytest.raises(ValueError):
        sign.sign_file(target, secret, "two\nlines")
    with pytest.raises(ValueError):
        sign.sign_file(target, secret, "two\rlines")


def test_minisign_checks_ours_and_we_check_minisigns(tmp_path, keypair):
    base, secret, public = keypair
    target = tmp_path / "statement"
    target.write_bytes(b"{}\n")
    (tmp_path / "statement.minisig").write_text(sign.sign_file(target, secret, "ours"))
    ok = subprocess.run(["minisign", "-Vm", str(target), "-p", f"{base}.pub"], capture_output=True, text=True)
    assert ok.returncode == 0 and "ours" in ok.stdout
    theirs = subprocess.run(["minisign", "-G", "-W", "-p", str(tmp_path / "m.pub"), "-s", str(tmp_path / "m.key")],
                            capture_output=True, text=True)
    assert theirs.returncode == 0, theirs.stderr
    signed = subprocess.run(["minisign", "-S", "-s", str(tmp_path / "m.key"), "-m", str(target), "-t", "theirs"],
                            capture_output=True, text=True)
    assert signed.returncode == 0, signed.stderr
    theirs_pub = sign.load_public(tmp_path / "m.pub")
    assert sign.verify_file(target, tmp_path / "statement.minisig", theirs_pub) == "theirs"
    key = sign.load_secret(tmp_path / "m.key")  # minisign's own unencrypted key works for signing
    assert key.public == theirs_pub.key and key.key_id == theirs_pub.key_id
    legacy = subprocess.run(["minisign", "-S", "-l", "-s", str(tmp_path / "m.key"), "-m", str(target), "-t", "old"],
                            capture_output=True, text=True)
    assert legacy.returncode == 0
    assert not sign.parse_signature((tmp_path / "statement.minisig").read_text()).prehashed
    assert sign.verify_file(target, tmp_path / "statement.minisig", theirs_pub) == "old"
    target.write_bytes(b"{}\n\n")
    with pytest.raises(sign.SignatureError, match="does not match"):
        sign.verify_file(target, tmp_path / "statement.minisig", theirs_pub)


@pytest.mark.parametrize("odd", ["\u2028", "\x85", "\x0c"])
def test_a_trusted_comment_holding_a_break_only_python_sees_is_one_line(tmp_path, keypair, odd):
    """A trusted comment may hold U+2028, U+0085 or a form feed (minisign ends a line at LF
    only): our reader split the signature there and refused our own signature as 'not a
    minisign signature', and would have refused minisign's."""
    base, secret, public = keypair
    target = tmp_path / "statement"
    target.write_bytes(b"{}\n")
    comment = f"mirror{odd}of 2024"
    (tmp_path / "statement.minisig").write_text(sign.sign_file(target, secret, comment))
    assert sign.verify_file(target, tmp_path / "statement.minisig", public) == comment
    ok = subprocess.run(["minisign", "-Vm", str(target), "-p", f"{base}.pub"], capture_output=True)
    assert ok.returncode == 0 and comment.encode() in ok.stdout, ok.stderr


def _signed(tmp_path, secret, comment="c"):
    target = tmp_path / "f"
    target.write_bytes(b"evidence")
    text = sign.sign_file(target, secret, comment)
    (tmp_path / "f.minisig").write_text(text)
    return target, tmp_path / "f.minisig", text.splitlines()


def test_altered_signatures_and_wrong_keys_fail(tmp_path, keypair):
    _base, secret, public = keypair
    target, sig, lines = _signed(tmp_path, secret)
    with pytest.raises(sign.SignatureError, match="trusted comment was altered"):
        sig.write_text("\n".join(lines[:2] + ["trusted comment: d"] + lines[3:]) + "\n")
        sign.verify_file(target, sig, public)
    other_secret, other_public = sign.generate()
    sig.write_text("\n".join(lines) + "\n")
    with pytest.raises(sign.SignatureError, match=f"made by key {sign.key_id_text(secret.key_id)}, not by"):
        sign.verify_file(target, sig, other_public)
    same_id = sign.PublicKey(public.key_id, other_public.key)  # a forged key ID does not help
    with pytest.raises(sign.SignatureError, match="does not match the file"):
        sign.verify_file(target, sig, same_id)
    target.write_bytes(b"evidencE")
    with pytest.raises(sign.SignatureError, match="does not match the file"):
        sign.verify_file(target, sig, public)
    target.write_bytes(b"evidence")
    raw = base64.b64decode(lines[3])
    sig.write_text("\n".join(lines[:3] + [base64.b64encode(bytes([raw[0] ^ 1]) + raw[1:]).decode()]) + "\n")
    with pytest.raises(sign.SignatureError, match="trusted comment was altered"):
        sign.verify_file(target, sig, public)
    for bad in (["x"], lines[:3], [lines[0], lines[1], "untrusted: x", lines[3]], [lines[0], "!!", lines[2], lines[3]],
                [lines[0], base64.b64encode(b"ED" + bytes(60)).decode(), lines[2], lines[3]],
                [lines[0], base64.b64encode(b"XX" + bytes(72)).decode(), lines[2], lines[3]],
                [lines[0], lines[1], lines[2], base64.b64encode(bytes(63)).decode()]):
        sig.write_text("\n".join(bad) + "\n")
        with pytest.raises(sign.SignatureError):
            sign.verify_file(target, sig, public)
    with pytest.raises(sign.SignatureError, match="missing or unreadable"):
        sign.verify_file(target, tmp_path / "nothing.minisig", public)


def test_bad_key_files_are_one_clear_error(tmp_path, keypair):
    base, secret, _public = keypair
    body = base64.b64decode(Path(f"{base}.key").read_text().splitlines()[1])
    cases = {
        "junk": "untrusted comment: x\n!!!\n",
        "empty": "",
        "short": "untrusted comment: x\n" + base64.b64encode(body[:100]).decode() + "\n",
        "encrypted": "untrusted comment: c\n" + base64.b64encode(body[:2] + b"Sc" + body[4:]).decode() + "\n",
        "checksum": "untrusted comment: c\n" + base64.b64encode(body[:-1] + bytes([body[-1] ^ 1])).decode() + "\n",
        "notb2": "untrusted comment: c\n" + base64.b64encode(body[:4] + b"XX" + body[6:]).decode() + "\n",
        "notEd": "untrusted comment: c\n" + base64.b64encode(b"Xd" + body[2:]).decode() + "\n",
    }
    for name, text in cases.items():
        (tmp_path / name).write_text(text)
        with pytest.raises(UsageError):
            sign.load_secret(tmp_path / name)
    with pytest.raises(UsageError, match="password"):
        sign.load_secret(tmp_path / "encrypted")
    with pytest.raises(UsageError, match="checksum"):
        sign.load_secret(tmp_path / "checksum")
    unchecked = body[:-32] + bytes(32)  # minisign -G -W writes no checksum: the key halves must agree instead
    (tmp_path / "nochk").write_text("untrusted comment: c\n" + base64.b64encode(unchecked).decode() + "\n")
    assert sign.load_secret(tmp_path / "nochk") == secret
    mixed = unchecked[:62] + bytes(32) + unchecked[94:]  # another seed, the same public half
    (tmp_path / "mixed").write_text("untrusted comment: c\n" + base64.b64encode(mixed).decode() + "\n")
    with pytest.raises(UsageError, match="does not match its public half"):
        sign.load_secret(tmp_path / "mixed")
    with pytest.raises(UsageError):
        sign.load_public(tmp_path / "junk")
    with pytest.raises(UsageError):
        sign.load_public(f"{base}.key")
    with pytest.raises(UsageError):
        sign.load_public(tmp_path / "absent.pub")
    (tmp_path / "pub").write_text("untrusted comment: x\n" + base64.b64encode(b"Xd" + bytes(40)).decode() + "\n")
    with pytest.raises(UsageError):
        sign.load_public(tmp_path / "pub")
    for bad in ("", "!!", base64.b64encode(b"Ed" + bytes(39)).decode()):
        with pytest.raises(UsageError):
            sign.parse_public(bad)
    (tmp_path / "bare.pub").write_text(sign.PublicKey(secret.key_id, secret.public).line() + "\n")
    assert sign.load_public(tmp_path / "bare.pub").key == secret.public  # a key without a comment line


# -- the bag's text files --------------------------------------------------------------------
def test_manifest_text_rules():
    assert manifest.split_manifest_line("A" * 64 + "  data/x") == ("a" * 64, "data/x")
    assert manifest.split_manifest_line("a" * 64 + " *data/x%0Ay") == ("a" * 64, "data/x\ny")
    for bad in ("a" * 63 + "  data/x", "a" * 64, "a" * 64 + "  ", "g" * 64 + "  data/x", "a" * 64 + "data/x"):
        assert manifest.split_manifest_line(bad) is None
    assert manifest.parse_manifest_text("\n" + "a" * 64 + "  data/x\n\n") == {"data/x": "a" * 64}
    with pytest.raises(NotAMirror, match=":2: data/x is listed twice"):
        manifest.parse_manifest_text("a" * 64 + "  data/x\n" + "b" * 64 + "  data/x\n", "m")
    with pytest.raises(NotAMirror, match="m:1"):
        manifest.parse_manifest_text("nonsense\n", "m")
    for path in ("a%b", "x\ny", "c\rd", "%0A", "100%"):
        assert manifest.decode_path(manifest.encode_path(path)) == path
    assert manifest.decode_path("a%0ab%0dc") == "a\nb\rc"
    assert manifest.encode_path("a%\n\r") == "a%25%0A%0D"
    assert manifest.format_manifest([("b", "2" * 64), ("a", "1" * 64)]) == f"{'1' * 64}  a\n{'2' * 64}  b\n".encode()


def test_bag_info_rules(tmp_path):
    text = "A: 1\nB:  two words \n  continued\nno colon\n\tstray\nC:x:y\n"
    assert manifest.parse_bag_info(text) == {"A": "1", "B": "two words continued", "C": "x:y"}
    assert manifest.format_bag_info({"A": "1", "B": "2"}) == b"A: 1\nB: 2\n"
    assert manifest.read_bag_info(tmp_path / "none") == {}
    (tmp_path / "bad").write_bytes(b"A: \xff\n")
    with pytest.raises(NotAMirror, match="unreadable"):
        manifest.read_bag_info(tmp_path / "bad")
    (tmp_path / "ok").write_text(text)
    assert manifest.read_bag_info(tmp_path / "ok")["C"] == "x:y"


# Every character str.splitlines() breaks at that BagIt, sha256sum and minisign do not.
NOT_LINE_ENDS = ["\x0b", "\x0c", "\x1c", "\x1d", "\x1e", "\x85", "\u2028", "\u2029"]


def test_text_lines_end_at_lf_cr_and_crlf_only():
    assert manifest.text_lines("") == [] and manifest.text_lines("\n") == [""]
    assert manifest.text_lines("a") == ["a"] and manifest.text_lines("a\n\n") == ["a", ""]
    assert manifest.text_lines("a\r\nb\rc\nd") == ["a", "b", "c", "d"]
    assert manifest.text_lines("a\n\rb\r\r\n") == ["a", "", "b", ""]
    for odd in NOT_LINE_ENDS:
        assert len(f"a{odd}b".splitlines()) == 2  # what the old reader did
        assert manifest.text_lines(f"a{odd}b\nc\n") == [f"a{odd}b", "c"]


@pytest.mark.parametrize("odd", NOT_LINE_ENDS)
def test_a_line_end_only_python_sees_joins_no_manifest_or_bag_info_lines(odd):
    """Two manifest lines joined by U+2028 (or another break only str.splitlines() knew) were
    read as two, so verify passed a manifest that sha256sum -c reads as one line naming no
    file; a Payload-Oxum after one on an innocent line of bag-info.txt, which cat and grep show
    as part of that line, was believed. A file name may hold any of these: it is one path."""
    h, g = "a" * 64, "b" * 64
    text = f"{h}  data/x{odd}{g}  data/y\n"
    for payload in (True, False):
        problems: list[Problem] = []
        got = state.parse_manifest(text.encode(), "m", problems, payload=payload)
        assert (got, problems == []) == (({f"data/x{odd}{g}  data/y": h}, True) if payload else ({}, False))
    assert manifest.parse_manifest_text(text) == {f"data/x{odd}{g}  data/y": h}
    assert manifest.parse_bag_info(f"X-Note: ok{odd}Payload-Oxum: 5.1\n") == {"X-Note": f"ok{odd}Payload-Oxum: 5.1"}
    assert manifest.bag_info_pairs(f"A: 1{odd}2\nB: 2\r\n  more\rA: 3\n") == [("A", f"1{odd}2"), ("B", "2 more"), ("A", "3")]


def test_read_manifest_errors(tmp_path):
    with pytest.raises(NotAMirror, match="no such file"):
        manifest.read_manifest(tmp_path / "none")
    (tmp_path / "bad").write_bytes(b"\xff\n")
    with pytest.raises(NotAMirror, match="unreadable"):
        manifest.read_manifest(tmp_path / "bad")
    (tmp_path / "ok").write_text("a" * 64 + "  data/x\n")
    assert manifest.read_manifest(tmp_path / "ok") == {"data/x": "a" * 64}


def test_atomic_write_keeps_an_unchanged_file_untouched(tmp_path):
    target = tmp_path / "f"
    manifest.atomic_write(target, b"one")
    assert target.read_bytes() == b"one"
    os.utime(target, (1000, 1000))
    manifest.atomic_write(target, [b"o", b"ne"])
    assert target.stat().st_mtime == 1000
    manifest.atomic_write(target, [b"tw", b"o"])
    assert target.read_bytes() == b"two" and target.stat().st_mtime != 1000
    manifest.atomic_write(target, b"thr")  # same size, other bytes
    assert target.read_bytes() == b"thr"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f"]

    def broken():
        yield b"x"
        raise RuntimeError("disk")
    with pytest.raises(RuntimeError):
        manifest.atomic_write(target, broken())
    assert target.read_bytes() == b"thr" and sorted(p.name for p in tmp_path.iterdir()) == ["f"]
    assert manifest.sync_filesystem(tmp_path) in (True, False)
    manifest.fsync_dir(tmp_path)


def test_own_copy_gives_a_hard_linked_file_its_own_bytes_and_leaves_the_rest(tmp_path):
    ours, other = tmp_path / "provenance.jsonl", tmp_path / "backup.jsonl"
    ours.write_bytes(b"line 1\n")
    os.link(ours, other)  # exactly two names
    manifest.own_copy(ours)
    assert ours.stat().st_ino != other.stat().st_ino and ours.stat().st_nlink == other.stat().st_nlink == 1
    assert ours.read_bytes() == other.read_bytes() == b"line 1\n"
    with open(ours, "ab") as fh:
        fh.write(b"line 2\n")
    assert other.read_bytes() == b"line 1\n"  # the other name kept its bytes
    assert sorted(p.name for p in tmp_path.iterdir()) == ["backup.jsonl", "provenance.jsonl"]  # no temp file left
    alone = ours.stat().st_ino
    manifest.own_copy(ours)  # one name: nothing to do
    assert ours.stat().st_ino == alone
    manifest.own_copy(tmp_path / "none")  # no file: nothing to do
    os.mkfifo(tmp_path / "fifo")
    manifest.own_copy(tmp_path / "fifo")  # returns at once: never waits for a writer
    assert (tmp_path / "fifo").is_fifo()
    (tmp_path / "link").symlink_to(other)
    with pytest.raises(OSError):  # never followed
        manifest.own_copy(tmp_path / "link")
    assert other.read_bytes() == b"line 1\n" and other.stat().st_nlink == 1


def test_read_small_file_takes_exactly_its_limit_and_refuses_the_rest(tmp_path):
    path = tmp_path / "key"
    path.write_bytes(b"k" * 100)
    assert manifest.read_small_file(path, 100) == b"k" * 100
    with pytest.raises(ValueError, match="larger than 99 bytes"):
        manifest.read_small_file(path, 99)
    os.mkfifo(tmp_path / "fifo")
    with pytest.raises(ValueError, match="not a regular file"):  # at once, never waiting for a writer
        manifest.read_small_file(tmp_path / "fifo", 100)
    # a regular file of 0 bytes that reads more: its first 100 bytes were taken as the whole file
    with pytest.raises(ValueError, match="larger than 100 bytes"):
        manifest.read_small_file("/proc/self/pagemap", 100)


def test_a_receipt_is_written_0644_and_never_into_a_fifo(tmp_path):
    old = os.umask(0o022)
    try:
        manifest.append_receipt(tmp_path, {"a": 1})
    finally:
        os.umask(old)
    assert (tmp_path / manifest.RECEIPTS).stat().st_mode & 0o777 == 0o644
    other = tmp_path / "other"
    other.mkdir()
    os.mkfifo(other / manifest.RECEIPTS)
    with pytest.raises(UnsafePath, match="not a regular file; the receipt was not written"):
        manifest.append_receipt(other, {"a": 1})


def test_a_torn_tail_that_is_an_empty_line_is_cut_alone(tmp_path):
    good = _entry(1).to_json() + "\n"
    path = tmp_path / "provenance.jsonl"
    path.write_text(good + good + "\n")
    assert manifest.repair_torn_tail(path) == 1 and path.read_text() == good + good

@pytest.mark.parametrize("block", [4, 1 << 20])
def test_a_cut_tail_is_kept_byte_for_byte_and_nothing_whole_is_cut(tmp_path, monkeypatch, block):
    monkeypatch.setattr(manifest, "_BLOCK", block)  # small blocks: every search crosses several
    good = _entry(1).to_json() + "\n"
    path, kept = tmp_path / "provenance.jsonl", tmp_path / "q" / "a" / "provenance.jsonl.tail"
    damage = b'{"not": "a record", "bytes": "\xff\xfe"}\n'  # whole, but neither UTF-8 nor a record
    path.write_bytes(good.encode() + damage)
    assert manifest.repair_torn_tail(path, keep=kept) == len(damage)
    assert path.read_bytes() == good.encode() and kept.read_bytes() == damage
    assert manifest.repair_torn_tail(path, keep=tmp_path / "other") == 0 and not (tmp_path / "other").exists()
    with pytest.raises(FileExistsError):  # never over a file kept before
        path.write_bytes(good.encode() + b"x")
        manifest.repair_torn_tail(path, keep=kept)
    assert kept.read_bytes() == damage
    torn = good.encode() + b"x" * 50  # no newline at all after the last record
    path.write_bytes(torn)
    assert manifest.repair_torn_tail(path, keep=tmp_path / "t") == 50
    assert (tmp_path / "t").read_bytes() == b"x" * 50 and path.read_bytes() == good.encode()
    path.write_bytes(b"y" * 30)  # not one newline in the file: all of it is the torn line
    assert manifest.repair_torn_tail(path, keep=tmp_path / "u") == 30 and path.read_bytes() == b""
    assert (tmp_path / "u").read_bytes() == b"y" * 30
    assert manifest.repair_torn_tail(path) == 0  # an empty file is whole


def test_a_last_line_too_long_for_a_record_is_cut_unparsed(tmp_path, monkeypatch):
    monkeypatch.setattr(manifest, "TORN_LINE_BYTES", 40)
    monkeypatch.setattr(manifest, "_BLOCK", 8)
    seen = []
    path = tmp_path / "changes.jsonl"
    path.write_text('{"a": 1}\n' + '{"b": "' + "z" * 40 + '"}\n')
    assert manifest.repair_torn_tail(path, lambda text: seen.append(text)) == 50
    assert path.read_text() == '{"a": 1}\n' and seen == []
    path.write_text('{"a": 1}\n' + '{"b": "' + "z" * 30 + '"}\n')  # 40 bytes with its newline: parsed
    assert manifest.repair_torn_tail(path, lambda text: seen.append(text)) == 0 and len(seen) == 1
    assert seen[0] == '{"b": "' + "z" * 30 + '"}\n'


def test_torn_tail_and_receipts(tmp_path):
    good = _entry(1).to_json()
    path = tmp_path / "provenance.jsonl"
    path.write_text(good + "\n" + good[:20])
    assert manifest.repair_torn_tail(path) == 20 and path.read_text() == good + "\n"
    assert manifest.repair_torn_tail(path) == 0
    path.write_text(good + "\n" + "{broken}\n")
    assert manifest.repair_torn_tail(path) == len("{broken}\n") and path.read_text() == good + "\n"
    path.write_text("{broken}\n" + good + "\n")
    assert manifest.repair_torn_tail(path) == 0  # damage in the middle is reported, never cut
    assert manifest.repair_torn_tail(tmp_path / "none") == 0
    changes = tmp_path / "changes.jsonl"  # another record file: its own parser decides what is whole
    changes.write_text('{"change": "added"}\n{"chan')
    assert manifest.repair_torn_tail(changes, json.loads) == len('{"chan') and changes.read_text() == '{"change": "added"}\n'
    assert manifest.repair_torn_tail(changes, json.loads) == 0  # not a provenance line, but whole
    changes.write_text('{"change": "added"}\n' + "[" * 100_000 + "\n")  # too deep to parse: cut, no traceback
    assert manifest.repair_torn_tail(changes, json.loads) == 100_001 and changes.read_text() == '{"change": "added"}\n'
    manifest.append_receipt(tmp_path, {"b": 1, "a": "é"})
    manifest.append_receipt(tmp_path, {"c": 2})
    assert (tmp_path / manifest.RECEIPTS).read_text(encoding="utf-8") == '{"a": "é", "b": 1}\n{"c": 2}\n'


# -- a hand-made mirror ----------------------------------------------------------------------
def _entry(i: int, body: bytes = b"", version: int = 1, key: str | None = None, **kw) -> Entry:
    key = key or f"{10101001 + i:09d}.01"
    body = body or f"acta {i}".encode()
    sha = hashlib.sha256(body).hexdigest()
    name = f"{key}.jpg" if version == 1 else f"{key}.v{version}.jpg"
    fields = dict(key=key, kind="acta", version=version, path=f"data/01_A/01_B/01_C/{key[:9]}/{name}", sha256=sha,
                  size=len(body), cid=raw_cid(sha), url=f"http://127.0.0.1:9/{key}.jpg", final_url="", host="h",
                  fetched_at="2024-07-29T00:00:00Z", status=200, etag="", last_modified="",
                  content_type="image/jpeg", site="resultados2024", page="p", center=key[:9], table=key[10:])
    fields.update(kw)
    return Entry(**fields)


def build(root: Path, entries: list[tuple[Entry, bytes]], extra: dict | None = None) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for e, body in entries:
        (root / e.path).parent.mkdir(parents=True, exist_ok=True)
        (root / e.path).write_bytes(body)
    (root / "provenance.jsonl").write_text("".join(e.to_json() + "\n" for e, _b in entries), encoding="utf-8")
    (root / "changes.jsonl").write_text("".join(json.dumps({"key": e.key, "change": "added"}) + "\n"
                                                for e, _b in entries))
    (root / "failures.jsonl").write_text("")
    write_bag_files(root, extra or {})
    return root


def tiny(root: Path, n: int = 5) -> Path:
    rows = []
    for i in range(n):
        body = f"acta {i}".encode()
        rows.append((_entry(i, body), body))
    index = b"CENTRO,MESA\n"
    sha = hashlib.sha256(index).hexdigest()
    rows.append((Entry(key="index/i.csv", kind="index", version=1, path="data/index/i.csv", sha256=sha,
                       size=len(index), cid=raw_cid(sha), url="http://127.0.0.1:9/i.csv", final_url="", host="h",
                       fetched_at="t", status=200, etag="", last_modified="", content_type="text/csv",
                       site="resultados2024", page="p"), index))
    return build(root, rows)


def kinds(problems: list[Problem]) -> set[tuple[str, str]]:
    return {(p.kind, p.path) for p in problems}


def test_an_intact_mirror_reads_and_verifies(tmp_path):
    m = tiny(tmp_path / "m")
    s = state.read_state(m)
    assert s.problems == [] and len(s.entries) == 6 and len(s.manifest) == 6 and s.tags is not None
    assert sorted(s.payload) == sorted(s.manifest) and s.info["Payload-Oxum"].endswith(".6")
    assert s.counts() == {"files": 6, "bytes": sum(e.size for e in s.entries), "actas": 5}
    assert sorted(s.latest_actas()) == [f"{10101001 + i:09d}.01" for i in range(5)]
    assert s.latest_index().key == "index/i.csv" and s.require_clean() is s
    assert verify.verify(m) == [] and verify.verify(m, fast=True) == [] and verify.verify(m, cids=True) == []
    with s.open(s.entries[0].path) as fh:
        assert fh.read() == b"acta 0"
    assert state.read_state(m, records=False).entries == []


def test_verify_names_each_kind_of_damage(tmp_path):
    m = tiny(tmp_path / "m")
    s = state.read_state(m)
    a, b, c = (s.entries[i].path for i in range(3))
    (m / a).write_bytes(b"acta X")  # same size, other bytes
    (m / b).unlink()
    (m / "data" / "planted.jpg").write_bytes(b"x")
    found = kinds(verify.verify(m))
    assert ("changed", a) in found and ("missing", b) in found and ("unlisted", "data/planted.jpg") in found
    assert ("oxum", "bag-info.txt") in found
    fast = kinds(verify.verify(m, fast=True))
    assert ("changed", a) not in fast and ("missing", b) in fast and ("unlisted", "data/planted.jpg") in fast
    (m / "data" / "planted.jpg").unlink()
    (m / b).write_bytes(b"acta 1")
    (m / a).write_bytes(b"acta 0")
    assert verify.verify(m) == []
    (m / c).write_bytes(b"acta 22")  # another size: the Oxum and the hash both say so
    assert kinds(verify.verify(m)) == {("changed", c), ("oxum", "bag-info.txt")}


@pytest.mark.parametrize("fast", [True, False])
@pytest.mark.parametrize("count, workers", [(6, 1), (300, 2)])
def test_a_file_the_manifest_names_otherwise_is_unlisted_and_its_listed_name_missing(tmp_path, fast, count, workers):
    # As many files as listed, each with its recorded size, but one listed under a name no file
    # has: verify compares each part as it comes, then counts, and must not take this as intact,
    # whether it walks in one process or in workers.
    bodies = [f"acta {i:03d}".encode() for i in range(count)]
    m = build(tmp_path / "m", [(_entry(i, body), body) for i, body in enumerate(bodies)])
    victim = _entry(3, b"acta 003").path
    renamed = victim.replace(".jpg", "-x.jpg")
    manifest_file = m / "manifest-sha256.txt"
    manifest_file.write_text(manifest_file.read_text().replace(f"  {victim}\n", f"  {renamed}\n"))
    found = kinds(verify.verify(m, fast=fast, workers=workers))
    assert {("missing", renamed), ("unlisted", victim)} <= found, found
    manifest_file.write_text(manifest_file.read_text().replace(f"  {renamed}\n", f"  {victim}\n"))
    assert kinds(verify.verify(m, fast=fast, workers=workers)) - {("tag-changed", "manifest-sha256.txt")} == set()


@pytest.mark.parametrize("count, workers", [(6, 1), (300, 2)])
def test_an_intact_mirror_is_judged_part_by_part_without_the_file_by_file_comparison(tmp_path, monkeypatch,
                                                                                    count, workers):
    # The parts matched as they came and counted: an intact mirror never needs _compare_payload,
    # whether its files lie in one folder of data/ (one part: the whole) or in several.
    def compared(*args):
        raise AssertionError("an intact mirror was compared file by file")
    one = build(tmp_path / "one", [(_entry(i), f"acta {i}".encode()) for i in range(count)])
    several = build(tmp_path / "several", [(msgspec.structs.replace(_entry(i), path=f"data/{i % 3}/{_entry(i).key}.jpg"),
                                            f"acta {i}".encode()) for i in range(count)])
    monkeypatch.setattr(verify, "_compare_payload", compared)
    for m in (one, several):
        for fast in (False, True):
            assert verify.verify(m, fast=fast, workers=workers) == [], (m, fast)


def test_verify_checks_the_tag_files_and_provenance(tmp_path):
    m = tiny(tmp_path / "m")
    with open(m / "changes.jsonl", "a") as fh:
        fh.write("{}\n")
    assert kinds(verify.verify(m)) == {("tag-changed", "changes.jsonl")}
    assert kinds(verify.verify(m, fast=True)) == {("tag-changed", "changes.jsonl")}  # --fast hashes tag files
    (m / "changes.jsonl").unlink()
    assert kinds(verify.verify(m)) == {("tag-missing", "changes.jsonl")}
    (m / "tagmanifest-sha256.txt").unlink()
    assert kinds(verify.verify(m)) == {("tag-missing", "tagmanifest-sha256.txt")}
    m2 = tiny(tmp_path / "m2")
    lines = (m2 / "provenance.jsonl").read_text().splitlines()
    first = json.loads(lines[0])
    first["sha256"] = "0" * 64
    (m2 / "provenance.jsonl").write_text("\n".join([json.dumps(first)] + lines[2:]) + "\n")
    found = kinds(verify.verify(m2))
    second = json.loads(lines[1])["path"]
    assert ("provenance", first["path"]) in found and ("provenance", second) in found
    assert ("tag-changed", "provenance.jsonl") in found
    assert kinds(verify.verify(m2, fast=True)) == found  # none of these needs a payload file hashed
    extra = _entry(40)
    with open(m2 / "provenance.jsonl", "a") as fh:
        fh.write(extra.to_json() + "\n")
    assert ("provenance", extra.path) in kinds(verify.verify(m2))


def test_verify_fast_compares_sizes_and_says_it_did_not_hash(tmp_path):
    m = tiny(tmp_path / "m")
    s = state.read_state(m)
    a, b = s.entries[0].path, s.entries[1].path
    (m / a).write_bytes(b"acta X")  # same size, other bytes: only hashing sees it
    (m / b).write_bytes(b"acta 11")  # one byte more
    seen = []
    fast = verify.check(m, fast=True, progress=lambda done, total: seen.append((done, total)))
    assert fast.hashed is False and [str(p) for p in fast.problems] == [
        f"changed: {b} (7 bytes, provenance.jsonl says 6 (sizes only: not hashed))",
        "oxum: bag-info.txt (Payload-Oxum says 42.6, data/ holds 43.6)"]
    assert seen[-1] == (6, 6) and seen == sorted(seen)
    assert fast.state.payload == sorted(s.manifest) and fast.state.entries == s.entries
    assert (fast.state.manifest, fast.state.tags, fast.state.info) == (s.manifest, s.tags, s.info)
    full = verify.check(m)
    assert full.hashed is True and [(p.kind, p.path) for p in full.problems] == [
        ("changed", a), ("changed", b), ("oxum", "bag-info.txt")]
    assert verify.verify(m, fast=True) == fast.problems
    (m / b).unlink()
    (m / "data" / "planted.jpg").write_bytes(b"x")
    assert kinds(verify.verify(m, fast=True)) == {("missing", b), ("unlisted", "data/planted.jpg"),
                                                  ("oxum", "bag-info.txt")}


def test_verify_fast_with_a_record_missing_names_it_without_a_size(tmp_path):
    m = tiny(tmp_path / "m")
    lines = (m / "provenance.jsonl").read_text().splitlines(keepends=True)
    gone = json.loads(lines[0])["path"]
    (m / "provenance.jsonl").write_text("".join(lines[1:]))
    (m / gone).write_bytes(b"a longer body")
    assert [str(p) for p in verify.verify(m, fast=True)] == [
        "tag-changed: provenance.jsonl (sha256 differs from the tag manifest)",
        f"provenance: {gone} (in the manifest, no provenance line)",
        "oxum: bag-info.txt (Payload-Oxum says 42.6, data/ holds 49.6)"]


def test_verify_checks_cids(tmp_path):
    e = _entry(0)
    m = build(tmp_path / "m", [(Entry(**{**_fields(e), "cid": "bafkreiwrong"}), b"acta 0")])
    assert kinds(verify.verify(m, cids=True)) == {("cid", e.path)}
    assert verify.verify(m) == [] and verify.check(m).problems == []  # CIDs only when asked
    big = b"\xff" * (1024 * 1024 + 1)
    e2 = _entry(1, big)
    m2 = build(tmp_path / "m2", [(e2, big)])
    problems = verify.verify(m2, cids=True)
    assert kinds(problems) == {("cid", e2.path)} and "the bytes give bafybei" in problems[0].detail


def _fields(e: Entry) -> dict:
    return {name: getattr(e, name) for name in Entry.__slots__}


def test_verify_hashes_many_files_across_workers(tmp_path):
    rows = [(_entry(i), f"acta {i}".encode()) for i in range(300)]
    m = build(tmp_path / "m", rows)
    assert verify.verify(m, workers=2) == []
    victim = rows[123][0].path
    (m / victim).write_bytes(b"acta 999")
    problems = verify.verify(m, workers=2)
    assert [(p.kind, p.path) for p in problems if p.kind != "oxum"] == [("changed", victim)]
    assert verify.hash_files(m, [victim, "data/none"]) == [(victim, hashlib.sha256(b"acta 999").hexdigest()),
                                                           ("data/none", None)]


def test_verify_on_no_bag(tmp_path):
    with pytest.raises(NotAMirror, match="not a directory"):
        verify.verify(tmp_path / "none")
    (tmp_path / "bagit.txt").write_text("x")
    with pytest.raises(NotAMirror, match="not a mirror"):
        verify.verify(tmp_path)
    with pytest.raises(NotAMirror, match="no provenance.jsonl"):
        state.provenance_state(tmp_path)


# -- the reader's rules ----------------------------------------------------------------------
def _lines(tmp_path: Path, *lines: str | bytes) -> tuple[list, list[Problem]]:
    path = tmp_path / "provenance.jsonl"
    path.write_bytes(b"".join((x if isinstance(x, bytes) else x.encode()) + b"\n" for x in lines))
    problems: list[Problem] = []
    return list(state.iter_records(path, problems)), problems


def test_the_reader_rejects_each_bad_record(tmp_path):
    good = _entry(1)
    obj = json.loads(good.to_json())
    bad = {
        "absolute": {**obj, "path": "/etc/passwd"},
        "dotdot": {**obj, "path": "data/../../etc/passwd"},
        "outside": {**obj, "path": "bagit.txt"},
        "empty part": {**obj, "path": "data//x.jpg"},
        "dot part": {**obj, "path": "data/./x.jpg"},
        "nul": {**obj, "path": "data/x\u0000.jpg"},
        "number path": {**obj, "path": 7},
        "no key": {k: v for k, v in obj.items() if k != "key"},
        "bad key": {**obj, "key": "../1"},
        "short key": {**obj, "key": "1.01"},
        "kind": {**obj, "kind": "index"},
        "unknown kind": {**obj, "kind": "other"},
        "wrong file": {**obj, "key": "000000001.02"},
        "index kind": {**obj, "key": "index/x.csv", "kind": "acta"},
        "index path": {**obj, "key": "index/x.csv", "kind": "index"},
        "index dot": {**obj, "key": "index/..", "kind": "index", "path": "data/index/x"},
        "size float": {**obj, "size": 1.0},
        "size bool": {**obj, "size": True},
        "size negative": {**obj, "size": -1},
        "size huge": {**obj, "size": 1 << 40},
        "version 0": {**obj, "version": 0},
        "status": {**obj, "status": 99},
        "status high": {**obj, "status": 600},
        "sha": {**obj, "sha256": "A" * 64},
        "supersedes": {**obj, "supersedes": "x"},
        "url": {**obj, "url": 5},
    }
    texts = [json.dumps(v) for v in bad.values()]
    spaced = json.dumps(obj)  # the good record with a bad size: json writes no 1e400 or NaN itself
    assert '"size": 6,' in spaced
    texts += ['{"size": 1e400}', spaced.replace('"size": 6,', '"size": 1e400,'), "[1]", "{", "NaN",
              spaced.replace('"size": 6,', '"size": NaN,'), "[" * 100000]
    records, problems = _lines(tmp_path, *texts, b'{"key": "\xff"}', good.to_json())
    assert [r.entry for r in records] == [good] and records[0].number == len(texts) + 2
    assert len(problems) == len(texts) + 1
    assert all(p.kind == "provenance" and p.path == "provenance.jsonl" for p in problems)
    details = [p.detail for p in problems]
    assert details[0].startswith("line 1: ") and "absolute" in details[0] and "'..'" in details[1]
    assert "missing field 'key'" in details[7] and "is an acta key" in details[10]
    assert "not a file of acta" in details[12] and "not UTF-8" in details[-1]
    assert "outside 0..68719476736" in details[19] and "not a whole number" in details[16]
    with pytest.raises(NotAMirror, match=r"provenance.jsonl:1: bad provenance line"):
        list(state.iter_records(tmp_path / "provenance.jsonl"))


def test_duplicate_paths_and_versions(tmp_path):
    one, two = _entry(1), _entry(1, b"acta 1 again", version=2)
    ten = _entry(1, b"acta 1 tenth", version=10)
    records, problems = _lines(tmp_path, one.to_json(), ten.to_json(), two.to_json(), one.to_json())
    assert [r.entry.version for r in records] == [1, 10, 2]
    assert [p.detail for p in problems] == [f"line 4: {one.path} is listed twice (lines 1 and 4)"]
    s = state.MirrorState(tmp_path, {}, None, {}, [r.entry for r in records], [])
    assert s.latest_actas()[one.key].version == 10  # a number, not text: v10 after v2
    assert s.counts()["actas"] == 1 and s.latest_index() is None
    assert records[0].text == one.to_json() + "\n" and records[0].path == one.path
    assert records[0].sha256 == one.sha256 and records[0].size == one.size


def test_a_blank_line_and_a_last_line_without_newline(tmp_path):
    path = tmp_path / "provenance.jsonl"
    path.write_text("\n" + _entry(1).to_json() + "\n  \n" + _entry(2).to_json())
    records = list(state.iter_records(path))
    assert [r.number for r in records] == [2, 4] and records[1].text.endswith("}\n")
    assert list(state.iter_records(tmp_path / "none")) == []


def test_manifest_rules(tmp_path):
    h = "a" * 64
    problems: list[Problem] = []
    text = (f"{h}  data/x\n{h}  data/x\n{h}  /etc/passwd\n{h}  ../x\nnonsense\n{h}  bagit.txt\n\n{h}  data/y\n")
    got = state.parse_manifest(text.encode(), "manifest-sha256.txt", problems, payload=True)
    assert got == {"data/x": h, "data/y": h}
    assert [(p.kind, p.path) for p in problems] == [
        ("duplicate", "data/x"), ("unsafe", "manifest-sha256.txt"), ("unsafe", "manifest-sha256.txt"),
        ("format", "manifest-sha256.txt"), ("unsafe", "manifest-sha256.txt")]
    assert "line 3" in problems[1].detail and "absolute" in problems[1].detail
    assert "line 5" in problems[3].detail and "outside data/" in problems[4].detail
    problems = []
    tags = state.parse_manifest(f"{h}  bag-info.txt\n{h}  data/x\n{h}  /dev/zero\n".encode(), "t", problems,
                                payload=False)
    assert tags == {"bag-info.txt": h} and len(problems) == 2 and "payload path" in problems[0].detail
    problems = []
    assert state.parse_manifest(b"\xff", "t", problems, payload=False) == {} and problems[0].detail == "not UTF-8"


def test_keys_and_shard_names():
    assert state.is_acta_key("010101001.01") and state.is_acta_key("010101001.100")
    for bad in ("10101001.01", "010101001.1", "010101001.01 ", "010101001_01", "a10101001.01", 5):
        assert not state.is_acta_key(bad)
    assert state.is_index_key("index/RESULTADOS_2024_CSV_V1.csv")
    for bad in ("index/", "index/a/b", "index/.", "index/..", "index/a\nb", "x/a", 3):
        assert not state.is_index_key(bad)
    assert state.is_shard_name("01") and state.is_shard_name("99")
    for bad in ("1", "001", "../01", "/01", "0a", "01\n", 1, None):
        assert not state.is_shard_name(bad)


def test_open_payload_refuses_links_fifos_and_escapes(tmp_path):
    m = tmp_path / "m"
    (m / "data" / "real").mkdir(parents=True)
    (m / "data" / "real" / "f").write_bytes(b"ok")
    outside = tmp_path / "secret"
    outside.write_text("host file")
    os.symlink(outside, m / "data" / "link")
    os.symlink(m / "data" / "real", m / "data" / "dirlink")
    os.symlink("/dev/zero", m / "data" / "zero")
    os.mkfifo(m / "data" / "fifo")
    with state.open_payload(m, "data/real/f") as fh:
        assert fh.read() == b"ok"
    for rel, why in [("data/link", "symbolic link"), ("data/dirlink/f", "data/dirlink is a symbolic link"),
                     ("data/zero", "symbolic link"), ("data/fifo", "a FIFO"), ("data/real", "a folder"),
                     ("/etc/passwd", "absolute"), ("data/../../secret", "'..'"), ("data//f", "empty")]:
        with pytest.raises(UnsafePath, match=why):
            state.open_payload(m, rel)
    with pytest.raises(FileNotFoundError):
        state.open_payload(m, "data/real/none")
    with state.Opener(m) as opener:  # the open folder is reused, and a fresh walk follows no link
        for _ in range(2):
            os.close(opener.open_fd("data/real/f"))
        with pytest.raises(UnsafePath):
            opener.open_fd("data/dirlink/f")
        os.close(opener.open_fd("data/real/f"))
    problems: list[Problem] = []
    assert state._walk_payload(m, problems) == ["data/real/f"]
    assert sorted((p.path, p.detail.split(",")[0]) for p in problems) == [
        ("data/dirlink", "a symbolic link"), ("data/fifo", "a FIFO"), ("data/link", "a symbolic link"),
        ("data/zero", "a symbolic link")]


def test_a_symlinked_data_folder_and_tag_files(tmp_path):
    m = tiny(tmp_path / "m")
    os.rename(m / "data", tmp_path / "elsewhere")
    os.symlink(tmp_path / "elsewhere", m / "data")
    s = state.read_state(m)
    assert ("unsafe", "data") in kinds(s.problems) and s.payload == []
    found = kinds(verify.verify(m))
    assert ("unsafe", "data") in found and ("missing", s.entries[0].path) in found  # nothing in it was read
    with pytest.raises(NotAMirror, match="unsafe: data"):
        s.require_clean()
    m2 = tiny(tmp_path / "m2")
    os.rename(m2 / "provenance.jsonl", tmp_path / "p.jsonl")
    os.symlink(tmp_path / "p.jsonl", m2 / "provenance.jsonl")
    s2 = state.read_state(m2)
    assert ("unsafe", "provenance.jsonl") in kinds(s2.problems) and s2.entries == []
    with pytest.raises(UnsafePath):
        list(state.iter_records(m2 / "provenance.jsonl"))
    os.rename(m2 / "bag-info.txt", tmp_path / "bi")
    os.mkfifo(m2 / "bag-info.txt")
    assert ("unsafe", "bag-info.txt") in kinds(state.read_state(m2).problems)
    (m2 / "bag-info.txt").unlink()
    (m2 / "bag-info.txt").write_bytes(b"Payload-Oxum: \xff\n")
    assert ("format", "bag-info.txt") in kinds(state.read_state(m2).problems)


def test_require_clean_names_the_first_problem_and_counts_the_rest(tmp_path):
    s = state.MirrorState(tmp_path, {}, None, {}, [], [], [Problem("a", "x"), Problem("b", "y")])
    with pytest.raises(NotAMirror, match=r": a: x \(and 1 more problem\(s\)"):
        s.require_clean()
    with pytest.raises(NotAMirror) as exc:
        state.MirrorState(tmp_path, {}, None, {}, [], [], [Problem("a", "x")]).require_clean()
    assert str(exc.value).endswith(": a: x")


# -- the signed statement ----------------------------------------------------------------------
@pytest.fixture
def signed(tmp_path, keypair):
    base, _secret, _public = keypair
    m = tiny(tmp_path / "m")
    root = evidence.sign_bag(m, f"{base}.key", source="http://127.0.0.1:9")
    assert root == json.loads((m / evidence.STATEMENT).read_text())["merkle_root"]
    return m


def test_the_statement_signs_the_coverage_and_the_gaps_of_its_list(tmp_path, keypair):
    """The statement carries the coverage of the site's list (audit.coverage.census, counted as
    for a scheduled run's working bag), and, when the last run could not read all of the list,
    its gaps: the total is then a floor, and the signed summary says so."""
    from mirror.audit.coverage import census

    base = keypair[0]
    m = tiny(tmp_path / "m")
    evidence.sign_bag(m, f"{base}.key")
    found = census(m, index_held=False)
    coverage = json.loads((m / evidence.STATEMENT).read_text())["coverage"]
    assert coverage == {"summary": found.summary(), "tables": 5, "source": found.source, "counts": {"archived": 5}}
    assert found.summary() == "5 of 5 tables archived"
    lines = [{"key": "page", "url": "http://127.0.0.1:9/estado/9", "reason": "HTTP 500", "cause": "unreadable page"},
             {"key": "index", "url": "http://127.0.0.1:9/i.csv", "reason": "row 3", "cause": "bad index row"},
             {"key": "index", "url": "http://127.0.0.1:9/i.csv", "reason": "row 4", "cause": "bad index row"}]
    (m / "failures.jsonl").write_text("".join(json.dumps(o) + "\n" for o in lines))
    _retag(m, "failures.jsonl")
    evidence.sign_bag(m, f"{base}.key")
    coverage = json.loads((m / evidence.STATEMENT).read_text())["coverage"]
    assert coverage["listing_gaps"] == {"pages": 1, "rows": 2} and coverage["tables"] == 5, coverage
    assert coverage["summary"] == ("5 of 5 tables archived; the list of tables may be short: the last run could not "
                                   "read 1 listing page(s) and 2 index row(s)"), coverage


def test_a_statement_from_before_signed_records_says_what_it_signs(signed, keypair):
    """A statement without tag_files (written before the records were signed) signs the payload
    manifest only: the seal says so, naming the records it does not sign."""
    from mirror.archive import write_tag_manifest

    base = keypair[0]
    statement = json.loads((signed / evidence.STATEMENT).read_text())
    del statement["tag_files"]
    (signed / evidence.STATEMENT).write_text(json.dumps(statement, indent=1, sort_keys=True) + "\n")
    comment = f"acta-mirror merkle root {statement['merkle_root']} size {statement['tree_size']}"
    (signed / evidence.SIGNATURE).write_text(sign.sign_file(signed / evidence.STATEMENT,
                                                            sign.load_secret(f"{base}.key"), comment))
    write_tag_manifest(signed)
    seal = evidence.check_seal(signed, f"{base}.pub")
    assert seal.signed and seal.trusted and not seal.records_signed, seal
    assert seal.summary == (f"signed by key {seal.key_id}, checked against the key you gave; the statement signs "
                            "the payload manifest only, not " + ", ".join(state.SIGNED_TAG_FILES[1:])
                            + " (it predates signed records)")


def test_manifest_items_names_a_manifest_that_is_a_link(tmp_path):
    m = tiny(tmp_path / "m")
    target = m / "manifest-sha256.txt"
    target.rename(tmp_path / "elsewhere.txt")
    target.symlink_to(tmp_path / "elsewhere.txt")
    with pytest.raises(NotAMirror) as exc:
        evidence.manifest_items(m)
    assert str(exc.value).startswith(f"{target}: ") and "link" in str(exc.value), exc.value


def test_a_signed_mirror_checks_with_and_without_the_key(signed, keypair):
    base, secret, public = keypair
    statement = json.loads((signed / evidence.STATEMENT).read_text())
    assert statement["tag_files"].keys() == set(state.SIGNED_TAG_FILES)
    assert statement["counts"] == {"files": 6, "bytes": state.read_state(signed).counts()["bytes"], "actas": 5}
    assert statement["key_id"] == sign.key_id_text(public.key_id) and statement["source"] == "http://127.0.0.1:9"
    assert statement["public_key"] == public.line() and statement["tree_size"] == 6
    assert verify.verify(signed) == []
    trusted = evidence.check_seal(signed, f"{base}.pub")
    assert trusted.problems == [] and trusted.trusted and trusted.signed and trusted.key_id == statement["key_id"]
    assert evidence.check_seal(signed, sign.load_public(f"{base}.pub")) == trusted  # the key read already
    assert trusted.summary == f"signed by key {statement['key_id']}, checked against the key you gave"
    assert (plain := evidence.check_seal(signed)).trusted is False and plain.signed is True
    plain = evidence.check_seal(signed)
    assert plain.problems == [] and not plain.trusted and plain.key_id == statement["key_id"]
    assert plain.summary == (f"signed by key {statement['key_id']}; signature not checked against a key you trust "
                             "(use --pubkey)")
    ok = subprocess.run(["minisign", "-Vm", str(signed / evidence.STATEMENT), "-p", f"{base}.pub"],
                        capture_output=True, text=True)
    assert ok.returncode == 0 and statement["merkle_root"] in ok.stdout


def test_an_unsigned_mirror(tmp_path, keypair):
    base, *_ = keypair
    m = tiny(tmp_path / "m")
    seal = evidence.check_seal(m)
    assert (seal.problems, seal.signed, seal.key_id, seal.trusted) == ([], False, "", False)
    assert seal.summary == "not signed"
    assert kinds(evidence.check_seal(m, f"{base}.pub").problems) == {("signature", "signed-root.json.minisig")}


def test_each_change_after_signing_is_named(signed, keypair):
    base, *_ = keypair
    with open(signed / "failures.jsonl", "a") as fh:
        fh.write('{"key": "x"}\n')
    seal = evidence.check_seal(signed, f"{base}.pub")
    assert kinds(seal.problems) == {("signed", "failures.jsonl")} and "the signed statement says" in seal.problems[0].detail
    (signed / "failures.jsonl").unlink()
    assert [p.detail for p in evidence.check_seal(signed).problems] == ["signed, but missing"]


def test_verify_hashes_each_signed_tag_file_once_and_both_checks_still_name_a_change(signed, keypair, monkeypatch):
    base, *_ = keypair
    read = []
    hash_files = verify.hash_files
    monkeypatch.setattr(verify, "hash_files", lambda root, rels, limit=None: read.extend(rels) or hash_files(root, rels, limit))
    checked = verify.check(signed, pubkey=f"{base}.pub")
    assert checked.problems == [] and checked.seal.problems == [] and checked.seal.trusted
    assert read and not set(read) & set(state.SIGNED_TAG_FILES)  # evidence.tag_file_hashes read those, once
    with open(signed / "provenance.jsonl", "a") as fh:
        fh.write("\n")  # a blank line: the records are the same, the file is not
    checked = verify.check(signed)
    assert kinds(checked.problems) == {("tag-changed", "provenance.jsonl")}
    assert kinds(checked.seal.problems) == {("signed", "provenance.jsonl")}
    (signed / "provenance.jsonl").rename(signed / "records")
    os.symlink("records", signed / "provenance.jsonl")  # unreadable for the statement: each check names it
    checked = verify.check(signed)
    assert ("unsafe", "provenance.jsonl") in kinds(checked.problems)
    assert [p.detail for p in checked.seal.problems if p.kind == "signed" and p.path == evidence.STATEMENT][0].startswith(
        "cannot hash the tag files: provenance.jsonl")


def test_check_collects_no_garbage_while_it_reads_and_leaves_the_collector_as_it_found_it(tmp_path, monkeypatch):
    import gc

    m = tiny(tmp_path / "m")
    during = []
    read_entries = verify.read_entries
    monkeypatch.setattr(verify, "read_entries", lambda *a: during.append(gc.isenabled()) or read_entries(*a))
    assert gc.isenabled()
    assert verify.check(m).problems == [] and gc.isenabled() and during == [False]
    gc.disable()
    try:
        assert verify.check(m).problems == [] and not gc.isenabled()
    finally:
        gc.enable()


def test_a_check_that_fails_before_it_reads_the_walk_stops_the_workers(tmp_path, monkeypatch):
    m = tiny(tmp_path / "m")
    stopped = []

    class Pool(ProcessPoolExecutor):
        def shutdown(self, wait=True, *, cancel_futures=False):
            stopped.append(cancel_futures)
            super().shutdown(wait, cancel_futures=cancel_futures)

    monkeypatch.setattr(verify, "pool", Pool)
    monkeypatch.setattr(verify, "PARALLEL_FROM", 1)
    assert verify.check(m, workers=2).problems == [] and stopped == [True]
    monkeypatch.setattr(verify, "read_entries", lambda *a: (_ for _ in ()).throw(NotAMirror("records gone")))
    with pytest.raises(NotAMirror):
        verify.check(m, workers=2)
    assert stopped == [True, True]


def _resign(m: Path, secret, change) -> None:
    """Edit the statement as signed first, and sign it again with the same key."""
    original = m / "original-statement"
    if not original.exists():
        original.write_bytes((m / evidence.STATEMENT).read_bytes())
    statement = json.loads(original.read_text())
    change(statement)
    (m / evidence.STATEMENT).write_text(json.dumps(statement))
    root = statement.get("merkle_root")
    (m / evidence.SIGNATURE).write_text(sign.sign_file(m / evidence.STATEMENT, secret,
                                                       f"acta-mirror merkle root {root} size 6"))


def _details(m: Path, pubkey=None) -> list[str]:
    return [str(p) for p in evidence.check_seal(m, pubkey).problems]


def test_the_signed_counts_and_tags_are_checked(signed, keypair):
    base, secret, _public = keypair
    pub = f"{base}.pub"
    _resign(signed, secret, lambda s: None)
    assert _details(signed, pub) == []
    _resign(signed, secret, lambda s: s["counts"].update(actas=4))
    assert _details(signed, pub) == ["signed: signed-root.json (signed count of actas is 4, the mirror has 5)"]
    _resign(signed, secret, lambda s: s["counts"].update(files=7, bytes=0))
    assert _details(signed) == ["signed: signed-root.json (signed count of files is 7, the mirror has 6)",
                                "signed: signed-root.json (signed count of bytes is 0, the mirror has "
                                f"{state.read_state(signed).counts()['bytes']})"]
    _resign(signed, secret, lambda s: s.pop("counts"))
    assert _details(signed) == ["signed: signed-root.json (no counts)"]
    _resign(signed, secret, lambda s: s["tag_files"].pop("changes.jsonl"))
    assert _details(signed, pub) == ["signed: changes.jsonl (present, but not there when the statement was signed)"]
    _resign(signed, secret, lambda s: s.update(tag_files=[]))
    assert _details(signed) == ["signature: signed-root.json (tag_files is not a table of sha256 by file)"]
    _resign(signed, secret, lambda s: s["tag_files"].update({"evil.txt": "0" * 64}))
    assert _details(signed) == ["signed: signed-root.json (signs an unknown tag file 'evil.txt')"]
    _resign(signed, secret, lambda s: s.pop("tag_files"))  # a statement from before tag files were signed
    assert _details(signed, pub) == []
    _resign(signed, secret, lambda s: s.update(merkle_root="0" * 64))
    assert ("root", "signed-root.json") in kinds(evidence.check_seal(signed, pub).problems)
    _resign(signed, secret, lambda s: s.update(tree_size=5))
    root = evidence.tree_root(evidence.manifest_items(signed))
    assert _details(signed, pub) == [f"root: signed-root.json (signed root {json.loads((signed / 'original-statement').read_text())['merkle_root']} of 5 files, the manifest gives {root} of 6)"]


def test_a_statement_that_is_not_one(signed, keypair):
    base, secret, _public = keypair
    for text in ("[]", "{}", "not json", '{"merkle_root": "x"}'):
        (signed / evidence.STATEMENT).write_text(text)
        (signed / evidence.SIGNATURE).write_text(sign.sign_file(signed / evidence.STATEMENT, secret, "c"))
        assert kinds(evidence.check_seal(signed).problems) == {("signature", "signed-root.json")}, text
    (signed / evidence.SIGNATURE).write_text("junk")
    assert kinds(evidence.check_seal(signed).problems) == {("signature", "signed-root.json.minisig")}
    (signed / evidence.SIGNATURE).unlink()
    problems = evidence.check_seal(signed).problems
    assert [(p.kind, p.path, p.detail) for p in problems] == [
        ("signature", "signed-root.json.minisig", "missing: a signature needs both files")]
    (signed / evidence.SIGNATURE).write_text("x")
    (signed / evidence.STATEMENT).unlink()
    assert kinds(evidence.check_seal(signed).problems) == {("signature", "signed-root.json")}
    (signed / evidence.STATEMENT).write_bytes(b" " * (evidence.MAX_STATEMENT_BYTES + 1))
    assert "larger than" in evidence.check_seal(signed).problems[0].detail


def test_the_embedded_key_and_the_trusted_comment(signed, keypair):
    base, secret, public = keypair
    other, other_public = sign.generate()
    _resign(signed, secret, lambda s: s.update(public_key=other_public.line()))
    assert any("made by key" in p.detail for p in evidence.check_seal(signed).problems)
    assert evidence.check_seal(signed, f"{base}.pub").problems == []  # the key you trust decides
    _resign(signed, secret, lambda s: s.update(public_key="junk"))
    assert any("not a minisign Ed25519 public key" in p.detail for p in evidence.check_seal(signed).problems)
    _resign(signed, secret, lambda s: s.update(public_key=public.line()))
    text = sign.sign_file(signed / evidence.STATEMENT, secret, "acta-mirror merkle root 00 size 6")
    (signed / evidence.SIGNATURE).write_text(text)
    problems = evidence.check_seal(signed, f"{base}.pub").problems
    assert kinds(problems) == {("root", "signed-root.json.minisig")}
    lines = text.splitlines()
    (signed / evidence.SIGNATURE).write_text("\n".join(lines[:2] + ["trusted comment: x"] + lines[3:]))
    for key in (None, f"{base}.pub"):
        assert [p.detail for p in evidence.check_seal(signed, key).problems] == [
            "signed-root.json.minisig: the trusted comment was altered"]


def test_bag_info_root_and_unsafe_statement(signed, tmp_path):
    info = (signed / "bag-info.txt").read_text()
    (signed / "bag-info.txt").write_text(info.replace("Acta-Mirror-Merkle-Root: ", "Acta-Mirror-Merkle-Root: 0"))
    assert ("root", "bag-info.txt") in kinds(evidence.check_seal(signed).problems)
    (signed / evidence.STATEMENT).unlink()
    os.symlink("/dev/zero", signed / evidence.STATEMENT)
    assert ("signature", "signed-root.json") in kinds(evidence.check_seal(signed).problems)


def test_signing_refuses_a_mirror_that_does_not_check_out(tmp_path, keypair):
    base, *_ = keypair
    m = tiny(tmp_path / "m")
    with open(m / "provenance.jsonl", "a") as fh:
        fh.write('{"broken"\n')
    with pytest.raises(NotAMirror, match="line 7"):
        evidence.sign_bag(m, f"{base}.key")
    assert not (m / evidence.STATEMENT).exists()


# -- proofs and diff -------------------------------------------------------------------------
def test_prove_and_check_every_file(signed, tmp_path):
    root = json.loads((signed / evidence.STATEMENT).read_text())["merkle_root"]
    items = evidence.manifest_items(signed)
    for i, (rel, sha) in enumerate(items):
        proof = evidence.prove(signed, rel)
        assert proof["leaf_index"] == i and proof["sha256"] == sha and proof["root"] == root
        assert proof["tree_size"] == len(items) and proof["path"] == rel and proof["version"] == 1
        evidence.check_proof(signed / rel, proof, root)
        with pytest.raises(sign.SignatureError):
            evidence.check_proof(signed / rel, {**proof, "audit_path": proof["audit_path"] + [root]}, root)
    rel = items[0][0]
    proof = evidence.prove(signed, str(signed / rel))  # a path on disk inside the mirror
    assert proof["path"] == rel and evidence.prove(signed, "./" + rel)["path"] == rel
    with pytest.raises(UsageError, match="is not in"):
        evidence.prove(signed, "data/none.jpg")
    with pytest.raises(sign.SignatureError, match="does not lead to root"):
        evidence.check_proof(signed / rel, proof, "0" * 64)
    with pytest.raises(sign.SignatureError, match="is not the one the proof is for"):
        evidence.check_proof(signed / items[1][0], proof, root)
    with pytest.raises(UsageError, match="malformed"):
        evidence.check_proof(signed / rel, {**proof, "audit_path": ["zz"]}, root)
    with pytest.raises(UsageError):
        evidence.check_proof(tmp_path / "none", proof, root)
    (signed / "manifest-sha256.txt").write_text("junk\n")
    with pytest.raises(NotAMirror, match="line 1"):
        evidence.prove(signed, rel)
    with pytest.raises(NotAMirror, match="no manifest"):
        evidence.manifest_items(tmp_path)


def test_diff_takes_the_highest_version(tmp_path):
    e1, e2, e10 = _entry(1), _entry(1, b"two", version=2), _entry(1, b"ten", version=10)
    a = build(tmp_path / "a", [(e1, b"acta 1")])
    b = build(tmp_path / "b", [(e1, b"acta 1"), (e10, b"ten"), (e2, b"two")])
    assert evidence.keyed(b) == {e1.key: e10.sha256}
    assert evidence.keyed(b / "manifest-sha256.txt") == {e1.key: e10.sha256}
    assert evidence.diff(a, b) == {"added": [], "removed": [], "changed": [e1.key]}
    assert evidence.diff(b, b / "manifest-sha256.txt") == {"added": [], "removed": [], "changed": []}
    c = tiny(tmp_path / "c", 3)
    assert evidence.diff(c, b) == {"added": [], "removed": [f"{10101001 + i:09d}.01" for i in (0, 2)],
                                   "changed": [e1.key]}
    with pytest.raises(UsageError):
        evidence.keyed(tmp_path / "none")
    with open(b / "provenance.jsonl", "a") as fh:
        fh.write(e1.to_json() + "\n")
    with pytest.raises(NotAMirror, match="listed twice"):
        evidence.keyed(b)


def test_key_and_signature_messages_name_the_file_and_the_fault(tmp_path, keypair):
    base, secret, public = keypair
    pub_line = public.line()
    cases = [  # (file text, loader, the exact message after the path)
        ("untrusted comment: x\n" + pub_line[:10] + "!" + pub_line[10:] + "\n", sign.load_public,
         "not a minisign public key"),
        ("untrusted comment: x\n", sign.load_public, "not a minisign public key"),
        ("untrusted comment: x\n" + base64.b64encode(b"Ed" + bytes(39)).decode() + "\n", sign.load_public,
         "not a minisign Ed25519 public key"),
        ("untrusted comment: x\n", sign.load_secret, "not a minisign secret key"),
        ("untrusted comment: x\n" + pub_line + "\n", sign.load_secret, "not a minisign Ed25519 secret key"),
    ]
    for i, (text, loader, message) in enumerate(cases):
        path = tmp_path / f"k{i}"
        path.write_text(text)
        with pytest.raises(UsageError) as exc:
            loader(path)
        assert str(exc.value) == f"{path}: {message}", i
    (tmp_path / "bin").write_bytes(b"\xff\xfe")
    with pytest.raises(UsageError) as exc:
        sign.load_public(tmp_path / "bin")
    assert str(exc.value) == f"{tmp_path / 'bin'}: cannot read the public key (UnicodeDecodeError)"
    with pytest.raises(UsageError) as exc:
        sign.load_secret(tmp_path / "absent")
    assert str(exc.value) == f"{tmp_path / 'absent'}: cannot read the secret key (FileNotFoundError)"
    with pytest.raises(UsageError) as exc:
        sign.parse_public(pub_line[:10] + "!" + pub_line[10:])
    assert str(exc.value) == "public key: not a minisign Ed25519 public key"
    body = base64.b64decode(Path(f"{base}.key").read_text().splitlines()[1])
    for name, raw, message in [
            ("enc", body[:2] + b"Sc" + body[4:], "the key is password-protected; acta-mirror needs an unencrypted key "
                                                  "(minisign -G -W, or acta-mirror keygen)"),
            ("chk", body[:-1] + bytes([body[-1] ^ 1]), "the secret key's checksum is wrong (damaged key file)"),
            ("half", body[:62] + bytes(32) + body[94:-32] + bytes(32),
             "the secret key does not match its public half (damaged key file)"),
            ("long", body + b"\x00", "not a minisign Ed25519 secret key")]:
        (tmp_path / name).write_text("untrusted comment: c\n" + base64.b64encode(raw).decode() + "\n")
        with pytest.raises(UsageError) as exc:
            sign.load_secret(tmp_path / name)
        assert str(exc.value) == f"{tmp_path / name}: {message}"
    with pytest.raises(ValueError) as exc:
        sign.sign_file(tmp_path / "k0", secret, "a\nb")
    assert str(exc.value) == "a trusted comment is one line"
    target, sig, lines = _signed(tmp_path, secret)
    for bad, message in [(["x"], "not a minisign signature"),
                         ([lines[0], lines[1][:8] + "!" + lines[1][8:], lines[2], lines[3]], "damaged (not base64)"),
                         ([lines[0], lines[1], lines[2], lines[3][:8] + "!" + lines[3][8:]], "damaged (not base64)"),
                         ([lines[0], base64.b64encode(b"ED" + bytes(71)).decode(), lines[2], lines[3]],
                          "not an Ed25519 minisign signature")]:
        with pytest.raises(sign.SignatureError) as exc:
            sign.parse_signature("\n".join(bad), "the.minisig")
        assert str(exc.value) == f"the.minisig: {message}"
    with pytest.raises(sign.SignatureError) as exc:
        sign.parse_signature("x")
    assert str(exc.value) == "signature: not a minisign signature"
    parsed = sign.parse_signature("\n".join(lines))
    with pytest.raises(sign.SignatureError) as exc:
        sign.verify_signature(b"other", parsed, public)
    assert str(exc.value) == "the file: the signature does not match the file"
    other = sign.PublicKey(bytes(8), public.key)
    with pytest.raises(sign.SignatureError) as exc:
        sign.verify_signature(b"evidence", parsed, other)
    assert str(exc.value) == f"the signature: made by key {sign.key_id_text(public.key_id)}, not by 0000000000000000"
    with pytest.raises(sign.SignatureError) as exc:
        sign.verify_signature(b"evidence", sign.Signature(True, public.key_id, parsed.signature, "x",
                                                          parsed.global_signature), public)
    assert str(exc.value) == "the signature: the trusted comment was altered"
    with pytest.raises(sign.SignatureError) as exc:
        sign.verify_file(target, tmp_path / "none.minisig", public)
    assert str(exc.value) == f"{tmp_path / 'none.minisig'}: missing or unreadable"
    unsigned_legacy = sign.Signature(False, public.key_id, parsed.signature, "c", parsed.global_signature)
    with pytest.raises(sign.SignatureError):  # a prehashed signature read as a legacy one fails
        sign.verify_signature(b"evidence", unsigned_legacy, public)
    import dataclasses
    for record in (public, secret, parsed):
        with pytest.raises(dataclasses.FrozenInstanceError):
            record.key_id = b"x"


@pytest.mark.parametrize("size", [0, 1, 8000, state.HEAD_BYTES - 1, state.HEAD_BYTES, state.HEAD_BYTES + 1,
                                  state.READ_SIZE - 1, state.READ_SIZE, state.HEAD_BYTES + state.READ_SIZE,
                                  2 * state.READ_SIZE + 7])
def test_a_walk_hashes_every_size_whole_whichever_reads_it_takes(tmp_path, size):
    # A file is read HEAD_BYTES first; what is left, if anything, by digest_fd: at every
    # boundary, the size and sha256 must be the whole file's.
    body = bytes(range(256)) * (size // 256) + bytes(size % 256)
    (tmp_path / "data" / "f").mkdir(parents=True)
    (tmp_path / "data" / "f" / "x.bin").write_bytes(body)
    found = state.scan(tmp_path, "data", state.HASH)
    assert found.files == [("data/f/x.bin", size, hashlib.sha256(body).hexdigest())] and not found.problems
    fd = os.open(tmp_path / "data" / "f" / "x.bin", os.O_RDONLY)
    try:
        head = os.read(fd, 10)
        assert state.digest_fd(fd, size, head) == (size, hashlib.sha256(body).hexdigest())
    finally:
        os.close(fd)


def test_scan_splits_the_work_by_folder_and_names_each_failure(tmp_path):
    rows = [(_entry(i), f"acta {i}".encode()) for i in range(300)]
    m = build(tmp_path / "m", rows)
    (m / "data" / "top.jpg").write_bytes(b"top")
    want = {e.path: (len(b), hashlib.sha256(b).hexdigest()) for e, b in rows} | {
        "data/top.jpg": (3, hashlib.sha256(b"top").hexdigest())}
    folders = sorted({p.split("/")[1] for p in want if p.count("/") > 1})
    for workers, expected in ((2, 255), (1, 300), (2, 300)):
        parts = list(verify.scan_payload(m, state.HASH, workers, expected))
        assert len(parts) == 1 + len(folders)  # data/ itself, then one part per folder of data/
        assert parts[0][:3] == (("data/top.jpg",), (3,), (want["data/top.jpg"][1],))
        assert sorted(part.rels[0].split("/")[1] for part in parts[1:]) == folders
        assert {rel: (size, sha) for part in parts for rel, size, sha in zip(*part[:3])} == want
        assert sum(len(part.rels) for part in parts) == len(want)
        assert all(part.problems == [] and part.deferred == [] for part in parts)
    sizes = {rel: size for part in verify.scan_payload(m, state.MEASURE, 2, 300) for rel, size in zip(part.rels, part.sizes)}
    assert sizes == {rel: size for rel, (size, _sha) in want.items()}
    assert {sha for part in verify.scan_payload(m, state.MEASURE, 2, 300) for sha in part.hashes} == {None}
    names = state.scan(m)
    assert sorted(names.files) == sorted((rel, 0, None) for rel in want) and names.folders == []
    os.symlink("/etc/passwd", m / "data" / "link")
    os.mkfifo(m / "data" / "fifo")
    os.mkdir(m / "data" / "locked")
    os.symlink(m / "data" / "locked", m / "data" / "dirlink")
    got = state.scan(m, "data", state.HASH, recurse=False)
    assert sorted((p.kind, p.path, p.detail) for p in got.problems) == [
        ("unsafe", "data/dirlink", "a symbolic link, not a regular file; not read"),
        ("unsafe", "data/fifo", "a FIFO, not a regular file; not read"),
        ("unsafe", "data/link", "a symbolic link, not a regular file; not read")]
    assert [(p.kind, p.path, p.detail) for p in state.scan(m, "data/dirlink").problems] == [
        ("unsafe", "data/dirlink", "a symbolic link, not a folder; nothing in it was read")]
    assert state.scan(m, "data/none") == state.Scan()
    long_name = "data/" + "x" * 300
    assert verify.hash_files(m, ["data/link", long_name, "data/top.jpg/x", "data/none", "data/fifo"]) == [
        ("data/link", "unsafe:a symbolic link, not a regular file"), (long_name, "error:File name too long"),
        ("data/top.jpg/x", None), ("data/none", None), ("data/fifo", "unsafe:a FIFO, not a regular file")]


def test_scan_payload_starts_workers_only_for_many_files(tmp_path, monkeypatch):
    m = tiny(tmp_path / "m")
    made = []
    monkeypatch.setattr(verify, "pool", lambda n: made.append(n) or ProcessPoolExecutor(n))
    for workers, expected in ((2, 255), (1, 300), (None, 10)):
        assert len(list(verify.scan_payload(m, state.HASH, workers, expected))) == 3  # data/, 01_A, index
    assert made == []
    for workers, expected in ((2, 256), (3, 300), (None, 300)):
        list(verify.scan_payload(m, state.HASH, workers, expected))
    assert made == [2, 3] + ([os.cpu_count()] if (os.cpu_count() or 1) > 1 else [])


def test_scan_names_a_linked_data_folder_and_a_folder_it_cannot_open(tmp_path):
    import resource

    m = tiny(tmp_path / "m")
    os.rename(m / "data", tmp_path / "elsewhere")
    os.symlink(tmp_path / "elsewhere", m / "data")
    for rel in ("data", "data/01_A"):  # each part of the way is opened on its own, without following it
        got = state.scan(m, rel, state.HASH)
        assert (got.files, [(p.kind, p.path, p.detail) for p in got.problems]) == (
            [], [("unsafe", "data", "a symbolic link, not a folder; nothing in it was read")])
    os.unlink(m / "data")
    os.rename(tmp_path / "elsewhere", m / "data")
    lowest_free = os.open("/", os.O_RDONLY)  # a new descriptor takes the lowest free number
    os.close(lowest_free)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (lowest_free + 1, hard))  # the root opens; data/ cannot
    try:
        got = state.scan(m)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert (got.files, [(p.kind, p.path, p.detail) for p in got.problems]) == (
        [], [("unreadable", "data", "Too many open files")])


def test_verify_names_unsafe_and_unreadable_tag_files(tmp_path):
    m = tiny(tmp_path / "m")
    os.rename(m / "failures.jsonl", tmp_path / "f")
    os.symlink(tmp_path / "f", m / "failures.jsonl")
    long_name = "x" * 300
    with open(m / "tagmanifest-sha256.txt", "a") as fh:
        fh.write(f"{'0' * 64}  {long_name}\n")
    assert [(p.kind, p.path, p.detail) for p in verify.verify(m)] == [
        ("unsafe", "failures.jsonl", "a symbolic link, not a regular file"),
        ("unreadable", long_name, "File name too long")]


def test_the_bag_constants_other_tools_read():
    assert manifest.BAGIT_TXT == "BagIt-Version: 1.0\nTag-File-Character-Encoding: UTF-8\n"
    assert (manifest.PAYLOAD_MANIFEST, manifest.TAG_MANIFEST, manifest.BAG_INFO) == (
        "manifest-sha256.txt", "tagmanifest-sha256.txt", "bag-info.txt")
    assert (manifest.PROVENANCE, manifest.CHANGES, manifest.FAILURES, manifest.RECEIPTS) == (
        "provenance.jsonl", "changes.jsonl", "failures.jsonl", "publish-receipts.jsonl")
    assert state.SIGNED_TAG_FILES == ("manifest-sha256.txt", "bag-info.txt", "provenance.jsonl", "changes.jsonl",
                                      "failures.jsonl")
    assert (evidence.STATEMENT, evidence.SIGNATURE) == ("signed-root.json", "signed-root.json.minisig")


def test_a_hand_made_bag_passes_bagit_python(tmp_path):
    import bagit

    m = tiny(tmp_path / "m")
    assert bagit.Bag(str(m)).is_valid()
    payload = next(p for p in (m / "data").rglob("*") if p.is_file())
    payload.write_bytes(payload.read_bytes() + b"x")  # bagit-python must see what our verify sees
    assert not bagit.Bag(str(m)).is_valid()


def test_the_statement_format(tmp_path, keypair):
    base, secret, _public = keypair
    m = tiny(tmp_path / "m")
    info = (m / "bag-info.txt").read_text()
    (m / "bag-info.txt").write_text(info + "Acta-Mirror-Source: http://127.0.0.1:9/from-bag-info\n")
    root = evidence.sign_bag(m, f"{base}.key")
    statement = json.loads((m / evidence.STATEMENT).read_text())
    assert statement["source"] == "http://127.0.0.1:9/from-bag-info"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", statement["signed_at"])
    assert statement["tool"].startswith("acta-mirror ") and statement["merkle_root"] == root
    assert statement["leaves"] == ("manifest-sha256.txt lines, in order; leaf = sha256(0x00 || line), "
                                   "node = sha256(0x01 || l || r)")
    assert (m / evidence.STATEMENT).read_text() == json.dumps(statement, indent=1, sort_keys=True) + "\n"
    sig = sign.parse_signature((m / evidence.SIGNATURE).read_text())
    assert sig.trusted_comment == f"acta-mirror merkle root {root} size 6"
    assert statement["tag_files"] == {name: hashlib.sha256((m / name).read_bytes()).hexdigest()
                                      for name in state.SIGNED_TAG_FILES}
    tags = (m / "tagmanifest-sha256.txt").read_text()
    assert f"  {evidence.STATEMENT}\n" in tags and f"  {evidence.SIGNATURE}\n" in tags


def test_latest_versions_and_index_by_line_order_on_ties(tmp_path):
    one = _entry(1)
    again = Entry(**{**_fields(one), "path": one.path.replace(".jpg", ".png")})  # a merge can give two v1 files
    i1 = Entry(**{**_fields(one), "key": "index/a.csv", "kind": "index", "path": "data/index/a.csv"})
    i2 = Entry(**{**_fields(one), "key": "index/b.csv", "kind": "index", "path": "data/index/b.csv"})
    s = state.MirrorState(tmp_path, {}, None, {}, [one, i1, again, i2], [])
    assert s.latest_actas() == {one.key: again} and s.latest_index() == i2
    assert s.counts() == {"files": 0, "bytes": 4 * one.size, "actas": 1}


def test_keyed_reads_an_index_csv(tmp_path):
    csv = tmp_path / "i.csv"
    csv.write_text("COD_EDO,EDO,COD_MUN,MUN,COD_PAR,PAR,CENTRO,MESA,URL\n"
                   "1,A,1,B,1,C,10101001,1,http://127.0.0.1:9/x/aaa.jpg\n")
    assert evidence.keyed(csv) == {"010101001.01": "aaa.jpg"}


def test_evidence_messages_and_limits(tmp_path, keypair):
    base, *_ = keypair
    m = tiny(tmp_path / "m")
    (m / "changes.jsonl").unlink()  # a missing tag file is skipped, the ones after it still signed
    evidence.sign_bag(m, f"{base}.key")
    signed_names = json.loads((m / evidence.STATEMENT).read_text())["tag_files"]
    assert sorted(signed_names) == ["bag-info.txt", "failures.jsonl", "manifest-sha256.txt", "provenance.jsonl"]
    with pytest.raises(NotAMirror) as exc:
        evidence.manifest_items(tmp_path)
    assert str(exc.value) == f"{tmp_path}: not a mirror (no manifest-sha256.txt)"
    (tmp_path / "manifest-sha256.txt").write_text("junk\n")
    with pytest.raises(NotAMirror) as exc:
        evidence.manifest_items(tmp_path)
    assert str(exc.value) == (f"{tmp_path / 'manifest-sha256.txt'}: format: manifest-sha256.txt "
                              "(line 1: not a '<sha256>  <path>' line)")
    with pytest.raises(UsageError) as exc:
        evidence.prove(m, "data/none.jpg")
    assert str(exc.value) == f"data/none.jpg is not in {m / 'manifest-sha256.txt'}"
    statement = m / evidence.STATEMENT
    statement.write_bytes(b" " * (1 << 20))  # a megabyte is still read (and is not a statement)
    assert [p.detail for p in evidence.check_seal(m).problems] == ["not a root statement"]
    statement.write_bytes(b" " * ((1 << 20) + 1))
    assert [p.detail for p in evidence.check_seal(m).problems] == [
        "signed-root.json: larger than 1048576 bytes"]


def test_what_kind_of_file_is_named(tmp_path):
    import socket
    import stat as st

    assert state._kind_of(0) == "an unknown kind of file"
    assert [state._kind_of(mode) for mode in (st.S_IFLNK, st.S_IFIFO, st.S_IFCHR, st.S_IFBLK, st.S_IFDIR,
                                              st.S_IFSOCK, st.S_IFREG)] == [
        "a symbolic link", "a FIFO", "a device", "a device", "a folder", "a socket", "a regular file"]
    (tmp_path / "data").mkdir()
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(tmp_path / "data" / "sock"))
        problems: list[Problem] = []
        assert state._walk_payload(tmp_path, problems) == []
        assert [(p.kind, p.path, p.detail) for p in problems] == [
            ("unsafe", "data/sock", "a socket, not a regular file; not read")]
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "data").write_text("a file where data/ should be")
    problems = []
    assert state._walk_payload(tmp_path / "m", problems) == []
    assert [(p.path, p.detail) for p in problems] == [("data", "a regular file, not a folder; nothing in it was read")]


def test_a_linked_payload_file_is_unsafe_not_missing(tmp_path):
    m = tiny(tmp_path / "m")
    rel = state.read_state(m).entries[0].path
    os.rename(m / rel, tmp_path / "real.jpg")
    os.symlink(tmp_path / "real.jpg", m / rel)
    assert kinds(verify.verify(m)) == {("unsafe", rel), ("oxum", "bag-info.txt")}
    extra = _entry(40)  # an unsafe payload file does not stop the provenance check
    with open(m / "provenance.jsonl", "a") as fh:
        fh.write(extra.to_json() + "\n")
    assert [(p.kind, p.path) for p in verify.verify(m)] == [  # each named once
        ("unsafe", rel), ("tag-changed", "provenance.jsonl"), ("provenance", extra.path), ("oxum", "bag-info.txt")]


def test_the_opener_keeps_folders_apart(tmp_path):
    for folder in ("a", "b", "a/c"):
        (tmp_path / folder).mkdir(exist_ok=True)
        (tmp_path / folder / "f").write_text(folder)
    with state.Opener(tmp_path) as opener:
        for folder in ("a", "b", "a", "a/c", "b", "b"):
            with os.fdopen(opener.open_fd(f"{folder}/f")) as fh:
                assert fh.read() == folder
    with state.Opener(tmp_path) as opener:
        with os.fdopen(opener.open_fd("a/f")) as fh:
            assert fh.read() == "a"
        opener.close()
        opener.close()


def test_manifest_module_details(tmp_path):
    assert manifest.sync_filesystem(tmp_path) is True  # Linux has syncfs(2)
    assert manifest.split_manifest_line("a" * 64 + "  Xdata") == ("a" * 64, "Xdata")
    assert manifest.parse_bag_info("A: 1\n\tmore\n") == {"A": "1 more"}
    with pytest.raises(NotAMirror) as exc:
        manifest.parse_manifest_text("junk")
    assert str(exc.value) == "manifest:1: not a '<sha256>  <path>' line"
    with pytest.raises(NotAMirror) as exc:
        manifest.parse_manifest_text("a" * 64 + "  x\n" + "a" * 64 + "  x\n", "m")
    assert str(exc.value) == "m:2: x is listed twice"
    with pytest.raises(NotAMirror) as exc:
        manifest.read_manifest(tmp_path / "none")
    assert str(exc.value) == f"{tmp_path / 'none'}: no such file"
    (tmp_path / "bad").write_bytes(b"\xff")
    for reader in (manifest.read_manifest, manifest.read_bag_info):
        with pytest.raises(NotAMirror) as exc:
            reader(tmp_path / "bad")
        assert str(exc.value) == f"{tmp_path / 'bad'}: unreadable (UnicodeDecodeError)"
    seen = []

    def chunks():
        seen.extend(p.name for p in tmp_path.iterdir() if p.name.startswith(".target."))
        yield b"x"
    manifest.atomic_write(tmp_path / "target", chunks())
    assert len(seen) == 1 and (tmp_path / "target").read_bytes() == b"x"
    good = _entry(1).to_json()
    path = tmp_path / "p.jsonl"
    path.write_text(good + "\n" + "x\n")  # a one-character torn last line
    assert manifest.repair_torn_tail(path) == 2 and path.read_text() == good + "\n"


def test_seal_problems_are_named_exactly(signed, keypair, tmp_path):
    base, secret, public = keypair
    pub = f"{base}.pub"
    original = (signed / "failures.jsonl").read_bytes()
    want = hashlib.sha256(original).hexdigest()
    with open(signed / "failures.jsonl", "a") as fh:
        fh.write("{}\n")
    got = hashlib.sha256((signed / "failures.jsonl").read_bytes()).hexdigest()
    assert _details(signed, pub) == [f"signed: failures.jsonl (sha256 {got}, the signed statement says {want})"]
    (signed / "failures.jsonl").unlink()
    assert _details(signed) == ["signed: failures.jsonl (signed, but missing)"]
    os.symlink(tmp_path / "x", signed / "failures.jsonl")
    assert _details(signed) == [
        "signed: signed-root.json (cannot hash the tag files: failures.jsonl: a symbolic link, not a regular file)"]
    (signed / "failures.jsonl").unlink()
    (signed / "failures.jsonl").write_bytes(original)
    info = (signed / "bag-info.txt").read_text()
    root = json.loads((signed / evidence.STATEMENT).read_text())["merkle_root"]
    (signed / "bag-info.txt").write_text(info.replace(root, "0" * 64))
    details = _details(signed, pub)
    assert details[0] == f"root: bag-info.txt (records Merkle root {'0' * 64}, the manifest gives {root})"
    size = json.loads((signed / evidence.STATEMENT).read_text())["tree_size"]
    for wrong in (str(size - 1), str(size + 1), f"0{size}", "", "six"):  # compared as text, as written
        (signed / "bag-info.txt").write_text(info.replace(f"Acta-Mirror-Merkle-Size: {size}\n",
                                                          f"Acta-Mirror-Merkle-Size: {wrong}\n"))
        assert _details(signed, pub)[0] == (f"root: bag-info.txt (records a Merkle tree of {wrong.strip()} leaves, "
                                            f"the manifest lists {size} files)"), wrong
    (signed / "bag-info.txt").write_text(info)
    sig_text = (signed / evidence.SIGNATURE).read_text()
    lines = sig_text.splitlines()
    (signed / evidence.SIGNATURE).write_bytes(b"\xff\xfe\n" + "\n".join(lines[1:]).encode())
    assert _details(signed) == []  # the untrusted comment is not signed: any bytes there are no fault
    (signed / evidence.SIGNATURE).write_text(sig_text)
    other_secret, other_public = sign.generate()
    _resign(signed, other_secret, lambda s: None)
    assert _details(signed, pub)[0] == (f"signature: signed-root.json.minisig (signed-root.json.minisig: made by key "
                                        f"{sign.key_id_text(other_public.key_id)}, not by "
                                        f"{sign.key_id_text(public.key_id)})")
    _resign(signed, secret, lambda s: s.update(public_key="junk"))
    assert _details(signed) == ["signature: signed-root.json (signed-root.json: not a minisign Ed25519 public key)"]
    _resign(signed, secret, lambda s: None)
    (signed / evidence.STATEMENT).write_text((signed / evidence.STATEMENT).read_text() + " ")
    assert _details(signed, pub) == ["signature: signed-root.json.minisig (signed-root.json: the signature does not "
                                     "match the file)"]
    (signed / evidence.STATEMENT).write_text("[]")
    assert _details(signed) == ["signature: signed-root.json (not a root statement)"]


def test_an_unsigned_mirror_with_a_key_is_named(tmp_path, keypair):
    base, *_ = keypair
    m = tiny(tmp_path / "m")
    assert _details(m, f"{base}.pub") == [
        "signature: signed-root.json.minisig (the mirror is not signed (no signed-root.json))"]
    text = sign.sign_file(m / "bagit.txt", keypair[1], "acta-mirror merkle root 00 size 6")
    (m / evidence.SIGNATURE).write_text(text)
    (m / evidence.STATEMENT).write_bytes((m / "bagit.txt").read_bytes())
    assert _details(m) == ["signature: signed-root.json (not a root statement)"]


def test_verify_names_each_problem_exactly(tmp_path):
    m = tiny(tmp_path / "m")
    entries = state.read_state(m).entries
    a, b = entries[0].path, entries[1].path
    (m / a).write_bytes(b"acta X")
    (m / b).unlink()
    (m / "data" / "planted.jpg").write_bytes(b"x")
    with open(m / "changes.jsonl", "a") as fh:
        fh.write("{}\n")
    (m / "failures.jsonl").unlink()
    bad = hashlib.sha256(b"acta X").hexdigest()
    assert [str(p) for p in verify.verify(m)] == [
        f"missing: {b} (listed in the manifest, not on disk)",
        "unlisted: data/planted.jpg (on disk, not in the manifest)",
        "tag-changed: changes.jsonl (sha256 differs from the tag manifest)",
        "tag-missing: failures.jsonl (listed in the tag manifest, not on disk)",
        f"changed: {a} (sha256 {bad} but the manifest says {entries[0].sha256})",
        "oxum: bag-info.txt (Payload-Oxum says 42.6, data/ holds 37.6)"]
    (m / "tagmanifest-sha256.txt").unlink()
    assert "tag-missing: tagmanifest-sha256.txt (no tag manifest)" in [str(p) for p in verify.verify(m)]
    info = (m / "bag-info.txt").read_text()
    (m / "bag-info.txt").write_text(info.replace("Payload-Oxum: 42.6", "Payload-Oxum: x"))
    assert "oxum: bag-info.txt (Payload-Oxum 'x' is not <bytes>.<count>)" in [str(p) for p in verify.verify(m)]


def _retag(m: Path, name: str) -> None:
    """The tag manifest's line for name, made to match the file as it is now."""
    text = (m / "tagmanifest-sha256.txt").read_text()
    digest = hashlib.sha256((m / name).read_bytes()).hexdigest()
    lines = [f"{digest}  {name}" if line.endswith(f"  {name}") else line for line in text.splitlines()]
    (m / "tagmanifest-sha256.txt").write_text("".join(f"{line}\n" for line in lines))


SAYS = "oxum: bag-info.txt (Payload-Oxum says 1.1, data/ holds {oxum})"
TWICE = "oxum: bag-info.txt (Payload-Oxum given 2 times: {twice})"
NOT_ONE = "oxum: bag-info.txt (Payload-Oxum {value!r} is not <bytes>.<count>)"


@pytest.mark.parametrize("value, extra, want", [
    ("{oxum}", "Payload-Oxum: 1.1\n", [TWICE, SAYS]),  # the last one is believed, and named
    ("1.1", "Payload-Oxum: {oxum}\n", [TWICE]),  # the last right: bagit-python takes the first
    ("1.1", "X-Note: ok\u2028Payload-Oxum: {oxum}\n", [SAYS]),  # one line to cat and grep, and to verify now
    ("{fullwidth}", "", [NOT_ONE]), ("+{oxum}", "", [NOT_ONE]), ("{underscored}", "", [NOT_ONE]),
    ("{oxum}.0", "", [NOT_ONE]), ("-{oxum}", "", [NOT_ONE]), ("{oxum}\u00a0x", "", [NOT_ONE]), ("{size}.", "", [NOT_ONE]),
    (".{count}", "", [NOT_ONE])])
def test_only_one_payload_oxum_of_ascii_digits_is_believed(tmp_path, value, extra, want):
    """verify said a mirror was intact when bag-info.txt gave Payload-Oxum twice and the last
    was right, when the right one hid after a U+2028 that str.splitlines() broke at, or when
    the value held what int() forgives ('+', '_', fullwidth digits) and bagit-python refuses."""
    m = tiny(tmp_path / "m")
    info = (m / "bag-info.txt").read_text()
    oxum = re.search(r"Payload-Oxum: (\S+)", info).group(1)
    fullwidth = oxum.translate(str.maketrans("0123456789", "０１２３４５６７８９"))
    underscored = oxum[:1] + "_" + oxum[1:]
    size, count = oxum.split(".")
    value, extra = (t.format(oxum=oxum, fullwidth=fullwidth, underscored=underscored, size=size, count=count)
                    for t in (value, extra))
    (m / "bag-info.txt").write_text(info.replace(f"Payload-Oxum: {oxum}\n", f"Payload-Oxum: {value}\n" + extra))
    _retag(m, "bag-info.txt")
    twice = ", ".join(map(repr, [value] + re.findall(r"^Payload-Oxum: (\S+)$", extra, re.M)))
    assert [str(p) for p in verify.verify(m)] == [w.format(oxum=oxum, twice=twice, value=value) for w in want]
    (m / "bag-info.txt").write_text(info)  # as written: intact again
    _retag(m, "bag-info.txt")
    assert verify.verify(m) == []


@pytest.mark.parametrize("label, false", [("Acta-Mirror-Merkle-Root", "0" * 64), ("Acta-Mirror-Merkle-Size", "7")])
def test_a_merkle_label_given_twice_is_named_and_the_one_value_is_believed(tmp_path, label, false):
    """Which of two values counts would be a reader's guess (bagit-python the first, a dict the
    last): verify names the repeat, whichever is false, and the false one alone is a mismatch."""
    m = tiny(tmp_path / "m")
    info = (m / "bag-info.txt").read_text()
    true = re.search(rf"^{label}: (\S+)$", info, re.M).group(1)
    for first, last in ((false, true), (true, false)):
        (m / "bag-info.txt").write_text(info.replace(f"{label}: {true}\n", f"{label}: {first}\n{label}: {last}\n"))
        _retag(m, "bag-info.txt")
        got = [str(p) for p in verify.verify(m)]
        assert f"root: bag-info.txt ({label} given 2 times: {first!r}, {last!r})" in got, got
    (m / "bag-info.txt").write_text(info.replace(f"{label}: {true}\n", f"{label}: {false}\n"))
    _retag(m, "bag-info.txt")
    assert [p.kind for p in verify.verify(m)] == ["root"]
    (m / "bag-info.txt").write_text(info)
    _retag(m, "bag-info.txt")
    assert verify.verify(m) == []


@pytest.mark.parametrize("digits", [20, 21, 5000])
def test_a_payload_oxum_of_more_than_twenty_digits_is_not_one(tmp_path, digits):
    """int() refuses over 4,300 digits (a traceback); no payload has a size of 21 digits."""
    m = tiny(tmp_path / "m")
    info = (m / "bag-info.txt").read_text()
    oxum = re.search(r"Payload-Oxum: (\S+)", info).group(1)
    value = "1" * digits + "." + oxum.split(".")[1]
    (m / "bag-info.txt").write_text(info.replace(f"Payload-Oxum: {oxum}\n", f"Payload-Oxum: {value}\n"))
    _retag(m, "bag-info.txt")
    got = [str(p) for p in verify.verify(m)]
    if digits == 20:
        assert got == [f"oxum: bag-info.txt (Payload-Oxum says {value}, data/ holds {oxum})"]
    elif digits == 21:
        assert got == [NOT_ONE.format(value=value)]
    else:
        assert got == [NOT_ONE.format(value=f"{value[:60]}… ({len(value):,} characters)")]


def test_two_manifest_lines_joined_by_a_u2028_are_one_line_naming_no_file(tmp_path):
    """sha256sum -c reads such a manifest as one line naming a file that does not exist; verify
    read two lines and said the mirror was intact."""
    m = tiny(tmp_path / "m")
    text = (m / "manifest-sha256.txt").read_text()
    first, second, rest = text.split("\n", 2)
    (m / "manifest-sha256.txt").write_text(f"{first}\u2028{second}\n{rest}")
    _retag(m, "manifest-sha256.txt")
    joined = f"{first[66:]}\u2028{second}"
    found = kinds(verify.verify(m))
    assert ("missing", joined) in found and ("unlisted", first[66:]) in found and ("unlisted", second[66:]) in found


def test_verify_with_unusable_provenance_names_it_once(tmp_path):
    m = tiny(tmp_path / "m")
    os.rename(m / "bag-info.txt", tmp_path / "bi")
    os.symlink(tmp_path / "bi", m / "bag-info.txt")  # first in the tag manifest: named once, the rest still checked
    with open(m / "changes.jsonl", "a") as fh:
        fh.write("{}\n")
    os.rename(m / "provenance.jsonl", tmp_path / "p")
    os.symlink(tmp_path / "p", m / "provenance.jsonl")
    assert [str(p) for p in verify.verify(m)] == [
        "unsafe: bag-info.txt (a symbolic link, not a regular file)",
        "unsafe: provenance.jsonl (a symbolic link, not a regular file)",
        "tag-changed: changes.jsonl (sha256 differs from the tag manifest)",
        "oxum: bag-info.txt (Payload-Oxum '' is not <bytes>.<count>)"]
    m2 = tiny(tmp_path / "m2")
    with open(m2 / "provenance.jsonl", "a") as fh:
        fh.write("{}\n")
    assert [str(p) for p in verify.verify(m2)] == [
        "provenance: provenance.jsonl (line 7: missing field 'key')",
        "tag-changed: provenance.jsonl (sha256 differs from the tag manifest)"]


def test_opener_messages_records_and_descriptors(tmp_path):
    import dataclasses

    (tmp_path / "data" / "real").mkdir(parents=True)
    (tmp_path / "data" / "real" / "f").write_text("x")
    os.symlink(tmp_path / "data" / "real", tmp_path / "data" / "link")
    os.mkfifo(tmp_path / "data" / "fifo")
    for rel, message in [("data/link/f", "data/link/f: data/link is a symbolic link, not a folder"),
                         ("data/link/sub/f", "data/link/sub/f: data/link is a symbolic link, not a folder"),
                         ("data/fifo", "data/fifo: a FIFO, not a regular file"),
                         ("data/link", "data/link: a symbolic link, not a regular file"),
                         ("/x", "'/x': an absolute path")]:
        with pytest.raises(UnsafePath) as exc:
            state.open_payload(tmp_path, rel)
        assert str(exc.value) == message and exc.value.reason == message.split(": ", 1)[1]
    with pytest.raises(FileNotFoundError) as missing:
        state.open_payload(tmp_path, "data/real/f/x")  # a file where a folder should be
    assert (missing.value.strerror, missing.value.filename) == ("no such file", "data/real/f/x")
    before = len(os.listdir("/proc/self/fd"))
    with state.Opener(tmp_path) as opener:
        for _ in range(20):
            os.close(opener.open_fd("data/real/f"))
        assert len(os.listdir("/proc/self/fd")) == before + 1  # the one folder kept open
    assert len(os.listdir("/proc/self/fd")) == before
    record = state.Record(_entry(1), "x\n", 1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        record.text = "y"


def test_unsafe_path_with_and_without_a_path():
    named = UnsafePath("data/x", "a FIFO")
    assert (str(named), named.path, named.reason) == ("data/x: a FIFO", "data/x", "a FIFO")
    bare = UnsafePath("site: a symbolic link")
    assert (str(bare), bare.path, bare.reason) == ("site: a symbolic link", "", "site: a symbolic link")
    assert isinstance(bare, NotAMirror) and bare.exit_code == 2


def test_verify_names_provenance_and_cid_disagreements_exactly(tmp_path):
    m = tiny(tmp_path / "m")
    lines = (m / "provenance.jsonl").read_text().splitlines()
    first, second, third = (json.loads(x) for x in lines[:3])
    extra = json.loads(_entry(40).to_json())
    first["sha256"] = "0" * 64
    broken = [json.dumps(first), "{}", *lines[2:], json.dumps(extra)]  # line 2 unreadable, one line too many
    (m / "provenance.jsonl").write_text("\n".join(broken) + "\n")
    assert [str(p) for p in verify.verify(m) if p.kind == "provenance"] == [
        "provenance: provenance.jsonl (line 2: missing field 'key')"]  # one bad line: no flood of derived ones
    broken[1] = lines[1]
    (m / "provenance.jsonl").write_text("\n".join(broken) + "\n")
    assert [str(p) for p in verify.verify(m) if p.kind == "provenance"] == [
        f"provenance: {first['path']} (provenance sha256 differs from the manifest)",
        f"provenance: {extra['path']} (has a provenance line, not in the manifest)"]
    (m / "provenance.jsonl").write_text("\n".join([lines[0]] + lines[2:]) + "\n")
    assert [str(p) for p in verify.verify(m) if p.kind == "provenance"] == [
        f"provenance: {second['path']} (in the manifest, no provenance line)"]
    m2 = tiny(tmp_path / "m2")
    lines = (m2 / "provenance.jsonl").read_text().splitlines()
    objs = [json.loads(x) for x in lines]
    objs[1]["cid"] = "bafkreiwrong"
    objs[2]["cid"] = ""
    (m2 / "provenance.jsonl").write_text("".join(json.dumps(o) + "\n" for o in objs))
    (m2 / objs[0]["path"]).unlink()  # a missing file is skipped, the files after it still checked
    found = [str(p) for p in verify.verify(m2, cids=True) if p.kind == "cid"]
    assert found == [f"cid: {objs[1]['path']} (provenance says bafkreiwrong, the bytes give {raw_cid(objs[1]['sha256'])})",
                     f"cid: {objs[2]['path']} (provenance says nothing, the bytes give {raw_cid(objs[2]['sha256'])})"]


def test_proof_and_statement_messages_exactly(signed, keypair, tmp_path):
    base, secret, _public = keypair
    root = json.loads((signed / evidence.STATEMENT).read_text())["merkle_root"]
    rel = evidence.manifest_items(signed)[0][0]
    proof = evidence.prove(signed, rel)
    other = evidence.manifest_items(signed)[1][0]
    digest = hashlib.sha256((signed / other).read_bytes()).hexdigest()
    cases = [
        (tmp_path / "none", proof, root, UsageError, f"{tmp_path / 'none'}: No such file or directory"),
        (signed / rel, {**proof, "leaf_index": "x"}, root, UsageError,
         "the proof or the root is malformed (expected the JSON of 'acta-mirror prove')"),
        (signed / rel, {**proof, "path": rel + "\ud800"}, root, UsageError,  # a lone surrogate: was a traceback
         "the proof or the root is malformed (expected the JSON of 'acta-mirror prove')"),
        (signed / other, proof, root, sign.SignatureError,
         f"{signed / other}: sha256 {digest} is not the one the proof is for ({proof['sha256']})"),
        (signed / rel, proof, "0" * 64, sign.SignatureError, f"{signed / rel}: the proof does not lead to root {'0' * 64}"),
    ]
    for file, p, r, error, message in cases:
        with pytest.raises(error) as exc:
            evidence.check_proof(file, p, r)
        assert str(exc.value) == message
    text = sign.sign_file(signed / evidence.STATEMENT, secret, "acta-mirror merkle root 00 size 6")
    (signed / evidence.SIGNATURE).write_text(text)
    assert _details(signed) == [f"root: signed-root.json.minisig (the trusted comment does not name the root {root})"]
    m = tiny(tmp_path / "plain")
    evidence.sign_bag(m, f"{base}.key")
    assert json.loads((m / evidence.STATEMENT).read_text())["source"] == ""


def test_keyed_manifest_versions_by_number(tmp_path):
    key = "010101001.01"
    text = "".join(f"{c * 64}  data/x/{name}\n" for c, name in
                   (("a", f"{key}.v2.jpg"), ("b", f"{key}.x"), ("c", f"{key}.v10.jpg"), ("d", "data.csv")))
    (tmp_path / "manifest-sha256.txt").write_text(text)
    assert evidence.keyed(tmp_path / "manifest-sha256.txt") == {key: "c" * 64}
    (tmp_path / "manifest-sha256.txt").write_text(f"{'a' * 64}  data/x/{key}.v2.jpg\n{'b' * 64}  data/x/{key}.x\n")
    assert evidence.keyed(tmp_path / "manifest-sha256.txt") == {key: "a" * 64}  # KEY.x is version 1
    (tmp_path / "manifest-sha256.txt").write_text(f"{'a' * 64}  data/index/{key}.csv\n")
    assert evidence.keyed(tmp_path / "manifest-sha256.txt") == {}
    with pytest.raises(UsageError) as exc:
        evidence.keyed(tmp_path / "nothing")
    assert str(exc.value) == f"{tmp_path / 'nothing'}: no such file or directory"


def test_the_reader_names_each_record_fault_exactly(tmp_path):
    e = _entry(1)

    def entry(**kw):
        return Entry(**{**_fields(e), **kw})
    cases = [
        (entry(kind="other"), "kind 'other' is neither 'acta' nor 'index'"),
        (entry(kind="index"), f"kind 'index', but {e.key} is an acta key"),
        (entry(path="data/x/010101001.02.jpg"), f"path data/x/010101001.02.jpg is not a file of acta {e.key}"),
        (entry(path=f"data/x/{e.key}"), f"path data/x/{e.key} is not a file of acta {e.key}"),
        (entry(key="index/a.csv", kind="acta", path="data/index/a.csv"), "kind 'acta', but index/a.csv is an index key"),
        (entry(key="index/a.csv", kind="index", path="data/a.csv"), "index path data/a.csv is not under data/index/"),
        (entry(key="x"), "key 'x' is neither an acta key (CCCCCCCCC.MM) nor index/<name>"),
        (entry(), ""),
        (entry(path=f"data/{e.key}.v2.jpg"), ""),
    ]
    for record, message in cases:
        assert state.check_entry(record) == message
    path = tmp_path / "provenance.jsonl"
    path.write_bytes(e.to_json().encode() + b"\n" + b'{"key": "\xff"}\n')
    problems: list[Problem] = []
    assert len(list(state.iter_records(path, problems))) == 1
    assert [str(p) for p in problems] == ["provenance: provenance.jsonl (line 2: not UTF-8)"]
    with pytest.raises(NotAMirror) as exc:
        list(state.iter_records(path))
    assert str(exc.value) == f"{path}:2: bad provenance line: not UTF-8"
    problems = []
    state.parse_manifest(b"\xff", "t.txt", problems, payload=True)
    h = "a" * 64
    state.parse_manifest(f"{h}  data/x\n{h}  x\n{h}  data/x\n".encode(), "m.txt", problems, payload=True)
    state.parse_manifest(f"{h}  data/x\n".encode(), "t.txt", problems, payload=False)
    assert [str(p) for p in problems] == [
        "format: t.txt (not UTF-8)", "unsafe: m.txt (line 2: 'x': outside data/)",
        "duplicate: data/x (listed twice in m.txt (line 3 again))",
        "unsafe: t.txt (line 1: 'data/x': a payload path in the tag manifest)"]


def test_read_state_messages_and_a_linked_bagit_txt(tmp_path):
    with pytest.raises(NotAMirror) as exc:
        state.read_state(tmp_path / "none")
    assert str(exc.value) == f"{tmp_path / 'none'}: not a directory"
    with pytest.raises(NotAMirror) as exc:
        state.read_state(tmp_path)
    assert str(exc.value) == f"{tmp_path}: not a mirror (no bagit.txt or manifest-sha256.txt)"
    with pytest.raises(NotAMirror) as exc:
        state.provenance_state(tmp_path)
    assert str(exc.value) == f"{tmp_path}: not a mirror (no provenance.jsonl)"
    m = tiny(tmp_path / "m")
    os.rename(m / "bagit.txt", tmp_path / "b")
    os.symlink(tmp_path / "b", m / "bagit.txt")
    (m / "bag-info.txt").write_bytes(b"\xff")
    s = state.read_state(m)
    assert [str(p) for p in s.problems] == ["unsafe: bagit.txt (a symbolic link, not a regular file)",
                                            "format: bag-info.txt (not UTF-8)"]
    assert state.provenance_state(m).problems == [] and len(state.provenance_state(m).entries) == 6


def test_the_batch_readers_give_what_the_line_by_line_readers_give(tmp_path, monkeypatch):
    """read_entries and parse_manifest's whole-file pattern (the fast paths of a clean mirror)
    against iter_records and the manifest loop, across batches and with one bad line."""
    lines = [_entry(i).to_json() + "\n" for i in range(6)]
    monkeypatch.setattr(state, "READ_SIZE", 1)  # one line per batch: what one batch holds must reach the next
    path = tmp_path / "provenance.jsonl"
    for text in ("".join(lines), "".join(lines + lines[2:3]), "".join(lines[:3] + ["{}\n"] + lines[3:])):
        path.write_text(text)
        fast, slow = [], []
        assert state.read_entries(path, fast) == [r.entry for r in state.iter_records(path, slow)]
        assert fast == slow and len(state.read_entries(path, [])) >= 5
    path.write_text("".join(lines))
    with monkeypatch.context() as patched:
        patched.setattr(state, "iter_records", None)  # a clean file never needs the line-by-line reader
        assert len(state.read_entries(path, [])) == 6
    sha = "ab" * 32
    plain = "".join(f"{sha}  data/d/{i}.jpg\n" for i in range(4))
    with monkeypatch.context() as patched:
        patched.setattr(state, "split_manifest_line", None)  # nor a plain manifest the loop
        for text in (plain, plain.rstrip("\n")):
            assert len(state.parse_manifest(text.encode(), "m", [], payload=True)) == 4
    cases = [plain, plain.rstrip("\n"), plain + "\n", plain + f"{sha}  data/d/0.jpg\n", plain + f"{sha}  data/../x\n",
             f"{sha} *data/d/9.jpg\n" + plain, plain + f"{sha}  data/a%0Ab\n", plain + f"{sha}  data/a\rb\n"]
    results = []
    for text in cases:
        problems = []
        items = state.parse_manifest(text.encode(), "m", problems, payload=True)
        results.append((list(items.items()), [str(p) for p in problems]))
    monkeypatch.setattr(state, "_plain_payload", lambda text: None)  # the loop for every line
    for text, got in zip(cases, results):
        problems = []
        items = state.parse_manifest(text.encode(), "m", problems, payload=True)
        assert got == (list(items.items()), [str(p) for p in problems]), text
    assert results[0] == ([(f"data/d/{i}.jpg", sha) for i in range(4)], []) and results[1] == results[0]
    assert [len(r[0]) for r in results] == [4, 4, 4, 4, 4, 5, 5, 5] and all(r[1] for r in results[3:5])


def test_the_whole_file_checks_give_what_the_per_line_rules_give():
    # state's mutants are scored with this file alone: the whole-manifest check (_plain_payload)
    # and the whole-block record check (entries_fit) on the cases of tests/test_state_fastpaths.py.
    from tests.test_state_fastpaths import GOOD, MANIFESTS, fast_manifest, slow_manifest

    for text in MANIFESTS:
        assert fast_manifest(text.encode()) == slow_manifest(text.encode()), text
    taken = [text for text in MANIFESTS if state._plain_payload(text) is not None]
    assert len(taken) >= 3 and all(slow_manifest(text.encode())[1] == [] for text in taken)
    good = Entry.from_json(json.dumps(GOOD))
    odd = [("010101001.01", "kind", "acta"), ("010101001.01", "kind", "index"), ("index/i.csv", "kind", "index"),
           ("index/i.csv", "kind", "acta"), ("010101001.011", "path", "data/01/010101001.01.jpg"),
           ("010101001.01", "path", "data/01/010101001.011.jpg"), ("010101001.01", "path", "data/index/x.jpg"),
           ("010101001.01\x00010101001.01", "path", "data/01/010101001.01\x00010101001.01.jpg"),
           ("010101001.0111", "path", "data/01/010101001.0111.jpg"), ("x", "kind", "other")]
    for key, field, value in odd:
        record = msgspec.structs.replace(good, key=key, **{field: value})
        if field == "kind" and key.startswith("index/"):
            record = msgspec.structs.replace(record, path="data/index/i.csv")
        for block in ([record], [record, good], [good, record, good], [good, record]):
            assert state.entries_fit(block) == (not any(map(state.check_entry, block))), (key, field, value)
    assert state.entries_fit([good, good]) and state.entries_fit([])


def test_a_statement_goes_stale_when_a_signed_tag_file_changes(tmp_path, keypair):
    base, _secret, _public = keypair
    m = tiny(tmp_path / "m")
    assert not evidence.statement_stale(m)  # unsigned: nothing to go stale
    evidence.sign_bag(m, f"{base}.key")
    assert not evidence.statement_stale(m)
    failures = m / "failures.jsonl"
    kept = failures.read_bytes() if failures.exists() else b""
    failures.write_bytes(kept + b'{"key": "x"}\n')  # a run without the key wrote a failure
    assert evidence.statement_stale(m)
    failures.write_bytes(kept)
    assert not evidence.statement_stale(m)
    statement = m / evidence.STATEMENT
    signed = statement.read_bytes()
    for broken in (b"[1, 2]", b"{not json", b"[" * 100_000):
        statement.write_bytes(broken)
        assert evidence.statement_stale(m), broken  # an unreadable statement vouches for nothing
    statement.write_bytes(signed)
    assert not evidence.statement_stale(m)


# -- a mirror another run is writing; records this user cannot read ------------------------------
def _hold(path: Path, how: int) -> int:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    import fcntl

    fcntl.flock(fd, how | fcntl.LOCK_NB)
    return fd


def test_being_written_is_a_run_holding_the_archive_lock_and_nothing_else(tmp_path):
    import fcntl

    from mirror.archive import Archive

    m = tiny(tmp_path / "m")
    assert state.being_written(m) is None  # no lock file at all
    with Archive(m):  # a crawl's own lock, where a crawl takes it
        assert state.being_written(m) == str(m / ".acta-mirror" / "lock") == str(m / state.WRITER_LOCK)
        with pytest.raises(UsageError, match="being written by another run"):
            verify.verify(m)
    assert state.being_written(m) is None  # the run ended: its lock file stays, unheld
    lock = m / state.WRITER_LOCK
    reader = _hold(lock, fcntl.LOCK_SH)  # another reader (a verify) is no writer
    try:
        assert state.being_written(m) is None
    finally:
        os.close(reader)
    assert state.being_written(m) is None
    writer = _hold(lock, fcntl.LOCK_EX)  # being_written let its own shared lock go: this one was free
    os.close(writer)
    target = tmp_path / "elsewhere"
    held = _hold(target, fcntl.LOCK_EX)
    try:
        lock.unlink()
        lock.symlink_to(target)  # a copy's link is no run's lock, even to a held one
        assert state.being_written(m) is None
        lock.unlink()
        os.mkfifo(lock)  # nor a FIFO (opened without blocking)
        assert state.being_written(m) is None
    finally:
        os.close(held)


def test_records_this_user_cannot_read_are_named_unreadable(tmp_path, monkeypatch):
    m = tiny(tmp_path / "m")

    def refused(root, rel, *a, **k):
        raise PermissionError(13, "Permission denied", str(Path(root) / rel))

    monkeypatch.setattr(state, "open_payload", refused)  # root reads everything: the refusal another user meets
    problems: list[Problem] = []
    assert list(state.iter_records(m / "provenance.jsonl", problems)) == []
    assert problems == [Problem("unreadable", "provenance.jsonl", "Permission denied")]
    with pytest.raises(NotAMirror, match=r"provenance\.jsonl: cannot be read \(Permission denied\)"):
        list(state.iter_records(m / "provenance.jsonl"))


# -- a copy's large files: hashed only when its records say they are that large ------------------
BIG = state.HASH_UNASKED + 1


def _zeros_sha(n: int) -> str:
    digest, block = hashlib.sha256(), bytes(1 << 20)
    while n:
        digest.update(block[:min(n, len(block))])
        n -= min(n, len(block))
    return digest.hexdigest()


def _sparse(path: Path, size: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch()
    os.truncate(path, size)
    return path


def big_mirror(root: Path) -> tuple[Path, str]:
    """Two small actas and one of BIG zero bytes, all listed and recorded."""
    zeros = _zeros_sha(BIG)
    rows = [(_entry(i), f"acta {i}".encode()) for i in range(2)]
    large = _entry(2, sha256=zeros, size=BIG, cid=raw_cid(zeros))
    rows.append((large, b""))
    build(root, rows)
    _sparse(root / large.path, BIG)
    write_bag_files(root, {})  # the Oxum and the tag manifest, of the files as they are now
    return root, large.path


def test_scan_leaves_only_files_over_the_bound_unhashed(tmp_path):
    _sparse(tmp_path / "data" / "at.bin", state.HASH_UNASKED)
    _sparse(tmp_path / "data" / "over.bin", BIG)
    found = state.scan(tmp_path, "data", state.HASH)
    assert found.problems == [] and found.deferred == ["data/over.bin"]
    assert sorted(found.files) == [("data/at.bin", state.HASH_UNASKED, _zeros_sha(state.HASH_UNASKED)),
                                   ("data/over.bin", BIG, None)]
    assert state.scan(tmp_path, "data", state.MEASURE).deferred == []


def test_verify_hashes_a_large_file_its_record_gives_that_size(tmp_path):
    m, path = big_mirror(tmp_path / "m")
    assert verify.verify(m) == []
    with open(m / path, "r+b") as fh:  # same size, other bytes: hashed, and changed
        fh.seek(BIG - 1)
        fh.write(b"\x01")
    other = hashlib.sha256(bytes(BIG - 1) + b"\x01").hexdigest()
    assert [str(p) for p in verify.verify(m)] == [f"changed: {path} (sha256 {other} but the manifest says "
                                                   f"{_zeros_sha(BIG)})"]


def test_verify_names_a_large_file_unread_when_no_record_gives_its_size(tmp_path):
    m, path = big_mirror(tmp_path / "m")
    os.truncate(m / path, BIG + 5)
    said = [str(p) for p in verify.verify(m)]
    assert f"changed: {path} ({BIG + 5:,} bytes, provenance.jsonl says {BIG:,} (too large to be the archived " \
           "file: not hashed))" in said, said
    lines = (m / "provenance.jsonl").read_text().splitlines(keepends=True)
    (m / "provenance.jsonl").write_text("".join(x for x in lines if path not in x))
    said = [str(p) for p in verify.verify(m)]
    assert f"unreadable: {path} ({BIG + 5:,} bytes and no provenance record gives its size: not hashed)" in said, said
    assert f"provenance: {path} (in the manifest, no provenance line)" in said, said


def test_verify_names_a_large_planted_file_unlisted_only(tmp_path):
    m, _path = big_mirror(tmp_path / "m")
    _sparse(m / "data" / "planted.bin", BIG)
    assert [str(p) for p in verify.verify(m)] == [
        "unlisted: data/planted.bin (on disk, not in the manifest)",
        f"oxum: bag-info.txt (Payload-Oxum says {BIG + 12}.3, data/ holds {2 * BIG + 12}.4)"]


def test_the_bounds_on_what_is_read_are_the_ones_the_readme_gives():
    """What a copy may hold before a file or line is refused unread is promised in the README
    (the problems verify names): the bounds in the code are those, so one changes with the other."""
    text = " ".join((Path(__file__).resolve().parent.parent / "README.md").read_text().split())
    units = {"MiB": 1 << 20, "GiB": 1 << 30}

    def stated(pattern: str) -> int:
        found = re.search(pattern, text)
        assert found, pattern
        return int(found.group(1)) * units[found.group(2)]

    assert state.MAX_TAG_BYTES == stated(r"A tag file over (\d+) (MiB)") == 1 << 20
    assert state.MAX_MANIFEST_BYTES == stated(r"the payload manifest: (\d+) (MiB)") == 1 << 29
    assert state.MAX_RECORDS_BYTES == stated(r"`failures\.jsonl`: (\d+) (GiB)") == 1 << 32
    assert state.MAX_LINE_BYTES == stated(r"a line over (\d+) (MiB)") == 1 << 24
    assert state.HASH_UNASKED == stated(r"A file in `data/` over (\d+) (MiB) is hashed only when") == 64 << 20


def _line_of(i: int, n: int) -> str:
    """A valid provenance line of record i, n bytes long without its newline."""
    short = _entry(i).to_json()
    line = _entry(i, etag="e" * (n - len(short))).to_json()
    assert len(line) == n
    return line


def test_read_records_gives_iter_records_records_line_for_line(tmp_path, monkeypatch):
    """read_records (the publisher's reader: each record with its exact line and number) against
    iter_records: blank and whitespace lines (counted, skipped), CRLF endings, no last newline, a
    repeated path, a bad line and bytes that are not UTF-8, at block sizes that split the file
    everywhere; with a list the same problems, without one the same NotAMirror."""
    lines = [(_entry(i).to_json() + "\n").encode() for i in range(5)]
    cases = {"clean": b"".join(lines), "blank": lines[0] + b"\n" + lines[1] + b" \t\r\n" + b"".join(lines[2:]),
             "crlf": b"".join(line.replace(b"\n", b"\r\n") for line in lines), "no last newline": b"".join(lines)[:-1],
             "repeated": b"".join(lines + lines[1:2]), "bad": b"".join(lines[:2]) + b"{}\n" + b"".join(lines[2:]),
             "not utf-8": b"".join(lines[:3]) + lines[3].replace(b'"kind"', b'"\xffkind"') + lines[4]}
    path = tmp_path / "provenance.jsonl"
    for name, data in cases.items():
        path.write_bytes(data)
        for read_size in (1, 64, 1 << 16):
            monkeypatch.setattr(state, "READ_SIZE", read_size)
            fast, slow = [], []
            got = state.read_records(path, fast)
            assert got == list(state.iter_records(path, slow)) and fast == slow, (name, read_size)
            assert len(got) >= 4 and (got[-1].number == data.count(b"\n") + (not data.endswith(b"\n"))) == \
                (name != "repeated"), name
            assert "".join(r.text for r in got).encode() == data or name not in ("clean", "crlf"), name
            try:
                slow_error = list(state.iter_records(path))
            except NotAMirror as exc:
                slow_error = str(exc)
            try:
                fast_error = state.read_records(path)
            except NotAMirror as exc:
                fast_error = str(exc)
            assert fast_error == slow_error, name
    path.write_bytes(cases["blank"])
    monkeypatch.setattr(state, "READ_SIZE", 1 << 16)
    monkeypatch.setattr(state, "iter_records", None)  # a clean file, blank lines and all, needs no line-by-line read
    assert [r.number for r in state.read_records(path)] == [1, 3, 5, 6, 7]


def test_a_provenance_line_over_the_bound_is_named_and_skipped_unread(tmp_path, monkeypatch):
    """A line of exactly MAX_LINE_BYTES is read; one byte more and it is named and skipped, in
    pieces (never held whole), whether it ends the file or not, and the records after it are
    read. read_entries, which decodes blocks of lines, gives the same at any block size."""
    bound = 800
    monkeypatch.setattr(state, "MAX_LINE_BYTES", bound)
    lines = [_line_of(0, bound), _line_of(1, bound + 1), " " * (3 * bound) + _entry(2).to_json(),
             _line_of(3, bound - 1), _line_of(4, bound + 10)]
    path = tmp_path / "provenance.jsonl"
    path.write_bytes(("\n".join(lines)).encode())  # the last line has no newline
    want = [Entry.from_json(lines[0]), Entry.from_json(lines[3])]
    said = [f"provenance: provenance.jsonl (line {n}: longer than 800 bytes; not read)" for n in (2, 3, 5)]
    for read_size in (64, 256, 799, 800, 801, 1 << 16):
        monkeypatch.setattr(state, "READ_SIZE", read_size)
        problems: list[Problem] = []
        assert [r.entry for r in state.iter_records(path, problems)] == want
        assert [str(p) for p in problems] == said
        problems = []
        assert state.read_entries(path, problems) == want and [str(p) for p in problems] == said, read_size
    with pytest.raises(NotAMirror, match=r"provenance\.jsonl:2: bad provenance line: longer than 800 bytes; not read"):
        list(state.iter_records(path))
    # the same lines in other orders: the long one amid whole lines, a last line of exactly the bound
    for order, said_at in (([0, 1, 3], [2]), ([1, 3, 0], [1])):
        text = "\n".join(lines[i] for i in order)
        for ending in ("\n", ""):
            path.write_bytes((text + ending).encode())
            for read_size in (64, 799, 1 << 16):
                monkeypatch.setattr(state, "READ_SIZE", read_size)
                problems = []
                assert state.read_entries(path, problems) == [Entry.from_json(lines[i]) for i in order if i != 1]
                assert [str(p) for p in problems] == [said[0].replace("line 2", f"line {n}") for n in said_at]


def test_lines_just_under_the_bound_are_read_a_block_at_a_time(tmp_path, monkeypatch):
    """Valid lines of MAX_LINE_BYTES (newline included), across every block boundary: the block
    decoder takes them all, never the line-by-line reader."""
    bound = 750
    monkeypatch.setattr(state, "MAX_LINE_BYTES", bound)
    lines = [_line_of(i, bound - 1) for i in range(7)]
    path = tmp_path / "provenance.jsonl"
    path.write_bytes("".join(line + "\n" for line in lines).encode())
    monkeypatch.setattr(state, "iter_records", None)  # a fall back to it fails
    for read_size in range(bound - 40, 2 * bound + 40, 13):
        monkeypatch.setattr(state, "READ_SIZE", read_size)
        assert state.read_entries(path, []) == [Entry.from_json(line) for line in lines], read_size


def test_the_walk_names_each_file_it_cannot_read_and_reads_the_rest(tmp_path, monkeypatch):
    """What a copy can do to the walk that root cannot make on disk here (root reads a file
    of mode 000): a file unreadable or failing mid-read is listed with no hash and named
    unreadable; one that became a link, or a large one that is no regular file once open, is
    named unsafe and not listed; a folder that cannot be listed is named; the rest is hashed."""
    body = {"ok.jpg": b"fine", "denied.jpg": b"x", "link.jpg": b"y", "io.jpg": b"z" * 10,
            "fifo.bin": bytes(state.HEAD_BYTES + 5), "huge.bin": bytes(state.HEAD_BYTES + 7)}
    for name, data in body.items():
        (tmp_path / "data" / "a").mkdir(parents=True, exist_ok=True)
        (tmp_path / "data" / "a" / name).write_bytes(data)
    (tmp_path / "data" / "b").mkdir()
    (tmp_path / "data" / "b" / "hidden.jpg").write_bytes(b"w")
    real_open, real_read, real_fstat, real_scandir = os.open, os.read, os.fstat, os.scandir
    names: dict[int, str] = {}

    def fake_open(path, flags, mode=0o777, *, dir_fd=None):
        if path == "denied.jpg":
            raise PermissionError(13, "Permission denied")
        if path == "link.jpg":
            raise OSError(40, "Too many levels of symbolic links")
        fd = real_open(path, flags, mode, dir_fd=dir_fd)
        names[fd] = os.fsdecode(path)
        return fd

    def fake_read(fd, n):
        if names.get(fd) == "io.jpg":
            raise OSError(5, "Input/output error")
        return real_read(fd, n)

    def fake_fstat(fd):
        info = real_fstat(fd)
        if names.get(fd) == "fifo.bin":
            return os.stat_result((stat.S_IFIFO | 0o644, *tuple(info)[1:]))
        if names.get(fd) == "huge.bin":
            return os.stat_result((info.st_mode, *tuple(info)[1:6], state.HASH_UNASKED + 1, *tuple(info)[7:]))
        return info

    def fake_scandir(fd):
        if names.get(fd) == "b":
            raise PermissionError(13, "Permission denied")
        return real_scandir(fd)

    for name, fake in (("open", fake_open), ("read", fake_read), ("fstat", fake_fstat), ("scandir", fake_scandir)):
        monkeypatch.setattr(state.os, name, fake)
    found = state.scan(tmp_path, "data", state.HASH)
    monkeypatch.undo()
    assert sorted(found.files) == [
        ("data/a/denied.jpg", 0, None), ("data/a/huge.bin", state.HASH_UNASKED + 1, None), ("data/a/io.jpg", 0, None),
        ("data/a/ok.jpg", 4, hashlib.sha256(b"fine").hexdigest())]
    assert found.deferred == ["data/a/huge.bin"]
    assert sorted(map(str, found.problems)) == [
        "unreadable: data/a/denied.jpg (Permission denied)", "unreadable: data/a/io.jpg (Input/output error)",
        "unreadable: data/b (Permission denied)", "unsafe: data/a/fifo.bin (a FIFO, not a regular file)",
        "unsafe: data/a/link.jpg (a symbolic link, not a regular file)"]


def test_one_opener_reads_each_file_from_its_own_folder(tmp_path):
    """The Opener keeps the last folder open for the next file of the same folder: a file of
    another folder, or any file after close(), is read from where its path says."""
    for folder in ("a", "b", "a/c"):
        (tmp_path / folder).mkdir(parents=True, exist_ok=True)
        for name in ("x", "y"):
            (tmp_path / folder / name).write_bytes(f"{folder}/{name}".encode())
    order = ["a/x", "a/y", "b/x", "a/x", "a/c/y", "x"]
    (tmp_path / "x").write_bytes(b"x")
    with state.Opener(tmp_path) as opener:
        got = []
        for rel in order:
            fd = opener.open_fd(rel)
            got.append(os.read(fd, 100).decode())
            os.close(fd)
            if rel == "b/x":
                opener.close()
        assert got == order


def test_verify_reads_no_tag_file_over_its_bound(tmp_path):
    m = tiny(tmp_path / "m")
    at, over = _sparse(m / "at.txt", state.MAX_TAG_BYTES), _sparse(m / "over.txt", state.MAX_TAG_BYTES + 1)
    with open(m / "tagmanifest-sha256.txt", "a") as fh:
        fh.write(f"{_zeros_sha(state.MAX_TAG_BYTES)}  at.txt\n{_zeros_sha(state.MAX_TAG_BYTES + 1)}  over.txt\n")
    assert at.exists() and over.exists()
    assert [str(p) for p in verify.verify(m)] == [
        f"unsafe: over.txt ({state.MAX_TAG_BYTES + 1:,} bytes, larger than {state.MAX_TAG_BYTES:,}; not read)"]


def test_verify_names_a_file_whose_record_gives_another_size(tmp_path):
    """The bytes match the manifest, the provenance record's size does not: hashed, the record is
    wrong; --fast (sizes only) cannot tell which, so the file is named changed."""
    m = tiny(tmp_path / "m")
    lines = [json.loads(x) for x in (m / "provenance.jsonl").read_text().splitlines()]
    rel, size = lines[0]["path"], lines[0]["size"]
    lines[0]["size"] = size + 1
    (m / "provenance.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    assert [str(p) for p in verify.verify(m)] == [
        "tag-changed: provenance.jsonl (sha256 differs from the tag manifest)",
        f"provenance: {rel} ({size} bytes, as the manifest's sha256 gives, but provenance.jsonl records {size + 1})"]
    assert f"changed: {rel} ({size} bytes, provenance.jsonl says {size + 1} (sizes only: not hashed))" in \
        [str(p) for p in verify.verify(m, fast=True)]


def test_a_tag_file_over_its_bound_is_refused_by_its_size_unread(tmp_path):
    (tmp_path / "at.txt").write_bytes(b"x" * 10)
    (tmp_path / "over.txt").write_bytes(b"x" * 11)
    problems: list[Problem] = []
    assert state._read_tag(tmp_path, "at.txt", problems, 10) == b"x" * 10 and problems == []
    assert state._read_tag(tmp_path, "over.txt", problems, 10) is None
    assert [str(p) for p in problems] == ["unsafe: over.txt (11 bytes, larger than 10; not read)"]
    assert state._read_tag(tmp_path, "absent.txt", problems, 10) is None and len(problems) == 1
    _sparse(tmp_path / "manifest-sha256.txt", state.MAX_MANIFEST_BYTES + 1)
    with pytest.raises(NotAMirror, match=f"{state.MAX_MANIFEST_BYTES + 1:,} bytes, larger than {state.MAX_MANIFEST_BYTES:,}; not read"):
        evidence.manifest_items(tmp_path)


def test_open_payload_refuses_a_file_over_its_limit_by_its_size(tmp_path):
    (tmp_path / "ten.bin").write_bytes(b"0123456789")
    with state.open_payload(tmp_path, "ten.bin", 10) as fh:
        assert fh.read() == b"0123456789"
    with pytest.raises(UnsafePath) as refused:
        state.open_payload(tmp_path, "ten.bin", 9)
    assert refused.value.reason == "10 bytes, larger than 9; not read"


def test_a_hashing_scan_names_a_fifo_unsafe_and_never_opens_it(tmp_path):
    (tmp_path / "data").mkdir()
    os.mkfifo(tmp_path / "data" / "pipe")
    found = state.scan(tmp_path, "data", state.HASH)
    assert found.files == [] and [(p.kind, p.path) for p in found.problems] == [("unsafe", "data/pipe")]
    assert found.problems[0].detail == "a FIFO, not a regular file; not read"


def test_read_inside_reads_a_file_at_its_bound_and_refuses_one_over_it_unread(tmp_path):
    (tmp_path / "ten.bin").write_bytes(b"0123456789")
    assert state.read_inside(tmp_path, "ten.bin", 10) == b"0123456789" == state.read_inside(tmp_path, "ten.bin")
    with pytest.raises(UnsafePath, match="10 bytes, larger than 9; not read"):
        state.read_inside(tmp_path, "ten.bin", 9)
    os.symlink("ten.bin", tmp_path / "link.bin")
    with pytest.raises(UnsafePath):
        state.read_inside(tmp_path, "link.bin")


def _fifo(m: Path, name: str) -> None:
    (m / name).unlink()
    os.mkfifo(m / name)


def _link(m: Path, name: str) -> None:
    (m / name).rename(m / f"{name}.real")
    os.symlink(f"{name}.real", m / name)


def _folder(m: Path, name: str) -> None:
    (m / name).unlink()
    (m / name).mkdir()


def _unlisted(m: Path, name: str) -> None:
    text = (m / "tagmanifest-sha256.txt").read_text()
    (m / "tagmanifest-sha256.txt").write_text("".join(t for t in text.splitlines(True) if not t.endswith(f" {name}\n")))


SIGNED_TAG_TAMPERING = {
    "intact": lambda m: None, "a fifo": lambda m: _fifo(m, "changes.jsonl"), "a link": lambda m: _link(m, "failures.jsonl"),
    "a folder": lambda m: _folder(m, "failures.jsonl"), "gone": lambda m: (m / "changes.jsonl").unlink(),
    "grown": lambda m: (m / "provenance.jsonl").open("a").write("\n"), "unlisted, changed": lambda m: _unlisted(m, "changes.jsonl") or (m / "changes.jsonl").open("a").write("\n"),
    "bag-info edited": lambda m: (m / "bag-info.txt").open("a").write("X-Note: y\n"),
    "all over the bound": "bound",
}


@pytest.mark.parametrize("case", SIGNED_TAG_TAMPERING)
def test_hashing_the_signed_tag_files_once_finds_what_hashing_them_for_each_check_finds(signed, keypair, monkeypatch, case):
    change = SIGNED_TAG_TAMPERING[case]
    if change == "bound":
        for module in (state, evidence, verify):
            monkeypatch.setattr(module, "MAX_RECORDS_BYTES", 100)  # every records file is over it
    else:
        change(signed)
    base, *_ = keypair
    once = verify.check(signed, pubkey=f"{base}.pub")
    real, calls = evidence.tag_file_hashes, []

    def not_at_first(bag):  # the check's own hashing fails: each check hashes the files itself, as before
        calls.append(bag)
        if len(calls) == 1:
            raise OSError("not now")
        return real(bag)
    monkeypatch.setattr(evidence, "tag_file_hashes", not_at_first)
    each = verify.check(signed, pubkey=f"{base}.pub")
    assert len(calls) == 2
    assert (once.problems, once.seal.problems) == (each.problems, each.seal.problems)
    assert (once.problems or once.seal.problems) or case == "intact"


def test_a_missing_public_key_is_one_line_and_exit_2_however_verify_runs(tmp_path):
    m = tiny(tmp_path / "m")
    for flags in (["--fast"], ["--cids"], []):
        run = subprocess.run([sys.executable, "-m", "mirror", "verify", *flags, "--pubkey", str(tmp_path / "none.pub"), str(m)],
                             capture_output=True, text=True, cwd=Path(__file__).parent.parent)
        assert run.returncode == 2 and run.stdout == "" and len(run.stderr.strip().splitlines()) == 1, run.stderr


@pytest.mark.parametrize("key", ["none.pub", "bad.pub"])
def test_a_public_key_that_cannot_be_read_is_an_error_before_any_payload_file_is_hashed(tmp_path, monkeypatch, key):
    # The workers used to start first: Walk.close then waited for each folder they had begun
    # (a whole state of a real mirror) before the one-line error.
    m = tiny(tmp_path / "m")
    (tmp_path / "bad.pub").write_text("untrusted comment: x\nnot base64\n")
    started = []
    monkeypatch.setattr(verify, "scan_payload", lambda *a, **k: started.append(a) or pytest.fail("hashing started"))
    with pytest.raises(UsageError, match="bad.pub: not a minisign|none.pub: cannot read the public key"):
        verify.check(m, pubkey=tmp_path / key)
    assert started == []
