"""Identifiers: X-Road form, allowed characters, percent-encoding, CNIC."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from core.errors import BadRequestError, InvalidClientIdentifierError, InvalidServiceIdentifierError
from core.ids import ClientId, Cnic, GatewayId, MemberId, ServiceId

ALLOWED = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789'()+,-.=?"
part = st.text(alphabet=ALLOWED, min_size=1, max_size=20)
bad_char = st.characters(exclude_characters=ALLOWED, codec="utf-8").filter(lambda c: c != "/")


@given(part, part, part, st.none() | part)
def test_client_round_trips_through_text_and_url_path(
    i: str, c: str, m: str, s: str | None
) -> None:
    cid = ClientId(i, c, m, s)
    assert ClientId.parse(str(cid)) == cid
    assert ClientId.parse(cid.to_path(), encoded=True) == cid
    assert hash(ClientId.parse(str(cid))) == hash(cid)


@given(part, part, part, part, part, st.none() | part)
def test_service_round_trips(i: str, c: str, m: str, s: str, code: str, v: str | None) -> None:
    sid = ServiceId(i, c, m, s, code, v)
    assert ServiceId.parse(str(sid)) == sid
    assert ServiceId.parse(sid.to_path(), encoded=True) == sid
    assert sid.provider == ClientId(i, c, m, s)


@given(part, part, part, part)
def test_gateway_and_member_round_trip(i: str, c: str, m: str, g: str) -> None:
    gid = GatewayId(i, c, m, g)
    assert GatewayId.parse(str(gid)) == gid
    assert MemberId.parse(str(gid.member)) == gid.member


@given(part, bad_char, part)
def test_characters_outside_xroad_set_are_refused(before: str, bad: str, after: str) -> None:
    with pytest.raises(InvalidClientIdentifierError, match="does not allow"):
        ClientId.parse(f"PK/FED/{before}{bad}{after}")
    with pytest.raises(InvalidClientIdentifierError):
        ClientId.parse(f"PK/FED/{before}{bad}{after}".replace("/", "%2F"), encoded=True)


def test_encoded_slash_in_a_part_is_still_refused() -> None:
    # PR-REST allows encoding '/' inside a part; X-Road's character rules then refuse it.
    with pytest.raises(InvalidClientIdentifierError):
        ClientId.parse("PK/FED/NA%2FDRA", encoded=True)


@pytest.mark.parametrize(
    "text",
    ["", "PK", "PK/FED", "PK/FED/NADRA/a/b", "PK//NADRA", "PK/FED/NADRA/", "/PK/FED/NADRA"],
)
def test_wrong_shapes_are_refused(text: str) -> None:
    with pytest.raises(InvalidClientIdentifierError):
        ClientId.parse(text)


@pytest.mark.parametrize("text", ["PK/FED/NADRA/sub", "PK/FED/NADRA/sub/svc/v1/x"])
def test_service_needs_five_or_six_parts(text: str) -> None:
    with pytest.raises(InvalidServiceIdentifierError):
        ServiceId.parse(text)


def test_malformed_percent_encoding_is_refused() -> None:
    with pytest.raises(InvalidClientIdentifierError, match="percent"):
        ClientId.parse("PK/FED/NA%G1", encoded=True)


def test_overlong_part_is_refused() -> None:
    with pytest.raises(BadRequestError, match="longer"):
        MemberId("PK", "FED", "A" * 256)


def test_question_mark_is_percent_encoded_in_paths() -> None:
    sid = ServiceId("PK", "FED", "NADRA", "civil-registry", "who?", "v1")
    assert sid.to_path() == "PK/FED/NADRA/civil-registry/who%3F/v1"


def test_require_subsystem() -> None:
    with pytest.raises(InvalidClientIdentifierError, match="SUBSYSTEM"):
        ClientId.parse("PK/FED/NADRA", require_subsystem=True)


@given(st.from_regex(r"[0-9]{13}", fullmatch=True))
def test_cnic_forms_round_trip(digits: str) -> None:
    cnic = Cnic.parse(digits)
    assert cnic.value == f"{digits[:5]}-{digits[5:12]}-{digits[12]}"
    assert Cnic.parse(cnic.value) == cnic
    assert Cnic.from_user_id(cnic.to_user_id()) == cnic


@pytest.mark.parametrize(
    "text",
    [
        "",
        "12345-1234567",
        "1234-12345678-1",
        "12345-1234567-12",
        "abcde-fghijkl-m",
        "١٢٣٤٥١٢٣٤٥٦٧١",
    ],
)
def test_malformed_cnic_is_refused(text: str) -> None:
    with pytest.raises(BadRequestError, match="CNIC"):
        Cnic.parse(text)


def test_user_id_needs_country_prefix() -> None:
    with pytest.raises(BadRequestError, match="'PK'"):
        Cnic.from_user_id("3520212345671")
