"""Interleaved timing: candidate and baseline alternate round by round, so drift in machine
load hits both alike, and the median of the rounds is reported."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Result:
    name: str
    per_op: float  # seconds, median over rounds

    @property
    def ops_per_second(self) -> float:
        return 1.0 / self.per_op


def compare(cases: dict[str, Callable[[], object]], *, ops: int, rounds: int = 7) -> list[Result]:
    """Time each case ``ops`` times per round for ``rounds`` rounds, interleaving the cases."""
    samples: dict[str, list[float]] = {name: [] for name in cases}
    for fn in cases.values():  # warm up caches and lazy imports
        for _ in range(min(ops, 50)):
            fn()
    for _ in range(rounds):
        for name, fn in cases.items():
            start = time.perf_counter()
            for _ in range(ops):
                fn()
            samples[name].append((time.perf_counter() - start) / ops)
    return [Result(name, statistics.median(values)) for name, values in samples.items()]


def table(title: str, results: list[Result], baseline: str) -> str:
    base = next(r for r in results if r.name == baseline)
    lines = [title, f"{'case':<44}{'µs/op':>10}{'ops/s':>12}{'× baseline':>12}"]
    for r in results:
        ratio = r.per_op / base.per_op
        lines.append(f"{r.name:<44}{r.per_op * 1e6:>10.1f}{r.ops_per_second:>12,.0f}{ratio:>12.2f}")
    return "\n".join(lines)
