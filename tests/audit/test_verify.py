"""The offline verifier on exports built here, in memory: an entry that no verified checkpoint
covers is refused, however the file is arranged and even when the seal is made again with the
trusted witness key (the seal only says who exported, not that each log's entries were witnessed).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import tempfile
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from audit import merkle
from audit.export_format import EXPORT_TYP, FORMAT, seal_payload
from audit.note import Checkpoint, b64encode_hash, cosign, log_origin, sign_checkpoint, witness_name
from audit.verify import MAX_LINE, Report, verify_export
from core import jws
from core.keys import KeySet, PrivateKey
from tests.audit.trees import MemoryTree

LOG_KEY = PrivateKey.generate()
WITNESS_KEY = PrivateKey.generate()
WITNESS = witness_name("PK")
LOG = "PK/FED/NADRA/gw1"
ORIGIN = log_origin(LOG)
CREATED = "2026-11-28T09:00:00Z"

Line = dict[str, Any]


def entries(n: int, tag: str = "real") -> list[bytes]:
    return [json.dumps({"n": i, "tag": tag}).encode() for i in range(n)]


def log_line(tree_size: int, indices: list[int] | None = None) -> Line:
    line: Line = {
        "type": "log",
        "log_id": LOG,
        "origin": ORIGIN,
        "tree_size": tree_size,
        "keys": [LOG_KEY.public().to_jwk()],
        "mode": "complete" if indices is None else "selected",
    }
    if indices is not None:
        line["indices"] = indices
    return line


def checkpoint_lines(tree: MemoryTree, sizes: list[int]) -> list[Line]:
    """Each size signed by the log and cosigned by the witness, then the proofs between them."""
    lines: list[Line] = []
    for size in sizes:
        note = sign_checkpoint(Checkpoint(ORIGIN, size, tree.root(size)), LOG_KEY)
        cosigned = note.with_signatures([cosign(note, WITNESS_KEY, WITNESS, 1_800_000_000)])
        lines.append({"type": "checkpoint", "log_id": LOG, "note": cosigned.render()})
    for size1, size2 in itertools.pairwise(sizes):
        proof = tree.consistency(size1, size2)
        lines.append(
            {
                "type": "consistency",
                "log_id": LOG,
                "size1": size1,
                "size2": size2,
                "proof": [b64encode_hash(h) for h in proof],
            }
        )
    return lines


def entry_line(index: int, entry: bytes, proof: list[bytes] | None = None) -> Line:
    line: Line = {
        "type": "entry",
        "log_id": LOG,
        "index": index,
        "leaf_hash": b64encode_hash(merkle.leaf_hash(entry)),
        "entry": entry.decode(),
    }
    if proof is not None:
        line["proof"] = [b64encode_hash(h) for h in proof]
    return line


def complete_log(tree: MemoryTree, sizes: list[int]) -> list[Line]:
    """An honest complete log: checkpoints at ``sizes``, the newest being its tree size."""
    body = [entry_line(i, e) for i, e in enumerate(tree.entries[: sizes[-1]])]
    return [log_line(sizes[-1]), *checkpoint_lines(tree, sizes), *body]


HEADER: Line = {
    "type": "header",
    "format": FORMAT,
    "created_at": CREATED,
    "query": {},
    "witness": {"name": WITNESS, "jwk": WITNESS_KEY.public().to_jwk()},
    "globalconf": None,
}


def verify_sealed(lines: list[Line]) -> Report:
    """Seal ``lines`` with the trusted witness key, as a dishonest exporter holding it could,
    and verify the file with that key pinned."""
    count = sum(x["type"] == "entry" for x in lines)
    return verify_raw([json.dumps(x).encode() for x in [HEADER, *lines]], count)


def sealed(lines: list[bytes], count: int = 0) -> bytes:
    """Raw ``lines`` (the header included) and the end line sealing them with the witness key."""
    body = b"".join(x + b"\n" for x in lines)
    digest = hashlib.sha256(body).hexdigest()
    signature = jws.sign(
        seal_payload(CREATED, count, digest, WITNESS), WITNESS_KEY, typ=EXPORT_TYP, detached=True
    )
    end = {"type": "end", "entries": count, "sha256": digest, "signature": signature}
    return body + json.dumps(end).encode() + b"\n"


def verify_raw(lines: list[bytes], count: int = 0) -> Report:
    """Seal raw ``lines`` (the header included) as :func:`verify_sealed` does, and verify."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "export.jsonl"
        path.write_bytes(sealed(lines, count))
        return verify_export(path, witness_keys=KeySet([WITNESS_KEY.public()]))


