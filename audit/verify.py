"""The offline verifier of regulator exports: no network, one streaming pass, every problem named.

What it checks, per log (format: audit.export_format):

* every checkpoint carries a valid signature by one of the log's keys and a
  valid cosignature by the witness (else: *forged checkpoint*);
* checkpoint sizes increase, and each consecutive pair has a consistency
  proof that verifies (else: *inconsistent checkpoints*);
* every entry hashes to its stated leaf hash (else: *changed entry*); entry
  indices increase (else: *duplicated* or *reordered entry*);
* every entry lies below the log's ``tree_size`` (else: *beyond the witnessed
  tree size*) and a verified checkpoint covers it (else: *no verified
  checkpoint covers it*): an entry no witnessed root commits to proves nothing;
* checkpoints come before the log's entries (else: *found after the log's
  entries*, and it is not used), so each root is known when the entries reach it;
* complete logs: indices run from 0 without a gap (else: *missing entry*)
  and the leaf hashes rebuild the root of every verified checkpoint, the
  newest included;
* selected logs: exactly the listed indices are present and each inclusion
  proof leads to the root of the newest checkpoint;
* the closing line: the digest of all bytes before it and the witness's
  signature over it (else: the file was *edited after export*).

Trust: with ``anchor`` (the federation's configuration anchor) the operator's
signature on the embedded global configuration is checked and the witness
and log keys must be the ones it publishes; with ``witness_keys`` the
witness key is pinned; with neither, the keys in the file are used and the
report says so.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
from array import array
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from audit import merkle
from audit.export_format import EXPORT_TYP, FORMAT, seal_payload
from audit.identity import key_valid_at
from audit.merkle import Frontier, ProofError
from audit.note import (
    Checkpoint,
    Note,
    NoteError,
    log_origin,
    verify_cosignature,
    verify_log_signature,
    witness_name,
)
from audit.witness_client import WITNESS_SERVICE
from core import jws
from core.canonical import STRICT_DECODER
from core.errors import BadRequestError, InvalidSignatureError, ShahrahError
from core.ids import GatewayId
from core.keys import KeySet, PublicKey
from registry.globalconf import GLOBALCONF_TYP, Anchor, GlobalConf, GlobalConfView, KeyInfo

__all__ = ["MAX_LINE", "Report", "verify_export"]

#: The longest line read (bytes). An entry line is at most about 100 KiB (a 16 KiB entry,
#: escaped twice at worst); the longest lines are the header's global configuration and a
#: selected log's list of indices, a few bytes per exported entry.
MAX_LINE = 64 * 2**20
_CHUNK = 2**20  # bytes read at a time while skipping an overlong line

Progress = Callable[[int, int], None]  # (bytes read, entries checked)


@dataclass
class Report:
    """The verdict: ``problems`` empty means the export verified."""

    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    logs: int = 0
    entries: int = 0
    checkpoints: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems


class _Bad(Exception):
    """A line that cannot be read at all."""


def _hash(value: Any, what: str) -> bytes:
    if not isinstance(value, str):
        raise _Bad(f"{what} is not a base64 string")
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as e:
        raise _Bad(f"{what} is not base64") from e
    if len(raw) != merkle.HASH_SIZE:
        raise _Bad(f"{what} is not a 32-byte hash")
    return raw


def _hashes(value: Any, what: str) -> list[bytes]:
    if not isinstance(value, list):
        raise _Bad(f"{what} is not a list of hashes")
    return [_hash(h, f"{what} hash") for h in value]


def _int(value: Any, what: str) -> int:
    if type(value) is not int or value < 0:
        raise _Bad(f"{what} is not a non-negative integer")
    return value


class _Roots:
    """The checkpoints of one log that verified, by increasing size, in flat arrays.

    The file lists a log's checkpoints before its entries, so all of them are held until
    the entries are read: a year of a busy gateway's log checkpointed every 10 s is about
    three million. Here each costs its size and root (40 bytes) and one byte saying whether
    a consistency proof joins it to the next; as dictionaries and sets of tuples they took
    about ten times that.
    """

    def __init__(self) -> None:
        self.sizes = array("Q")
        self._roots = bytearray()
        self._proven = bytearray()  # at i: 1 once a proof joins sizes[i] and sizes[i + 1]

    def __len__(self) -> int:
        return len(self.sizes)

    def add(self, size: int, root: bytes) -> None:
        """Record a verified checkpoint; the caller has refused any not larger than the last."""
        assert len(root) == merkle.HASH_SIZE
        assert not self.sizes or size > self.sizes[-1]
        self.sizes.append(size)
        self._roots += root
        self._proven.append(0)

    def index(self, size: int) -> int | None:
        i = bisect_left(self.sizes, size)
        return i if i < len(self.sizes) and self.sizes[i] == size else None

    def __contains__(self, size: int) -> bool:
        return self.index(size) is not None

    def root(self, i: int) -> bytes:
        return bytes(self._roots[i * merkle.HASH_SIZE : (i + 1) * merkle.HASH_SIZE])

    def get(self, size: int) -> bytes | None:
        i = self.index(size)
        return None if i is None else self.root(i)

    def before(self, size: int) -> int:
        """The largest verified size below ``size``, or 0."""
        i = bisect_left(self.sizes, size)
        return self.sizes[i - 1] if i else 0

    def span_after(self, size: int) -> tuple[int, int] | None:
        """The first and last verified sizes above ``size``, if any."""
        i = bisect_right(self.sizes, size)
        return (self.sizes[i], self.sizes[-1]) if i < len(self.sizes) else None

    def proven(self, size1: int, size2: int) -> None:
        """A consistency proof verified between these two; only neighbours' proofs count."""
        i = self.index(size1)
        if i is not None and i + 1 < len(self.sizes) and self.sizes[i + 1] == size2:
            self._proven[i] = 1

    def unproven(self) -> Iterator[tuple[int, int]]:
        """Each pair of neighbouring verified checkpoints that no consistency proof joins."""
        for i in range(len(self.sizes) - 1):
            if not self._proven[i]:
                yield self.sizes[i], self.sizes[i + 1]


