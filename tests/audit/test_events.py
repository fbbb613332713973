"""Audit events: the fields the issue lists, validated at the boundary, logged canonically."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from audit.events import AuditEvent
from core.canonical import canonical_json
from tests.audit.events import CITIZEN, PSEUDONYMS, event


def test_an_event_is_logged_as_canonical_json_without_the_cnic() -> None:
    e = event(1)
    entry = e.entry()
    assert entry == canonical_json(json.loads(entry))
    doc = json.loads(entry)
    assert doc["format"] == "shahrah-audit-event/1"
    assert doc["subject"] == PSEUDONYMS(CITIZEN)
    assert CITIZEN.digits not in entry.decode()
    assert CITIZEN.value not in entry.decode()
    assert "error_type" not in doc  # absent optional fields are left out, not null
    assert AuditEvent.model_validate_json(entry) == e
    assert set(doc) >= {
        "event_id",
        "time",
        "gateway",
        "role",
        "message_id",
        "client",
        "service",
        "subject",
        "purpose",
        "legal_basis",
        "consent_id",
        "outcome",
        "request_digest",
        "response_digest",
        "fields_released",
    }


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"outcome": "denied"}, "error_type is required when denied"),
        ({"error_type": "Client.BadRequest"}, "error_type is required when denied"),
        ({"subject": "35202-1234567-1"}, "subject"),
        ({"request_digest": "deadbeef"}, "request_digest"),
        ({"role": "witness"}, "role"),
        ({"client": "PK/LG/LMC/prop tax"}, "client"),
        ({"time": "2026-11-28T09:00:00"}, "time zone"),
        ({"cnic": "35202-1234567-1"}, "Extra inputs"),
    ],
)
def test_bad_events_are_refused_naming_the_field(change: dict[str, str], field: str) -> None:
    doc = json.loads(event(2).entry()) | change
    with pytest.raises(ValidationError, match=field):
        AuditEvent.model_validate(doc)


@given(n=st.integers(0, 10**6), denied=st.booleans())
def test_entries_round_trip_byte_for_byte(n: int, denied: bool) -> None:
    e = event(n, denied=denied)
    assert AuditEvent.model_validate_json(e.entry()).entry() == e.entry()
