"""The regulator export file: one self-contained JSON Lines document.

Lines, in order (each a JSON object with a ``type``):

``header``
    ``format`` (:data:`FORMAT`), ``created_at``, the ``query`` it answers,
    the ``witness`` (key name and public JWK) and ``globalconf``: the
    operator-signed global configuration the audit server held, from which
    an anchor-holding verifier learns the witness and member keys.

then per log, sorted by log id (each of its ``checkpoint``, ``consistency`` and
``entry`` lines names it again in ``log_id``; a line naming another log is refused):

``log``
    ``log_id``, ``origin``, ``tree_size`` (the newest witnessed size),
    ``keys`` (public JWKs that signed its checkpoints) and ``mode``:
    ``complete`` (every entry ``0 .. tree_size - 1`` follows) or
    ``selected`` (the entries matching the query, listed in ``indices``,
    each with an inclusion proof against the checkpoint of ``tree_size``).
``checkpoint``
    every witnessed checkpoint up to ``tree_size``, in size order and before
    the log's entries (the verifier uses no checkpoint found after them): ``note``
    is the C2SP signed note with the log's signature and the witness's
    cosignature.
``consistency``
    ``size1``, ``size2`` and ``proof`` between each two consecutive checkpoints.
``entry``
    ``index``, ``leaf_hash`` (base64), ``entry`` (the exact logged text,
    canonical JSON, as a JSON string) and, in ``selected`` mode, ``proof``.

and last:

``end``
    ``entries`` (how many entry lines), ``sha256`` (hex digest of every
    byte before this line) and ``signature``: a detached JWS
    (:data:`EXPORT_TYP`) by the witness key over :func:`seal_payload`, so a
    changed, dropped, added or reordered line anywhere is detected.
"""

from __future__ import annotations

from typing import Any

from core.canonical import canonical_json

__all__ = ["EXPORT_TYP", "FORMAT", "seal_payload"]

FORMAT = "shahrah-audit-export/1"
EXPORT_TYP = "shahrah-audit-export+jws"


def seal_payload(created_at: str, entries: int, sha256_hex: str, witness: str) -> bytes:
    """The bytes the export's closing signature covers."""
    document: dict[str, Any] = {
        "format": FORMAT,
        "created_at": created_at,
        "entries": entries,
        "sha256": sha256_hex,
        "witness": witness,
    }
    return canonical_json(document)