@st.composite
def logs(draw: st.DrawFn) -> tuple[MemoryTree, list[int]]:
    """A tree of 1..24 entries and the sizes it was checkpointed at (always its full size)."""
    n = draw(st.integers(1, 24))
    earlier = draw(st.sets(st.integers(1, n - 1), max_size=4)) if n > 1 else set()
    return MemoryTree(entries(n)), sorted(earlier | {n})


def span(first: int, last: int) -> str:
    return f"#{first}" + (f"..#{last}" if last > first else "")


@settings(max_examples=25, deadline=None)
@given(logs())
def test_an_honest_complete_log_verifies(log: tuple[MemoryTree, list[int]]) -> None:
    tree, sizes = log
    report = verify_sealed(complete_log(tree, sizes))
    assert report.ok, report.problems


@settings(max_examples=25, deadline=None)
@given(logs(), st.integers(1, 5))
def test_entries_beyond_the_tree_size_are_refused(
    log: tuple[MemoryTree, list[int]], extra: int
) -> None:
    """Fabricated entries after the newest checkpoint: their leaf hashes match, nothing covers
    them (a complete log with #4 and #5 after a checkpoint of size 4 verified before)."""
    tree, sizes = log
    size = sizes[-1]
    fabricated = [entry_line(size + i, e) for i, e in enumerate(entries(extra, "forged"))]
    report = verify_sealed([*complete_log(tree, sizes), *fabricated])
    assert report.problems == [
        f"{LOG} entry {span(size, size + extra - 1)}: beyond the witnessed tree size {size} "
        "(no checkpoint covers it)"
    ]


@settings(max_examples=25, deadline=None)
@given(logs())
def test_checkpoints_after_the_entries_are_not_used(log: tuple[MemoryTree, list[int]]) -> None:
    """Fabricated entries first, the genuine checkpoints after them: the roots were never
    compared with the entries, so the checkpoints count for nothing and the entries are named."""
    tree, sizes = log
    size = sizes[-1]
    forged = [entry_line(i, e) for i, e in enumerate(entries(size, "forged"))]
    report = verify_sealed([log_line(size), *forged, *checkpoint_lines(tree, sizes)])
    assert not report.ok
    for s in sizes:
        assert (
            f"{LOG} checkpoint at size {s}: found after the log's entries (checkpoints come "
            "first); not used"
        ) in report.problems
    assert f"{LOG}: no verified checkpoint at its size {size}" in report.problems
    assert (
        f"{LOG} entry {span(0, size - 1)}: no verified checkpoint covers it (the newest "
        "verified size is 0)"
    ) in report.problems


@settings(max_examples=25, deadline=None)
@given(logs(), st.data())
def test_every_pair_of_neighbouring_checkpoints_needs_its_own_consistency_proof(
    log: tuple[MemoryTree, list[int]], data: Any
) -> None:
    """Proofs left out are each named; a proof that verifies between checkpoints further
    apart (as a dishonest exporter could add in their place) stands in for none of them."""
    tree, sizes = log
    pairs = list(itertools.pairwise(sizes))
    dropped = data.draw(st.sets(st.sampled_from(pairs)) if pairs else st.just(set()))
    lines = [
        x
        for x in complete_log(tree, sizes)
        if x["type"] != "consistency" or (x["size1"], x["size2"]) not in dropped
    ]
    if len(sizes) > 2:  # first to last: a proof that verifies, but not between neighbours
        proof = tree.consistency(sizes[0], sizes[-1])
        wide = {"size1": sizes[0], "size2": sizes[-1], "proof": [b64encode_hash(h) for h in proof]}
        lines.insert(1 + len(sizes), {"type": "consistency", "log_id": LOG, **wide})
    report = verify_sealed(lines)
    assert report.problems == [
        f"{LOG}: no consistency proof between sizes {a} and {b}" for a, b in sorted(dropped)
    ]


