"""Content identifiers (IPFS CIDv1) computed locally, with the unixfs-v1-2025 parameters.

A file of at most one chunk (1 MiB) is a single raw block, so its CID is the raw-codec
CIDv1 of the sha256 the fetcher already computed: no second read of the file.
"""
from __future__ import annotations

import base64

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


def raw_cid(sha256_hex: str) -> str:
    return cid_to_str(cid_bytes(RAW_CODEC, bytes.fromhex(sha256_hex)))


def str_to_cid(text: str) -> bytes:
    """Decode a base32 ('b…') CIDv1 string to bytes, for comparing CIDs decoded."""
    if not text.startswith("b"):
        raise ValueError(f"not a base32 CIDv1: {text!r}")
    body = text[1:].upper()
    return base64.b32decode(body + "=" * (-len(body) % 8))
