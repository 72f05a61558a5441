"""Content identifiers (IPFS CIDv1) computed locally, with the unixfs-v1-2025 parameters.

A file of at most one chunk (1 MiB) is a single raw block, so its CID is the raw-codec
CIDv1 of the sha256 the fetcher already computed: no second read of the file. Larger files
are balanced UnixFS DAGs over 1 MiB raw leaves; directories are plain dag-pb UnixFS
directories (the archive's layout keeps them far below the size where Kubo would shard).
The same code writes CARv1 files, so a CAR and a node agree on every CID.
"""
from __future__ import annotations

import base64
import hashlib
import os
from pathlib import Path

IPFS_PROFILE = "unixfs-v1-2025"
CHUNK_SIZE = 1024 * 1024
RAW_CODEC = 0x55
DAG_PB_CODEC = 0x70
SHA2_256 = 0x12


def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def cid_bytes(codec: int, digest: bytes) -> bytes:
    """Binary CIDv1: version, codec, multihash (sha2-256)."""
    return varint(1) + varint(codec) + varint(SHA2_256) + varint(len(digest)) + digest


def cid_to_str(binary: bytes) -> str:
    """Multibase base32 (lower, no padding), the form Kubo prints: 'bafk…' / 'bafy…'."""
    return "b" + base64.b32encode(binary).decode("ascii").lower().rstrip("=")


_BASE32 = "abcdefghijklmnopqrstuvwxyz234567"
_BASE32_PAIRS = tuple(a + b for a in _BASE32 for b in _BASE32)  # 10 bits to two letters
_RAW_PREFIX = int.from_bytes(varint(1) + varint(RAW_CODEC) + varint(SHA2_256) + varint(32), "big")  # cid_bytes's head
_RAW_SHIFTS = tuple(range(280, -1, -10))  # 36 bytes and 2 bits of padding: 290 bits, 29 pairs


def raw_cid(sha256_hex: str) -> str:
    """cid_to_str(cid_bytes(RAW_CODEC, digest)), in one integer: the crawl makes one for every
    small file it archives, and base64's base32 encoder, written in Python, took twice as long."""
    digest = bytes.fromhex(sha256_hex)
    if len(digest) != 32:
        return cid_to_str(cid_bytes(RAW_CODEC, digest))
    n = (_RAW_PREFIX << 258) | (int.from_bytes(digest, "big") << 2)
    return "b" + "".join([_BASE32_PAIRS[(n >> shift) & 1023] for shift in _RAW_SHIFTS])


_B58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"


def _b58decode(text: str) -> bytes:
    n = 0
    for ch in text:
        n = n * 58 + _B58.index(ch)
    raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return b"\x00" * (len(text) - len(text.lstrip("1"))) + raw


def str_to_cid(text: str) -> bytes:
    """Binary CIDv1 from its text: base32 ('b…'), base58btc ('z…'), or a CIDv0 ('Qm…').

    Nodes print CIDs in different bases (js-ipfs echoes base58), so compare them decoded.
    """
    try:
        if text.startswith("Qm") and len(text) == 46:
            return varint(1) + varint(DAG_PB_CODEC) + _b58decode(text)
        if text.startswith("z"):
            return _b58decode(text[1:])
        if text.startswith("b"):
            body = text[1:].upper()
            return base64.b32decode(body + "=" * (-len(body) % 8))
    except (ValueError, IndexError) as exc:
        raise ValueError(f"not a CID: {text[:60]!r}") from exc
    raise ValueError(f"not a CID in a base this tool reads: {text[:60]!r}")


# -- dag-pb and UnixFS encoding (the protobuf subset UnixFS v1 needs) -----------------------
MAX_LINKS = 1024  # links per file node in the unixfs-v1-2025 balanced layout
UNIXFS_DIRECTORY = b"\x08\x01"  # UnixFS Data {Type: Directory}


def _field(number: int, payload: bytes) -> bytes:
    return varint(number << 3 | 2) + varint(len(payload)) + payload


