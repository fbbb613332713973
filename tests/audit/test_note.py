"""C2SP signed notes and checkpoints with ES256 keys: formats, round trips, tampering."""

from __future__ import annotations

import base64
import hashlib

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from hypothesis import given, settings
from hypothesis import strategies as st

from audit.note import (
    Checkpoint,
    Note,
    NoteError,
    cosign,
    cosignature_key_id,
    log_key_id,
    log_origin,
    sign_checkpoint,
    verify_cosignature,
    verify_log_signature,
    vkey,
    witness_name,
)
from core.errors import InvalidSignatureError
from core.keys import PrivateKey

LOG_KEY = PrivateKey.generate()
WITNESS_KEY = PrivateKey.generate()
ORIGIN = log_origin("PK/FED/NADRA/gw1")
WITNESS = witness_name("PK")
CHECKPOINT = Checkpoint(ORIGIN, 20852163, hashlib.sha256(b"root").digest())


def _spki(key: PrivateKey) -> bytes:
    return key.public().cryptography_key.public_bytes(
        Encoding.DER, PublicFormat.SubjectPublicKeyInfo
    )


def test_checkpoint_text_is_the_c2sp_three_lines() -> None:
    assert ORIGIN == "shahrah/PK/FED/NADRA/gw1"
    assert log_origin("PK/FED/A+B/gw 1") == "shahrah/PK/FED/A%2BB/gw%201"
    text = CHECKPOINT.text()
    lines = text.split("\n")
    assert lines[:3] == [ORIGIN, "20852163", base64.b64encode(CHECKPOINT.root).decode()]
    assert text.endswith("\n")
    assert lines[3] == ""
    assert Checkpoint.parse(text) == CHECKPOINT


def test_log_signature_is_signed_note_type_0x02() -> None:
    """Key ID: SHA-256 of the SPKI (transparency-dev's ECDSA notes); signature: DER ECDSA over
    SHA-256 of the note text, checkable with nothing but `cryptography`."""
    note = sign_checkpoint(CHECKPOINT, LOG_KEY)
    (sig,) = note.signatures
    assert sig.name == ORIGIN
    assert sig.key_id == hashlib.sha256(_spki(LOG_KEY)).digest()[:4] == log_key_id(LOG_KEY.public())
    LOG_KEY.public().cryptography_key.verify(
        sig.signature, CHECKPOINT.text().encode(), ec.ECDSA(hashes.SHA256())
    )
    rendered = note.render()
    assert rendered == CHECKPOINT.text() + "\n" + sig.line()
    assert sig.line().startswith("\u2014 shahrah/PK/FED/NADRA/gw1 ")
    assert Note.parse(rendered) == note
    assert verify_log_signature(Note.parse(rendered), ORIGIN, [LOG_KEY.public()]).kid == LOG_KEY.kid
    name, key_hash, material = vkey(ORIGIN, LOG_KEY.public()).split("+", 2)
    assert (name, key_hash) == (ORIGIN, sig.key_id.hex())
    assert base64.b64decode(material) == b"\x02" + _spki(LOG_KEY)


def test_cosignature_follows_tlog_cosignature_with_es256() -> None:
    note = sign_checkpoint(CHECKPOINT, LOG_KEY)
    cosig = cosign(note, WITNESS_KEY, WITNESS, 1679315147)
    key_id = hashlib.sha256(
        WITNESS.encode() + b"\n\xff" + b"shahrah/es256-cosignature/v1" + _spki(WITNESS_KEY)
    ).digest()[:4]
    assert cosig.key_id == key_id == cosignature_key_id(WITNESS, WITNESS_KEY.public())
    assert cosig.signature[:8] == (1679315147).to_bytes(8, "big")
    message = f"cosignature/v1\ntime 1679315147\n{CHECKPOINT.text()}".encode()
    WITNESS_KEY.public().cryptography_key.verify(
        cosig.signature[8:], message, ec.ECDSA(hashes.SHA256())
    )
    both = Note.parse(note.with_signatures([cosig]).render())
    assert verify_cosignature(both, WITNESS, WITNESS_KEY.public()) == 1679315147
    assert verify_log_signature(both, ORIGIN, [LOG_KEY.public()]).kid == LOG_KEY.kid
    with pytest.raises(InvalidSignatureError, match="no cosignature"):
        verify_cosignature(note, WITNESS, WITNESS_KEY.public())


