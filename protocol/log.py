"""The transparency log: RFC 9162 Merkle tree hashing, inclusion and consistency proofs.

Leaves are record digests (SHA-256 of a record's encoded COSE_Sign1). As in RFC 9162
section 2.1: ``leaf_hash(d) = SHA-256(0x00 || d)``, ``node_hash(l, r) = SHA-256(0x01 || l ||
r)``, the root of an empty tree is ``SHA-256("")``, and a tree of ``n > 1`` leaves splits at
the largest power of two smaller than ``n``.

Proof generation works over a ``subtree(lo, hi)`` function returning the root of leaves
``[lo, hi)``; :class:`MemoryTree` provides one for tests and small logs, and the server
provides one backed by its database.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from protocol.errors import ProofError
from protocol.hashing import HASH_LEN, sha256

EMPTY_ROOT = sha256(b"")
Subtree = Callable[[int, int], bytes]


def leaf_hash(entry: bytes) -> bytes:
    """``SHA-256(0x00 || entry)``."""
    return sha256(b"\x00", entry)


def node_hash(left: bytes, right: bytes) -> bytes:
    """``SHA-256(0x01 || left || right)``."""
    return sha256(b"\x01", left, right)


def split_point(n: int) -> int:
    """The largest power of two strictly smaller than ``n`` (n >= 2)."""
    return 1 << ((n - 1).bit_length() - 1)


def root_of(leaves: Sequence[bytes]) -> bytes:
    """Merkle tree hash of the leaf entries (not pre-hashed)."""
    if not leaves:
        return EMPTY_ROOT
    level = [leaf_hash(x) for x in leaves]
    # Fold pairwise from the left; an odd last node is carried up, matching RFC 9162's split.
    while len(level) > 1:
        nxt = [node_hash(level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            nxt.append(level[-1])
        level = nxt
    return level[0]


def inclusion_path(index: int, size: int, subtree: Subtree) -> list[bytes]:
    """RFC 9162 PATH(m, D[n]) for leaf ``index`` in a tree of ``size`` leaves."""
    if not 0 <= index < size:
        raise ProofError(f"leaf {index} is not in a tree of size {size}")
    path: list[bytes] = []
    lo, hi = 0, size
    while hi - lo > 1:
        k = split_point(hi - lo)
        if index < lo + k:
            path.append(subtree(lo + k, hi))
            hi = lo + k
        else:
            path.append(subtree(lo, lo + k))
            lo = lo + k
    path.reverse()
    return path


def consistency_path(first: int, second: int, subtree: Subtree) -> list[bytes]:
    """RFC 9162 PROOF(m, D[n]) between tree sizes ``first`` <= ``second``."""
    if not 0 <= first <= second:
        raise ProofError(f"no consistency proof from size {first} to {second}")
    if first in (0, second):
        return []
    path: list[bytes] = []

    def subproof(m: int, lo: int, hi: int, complete: bool) -> None:
        n = hi - lo
        if m == n:
            if not complete:
                path.append(subtree(lo, hi))
            return
        k = split_point(n)
        if m <= k:
            subproof(m, lo, lo + k, complete)
            path.append(subtree(lo + k, hi))
        else:
            subproof(m - k, lo + k, hi, False)
            path.append(subtree(lo, lo + k))

    subproof(first, 0, second, True)
    return path


def _check_hashes(path: Sequence[bytes]) -> None:
    if len(path) > 64 or any(not isinstance(p, bytes) or len(p) != HASH_LEN for p in path):
        raise ProofError("a proof is at most 64 hashes of 32 bytes")


def root_from_inclusion(index: int, size: int, leaf: bytes, path: Sequence[bytes]) -> bytes:
    """The root that ``path`` proves for ``leaf`` (an entry, not pre-hashed)."""
    _check_hashes(path)
    if not 0 <= index < size:
        raise ProofError(f"leaf {index} is not in a tree of size {size}")
    fn, sn = index, size - 1
    r = leaf_hash(leaf)
    for p in path:
        if sn == 0:
            raise ProofError("inclusion proof is longer than the tree is deep")
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError("inclusion proof is shorter than the tree is deep")
    return r


def verify_inclusion(
    index: int, size: int, leaf: bytes, path: Sequence[bytes], root: bytes
) -> None:
    """Check that ``leaf`` is entry ``index`` of the tree of ``size`` with ``root``."""
    if root_from_inclusion(index, size, leaf, path) != root:
        raise ProofError(f"entry {index} is not in the tree of size {size} with that root")


def verify_consistency(
    first: int, second: int, first_root: bytes, second_root: bytes, path: Sequence[bytes]
) -> None:
    """Check that the tree of ``first`` leaves is a prefix of the tree of ``second`` leaves."""
    _check_hashes(path)
    if not 0 <= first <= second:
        raise ProofError(f"size {first} cannot precede size {second}")
    if first == second:
        if path or first_root != second_root:
            raise ProofError(f"two different roots for tree size {first}")
        return
    if first == 0:
        if path:
            raise ProofError("a proof from the empty tree is empty")
        return
    proof = list(path)
    if first & (first - 1) == 0:
        proof.insert(0, first_root)
    if not proof:
        raise ProofError("empty consistency proof")
    fn, sn = first - 1, second - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = proof[0]
    for c in proof[1:]:
        if sn == 0:
            raise ProofError("consistency proof is too long")
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    if fr != first_root or sr != second_root or sn != 0:
        raise ProofError(f"tree of size {first} is not a prefix of the tree of size {second}")


class MemoryTree:
    """An append-only Merkle tree held in memory, with perfect subtrees cached.

    ``nodes[level][i]`` is the root of leaves ``[i * 2**level, (i + 1) * 2**level)``; every
    subtree RFC 9162's recursion asks for is such a node or is split into them.
    """

    def __init__(self) -> None:
        self.nodes: list[list[bytes]] = [[]]

    @property
    def size(self) -> int:
        """Number of leaves."""
        return len(self.nodes[0])

    def append(self, entry: bytes) -> int:
        """Add a leaf entry; return its index."""
        index = self.size
        self.nodes[0].append(leaf_hash(entry))
        level, i = 0, index
        while i & 1:
            if len(self.nodes) == level + 1:
                self.nodes.append([])
            self.nodes[level + 1].append(node_hash(self.nodes[level][i - 1], self.nodes[level][i]))
            level += 1
            i >>= 1
        return index

    def subtree(self, lo: int, hi: int) -> bytes:
        """Root of leaves ``[lo, hi)``."""
        n = hi - lo
        if n <= 0:
            return EMPTY_ROOT
        if n & (n - 1) == 0 and lo % n == 0:
            level = n.bit_length() - 1
            return self.nodes[level][lo >> level]
        k = split_point(n)
        return node_hash(self.subtree(lo, lo + k), self.subtree(lo + k, hi))

    def root(self, size: int | None = None) -> bytes:
        """Root of the first ``size`` leaves (default: all)."""
        return self.subtree(0, self.size if size is None else size)

    def inclusion(self, index: int, size: int | None = None) -> list[bytes]:
        """Inclusion path of leaf ``index``."""
        return inclusion_path(index, self.size if size is None else size, self.subtree)

    def consistency(self, first: int, second: int | None = None) -> list[bytes]:
        """Consistency path between two sizes."""
        return consistency_path(first, self.size if second is None else second, self.subtree)
