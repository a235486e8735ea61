"""The transparency log (RFC 9162) kept in the database.

The hashes of perfect subtrees are stored as they are completed (``log_node``), so the
root of any size, and every inclusion or consistency proof, is composed from at most
``O(log n)`` stored nodes per subtree, fetched in one query. Proofs are planned first (the
RFC recursion asks for subtree ranges whatever the hashes are), then the nodes fetched,
then the proof computed with :mod:`protocol.log`'s own functions.

Appending happens only inside the log writer's transaction (see :mod:`server.ingest`).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping

from protocol.hashing import HASH_LEN
from protocol.log import (
    EMPTY_ROOT,
    consistency_path,
    inclusion_path,
    leaf_hash,
    node_hash,
    split_point,
)
from server import models
from server.errors import StorageError

LEVEL_SHIFT = 48
MAX_LEAVES = 1 << LEVEL_SHIFT
CACHE_NODES = 200_000


def node_key(level: int, index: int) -> int:
    """The database key of the perfect subtree ``index`` at ``level``."""
    return (level << LEVEL_SHIFT) | index


def perfect_nodes(lo: int, hi: int) -> list[int]:
    """Keys of the perfect subtrees the root of leaves ``[lo, hi)`` is composed of."""
    n = hi - lo
    if n <= 0:
        return []
    if n & (n - 1) == 0 and lo % n == 0:
        level = n.bit_length() - 1
        return [node_key(level, lo >> level)]
    k = split_point(n)
    return perfect_nodes(lo, lo + k) + perfect_nodes(lo + k, hi)


def compose(lo: int, hi: int, nodes: Mapping[int, bytes]) -> bytes:
    """Root of leaves ``[lo, hi)`` from the perfect-subtree hashes in ``nodes``."""
    n = hi - lo
    if n <= 0:
        return EMPTY_ROOT
    if n & (n - 1) == 0 and lo % n == 0:
        level = n.bit_length() - 1
        try:
            return nodes[node_key(level, lo >> level)]
        except KeyError as exc:
            raise StorageError(f"log node for leaves [{lo}, {hi}) is missing") from exc
    k = split_point(n)
    return node_hash(compose(lo, lo + k, nodes), compose(lo + k, hi, nodes))


def plan(proof: Callable[[Callable[[int, int], bytes]], object]) -> set[int]:
    """The node keys a proof computation will need (it is run once with dummy hashes)."""
    keys: set[int] = set()

    def record(lo: int, hi: int) -> bytes:
        keys.update(perfect_nodes(lo, hi))
        return bytes(HASH_LEN)

    proof(record)
    return keys


def frontier_keys(size: int) -> dict[int, int]:
    """Level -> key of the right-edge perfect subtrees of a log of ``size`` leaves."""
    return {
        level: node_key(level, (size >> level) - 1)
        for level in range(size.bit_length())
        if size >> level & 1
    }


def root_of_frontier(frontier: Mapping[int, bytes]) -> bytes:
    """The root of the log whose right-edge subtrees are ``frontier`` (level -> hash)."""
    if not frontier:
        return EMPTY_ROOT
    levels = sorted(frontier)
    root = frontier[levels[0]]
    for level in levels[1:]:
        root = node_hash(frontier[level], root)
    return root


class Appender:
    """Appends leaves in memory from the frontier; the caller writes :attr:`new` out."""

    def __init__(self, size: int, frontier: dict[int, bytes]) -> None:
        self.size = size
        self.frontier = dict(frontier)
        self.new: dict[int, bytes] = {}

    def append(self, entry: bytes) -> int:
        """Add a leaf (a record digest); return its index."""
        index = self.size
        if index >= MAX_LEAVES:
            raise StorageError("the log is full")
        h = leaf_hash(entry)
        level, i = 0, index
        self.new[node_key(0, i)] = h
        while i & 1:
            h = node_hash(self.frontier.pop(level), h)
            i >>= 1
            level += 1
            self.new[node_key(level, i)] = h
        self.frontier[level] = h
        self.size += 1
        return index

    @property
    def root(self) -> bytes:
        """The root after the appends so far."""
        return root_of_frontier(self.frontier)


class NodeReader:
    """Reads perfect-subtree hashes, with a bounded cache (nodes never change once written).

    Only committed nodes enter the cache: nodes read from the database, and nodes the log
    writer hands over after its commit.
    """

    def __init__(self, capacity: int = CACHE_NODES) -> None:
        self._cache: OrderedDict[int, bytes] = OrderedDict()
        self._capacity = capacity

    def remember(self, nodes: Mapping[int, bytes]) -> None:
        """Add committed nodes to the cache, evicting the oldest past capacity."""
        for key, value in nodes.items():
            self._cache[key] = value
            self._cache.move_to_end(key)
        while len(self._cache) > self._capacity:
            self._cache.popitem(last=False)

    async def fetch(
        self, keys: Iterable[int], overlay: Mapping[int, bytes] | None = None
    ) -> dict[int, bytes]:
        """The hashes of ``keys``, from ``overlay`` (uncommitted), the cache or the database."""
        found: dict[int, bytes] = {}
        missing: list[int] = []
        for key in keys:
            if overlay is not None and key in overlay:
                found[key] = overlay[key]
            elif key in self._cache:
                found[key] = self._cache[key]
            else:
                missing.append(key)
        read: dict[int, bytes] = {}
        for start in range(0, len(missing), 500):
            rows = await models.LogNode.filter(key__in=missing[start : start + 500]).values_list(
                "key", "hash"
            )
            for key, value in rows:
                read[int(key)] = bytes(value)
        if len(read) != len(missing):
            raise StorageError(f"{len(missing) - len(read)} log node(s) missing from the database")
        self.remember(read)
        found.update(read)
        return found

    async def root(self, size: int, overlay: Mapping[int, bytes] | None = None) -> bytes:
        """The root of the first ``size`` leaves."""
        nodes = await self.fetch(perfect_nodes(0, size), overlay)
        return compose(0, size, nodes)

    async def frontier(self, size: int) -> dict[int, bytes]:
        """Level -> hash of the right-edge subtrees of the log of ``size`` leaves."""
        keys = frontier_keys(size)
        nodes = await self.fetch(keys.values())
        return {level: nodes[key] for level, key in keys.items()}

    async def inclusion(
        self, index: int, size: int, overlay: Mapping[int, bytes] | None = None
    ) -> list[bytes]:
        """RFC 9162 inclusion path of leaf ``index`` in the tree of ``size`` leaves."""
        return (await self.inclusions([index], size, overlay))[0]

    async def inclusions(
        self, indices: list[int], size: int, overlay: Mapping[int, bytes] | None = None
    ) -> list[list[bytes]]:
        """Inclusion paths of several leaves in one tree, with one database query."""
        keys: set[int] = set()
        for index in indices:
            keys |= _inclusion_plan(index, size)
        nodes = await self.fetch(keys, overlay)
        return [
            inclusion_path(index, size, lambda lo, hi: compose(lo, hi, nodes)) for index in indices
        ]

    async def consistency(self, first: int, second: int) -> list[bytes]:
        """RFC 9162 consistency path between two sizes."""
        keys = plan(lambda sub: consistency_path(first, second, sub))
        nodes = await self.fetch(keys)
        return consistency_path(first, second, lambda lo, hi: compose(lo, hi, nodes))


def _inclusion_plan(index: int, size: int) -> set[int]:
    return plan(lambda sub: inclusion_path(index, size, sub))
