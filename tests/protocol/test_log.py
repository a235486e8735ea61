"""The transparency log against a plain, independent reading of RFC 9162 section 2.1 (written
here recursively, as the RFC states it), and against Certificate Transparency's roots."""

from __future__ import annotations

import contextlib
import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol import log
from protocol.errors import ProofError


# ----------------------------------------------------------------- RFC 9162, literally
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


def path(m: int, d: list[bytes]) -> list[bytes]:
    """PATH(m, D[n]) of section 2.1.3.1."""
    if len(d) == 1:
        return []
    k = _k(len(d))
    if m < k:
        return [*path(m, d[:k]), mth(d[k:])]
    return [*path(m - k, d[k:]), mth(d[:k])]


def proof(m: int, d: list[bytes]) -> list[bytes]:
    """PROOF(m, D[n]) of section 2.1.4.1."""
    return subproof(m, d, True)


def subproof(m: int, d: list[bytes], b: bool) -> list[bytes]:
    """SUBPROOF(m, D[n], b)."""
    n = len(d)
    if m == n:
        return [] if b else [mth(d)]
    k = _k(n)
    if m <= k:
        return [*subproof(m, d[:k], b), mth(d[k:])]
    return [*subproof(m - k, d[k:], False), mth(d[:k])]


def _entries(n: int) -> list[bytes]:
    return [hashlib.sha256(f"entry {i}".encode()).digest() for i in range(n)]


def _tree(entries: list[bytes]) -> log.MemoryTree:
    tree = log.MemoryTree()
    for i, e in enumerate(entries):
        assert tree.append(e) == i
    return tree


N = 33
ENTRIES = _entries(N)
TREE = _tree(ENTRIES)


# ----------------------------------------------------------------- against the RFC
def test_hashes() -> None:
    assert _h(b"") == log.EMPTY_ROOT
    assert log.leaf_hash(b"x") == _h(b"\x00x")
    assert log.node_hash(b"l", b"r") == _h(b"\x01lr")
    assert [log.split_point(n) for n in range(2, 10)] == [1, 2, 2, 4, 4, 4, 4, 8]


def test_roots_of_every_size() -> None:
    for n in range(N + 1):
        expected = mth(ENTRIES[:n])
        assert log.root_of(ENTRIES[:n]) == expected, n
        assert TREE.root(n) == expected, n
    assert TREE.size == N
    assert TREE.root() == mth(ENTRIES)


def test_inclusion_paths_and_verification() -> None:
    for n in range(1, N + 1):
        root = mth(ENTRIES[:n])
        for m in range(n):
            expected = path(m, ENTRIES[:n])
            assert TREE.inclusion(m, n) == expected, (m, n)
            log.verify_inclusion(m, n, ENTRIES[m], expected, root)
    assert TREE.inclusion(3) == path(3, ENTRIES)


def test_consistency_proofs_and_verification() -> None:
    for n in range(1, N + 1):
        for m in range(1, n + 1):
            expected = [] if m == n else proof(m, ENTRIES[:n])
            assert TREE.consistency(m, n) == expected, (m, n)
            log.verify_consistency(m, n, mth(ENTRIES[:m]), mth(ENTRIES[:n]), expected)
    assert TREE.consistency(0, 5) == []
    log.verify_consistency(0, 5, log.EMPTY_ROOT, mth(ENTRIES[:5]), [])


def test_certificate_transparency_reference_roots() -> None:
    # The leaves and roots of the Certificate Transparency reference test suite (RFC 6962).
    leaves = [
        b"",
        b"\x00",
        b"\x10",
        b"\x20\x21",
        b"\x30\x31",
        b"\x40\x41\x42\x43",
        bytes(range(0x50, 0x58)),
        bytes(range(0x60, 0x70)),
    ]
    roots = [
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
        "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
        "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
        "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
        "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
        "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
    ]
    tree = _tree(leaves)
    for n, root in enumerate(roots, start=1):
        assert log.root_of(leaves[:n]).hex() == root
        assert tree.root(n).hex() == root
    assert log.EMPTY_ROOT.hex() == (
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    )


