"""RFC 9162 Merkle tree over the manifest: its root, inclusion proofs, and checking them.

Leaves are the payload manifest's lines, `<sha256>  <path>\\n` in UTF-8 (paths percent-encoded
as in the manifest), in the manifest's order (sorted by path). leaf = H(0x00 || line),
node = H(0x01 || left || right), H = sha256. A proof lets anyone check one file against a
published root with nothing else.
"""
from __future__ import annotations

import hashlib
from typing import Iterable, Sequence

from .manifest import encode_path


def leaf_data(path: str, sha256_hex: str) -> bytes:
    return f"{sha256_hex}  {encode_path(path)}\n".encode("utf-8")


def leaf_hash(data: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def _split(n: int) -> int:
    """The largest power of two smaller than n (n > 1)."""
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def root_of_leaves(leaves: Sequence[bytes]) -> bytes:
    """MTH over already-hashed leaves, bottom-up (the same result as the recursive definition)."""
    if not leaves:
        return hashlib.sha256(b"").digest()
    level = list(leaves)
    sha256 = hashlib.sha256
    while len(level) > 1:
        nxt = [sha256(b"\x01" + left + right).digest() for left, right in zip(level[::2], level[1::2])]  # node_hash
        if len(level) % 2:
            nxt.append(level[-1])  # an odd node is promoted, which matches RFC 9162's split
        level = nxt
    return level[0]


def manifest_leaves(items: Sequence[tuple[str, str]]) -> list[bytes]:
    """Hashed leaves of (path, sha256) items, in manifest order. When no path has a character
    encode_path changes, each leaf is made in one step (as leaf_hash(leaf_data(...)) makes it)."""
    items = sorted(items)
    paths = "\x00".join([p for p, _h in items])
    if encode_path(paths) != paths:
        return [leaf_hash(leaf_data(p, h)) for p, h in items]
    sha256 = hashlib.sha256
    return [sha256(f"\x00{h}  {p}\n".encode("utf-8")).digest() for p, h in items]  # 0x00 || leaf_data(p, h)


def merkle_root(items: Sequence[tuple[str, str]]) -> str:
    return root_of_leaves(manifest_leaves(items)).hex()


class ManifestLines:
    """The payload manifest's lines for sorted (path, sha256) items, as an iterable of bytes
    to write; after it is consumed, `root` is their Merkle root (each line is a leaf's data).
    The items may be a stream: only one subtree root per level is kept, not every leaf."""

    def __init__(self, items: Iterable[tuple[str, str]]):
        self.items = items
        self._stack: list[tuple[int, bytes]] = []  # (leaves under it, root) of whole subtrees, largest first

    def __iter__(self):
        self._stack = []
        for path, sha in self.items:
            line = leaf_data(path, sha)
            self._push(leaf_hash(line))
            yield line

    def _push(self, node: bytes) -> None:
        size = 1
        while self._stack and self._stack[-1][0] == size:  # two equal subtrees make the next one
            size *= 2
            node = node_hash(self._stack.pop()[1], node)
        self._stack.append((size, node))

    @property
    def root(self) -> str:
        """RFC 9162 splits at the largest power of two: the whole subtrees, folded from the right."""
        if not self._stack:
            return hashlib.sha256(b"").hexdigest()
        node = self._stack[-1][1]
        for _size, left in reversed(self._stack[:-1]):
            node = node_hash(left, node)
        return node.hex()


def inclusion_path(leaves: Sequence[bytes], index: int) -> list[bytes]:
    """RFC 9162 PATH(m, D[n]): sibling hashes from the leaf up."""
    n = len(leaves)
    if n <= 1:
        return []
    k = _split(n)
    if index < k:
        return inclusion_path(leaves[:k], index) + [root_of_leaves(leaves[k:])]
    return inclusion_path(leaves[k:], index - k) + [root_of_leaves(leaves[:k])]


def verify_inclusion(leaf: bytes, index: int, size: int, path: Sequence[bytes], root: bytes) -> bool:
    """RFC 9162 section 2.1.3.2: does `path` prove the hashed `leaf` at `index` under `root`?"""
    if index >= size or index < 0:
        return False
    fn, sn = index, size - 1
    r = leaf
    for p in path:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    return sn == 0 and r == root


def all_inclusion_paths(leaves: Sequence[bytes]) -> list[list[bytes]]:
    """PATH(m, D[n]) for every m at once, in O(n log n): one walk down RFC 9162's split,
    where each subtree's root is appended to the paths of the leaves on its other side."""
    paths: list[list[bytes]] = [[] for _ in leaves]

    def subtree(lo: int, hi: int) -> bytes:
        if hi - lo == 1:
            return leaves[lo]
        mid = lo + _split(hi - lo)
        left, right = subtree(lo, mid), subtree(mid, hi)
        for i in range(lo, mid):
            paths[i].append(right)
        for i in range(mid, hi):
            paths[i].append(left)
        return node_hash(left, right)

    if leaves:
        subtree(0, len(leaves))
    return paths