def _uint(number: int, value: int) -> bytes:
    return varint(number << 3) + varint(value)


def pb_link(cid: bytes, name: str, tsize: int) -> bytes:
    """PBLink {Hash = 1; Name = 2; Tsize = 3}."""
    return _field(1, cid) + _field(2, name.encode("utf-8")) + _uint(3, tsize)


def pb_node(links: list[bytes], data: bytes) -> bytes:
    """PBNode in canonical dag-pb order: Links (field 2) first, then Data (field 1)."""
    return b"".join(_field(2, link) for link in links) + _field(1, data)


def unixfs_file(filesize: int, blocksizes: list[int]) -> bytes:
    """UnixFS Data {Type: File, filesize, blocksizes} for a node over raw leaves."""
    return _uint(1, 2) + _uint(3, filesize) + b"".join(_uint(4, b) for b in blocksizes)


def dag_pb_cid(block: bytes) -> bytes:
    return cid_bytes(DAG_PB_CODEC, hashlib.sha256(block).digest())


def file_dag(chunks: list[tuple[bytes, int]]) -> tuple[bytes, int, list[tuple[bytes, bytes]]]:
    """A balanced UnixFS file over raw leaves: (root CID, Tsize, [(cid, block)] of its dag-pb nodes).

    chunks: (raw leaf CID, size) in order. One chunk is the file itself (a raw block).
    """
    if len(chunks) == 1:
        return chunks[0][0], chunks[0][1], []
    nodes: list[tuple[bytes, bytes]] = []
    level = [(cid, size, size) for cid, size in chunks]  # (cid, filesize, tsize)
    while len(level) > 1 or not nodes:
        parents = []
        for i in range(0, len(level), MAX_LINKS):
            group = level[i:i + MAX_LINKS]
            block = pb_node([pb_link(c, "", t) for c, _f, t in group],
                            unixfs_file(sum(f for _c, f, _t in group), [f for _c, f, _t in group]))
            cid = dag_pb_cid(block)
            nodes.append((cid, block))
            parents.append((cid, sum(f for _c, f, _t in group), len(block) + sum(t for _c, _f, t in group)))
        level = parents
    return level[0][0], level[0][2], nodes


def file_chunks(source) -> list[tuple[bytes, int]]:
    """Raw leaf CIDs of a file (a path, or a file already open for reading, as the validated
    opener gives one) cut in CHUNK_SIZE pieces (read once)."""
    if hasattr(source, "read"):
        return [(cid_bytes(RAW_CODEC, hashlib.sha256(data).digest()), len(data)) for data in _chunks(source)]
    with open(source, "rb") as fh:
        return file_chunks(fh)


def _chunks(fh):
    """The file's CHUNK_SIZE pieces; an empty file is one empty chunk."""
    first = True
    while True:
        data = fh.read(CHUNK_SIZE)
        if not data and not first:
            return
        first = False
        yield data
        if len(data) < CHUNK_SIZE:
            return


def file_cid(path, size: int, sha256_hex: str | None = None) -> str:
    """The CID a node gives this file (a path or an open file) under the profile; no read when
    size <= one chunk."""
    if size <= CHUNK_SIZE and sha256_hex:
        return raw_cid(sha256_hex)
    return cid_to_str(file_dag(file_chunks(path))[0])