@dataclass
class _Log:
    """What the verifier knows about the log it is reading."""

    log_id: str
    origin: str
    size: int
    complete: bool
    keys: list[PublicKey]
    indices: set[int] | None
    roots: _Roots = field(default_factory=_Roots)  # checkpoints that verified
    last_checkpoint: int | None = None  # the size of the latest checkpoint line, verified or not
    last_index: int = -1
    seen: set[int] = field(default_factory=set)  # selected mode, and late entries
    gaps: list[list[int]] = field(default_factory=list)  # complete mode: [first, last] missing
    beyond: list[list[int]] = field(default_factory=list)  # [first, last] at or past ``size``
    uncovered: list[list[int]] = field(default_factory=list)  # below ``size``, no verified root
    # Complete mode: roots[:next_root] were compared with the entries (a root of size 0
    # needs no entries and counts as compared).
    next_root: int = 0
    has_entries: bool = False
    frontier: Frontier = field(default_factory=Frontier)
    broken_at: int | None = None  # complete mode: first index the tree could not follow


class _Verifier:
    def __init__(self, anchor: Anchor | None, witness_keys: KeySet | None) -> None:
        self.anchor = anchor
        self.pinned = witness_keys
        self.report = Report()
        self.view: GlobalConfView | None = None
        self.witness_name = ""
        self.witness_keys: list[PublicKey] = []
        self.created_at = ""
        self.log: _Log | None = None
        self.logs_seen: set[str] = set()
        self.entry_lines = 0

    def problem(self, text: str) -> None:
        self.report.problems.append(text)

    # --- header and keys ------------------------------------------------------------------

    def header(self, line: dict[str, Any]) -> None:
        if line.get("format") != FORMAT:
            raise _Bad(f"not a Shahrah audit export (format {line.get('format')!r})")
        witness = line.get("witness")
        if not isinstance(witness, dict) or not isinstance(witness.get("name"), str):
            raise _Bad("header names no witness")
        self.witness_name = witness["name"]
        self.created_at = str(line.get("created_at", ""))
        try:
            file_key = PublicKey.from_jwk(witness.get("jwk") or {})
        except BadRequestError as e:
            raise _Bad(f"witness key: {e.message}") from e
        if self.anchor is not None:
            self.view = self._anchored(line.get("globalconf"))
            # The name is part of each cosignature's key id, so a file could pair a trusted
            # key with a name of its choosing; with an anchor there is only one right name.
            expected = witness_name(self.anchor.instance)
            if self.witness_name != expected:
                self.problem(
                    f"the header names witness {self.witness_name!r}; "
                    f"the anchored federation's witness is {expected!r}"
                )
        if self.pinned is not None:
            self.witness_keys = list(self.pinned.values())
            self.report.notes.append("witness key pinned by --witness-jwks")
        elif self.view is not None:
            try:
                keys = self.view.central_service(WITNESS_SERVICE).keys.keyset()
            except ShahrahError:
                self.problem("the anchored global configuration publishes no audit witness")
                keys = KeySet()
            self.witness_keys = list(keys.values())
        else:
            self.witness_keys = [file_key]
            self.report.notes.append(
                f"keys taken from the file itself (witness key {file_key.kid}); "
                "pass --anchor or --witness-jwks to check them against a trusted source"
            )
        if file_key.kid not in {k.kid for k in self.witness_keys}:
            self.problem(f"the export names witness key {file_key.kid}, which is not trusted")

    def _anchored(self, signed: Any) -> GlobalConfView | None:
        assert self.anchor is not None
        if not isinstance(signed, str):
            self.problem("the export carries no global configuration to check against the anchor")
            return None
        try:
            verified = jws.verify(signed, self.anchor.keyset(), typ=GLOBALCONF_TYP)
            conf = GlobalConf.model_validate_json(verified.payload)
        except (InvalidSignatureError, ValidationError) as e:
            self.problem(f"the embedded global configuration does not verify with the anchor: {e}")
            return None
        if conf.instance != self.anchor.instance:
            self.problem(f"the embedded global configuration is for instance {conf.instance}")
            return None
        self.report.notes.append(
            f"keys checked against the anchor of {conf.instance} (configuration serial "
            f"{conf.serial})"
        )
        return GlobalConfView(conf, signed)

    # --- logs -------------------------------------------------------------------------------

    def start_log(self, line: dict[str, Any]) -> None:
        self.finish_log()
        log_id = line.get("log_id")
        if not isinstance(log_id, str) or not isinstance(line.get("origin"), str):
            raise _Bad("log line without log_id and origin")
        if log_id in self.logs_seen:
            self.problem(f"{log_id}: the log appears twice")
        if line["origin"] != log_origin(log_id):
            # Gateways of one member share keys, so two of their logs could swap names and
            # each still verify: the origin every checkpoint signs must be this log's own.
            self.problem(f"{log_id}: origin {line['origin']!r} is not {log_origin(log_id)!r}")
        self.logs_seen.add(log_id)
        keys: list[PublicKey] = []
        jwks = line.get("keys")
        if not isinstance(jwks, list):
            self.problem(f"{log_id}: the log line lists no keys")
            jwks = []
        for jwk in jwks:
            try:
                keys.append(PublicKey.from_jwk(jwk))
            except BadRequestError as e:
                self.problem(f"{log_id}: unusable key: {e.message}")
        mode = line.get("mode")
        if mode not in ("complete", "selected"):
            raise _Bad(f"log {log_id}: unknown mode {mode!r}")
        indices = line.get("indices")
        if mode == "selected" and not (
            isinstance(indices, list) and all(type(i) is int for i in indices)
        ):
            raise _Bad(f"log {log_id}: a selected log must list its indices")
        self.log = _Log(
            log_id=log_id,
            origin=line["origin"],
            size=_int(line.get("tree_size"), "tree_size"),
            complete=mode == "complete",
            keys=self._trusted_log_keys(log_id, keys),
            indices=set(indices) if isinstance(indices, list) else None,
        )
        self.report.logs += 1

    def _trusted_log_keys(self, log_id: str, keys: list[PublicKey]) -> list[PublicKey]:
        """The file's keys for ``log_id`` that the anchored configuration publishes for it."""
        if self.view is None:
            return keys
        published = self._published(log_id)
        if published is None:
            self.problem(f"{log_id}: not a log of the anchored federation")
            return []
        for key in keys:
            if key.kid not in published:
                self.problem(f"{log_id}: key {key.kid} is not published for this log")
        return [k for k in keys if k.kid in published]

    def _published(self, log_id: str) -> dict[str, KeyInfo | None] | None:
        """Keys the configuration publishes for a log, with their validity (gateways only)."""
        assert self.view is not None
        service = self.view.central_services.get(log_id)
        if service is not None:
            return dict.fromkeys(service.keys.keyset())
        try:
            member = self.view.members.get(GatewayId.parse(log_id).member)
        except ShahrahError:
            return None
        return {k.kid: k for k in member.keys} if member else None

    def _current(self, what: str, line: dict[str, Any]) -> _Log:
        if self.log is None:
            raise _Bad(f"{what} line before any log line")
        if line.get("log_id") != self.log.log_id:
            # A line spliced in from another log's section (or naming none) is not this log's,
            # whatever it would prove here.
            raise _Bad(
                f"{what} line of log {line.get('log_id')!r} within the lines of {self.log.log_id}"
            )
        return self.log

    def checkpoint(self, line: dict[str, Any]) -> None:
        log = self._current("checkpoint", line)
        try:
            note = Note.parse(str(line.get("note", "")))
            cp = Checkpoint.parse(note.text)
        except NoteError as e:
            self.problem(f"{log.log_id}: malformed checkpoint: {e.message}")
            return
        where = f"{log.log_id} checkpoint at size {cp.size}"
        self.report.checkpoints += 1
        if log.has_entries:
            # A root learnt after the entries passed its size would never be compared with them.
            self.problem(
                f"{where}: found after the log's entries (checkpoints come first); not used"
            )
            return
        if log.last_checkpoint is not None and cp.size <= log.last_checkpoint:
            kind = "duplicated" if cp.size == log.last_checkpoint else "out of order"
            self.problem(f"{where}: {kind} (after size {log.last_checkpoint})")
            return
        log.last_checkpoint = cp.size
        if cp.origin != log.origin or cp.size > log.size:
            self.problem(f"{where}: does not belong to this log (origin {cp.origin})")
            return
        try:
            key = verify_log_signature(note, log.origin, log.keys)
        except InvalidSignatureError as e:
            self.problem(f"{where}: forged: {e.message}")
            return
        witnessed = self._cosigned(note)
        if witnessed is None:
            self.problem(f"{where}: no valid cosignature by the witness {self.witness_name}")
            return
        if self.view is not None:
            info = (self._published(log.log_id) or {}).get(key.kid)
            if info is not None and not key_valid_at(info, witnessed):
                self.problem(
                    f"{where}: signed with key {key.kid}, which was not valid when it was "
                    f"witnessed ({witnessed.isoformat()})"
                )
                return
        log.roots.add(cp.size, cp.root)
        if cp.size == 0:
            log.next_root = 1

    def _cosigned(self, note: Note) -> dt.datetime | None:
        """When the witness cosigned ``note``, or None if no trusted cosignature verifies."""
        for key in self.witness_keys:
            try:
                timestamp = verify_cosignature(note, self.witness_name, key)
            except InvalidSignatureError:
                continue
            return dt.datetime.fromtimestamp(timestamp, dt.UTC)
        return None

    def consistency(self, line: dict[str, Any]) -> None:
        log = self._current("consistency", line)
        size1, size2 = _int(line.get("size1"), "size1"), _int(line.get("size2"), "size2")
        proof = _hashes(line.get("proof"), "consistency proof")
        root1, root2 = log.roots.get(size1), log.roots.get(size2)
        if root1 is None or root2 is None:
            self.problem(f"{log.log_id}: consistency proof {size1} -> {size2} joins no checkpoints")
            return
        try:
            merkle.verify_consistency(size1, size2, proof, root1, root2)
        except ProofError as e:
            self.problem(
                f"{log.log_id}: checkpoints at sizes {size1} and {size2} are inconsistent: "
                f"{e.message}"
            )
            return
        log.roots.proven(size1, size2)

    # --- entries ----------------------------------------------------------------------------

    def entry(self, line: dict[str, Any]) -> None:
        log = self._current("entry", line)
        self.entry_lines += 1
        self.report.entries += 1
        index = _int(line.get("index"), "index")
        text = line.get("entry")
        if not isinstance(text, str):
            raise _Bad(f"{log.log_id} entry #{index} has no entry text")
        claimed = _hash(line.get("leaf_hash"), f"{log.log_id} entry #{index} leaf_hash")
        where = f"{log.log_id} entry #{index}"
        log.has_entries = True
        if merkle.leaf_hash(text.encode("utf-8")) != claimed:
            self.problem(f"{where}: changed (its content does not hash to its leaf hash)")
        if index >= log.size:
            # No checkpoint of this log commits to it: whatever it says was never witnessed.
            _extend(log.beyond, index)
            if not log.complete:
                log.seen.add(index)  # present: named as beyond, not also as missing
            return
        if index <= log.last_index:
            late = _take(log.gaps, index) if log.complete else index not in log.seen
            kind = "reordered" if late else "duplicated"
            self.problem(f"{where}: {kind} (found after entry #{log.last_index})")
            if log.complete and log.broken_at is None:
                log.broken_at = index
            log.seen.add(index)
            return
        if log.complete and index > log.last_index + 1:
            log.gaps.append([log.last_index + 1, index - 1])
            if log.broken_at is None:
                log.broken_at = log.last_index + 1
        log.last_index = index
        if log.complete:
            self._grow(log, claimed)
        else:
            log.seen.add(index)
            self._prove(log, index, claimed, line.get("proof"))

    def _grow(self, log: _Log, leaf: bytes) -> None:
        """Add the next leaf of a complete log and check every checkpoint it reaches."""
        if log.broken_at is not None:
            return
        log.frontier.append(leaf)
        # Entries grow the tree one leaf at a time and roots are in increasing size, so the
        # next root to meet is always the next one in order.
        if log.next_root < len(log.roots) and log.roots.sizes[log.next_root] == log.frontier.size:
            self._check_root(log)

    def _check_root(self, log: _Log) -> None:
        """Compare the entries read so far with the next verified checkpoint, at their size."""
        size = log.frontier.size
        expected = log.roots.root(log.next_root)
        log.next_root += 1
        if log.frontier.root() != expected:
            previous = log.roots.before(size)
            self.problem(
                f"{log.log_id}: entries #{previous}..#{size - 1} do not produce the root of the "
                f"checkpoint at size {size} (an entry was changed, added, removed or reordered)"
            )
            log.broken_at = size

    def _prove(self, log: _Log, index: int, leaf: bytes, proof_value: Any) -> None:
        where = f"{log.log_id} entry #{index}"
        assert log.indices is not None
        if index not in log.indices:
            self.problem(f"{where}: not listed in the export's manifest (added)")
        root = log.roots.get(log.size)
        if root is None:
            # Without a verified root the proof leads nowhere: the entry is unsupported.
            _extend(log.uncovered, index)
            return
        proof = _hashes(proof_value, f"{where} proof")
        try:
            merkle.verify_inclusion(leaf, index, log.size, proof, root)
        except ProofError as e:
            self.problem(f"{where}: not in the witnessed log ({e.message}): changed or forged")

    def finish_log(self) -> None:
        log = self.log
        if log is None:
            return
        self.log = None
        if log.size and log.size not in log.roots:
            self.problem(f"{log.log_id}: no verified checkpoint at its size {log.size}")
        for first, second in log.roots.unproven():
            self.problem(f"{log.log_id}: no consistency proof between sizes {first} and {second}")
        for first, last in log.beyond:
            self.problem(
                f"{log.log_id} entry {_span(first, last)}: beyond the witnessed tree size "
                f"{log.size} (no checkpoint covers it)"
            )
        if log.complete:
            if log.last_index < log.size - 1:
                log.gaps.append([log.last_index + 1, log.size - 1])
                if log.broken_at is None:
                    log.broken_at = log.last_index + 1
            for first, last in log.gaps:
                self.problem(f"{log.log_id} entry {_span(first, last)}: missing")
            self._finish_complete(log)
        else:
            for first, last in log.uncovered:
                self.problem(
                    f"{log.log_id} entry {_span(first, last)}: no verified checkpoint covers it "
                    f"(none at the log's size {log.size})"
                )
            assert log.indices is not None
            for index in sorted(log.indices - log.seen):
                self.problem(f"{log.log_id} entry #{index}: missing (listed in the manifest)")

    def _finish_complete(self, log: _Log) -> None:
        """Every entry of a complete log must be under a verified root that its entries rebuilt."""
        newest = log.roots.sizes[-1] if len(log.roots) else 0
        if log.last_index >= newest:
            self.problem(
                f"{log.log_id} entry {_span(newest, log.last_index)}: no verified checkpoint "
                f"covers it (the newest verified size is {newest})"
            )
        if log.broken_at is not None:
            unchecked = log.roots.span_after(log.broken_at)
            if unchecked:
                self.problem(
                    f"{log.log_id}: checkpoints at sizes {unchecked[0]}..{unchecked[1]} could "
                    "not be checked against the entries"
                )
            return
        if log.next_root < len(log.roots):
            first, last = log.roots.sizes[log.next_root], log.roots.sizes[-1]
            self.problem(
                f"{log.log_id}: checkpoints at sizes {first}..{last} were never "
                "compared with the entries"
            )

    # --- the seal ---------------------------------------------------------------------------

    def end(self, line: dict[str, Any], digest: str) -> None:
        self.finish_log()
        declared, sealed = line.get("entries"), line.get("sha256")
        if declared != self.entry_lines:
            self.problem(f"the export declares {declared} entries but holds {self.entry_lines}")
        if sealed != digest:
            self.problem("the file was edited after export: its digest does not match")
        if type(declared) is not int or not isinstance(sealed, str):
            self.problem("the export's end line is malformed")
            return
        # The seal covers what the end line declares; a mismatch with the file is reported above.
        signature = line.get("signature")
        try:
            payload = seal_payload(self.created_at, declared, sealed, self.witness_name)
        except BadRequestError:  # e.g. a count beyond what canonical JSON can write
            self.problem("the export's end line is malformed")
            return
        for key in self.witness_keys:
            try:
                jws.verify(str(signature), KeySet([key]), typ=EXPORT_TYP, payload=payload)
            except InvalidSignatureError:
                continue
            return
        self.problem("the export's closing signature by the witness does not verify")


