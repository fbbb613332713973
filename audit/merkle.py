"""RFC 6962 Merkle trees: hashing, proof generation and proof verification.

The tree over entries ``D[0:n]`` is RFC 6962 section 2.1's: a leaf hashes
as ``SHA-256(0x00 || entry)``, an inner node as ``SHA-256(0x01 || left ||
right)``, and a tree of ``n > 1`` leaves splits at ``k``, the largest power
of two below ``n``. The empty tree's root is ``SHA-256("")``.

Verification (:func:`verify_inclusion`, :func:`verify_consistency`) follows
the algorithms of RFC 9162 sections 2.1.3.2 and 2.1.4.2 and behaves like the
reference implementation (transparency-dev/merkle) on the trivial cases:
equal sizes need an empty proof and equal roots; a consistency proof from
size 0 must be empty and always holds. Each returns None or raises
:class:`ProofError` with the reason.

Generation works on *perfect subtrees*: the complete, aligned subtree of
``2**level`` leaves starting at leaf ``index * 2**level`` is named
``(level, index)``. Every subtree the RFC's recursion ever hashes is a
right-leaning fold of at most ``log2 n`` perfect subtrees
(:func:`perfect_cover`), and perfect subtrees never change once complete,
so a store that keeps their hashes answers any root or proof by reading
O(log n) of them. :func:`inclusion_ranges` and :func:`consistency_ranges`
name the subtrees a proof is made of, :func:`nodes_of` the perfect subtrees
to fetch for them, and :func:`inclusion_proof` / :func:`consistency_proof`
fold the fetched hashes into the proof.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence

from core.errors import UnprocessableError

__all__ = [
    "EMPTY_ROOT",
    "HASH_SIZE",
    "Frontier",
    "Node",
    "ProofError",
    "consistency_proof",
    "consistency_ranges",
    "fold",
    "inclusion_proof",
    "inclusion_ranges",
    "leaf_hash",
    "node_hash",
    "node_key",
    "nodes_of",
    "perfect_cover",
    "range_hash",
    "verify_consistency",
    "verify_inclusion",
]

HASH_SIZE = 32
EMPTY_ROOT = hashlib.sha256(b"").digest()

#: A perfect subtree ``(level, index)``: leaves ``[index * 2**level, (index + 1) * 2**level)``.
Node = tuple[int, int]
#: A subtree by its leaf range ``[begin, end)``.
Range = tuple[int, int]


class ProofError(UnprocessableError):
    """A Merkle proof, root or tree size did not verify."""

    xroad_type = "Client.InvalidProof"


def leaf_hash(entry: bytes) -> bytes:
    """RFC 6962 leaf hash: ``SHA-256(0x00 || entry)``."""
    return hashlib.sha256(b"\x00" + entry).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """RFC 6962 inner node hash: ``SHA-256(0x01 || left || right)``."""
    return hashlib.sha256(b"\x01" + left + right).digest()


# --- verification (RFC 9162 2.1.3.2 and 2.1.4.2) ------------------------------------------------


def _size(value: object, name: str) -> int:
    if type(value) is not int or value < 0:
        raise ProofError(f"{name} must be a non-negative integer")
    return value


def _hashes(proof: object) -> list[bytes]:
    if not isinstance(proof, Sequence) or isinstance(proof, bytes | str):
        raise ProofError("proof must be a list of hashes")
    for i, item in enumerate(proof):
        # A hash of another length can never be part of a valid proof; say so precisely.
        if not isinstance(item, bytes) or len(item) != HASH_SIZE:
            raise ProofError(f"proof element {i} is not a {HASH_SIZE}-byte hash")
    return list(proof)


def _match(computed: bytes, expected: bytes, what: str) -> None:
    if computed != expected:
        raise ProofError(f"{what} does not match the proof")


def verify_inclusion(
    leaf_hash: bytes, index: int, tree_size: int, proof: list[bytes], root: bytes
) -> None:
    """Check that the leaf with hash ``leaf_hash`` is entry ``index`` of the tree of
    ``tree_size`` entries whose root is ``root``; raise :class:`ProofError` if not."""
    index = _size(index, "index")
    tree_size = _size(tree_size, "tree_size")
    if index >= tree_size:
        raise ProofError(f"index {index} is beyond the tree size {tree_size}")
    if not isinstance(leaf_hash, bytes) or len(leaf_hash) != HASH_SIZE:
        raise ProofError(f"leaf hash must be {HASH_SIZE} bytes")
    path = _hashes(proof)
    fn, sn = index, tree_size - 1
    r = leaf_hash
    for p in path:
        if sn == 0:
            raise ProofError("proof is longer than the tree is deep")
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
    if sn != 0:
        raise ProofError("proof is shorter than the tree is deep")
    _match(r, root, "root")


def verify_consistency(
    size1: int, size2: int, proof: list[bytes], root1: bytes, root2: bytes
) -> None:
    """Check that the tree of ``size2`` entries with root ``root2`` extends the tree of
    ``size1`` entries with root ``root1``; raise :class:`ProofError` if not."""
    size1 = _size(size1, "size1")
    size2 = _size(size2, "size2")
    path = _hashes(proof)
    if size1 > size2:
        raise ProofError(f"size1 {size1} is larger than size2 {size2}")
    if size1 == size2:
        if path:
            raise ProofError("trees of equal size need an empty consistency proof")
        _match(root1, root2, "root1")
        return
    if size1 == 0:
        # Every tree extends the empty one; there is nothing to prove.
        if path:
            raise ProofError("a consistency proof from the empty tree must be empty")
        return
    if not path:
        raise ProofError("consistency proof is empty")
    if size1 & (size1 - 1) == 0:
        path = [root1, *path]
    fn, sn = size1 - 1, size2 - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            raise ProofError("consistency proof is too long")
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError("consistency proof is too short")
    _match(fr, root1, "root1")
    _match(sr, root2, "root2")


# --- the subtrees a proof is made of (RFC 6962 2.1.1 and 2.1.2) ----------------------------------


def _split(n: int) -> int:
    """The largest power of two strictly below ``n`` (n >= 2)."""
    return 1 << ((n - 1).bit_length() - 1)


def inclusion_ranges(index: int, size: int) -> list[Range]:
    """The subtrees whose hashes form PATH(index, D[0:size]), leaf side first."""
    if not 0 <= index < size:
        raise ValueError(f"index {index} is not below the tree size {size}")
    path: list[Range] = []
    begin, end = 0, size
    while end - begin > 1:
        mid = begin + _split(end - begin)
        if index < mid:
            path.append((mid, end))
            end = mid
        else:
            path.append((begin, mid))
            begin = mid
    path.reverse()
    return path


def consistency_ranges(size1: int, size2: int) -> list[Range]:
    """The subtrees whose hashes form PROOF(size1, D[0:size2]) (empty for 0 or equal sizes)."""
    if not 0 <= size1 <= size2:
        raise ValueError(f"sizes {size1} and {size2} are not 0 <= size1 <= size2")
    path: list[Range] = []
    if size1 in (0, size2):
        return path
    # SUBPROOF(m, D[begin:end], complete), unrolled; hashes found later come earlier.
    begin, end, m, complete = 0, size2, size1, True
    while end - begin != m:
        k = _split(end - begin)
        if m <= k:
            path.append((begin + k, end))
            end = begin + k
        else:
            path.append((begin, begin + k))
            begin += k
            m -= k
            complete = False
    if not complete:
        path.append((begin, end))
    path.reverse()
    return path


def perfect_cover(begin: int, end: int) -> list[Node]:
    """The perfect subtrees, largest first, whose right fold is MTH(D[begin:end]).

    Holds for every subtree the RFC's recursion produces (its start is aligned
    to the largest power of two not above its size); anything else is refused.
    """
    if not 0 <= begin < end:
        raise ValueError(f"[{begin}, {end}) is not a non-empty leaf range")
    nodes: list[Node] = []
    while begin < end:
        level = (end - begin).bit_length() - 1
        if begin & ((1 << level) - 1):
            raise ValueError(f"[{begin}, {end}) is not a subtree of an RFC 6962 tree")
        nodes.append((level, begin >> level))
        begin += 1 << level
    return nodes


def node_key(node: Node) -> int:
    """The in-order position of a perfect subtree in the infinite tree: leaves are the even
    numbers, and a node sits between its two halves. One integer names any node."""
    level, index = node
    return (index << (level + 1)) | ((1 << level) - 1)


def nodes_of(ranges: Iterable[Range]) -> set[Node]:
    """Every perfect subtree needed to hash all of ``ranges``."""
    return {node for b, e in ranges for node in perfect_cover(b, e)}


def range_hash(begin: int, end: int, nodes: Mapping[Node, bytes]) -> bytes:
    """MTH(D[begin:end]) from the hashes of its perfect cover."""
    cover = perfect_cover(begin, end)
    h = nodes[cover[-1]]
    for node in reversed(cover[:-1]):
        h = node_hash(nodes[node], h)
    return h


def fold(ranges: Iterable[Range], nodes: Mapping[Node, bytes]) -> list[bytes]:
    """The hash of each range, from the perfect subtree hashes in ``nodes``."""
    return [range_hash(b, e, nodes) for b, e in ranges]


def inclusion_proof(index: int, size: int, nodes: Mapping[Node, bytes]) -> list[bytes]:
    """The audit path of leaf ``index`` in the tree of ``size`` leaves.

    ``nodes`` maps at least :func:`nodes_of` of :func:`inclusion_ranges` to their hashes.
    """
    return fold(inclusion_ranges(index, size), nodes)


def consistency_proof(size1: int, size2: int, nodes: Mapping[Node, bytes]) -> list[bytes]:
    """The consistency proof from ``size1`` to ``size2`` leaves (``nodes`` as above)."""
    return fold(consistency_ranges(size1, size2), nodes)


class Frontier:
    """The right edge of a growing tree: the perfect subtrees that make up ``[0, size)``.

    Appending a leaf completes at most ``log2 n`` perfect subtrees, which
    :meth:`append` returns so a store can keep them; the root is the fold of
    the frontier. This is all a log needs to hold in memory to grow.
    """

    def __init__(self, size: int = 0, hashes: Sequence[bytes] = ()) -> None:
        if size < 0 or len(hashes) != size.bit_count():
            raise ValueError(f"a frontier of size {size} holds {size.bit_count()} hashes")
        self.size = size
        self._stack = list(hashes)

    @staticmethod
    def nodes_for(size: int) -> list[Node]:
        """The perfect subtrees a frontier of ``size`` leaves is made of, largest first."""
        return perfect_cover(0, size) if size else []

    @property
    def hashes(self) -> list[bytes]:
        return list(self._stack)

    def append(self, leaf: bytes) -> list[tuple[int, int, bytes]]:
        """Add a leaf hash; returns the perfect subtrees above level 0 it completed."""
        index = self.size
        h = leaf
        level = 0
        completed: list[tuple[int, int, bytes]] = []
        while (index >> level) & 1:
            h = node_hash(self._stack.pop(), h)
            level += 1
            completed.append((level, index >> level, h))
        self._stack.append(h)
        self.size += 1
        return completed

    def root(self) -> bytes:
        if not self._stack:
            return EMPTY_ROOT
        h = self._stack[-1]
        for left in reversed(self._stack[:-1]):
            h = node_hash(left, h)
        return h