def test_one_late_checkpoint_leaves_its_entries_uncovered() -> None:
    tree = MemoryTree(entries(8))
    head, cp4, cp8, proof = complete_log(tree, [4, 8])[:4]
    body = [entry_line(i, e) for i, e in enumerate(tree.entries)]
    report = verify_sealed([head, cp4, proof, *body[:6], cp8, *body[6:]])
    assert report.problems == [
        f"{LOG}: consistency proof 4 -> 8 joins no checkpoints",
        f"{LOG} checkpoint at size 8: found after the log's entries (checkpoints come first); "
        "not used",
        f"{LOG}: no verified checkpoint at its size 8",
        f"{LOG} entry #4..#7: no verified checkpoint covers it (the newest verified size is 4)",
    ]


def test_a_complete_log_without_its_newest_checkpoint_names_the_uncovered_entries() -> None:
    tree = MemoryTree(entries(10))
    lines = [log_line(10), *checkpoint_lines(tree, [4])]
    lines += [entry_line(i, e) for i, e in enumerate(tree.entries)]
    assert verify_sealed(lines).problems == [
        f"{LOG}: no verified checkpoint at its size 10",
        f"{LOG} entry #4..#9: no verified checkpoint covers it (the newest verified size is 4)",
    ]


@settings(max_examples=25, deadline=None)
@given(logs(), st.data())
def test_an_honest_selected_log_verifies(log: tuple[MemoryTree, list[int]], data: Any) -> None:
    tree, sizes = log
    size = sizes[-1]
    chosen = sorted(data.draw(st.sets(st.integers(0, size - 1), min_size=1)))
    body = [entry_line(i, tree.entries[i], tree.inclusion(i, size)) for i in chosen]
    report = verify_sealed([log_line(size, chosen), *checkpoint_lines(tree, sizes), *body])
    assert report.ok, report.problems


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 6), st.integers(0, 6))
def test_a_selected_entry_beyond_the_tree_size_is_refused(size: int, extra: int) -> None:
    """Including the empty log: tree size 0, no checkpoint, one fabricated entry."""
    tree = MemoryTree(entries(size))
    index = size + extra
    lines = [log_line(size, [index]), *(checkpoint_lines(tree, [size]) if size else [])]
    lines.append(entry_line(index, b'{"forged":true}', []))
    assert verify_sealed(lines).problems == [
        f"{LOG} entry #{index}: beyond the witnessed tree size {size} (no checkpoint covers it)"
    ]


def test_a_selected_entry_without_a_verified_root_is_refused() -> None:
    """The log claims size 4 but carries no checkpoint: the proof leads to no witnessed root."""
    forged = MemoryTree(entries(4, "forged"))
    lines = [log_line(4, [1]), entry_line(1, forged.entries[1], forged.inclusion(1, 4))]
    assert verify_sealed(lines).problems == [
        f"{LOG}: no verified checkpoint at its size 4",
        f"{LOG} entry #1: no verified checkpoint covers it (none at the log's size 4)",
    ]


def test_a_log_under_another_logs_name_is_refused() -> None:
    # Two gateways of one member sign with the same keys: a log renamed as the other one
    # would verify entry for entry, so the origin its checkpoints sign must be its own.
    tree = MemoryTree(entries(3))
    lines = complete_log(tree, [3])
    lines[0] = {**lines[0], "log_id": "PK/FED/NADRA/gw2"}
    for line in lines[1:]:
        line["log_id"] = "PK/FED/NADRA/gw2"
    report = verify_sealed(lines)
    assert not report.ok
    assert any(
        "PK/FED/NADRA/gw2: origin 'shahrah/PK/FED/NADRA/gw1' is not" in p for p in report.problems
    )


def test_deeply_nested_lines_are_named_not_a_crash() -> None:
    header = json.dumps(HEADER).encode()
    for depth in (10_000, 100_000):
        nested = b"[" * depth + b"]" * depth
        report = verify_raw([header, nested])
        assert report.problems == ["line 2: unreadable: JSON nests too deeply"], report.problems
        first = verify_raw([b'{"type": "header", "x": ' + nested + b"}"])
        assert first.problems == ["line 1: unreadable: JSON nests too deeply"], first.problems


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**80), max_value=2**80)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=6,
)