def test_unknown_signatures_are_ignored_but_a_failing_known_one_rejects() -> None:
    note = sign_checkpoint(CHECKPOINT, LOG_KEY)
    other = sign_checkpoint(CHECKPOINT, PrivateKey.generate())
    both = note.with_signatures(other.signatures)
    assert verify_log_signature(both, ORIGIN, [LOG_KEY.public()]).kid == LOG_KEY.kid
    with pytest.raises(InvalidSignatureError, match="no signature by a known key"):
        verify_log_signature(other, ORIGIN, [LOG_KEY.public()])
    with pytest.raises(InvalidSignatureError, match="no signature by a known key"):
        verify_log_signature(note, "shahrah/elsewhere", [LOG_KEY.public()])
    (sig,) = note.signatures
    # Flip a bit of the last byte (setting it to a constant would, 1 time in 256, change nothing).
    flipped = sig.signature[:-1] + bytes([sig.signature[-1] ^ 1])
    forged = Note(note.text, (type(sig)(sig.name, sig.key_id, flipped),))
    with pytest.raises(InvalidSignatureError, match="does not verify"):
        verify_log_signature(forged, ORIGIN, [LOG_KEY.public()])


def test_the_size_and_root_are_bound_by_the_signature() -> None:
    signed = sign_checkpoint(CHECKPOINT, LOG_KEY).render()
    for changed in (
        signed.replace("\n20852163\n", "\n20852164\n"),
        signed.replace("\n20852163\n", "\n20852162\n"),
        signed.replace(ORIGIN + "\n", "shahrah/PK/FED/NADRA/gw2\n", 1),
    ):
        with pytest.raises(InvalidSignatureError):
            verify_log_signature(Note.parse(changed), ORIGIN, [LOG_KEY.public()])


@settings(max_examples=80)
@given(position=st.integers(min_value=0), bit=st.integers(0, 6))
def test_any_changed_character_of_a_cosigned_checkpoint_is_caught(position: int, bit: int) -> None:
    note = sign_checkpoint(CHECKPOINT, LOG_KEY)
    text = note.with_signatures([cosign(note, WITNESS_KEY, WITNESS, 1700000000)]).render()
    i = position % len(text)
    changed = text[:i] + chr(ord(text[i]) ^ (1 << bit)) + text[i + 1 :]
    try:
        parsed = Note.parse(changed)
        verify_log_signature(parsed, ORIGIN, [LOG_KEY.public()])
        verify_cosignature(parsed, WITNESS, WITNESS_KEY.public())
        Checkpoint.parse(parsed.text)
    except (NoteError, InvalidSignatureError):
        return
    pytest.fail(f"a note changed at {i} still verified")


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ("a\n1\nx\n", "no blank line"),
        ("a\n1\nx\n\n", "no signatures"),
        ("a\n1\nx\n\n- a AAAAAAAA\n", "em dash"),
        ("a\n1\nx\n\n\u2014 a+b AAAAAAAA\n", "key name without spaces"),
        ("a\n1\nx\n\n\u2014 a AAAA\n", "key ID and signature"),
        ("a\n1\nx\n\n\u2014 a %%%%\n", "not base64"),
        ("a\r\n1\nx\n\n\u2014 a AAAAAAAA\n", "control character"),
        (b"\xff\n\n\xe2\x80\x94 a AAAAAAAA\n", "not UTF-8"),
        ("x" * 70000, "larger than"),
    ],
)
def test_malformed_notes_are_refused_precisely(data: str | bytes, message: str) -> None:
    with pytest.raises(NoteError, match=message):
        Note.parse(data)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("o\n1\n", "origin, size and root"),
        ("o\n01\n" + base64.b64encode(b"\0" * 32).decode() + "\n", "leading zeros"),
        ("o\n-1\n" + base64.b64encode(b"\0" * 32).decode() + "\n", "decimal"),
        ("o\n1\n" + base64.b64encode(b"\0" * 31).decode() + "\n", "32 bytes"),
        ("o\n1\n" + base64.b64encode(b"\0" * 32).decode() + "\next\n", "extension"),
        ("o o\n1\n" + base64.b64encode(b"\0" * 32).decode() + "\n", "origin"),
    ],
)
def test_malformed_checkpoints_are_refused_precisely(text: str, message: str) -> None:
    with pytest.raises(NoteError, match=message):
        Checkpoint.parse(text)


# Note syntax is made of these; the rest of Unicode (lone surrogates included) fills it in.
_NOTE_CHARS = st.sampled_from(list("ab\n \u2014+=/AQ0\x7f\u0085\u2028\t\r\ud800"))


@settings(max_examples=500)
@given(st.lists(_NOTE_CHARS, max_size=40).map("".join) | st.text(max_size=60))
def test_any_text_parses_to_a_note_with_one_spelling_or_is_refused(data: str) -> None:
    """Note.parse either refuses with NoteError or returns a note that renders to exactly the
    input: one note has one spelling, and no input escapes as another exception."""
    try:
        note = Note.parse(data)
    except NoteError:
        return
    assert note.render() == data
    try:
        checkpoint = Checkpoint.parse(note.text)
    except NoteError:
        return
    assert checkpoint.text() == note.text
