"""The envelope's size bound: whatever end-to-end headers fit MAX_HEADER_BYTES, the signed
envelope describing them fits MAX_ENVELOPE, the header line both gateways' HTTP parsers are
sized for (and no more, since a peer may send many lines that long)."""

from __future__ import annotations

import uuid

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from core.db import utcnow
from core.ids import ClientId, GatewayId, ServiceId
from core.keys import PrivateKey
from exchange import envelope as env_
from exchange.envelope import (
    MAX_ENVELOPE,
    MAX_HEADER_BYTES,
    MAX_HEADERS,
    MAX_TEXT,
    RequestEnvelope,
    ResponseEnvelope,
    header_bytes,
)

KEY = PrivateKey.generate()
LONG = "x" * 60  # identifier parts as long as a registry would plausibly hold
CLIENT = ClientId("PK", "GOV", LONG, LONG)
SERVICE = ServiceId("PK", "GOV", LONG, LONG, LONG, "v1")
#: Characters by what the envelope's canonical JSON makes of them: one that doubles when
#: escaped, one byte, two, three and four UTF-8 bytes written as they are.
CHARACTERS = ['"', "\\", "\t", "a", "é", "€", "😀"]


def _fill(runs: list[tuple[str, int]]) -> dict[str, str]:
    """Headers built from (character, count) runs, cut to fit MAX_HEADER_BYTES."""
    headers: dict[str, str] = {}
    room = MAX_HEADER_BYTES
    for i, (char, count) in enumerate(runs[:MAX_HEADERS]):
        name = f"x-{i}"
        fits = (room - len(name)) // len(char.encode())
        value = char * min(count, fits, MAX_TEXT)
        if not value:
            break
        headers[name] = value
        room -= len(name) + len(value.encode())
    assert header_bytes(headers) <= MAX_HEADER_BYTES
    return headers


def _request(headers: dict[str, str]) -> RequestEnvelope:
    return RequestEnvelope(
        message_id='"' * 255,  # quotes: twice their size in JSON
        request_id=str(uuid.uuid4()),
        client=CLIENT,
        service=SERVICE,
        sender=GatewayId("PK", "GOV", LONG, LONG),
        recipient=GatewayId("PK", "GOV", LONG, LONG),
        method="OPTIONS",
        path="/" + "p" * (MAX_TEXT - 1),
        query="q" * MAX_TEXT,
        headers=headers,
        body_sha256=env_.body_digest(b""),
        body_length=10 * 2**20,
        subject="PK" + "1" * 13,
        subject_statement="a" * 1000 + "." + "b" * 500 + "." + "c" * 546,
        purpose="p" * 255,
        consent="c" * 255,
        time=utcnow(),
        nonce=env_.new_nonce(),
    )


def _response(headers: dict[str, str]) -> ResponseEnvelope:
    return ResponseEnvelope(
        message_id='"' * 255,  # quotes: twice their size in JSON
        request_hash="h" * 88,
        responder=GatewayId("PK", "GOV", LONG, LONG),
        status=200,
        headers=headers,
        body_sha256=env_.body_digest(b""),
        body_length=10 * 2**20,
        released_fields=["/" + "f" * 60] * 20,
        time=utcnow(),
    )


def test_the_worst_headers_within_the_bound_fit_the_envelope() -> None:
    """Nothing but quotes, which canonical JSON doubles: the largest envelope there is."""
    headers = _fill([('"', MAX_TEXT)] * MAX_HEADERS)
    assert header_bytes(headers) > MAX_HEADER_BYTES - 16
    for envelope in (_request(headers), _response(headers)):
        assert len(env_.seal(envelope, KEY)) <= MAX_ENVELOPE


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from(CHARACTERS), st.integers(min_value=1, max_value=MAX_TEXT)),
        min_size=1,
        max_size=MAX_HEADERS,
    )
)
def test_any_headers_within_the_bound_fit_the_envelope(runs: list[tuple[str, int]]) -> None:
    headers = _fill(runs)
    assert len(env_.seal(_request(headers), KEY)) <= MAX_ENVELOPE
    assert len(env_.seal(_response(headers), KEY)) <= MAX_ENVELOPE


def test_headers_over_the_bound_are_no_envelope() -> None:
    """A peer's envelope describing more is malformed, whatever its signature."""
    headers = {f"x-{i}": "v" * 8000 for i in range(9)}
    assert header_bytes(headers) > MAX_HEADER_BYTES
    for make in (_request, _response):
        with pytest.raises(ValidationError, match=f"more than {MAX_HEADER_BYTES} bytes"):
            make(headers)