@settings(max_examples=300, deadline=None)
@given(st.data(), json_values)
def test_any_field_of_any_line_with_any_value_is_a_problem_not_a_crash(
    data: Any, value: Any
) -> None:
    tree = MemoryTree(entries(4))
    selected = data.draw(st.booleans())
    if selected:
        lines = [
            log_line(4, [1, 3]),
            *checkpoint_lines(tree, [2, 4]),
            *(entry_line(i, tree.entries[i], tree.inclusion(i, 4)) for i in (1, 3)),
        ]
    else:
        lines = complete_log(tree, [2, 4])
    everything = [dict(HEADER), *lines]
    n = data.draw(st.integers(0, len(everything) - 1))
    line = everything[n]
    key = data.draw(st.sampled_from(sorted(line)))
    if key == "type" or value == line[key]:
        return
    everything[n] = {**line, key: value}
    count = sum(x["type"] == "entry" for x in lines)
    report = verify_raw([json.dumps(x).encode() for x in everything], count)
    # The query is what the export answers, not evidence; the configuration is read only with
    # an anchor, which this test does not use.
    unchecked = {(0, "query"), (0, "globalconf")}
    if (n, key) not in unchecked:
        assert not report.ok, (n, key, value)


@settings(max_examples=100, deadline=None)
@given(st.sampled_from(["entries", "sha256", "signature"]), json_values)
def test_any_end_line_is_a_problem_not_a_crash(key: str, value: Any) -> None:
    header = json.dumps(HEADER).encode()
    end: Line = {"type": "end", "entries": 0, "sha256": "0" * 64, "signature": "a..b"}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "export.jsonl"
        path.write_bytes(header + b"\n" + json.dumps({**end, key: value}).encode() + b"\n")
        assert not verify_export(path, witness_keys=KeySet([WITNESS_KEY.public()])).ok


def test_a_line_of_another_log_is_refused() -> None:
    """Each line names its log: one spliced in from another log's section is not counted for
    the log around it, even when what it holds would verify there."""
    tree = MemoryTree(entries(3))
    for n in (1, 3):  # a checkpoint and an entry
        lines = complete_log(tree, [3])
        lines[n] = {**lines[n], "log_id": "PK/FED/NADRA/gw2"}
        report = verify_sealed(lines)
        kind = lines[n]["type"]
        assert (
            f"line {n + 2}: unreadable: {kind} line of log 'PK/FED/NADRA/gw2' within the lines "
            f"of {LOG}" in report.problems
        ), report.problems


def test_an_enormous_line_is_named_and_skipped_without_reading_it_whole() -> None:
    """A line longer than any the exporter writes is not parsed (it would have to be held in
    memory whole): it is named, and the lines after it are still checked."""
    header = json.dumps(HEADER).encode()
    tree = MemoryTree(entries(2))
    honest = [json.dumps(x).encode() for x in complete_log(tree, [2])]
    enormous = b'{"type": "entry", "entry": "' + b"a" * MAX_LINE + b'"}'
    report = verify_raw([header, *honest[:2], enormous, *honest[2:]], count=2)
    assert report.problems == [f"line 4: longer than {MAX_LINE} bytes; not read"]
    # The same at the start: without a header nothing else can be checked.
    first = verify_raw([enormous])
    assert first.problems == [f"line 1: longer than {MAX_LINE} bytes; not read"]


def test_lines_are_strict_json() -> None:
    """A line another JSON reader could read differently is not read at all: duplicate keys
    (first or last wins, by reader), NaN and infinities, and integers too long to convert."""
    tree = MemoryTree(entries(2))
    honest = [json.dumps(x).encode() for x in [HEADER, *complete_log(tree, [2])]]
    entry = honest[3]
    for edited, problem in [
        (entry[:-1] + b', "index": 0}', "duplicate key 'index' in JSON object"),
        (entry[:1] + b'"index": 7, ' + entry[1:], "duplicate key 'index' in JSON object"),
        (entry[:-1] + b', "x": NaN}', "NaN is not valid JSON"),
        (entry[:-1] + b', "x": -Infinity}', "-Infinity is not valid JSON"),
        (entry[:-1] + b', "x": 1e999}', "number 1e999 is out of range for a JSON number"),
        (
            entry[:-1] + b', "x": ' + b"9" * 5000 + b"}",
            "integer of 5000 digits is too long (at most 4300)",
        ),
    ]:
        report = verify_raw([*honest[:3], edited, *honest[4:]], count=2)
        assert f"line 4: unreadable: {problem}" in report.problems, report.problems