# ----------------------------------------------------------------- what must fail
def test_inclusion_failures() -> None:
    n, m = 13, 6
    root, good = mth(ENTRIES[:n]), path(m, ENTRIES[:n])
    bad_cases = [
        (m + 1, n, ENTRIES[m], good, root),
        (m, 8, ENTRIES[m], good, root),
        (m, 7, ENTRIES[m], good, root),
        (m, n, ENTRIES[m + 1], good, root),
        (m, n, ENTRIES[m], good[:-1], root),
        (m, n, ENTRIES[m], [*good, good[0]], root),
        (m, n, ENTRIES[m], [good[1], good[0], *good[2:]], root),
        (m, n, ENTRIES[m], good, mth(ENTRIES[: n - 1])),
        (m, n, ENTRIES[m], [bytes(32), *good[1:]], root),
        (n, n, ENTRIES[m], good, root),
        (-1, n, ENTRIES[m], good, root),
        (0, 0, ENTRIES[0], [], log.EMPTY_ROOT),
        (m, n, ENTRIES[m], [g[:31] for g in good], root),
        (m, n, ENTRIES[m], [bytes(32)] * 65, root),
    ]
    for args in bad_cases:
        with pytest.raises(ProofError):
            log.verify_inclusion(*args)


def test_the_size_is_bound_to_the_root_by_the_checkpoint_not_the_proof() -> None:
    # As in RFC 9162: a path is checked against (size, root) from one signed checkpoint.
    # Sizes that give the leaf the same path shape (here 12..16 for leaf 6) verify alike,
    # so a verifier must take the size from the checkpoint whose root it compares with.
    root, good = mth(ENTRIES[:13]), path(6, ENTRIES[:13])
    for size in (12, 14, 16):
        log.verify_inclusion(6, size, ENTRIES[6], good, root)
    log.verify_consistency(6, 14, mth(ENTRIES[:6]), root, proof(6, ENTRIES[:13]))


def test_single_leaf_inclusion() -> None:
    log.verify_inclusion(0, 1, ENTRIES[0], [], mth(ENTRIES[:1]))
    with pytest.raises(ProofError):
        log.verify_inclusion(0, 1, ENTRIES[0], [bytes(32)], mth(ENTRIES[:1]))


def test_consistency_failures() -> None:
    m, n = 6, 13
    old, new, good = mth(ENTRIES[:m]), mth(ENTRIES[:n]), proof(m, ENTRIES[:n])
    forked = _entries(n)
    forked[2] = b"\xff" * 32
    bad_cases = [
        (m, n, old, new, good[:-1]),
        (m, n, old, new, [*good, good[0]]),
        (m, n, old, mth(forked), good),
        (m, n, mth(forked[:m]), new, good),
        (m + 1, n, old, new, good),
        (m, 8, old, new, good),
        (n, m, new, old, good),
        (m, m, old, new, []),
        (m, m, old, old, [old]),
        (0, n, log.EMPTY_ROOT, new, good),
        (m, n, old, new, []),
        (4, n, mth(ENTRIES[:4]), new, []),  # power of two: the RFC requires a non-empty proof
        (m, n, old, new, [bytes(32)] * 65),
        (-1, n, old, new, good),
    ]
    for args in bad_cases:
        with pytest.raises(ProofError):
            log.verify_consistency(*args)


def test_proof_generation_refuses_impossible_requests() -> None:
    with pytest.raises(ProofError):
        TREE.inclusion(N)
    with pytest.raises(ProofError):
        TREE.consistency(5, 4)
    with pytest.raises(ProofError):
        log.inclusion_path(0, 0, TREE.subtree)


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 200), st.data())
def test_large_trees(n: int, data: st.DataObject) -> None:
    entries = _entries(n)
    tree = _tree(entries)
    m = data.draw(st.integers(0, n - 1))
    first = data.draw(st.integers(1, n))
    root = tree.root()
    log.verify_inclusion(m, n, entries[m], tree.inclusion(m), root)
    log.verify_consistency(first, n, tree.root(first), root, tree.consistency(first))
    assert root == log.root_of(entries)


@settings(max_examples=200, deadline=None)
@given(
    st.integers(-2, 40),
    st.integers(-2, 40),
    st.lists(st.binary(min_size=0, max_size=33), max_size=8),
    st.binary(max_size=33),
    st.binary(max_size=33),
)
def test_verifiers_raise_only_proof_errors(
    a: int, b: int, path_: list[bytes], r1: bytes, r2: bytes
) -> None:
    with contextlib.suppress(ProofError):  # any other error fails the test
        log.verify_inclusion(a, b, r1, path_, r2)
    with contextlib.suppress(ProofError):
        log.verify_consistency(a, b, r1, r2, path_)
