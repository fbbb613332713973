"""An in-memory RFC 6962 tree for tests: every perfect subtree hash, built with the Frontier."""

from __future__ import annotations

from audit import merkle
from audit.merkle import Frontier, Node


class MemoryTree:
    def __init__(self, entries: list[bytes] = []) -> None:  # noqa: B006 (never mutated)
        self.entries: list[bytes] = []
        self.frontier = Frontier()
        self.nodes: dict[Node, bytes] = {}
        self.roots = [merkle.EMPTY_ROOT]
        for entry in entries:
            self.append(entry)

    @property
    def size(self) -> int:
        return self.frontier.size

    def append(self, entry: bytes) -> None:
        index = self.frontier.size
        self.entries.append(entry)
        leaf = merkle.leaf_hash(entry)
        self.nodes[(0, index)] = leaf
        for level, i, h in self.frontier.append(leaf):
            self.nodes[(level, i)] = h
        self.roots.append(self.frontier.root())

    def root(self, size: int) -> bytes:
        return merkle.range_hash(0, size, self.nodes) if size else merkle.EMPTY_ROOT

    def inclusion(self, index: int, size: int) -> list[bytes]:
        return merkle.inclusion_proof(index, size, self.nodes)

    def consistency(self, size1: int, size2: int) -> list[bytes]:
        return merkle.consistency_proof(size1, size2, self.nodes)
