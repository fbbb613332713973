"""RFC 6962 hashing, proof generation and verification: the reference tree, properties, edges."""

from __future__ import annotations

import functools
import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from audit import merkle
from audit.merkle import (
    EMPTY_ROOT,
    Frontier,
    ProofError,
    verify_consistency,
    verify_inclusion,
)
from tests.audit.trees import MemoryTree

# The RFC 6962 reference tree used by certificate-transparency and transparency-dev.
LEAVES = [
    bytes.fromhex(h)
    for h in [
        "",
        "00",
        "10",
        "2021",
        "3031",
        "40414243",
        "5051525354555657",
        "606162636465666768696a6b6c6d6e6f",
    ]
]
ROOTS = [
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]
# Perfect subtree hashes by level, left to right.
NODES = [
    [
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
        "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
        "0298d122906dcfc10892cb53a73992fc5b9f493ea4c9badb27b791b4127a7fe7",
        "07506a85fd9dd2f120eb694f86011e5bb4662e5c415a62917033d4a9624487e7",
        "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        "4271a26be0d8a84f0bd54c8c302e7cb3a3b5d1fa6780a40bcce2873477dab658",
        "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
        "46f6ffadd3d06a09ff3c5860d2755c8b9819db7df44251788c7d8e3180de8eb1",
    ],
    [
        "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
        "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
        "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
        "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
    ],
    [
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
    ],
    ["5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328"],
]
INCLUSION = [  # (index, size, path)
    (0, 1, []),
    (0, 8, ["96a296d2", "5f083f0a", "6b47aaf2"]),
    (5, 8, ["bc1a0643", "ca854ea1", "d37ee418"]),
    (2, 3, ["fac54203"]),
    (1, 5, ["6e340b9c", "5f083f0a", "bc1a0643"]),
]
CONSISTENCY = [  # (size1, size2, proof)
    (1, 1, []),
    (1, 8, ["96a296d2", "5f083f0a", "6b47aaf2"]),
    (6, 8, ["0ebc5d34", "ca854ea1", "d37ee418"]),
    (2, 5, ["5f083f0a", "bc1a0643"]),
    (6, 7, ["0ebc5d34", "b08693ec", "d37ee418"]),
]
REFERENCE = MemoryTree(LEAVES)


def _full(prefix: str) -> bytes:
    """A reference hash from its first bytes (the tables above spell each hash once)."""
    (match,) = {h for level in NODES for h in level if h.startswith(prefix)}
    return bytes.fromhex(match)


def _mth(entries: tuple[bytes, ...]) -> bytes:
    """MTH straight from RFC 6962 section 2.1, recursively: the definition itself."""
    if not entries:
        return hashlib.sha256(b"").digest()
    if len(entries) == 1:
        return hashlib.sha256(b"\x00" + entries[0]).digest()
    k = 1 << ((len(entries) - 1).bit_length() - 1)
    return hashlib.sha256(b"\x01" + _mth(entries[:k]) + _mth(entries[k:])).digest()


# --- the reference tree -----------------------------------------------------------------------


def test_the_reference_tree_has_the_published_roots_and_nodes() -> None:
    assert REFERENCE.root(0) == EMPTY_ROOT == hashlib.sha256(b"").digest()
    assert [REFERENCE.root(n).hex() for n in range(1, 9)] == ROOTS
    assert [r.hex() for r in REFERENCE.roots[1:]] == ROOTS
    assert REFERENCE.root(8).hex() == (
        "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328"
    )
    for level, hashes in enumerate(NODES):
        for index, h in enumerate(hashes):
            assert REFERENCE.nodes[(level, index)].hex() == h


@pytest.mark.parametrize(("index", "size", "path"), INCLUSION)
def test_reference_inclusion_proofs(index: int, size: int, path: list[str]) -> None:
    proof = [_full(p) for p in path]
    assert REFERENCE.inclusion(index, size) == proof
    verify_inclusion(merkle.leaf_hash(LEAVES[index]), index, size, proof, REFERENCE.root(size))


@pytest.mark.parametrize(("size1", "size2", "path"), CONSISTENCY)
def test_reference_consistency_proofs(size1: int, size2: int, path: list[str]) -> None:
    proof = [_full(p) for p in path]
    assert REFERENCE.consistency(size1, size2) == proof
    verify_consistency(size1, size2, proof, REFERENCE.root(size1), REFERENCE.root(size2))


# --- edge cases -------------------------------------------------------------------------------