def _extend(ranges: list[list[int]], index: int) -> None:
    """Add ``index`` to ``[first, last]`` ranges, widening the last one when it follows on."""
    if ranges and ranges[-1][1] + 1 == index:
        ranges[-1][1] = index
    else:
        ranges.append([index, index])


def _span(first: int, last: int) -> str:
    return f"#{first}" + (f"..#{last}" if last > first else "")


def _take(gaps: list[list[int]], index: int) -> bool:
    """Remove ``index`` from the missing ranges; whether it was missing (so: late, not a copy)."""
    for n, (first, last) in enumerate(gaps):
        if first <= index <= last:
            gaps[n : n + 1] = [r for r in ([first, index - 1], [index + 1, last]) if r[0] <= r[1]]
            return True
    return False


def _parse_line(raw: bytes) -> Any:
    """One line as strict JSON, as the rest of Shahrah reads it, so that no other reader can
    take it to say something else; a nesting too deep for the parser is a problem, not a
    crash. (Decoding the text first is cheaper than json.loads on bytes, which first detects
    the encoding.)"""
    try:
        return STRICT_DECODER.decode(raw.decode("utf-8"))
    except BadRequestError as e:
        raise _Bad(e.message) from e
    except RecursionError as e:
        raise _Bad("JSON nests too deeply") from e