class Dag:
    """The UnixFS DAG of a directory tree: files (raw leaves), dag-pb directories, one root."""

    def __init__(self, root: str | os.PathLike, files: list[tuple[str, int, str]],
                 known: dict[str, tuple[bytes, int]] | None = None):
        """files: (relative path, size, sha256 hex) of every file to include. A file of one chunk
        is not read (its CID is its sha256's); a larger one is read once, inside root without
        following symlinks, and must hash to its sha256 (archive.Corrupt otherwise), unless
        known gives its (CID, DAG size): a file published before, whose bytes are not here."""
        self.root_dir = Path(root)
        self.files: dict[str, tuple[bytes, int]] = {}  # rel -> (cid, tsize)
        self.sha256: dict[str, str] = {}  # rel -> the sha256 its bytes must have
        self.sizes: dict[str, int] = {}  # rel -> its size in bytes
        self.nodes: dict[bytes, bytes] = {}  # dag-pb blocks: directories and multi-chunk file roots
        self.children: dict[bytes, list[tuple[str, bytes]]] = {}  # directory -> (name, cid) of each entry
        tree: dict = {}
        for rel, size, sha in files:
            if size <= CHUNK_SIZE:
                cid, tsize = cid_bytes(RAW_CODEC, bytes.fromhex(sha)), size
            elif known and rel in known:
                cid, tsize = known[rel]
            else:
                cid, tsize, nodes = file_dag([(c, len(d)) for c, d in self.leaf_blocks(rel, sha)])
                self.nodes.update(nodes)
            self.files[rel] = (cid, tsize)
            self.sha256[rel] = sha
            self.sizes[rel] = size
            parts = rel.split("/")
            node = tree
            for part in parts[:-1]:
                node = node.setdefault(part, {})
            node[parts[-1]] = (cid, tsize)
        self.root, self.tsize = self._directory(tree)

    def _directory(self, tree: dict) -> tuple[bytes, int]:
        links, total, entries = [], 0, []
        for name in sorted(tree, key=lambda n: n.encode("utf-8")):
            child = tree[name]
            cid, tsize = self._directory(child) if isinstance(child, dict) else child
            links.append(pb_link(cid, name, tsize))
            entries.append((name, cid))
            total += tsize
        block = pb_node(links, UNIXFS_DIRECTORY)
        if len(block) > HAMT_THRESHOLD:
            raise ValueError(f"a directory of {len(tree)} entries is over the {HAMT_THRESHOLD}-byte block limit")
        cid = dag_pb_cid(block)
        self.nodes[cid] = block
        self.children[cid] = entries
        return cid, len(block) + total

    @property
    def root_cid(self) -> str:
        return cid_to_str(self.root)

    def leaf_blocks(self, rel: str, sha256_hex: str | None = None):
        """(cid, bytes) of the raw leaves of one file, read from disk inside the DAG's root
        (no symlink followed); archive.Corrupt once the file is read when its bytes do not hash
        to its sha256 or give another CID than the DAG's; UnsafePath for a symlink, FIFO, device."""
        from .archive import Corrupt
        from .state import open_payload

        want_sha = sha256_hex or self.sha256[rel]
        digest, chunks = hashlib.sha256(), []
        with open_payload(self.root_dir, rel) as fh:
            for data in _chunks(fh):
                cid = cid_bytes(RAW_CODEC, hashlib.sha256(data).digest())
                digest.update(data)
                chunks.append((cid, len(data)))
                yield cid, data
        if digest.hexdigest() != want_sha or (rel in self.files and file_dag(chunks)[0] != self.files[rel][0]):
            raise Corrupt(f"{rel}: its bytes do not match the manifest (changed on disk)")


HAMT_THRESHOLD = 256 * 1024  # Kubo shards a directory whose node would pass this size


def car_header(roots: list[bytes]) -> bytes:
    """A CARv1 header: dag-cbor {"roots": [CID…], "version": 1}, length-prefixed."""
    body = bytearray(b"\xa2\x65roots")
    body += _cbor_head(4, len(roots))
    for cid in roots:
        raw = b"\x00" + cid  # a CID in dag-cbor: tag 42 over bytes with a leading 0x00
        body += b"\xd8\x2a" + _cbor_head(2, len(raw)) + raw
    body += b"\x67version\x01"
    return varint(len(body)) + bytes(body)


def car_block(cid: bytes, data: bytes) -> bytes:
    return varint(len(cid) + len(data)) + cid + data


def _cbor_head(major: int, n: int) -> bytes:
    if n < 24:
        return bytes([major << 5 | n])
    if n < 256:
        return bytes([major << 5 | 24, n])
    return bytes([major << 5 | 25]) + n.to_bytes(2, "big")