ROOT8 = REFERENCE.root(8)
LEAF0 = merkle.leaf_hash(LEAVES[0])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((LEAF0, 8, 8, [], ROOT8), "index 8 is beyond the tree size 8"),
        ((LEAF0, 0, 0, [], EMPTY_ROOT), "beyond the tree size 0"),
        ((LEAF0, -1, 8, [], ROOT8), "index must be a non-negative integer"),
        ((LEAF0, True, 8, [], ROOT8), "index must be a non-negative integer"),
        ((LEAF0[:31], 0, 8, [], ROOT8), "leaf hash must be 32 bytes"),
        ((LEAF0, 0, 1, [], ROOT8), "root does not match"),
        ((LEAF0, 0, 8, REFERENCE.inclusion(0, 8)[:2], ROOT8), "shorter"),
        ((LEAF0, 0, 8, [*REFERENCE.inclusion(0, 8), LEAF0], ROOT8), "longer"),
        ((LEAF0, 0, 8, [b"x" * 31, LEAF0, LEAF0], ROOT8), "proof element 0 is not a 32-byte"),
        ((LEAF0, 0, 8, "not a list", ROOT8), "list of hashes"),
    ],
)
def test_inclusion_refusals_say_why(args: tuple, message: str) -> None:  # type: ignore[type-arg]
    with pytest.raises(ProofError, match=message):
        verify_inclusion(*args)


def test_trivial_consistency_cases_follow_the_reference_implementation() -> None:
    r1, r2 = REFERENCE.root(1), REFERENCE.root(2)
    verify_consistency(0, 0, [], EMPTY_ROOT, EMPTY_ROOT)
    verify_consistency(0, 5, [], EMPTY_ROOT, REFERENCE.root(5))
    verify_consistency(3, 3, [], REFERENCE.root(3), REFERENCE.root(3))
    with pytest.raises(ProofError, match="root1 does not match"):
        verify_consistency(1, 1, [], r1, r2)
    with pytest.raises(ProofError, match="equal size need an empty"):
        verify_consistency(1, 1, [r1], r1, r1)
    with pytest.raises(ProofError, match="from the empty tree must be empty"):
        verify_consistency(0, 1, [r1], EMPTY_ROOT, r1)
    with pytest.raises(ProofError, match="size1 2 is larger than size2 1"):
        verify_consistency(2, 1, [], r2, r1)
    with pytest.raises(ProofError, match="is empty"):
        verify_consistency(1, 2, [], r1, r2)
    with pytest.raises(ProofError, match="size2 must be a non-negative"):
        verify_consistency(1, -2, [], r1, r2)


def test_generation_refuses_impossible_requests() -> None:
    with pytest.raises(ValueError, match="not below the tree size"):
        merkle.inclusion_ranges(3, 3)
    with pytest.raises(ValueError, match="0 <= size1 <= size2"):
        merkle.consistency_ranges(4, 3)
    with pytest.raises(ValueError, match="not a subtree"):
        merkle.perfect_cover(1, 3)
    with pytest.raises(ValueError, match="holds 2 hashes"):
        Frontier(3, [LEAF0])


# --- properties -------------------------------------------------------------------------------

entries = st.lists(st.binary(max_size=8), min_size=1, max_size=70)


@settings(max_examples=60)
@given(leaves=entries)
def test_frontier_and_folds_compute_the_rfc_root(leaves: list[bytes]) -> None:
    tree = MemoryTree(leaves)
    mth = functools.cache(_mth)
    for n in range(len(leaves) + 1):
        assert tree.roots[n] == tree.root(n) == mth(tuple(leaves[:n]))