def verify_export(
    path: Path,
    *,
    anchor: Anchor | None = None,
    witness_keys: KeySet | None = None,
    progress: Progress | None = None,
) -> Report:
    """Verify the export at ``path`` without any network access."""
    v = _Verifier(anchor, witness_keys)
    digest = hashlib.sha256()
    handlers: dict[str, Callable[[dict[str, Any]], None]] = {
        "log": v.start_log,
        "checkpoint": v.checkpoint,
        "consistency": v.consistency,
        "entry": v.entry,
    }
    read = 0
    ended = False
    with path.open("rb") as stream:
        number = 0
        # Bounded reads: a line is never held in memory beyond MAX_LINE bytes.
        while raw := stream.readline(MAX_LINE + 1):
            number += 1
            read += len(raw)
            if progress is not None and number % 4096 == 0:
                progress(read, v.report.entries)
            if ended:
                v.problem(f"line {number}: data after the end of the export")
                break
            if len(raw) > MAX_LINE:
                digest.update(raw)
                while not raw.endswith(b"\n") and (raw := stream.readline(_CHUNK)):
                    read += len(raw)
                    digest.update(raw)
                v.problem(f"line {number}: longer than {MAX_LINE} bytes; not read")
                if number == 1:
                    return v.report
                continue
            try:
                line = _parse_line(raw)
                if not isinstance(line, dict):
                    raise _Bad("not a JSON object")
                kind = line.get("type")
                if number == 1:
                    if kind != "header":
                        raise _Bad("the export does not start with its header")
                    v.header(line)
                elif kind == "end":
                    v.end(line, digest.hexdigest())
                    ended = True
                elif kind in handlers:
                    handlers[kind](line)
                else:
                    raise _Bad(f"unknown line type {kind!r}")
            except (_Bad, ValueError, UnicodeDecodeError) as e:
                v.problem(f"line {number}: unreadable: {e}")
                if number == 1:
                    return v.report
            digest.update(raw)
    if progress is not None:
        progress(read, v.report.entries)
    if not ended:
        v.finish_log()
        v.problem("the export is truncated: it has no end line")
    return v.report