@settings(max_examples=60)
@given(leaves=entries)
def test_inclusion_proofs_verify_for_every_index(leaves: list[bytes]) -> None:
    tree = MemoryTree(leaves)
    for size in {len(leaves), (len(leaves) + 1) // 2}:
        for index in range(size):
            proof = tree.inclusion(index, size)
            verify_inclusion(merkle.leaf_hash(leaves[index]), index, size, proof, tree.root(size))


SMALL = MemoryTree([i.to_bytes(2, "big") for i in range(33)])


def test_consistency_proofs_verify_for_every_pair_of_small_sizes() -> None:
    for size2 in range(SMALL.size + 1):
        for size1 in range(size2 + 1):
            proof = SMALL.consistency(size1, size2)
            verify_consistency(size1, size2, proof, SMALL.root(size1), SMALL.root(size2))


LARGE = MemoryTree([i.to_bytes(4, "big") for i in range(5000)])


@settings(max_examples=200)
@given(data=st.data())
def test_consistency_and_inclusion_on_sampled_large_trees(data: st.DataObject) -> None:
    size2 = data.draw(st.integers(1, LARGE.size))
    size1 = data.draw(st.integers(0, size2))
    verify_consistency(
        size1, size2, LARGE.consistency(size1, size2), LARGE.root(size1), LARGE.root(size2)
    )
    index = data.draw(st.integers(0, size2 - 1))
    leaf = LARGE.nodes[(0, index)]
    verify_inclusion(leaf, index, size2, LARGE.inclusion(index, size2), LARGE.root(size2))


def _flip(data: bytes, bit: int) -> bytes:
    i = bit % (8 * len(data))
    b = bytearray(data)
    b[i // 8] ^= 1 << (i % 8)
    return bytes(b)


def _inclusion_shape(index: int, size: int) -> list[bool] | None:
    """Which side each proof hash goes on, from the generator: the whole of what the
    RFC 9162 verifier does with a size. None if the index is outside the tree."""
    if not 0 <= index < size:
        return None
    return [begin < index for begin, _ in merkle.inclusion_ranges(index, size)]


def _consistency_shape(size1: int, size2: int) -> tuple[bool, int, list[bool]] | None:
    """The same for a consistency proof: it is the inclusion path of leaf size1 - 1 above
    the perfect subtree that ends at size1, plus whether root1 is its own first hash."""
    if not 0 < size1 < size2:
        return None
    shift = (size1 & -size1).bit_length() - 1
    return (size1 & (size1 - 1) == 0, shift, _inclusion_shape(size1 - 1, size2)[shift:])  # type: ignore[index]


def test_a_size_is_only_bound_by_the_signed_checkpoint() -> None:
    """RFC 6962 hashes do not commit to the tree size: the path of leaf 0 in a tree of 5 is
    walked the same way in a tree of 8. Sizes are therefore only ever trusted together with
    their root in a signed checkpoint (audit.note), where any change breaks the signature."""
    proof = REFERENCE.inclusion(0, 5)
    verify_inclusion(LEAF0, 0, 8, proof, REFERENCE.root(5))
    assert _inclusion_shape(0, 5) == _inclusion_shape(0, 8)


@settings(max_examples=300)
@given(data=st.data())
def test_flipping_any_bit_of_an_inclusion_proof_root_or_size_fails(data: st.DataObject) -> None:
    size = data.draw(st.integers(1, 300))
    index = data.draw(st.integers(0, size - 1))
    leaf, root = LARGE.nodes[(0, index)], LARGE.root(size)
    proof = LARGE.inclusion(index, size)
    target = data.draw(st.sampled_from(["proof", "root", "leaf", "size", "index"]))
    bit = data.draw(st.integers(0, 255))
    if target == "proof" and not proof:
        target = "root"
    if target == "proof":
        i = data.draw(st.integers(0, len(proof) - 1))
        proof = [*proof[:i], _flip(proof[i], bit), *proof[i + 1 :]]
    elif target == "root":
        root = _flip(root, bit)
    elif target == "leaf":
        leaf = _flip(leaf, bit)
    elif target == "size":
        flipped = size ^ (1 << (bit % 12))
        if _inclusion_shape(index, flipped) == _inclusion_shape(index, size):
            verify_inclusion(leaf, index, flipped, proof, root)  # see the test above
            return
        size = flipped
    else:
        index ^= 1 << (bit % 9)
    with pytest.raises(ProofError):
        verify_inclusion(leaf, index, size, proof, root)


@settings(max_examples=300)
@given(data=st.data())
def test_flipping_any_bit_of_a_consistency_proof_root_or_size_fails(data: st.DataObject) -> None:
    size2 = data.draw(st.integers(2, 300))
    size1 = data.draw(st.integers(1, size2 - 1))
    root1, root2 = LARGE.root(size1), LARGE.root(size2)
    proof = LARGE.consistency(size1, size2)
    target = data.draw(st.sampled_from(["proof", "root1", "root2", "size1", "size2"]))
    bit = data.draw(st.integers(0, 255))
    if target == "proof":
        i = data.draw(st.integers(0, len(proof) - 1))
        proof = [*proof[:i], _flip(proof[i], bit), *proof[i + 1 :]]
    elif target == "root1":
        root1 = _flip(root1, bit)
    elif target == "root2":
        root2 = _flip(root2, bit)
    else:
        flipped = (size1, size2 ^ (1 << (bit % 12)))
        if target == "size1":
            flipped = (size1 ^ (1 << (bit % 9)), size2)
        if _consistency_shape(*flipped) == _consistency_shape(size1, size2):
            verify_consistency(*flipped, proof, root1, root2)  # sizes are bound by signatures
            return
        size1, size2 = flipped
    with pytest.raises(ProofError):
        verify_consistency(size1, size2, proof, root1, root2)
