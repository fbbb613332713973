"""Typed JWS: sign/verify round trips, tamper detection, type confusion, interop."""

from __future__ import annotations

import json

import pytest
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from hypothesis import given
from hypothesis import strategies as st
from joserfc import jws as joserfc_jws
from joserfc.errors import JoseError
from jwcrypto import jwk as jwcrypto_jwk
from jwcrypto import jws as jwcrypto_jws

from core import jws
from core.canonical import b64url, b64url_decode, canonical_json
from core.errors import InvalidSignatureError
from core.keys import KeySet, PrivateKey

KEY = PrivateKey.generate()
TRUSTED = KeySet([KEY.public()])
TYP = "test-artefact+jws"


@given(st.binary(min_size=1, max_size=300), st.booleans())
def test_verify_accepts_what_sign_made(payload: bytes, detached: bool) -> None:
    token = jws.sign(payload, KEY, typ=TYP, detached=detached)
    result = jws.verify(token, TRUSTED, typ=TYP, payload=payload if detached else None)
    assert result.payload == payload
    assert result.kid == KEY.kid


def _flip(text: str, index: int, bit: int) -> str:
    """Flip one bit of one byte of a base64url segment's decoded content."""
    raw = bytearray(b64url_decode(text))
    raw[index % len(raw)] ^= 1 << bit
    return b64url(bytes(raw))


@given(
    st.binary(min_size=1, max_size=200),
    st.sampled_from([0, 1, 2]),
    st.integers(0, 10_000),
    st.integers(0, 7),
)
def test_any_one_bit_change_to_header_payload_or_signature_fails(
    payload: bytes, part: int, index: int, bit: int
) -> None:
    parts = jws.sign(payload, KEY, typ=TYP).split(".")
    parts[part] = _flip(parts[part], index, bit)
    with pytest.raises(InvalidSignatureError):
        jws.verify(".".join(parts), TRUSTED, typ=TYP)


@given(st.binary(min_size=1, max_size=200), st.integers(0, 10_000), st.integers(0, 7))
def test_detached_payload_change_fails(payload: bytes, index: int, bit: int) -> None:
    token = jws.sign(payload, KEY, typ=TYP, detached=True)
    changed = bytearray(payload)
    changed[index % len(changed)] ^= 1 << bit
    with pytest.raises(InvalidSignatureError):
        jws.verify(token, TRUSTED, typ=TYP, payload=bytes(changed))


def test_a_signature_for_one_type_never_passes_as_another() -> None:
    token = jws.sign_json({"serial": 1}, KEY, typ="shahrah-globalconf+jws")
    with pytest.raises(InvalidSignatureError, match="not of type 'shahrah-envelope") as caught:
        jws.verify(token, TRUSTED, typ="shahrah-envelope+jws")
    assert "globalconf" not in caught.value.message  # the sender's typ is not quoted


def test_unknown_key_fails() -> None:
    token = jws.sign(b"x", PrivateKey.generate(), typ=TYP)
    with pytest.raises(InvalidSignatureError, match="no trusted key"):
        jws.verify(token, TRUSTED, typ=TYP)


def _forge_header(header: dict[str, object], payload: bytes = b"x") -> str:
    head = b64url(json.dumps(header).encode())
    return f"{head}.{b64url(payload)}.{b64url(b'0' * 64)}"


@pytest.mark.parametrize(
    ("header", "reason"),
    [
        ({"alg": "none", "typ": TYP, "kid": KEY.kid}, "algorithm"),
        ({"alg": "HS256", "typ": TYP, "kid": KEY.kid}, "algorithm"),
        ({"alg": "ES256", "typ": TYP}, "key id"),
        ({"alg": "ES256", "typ": TYP, "kid": "k" * 42}, "not a key thumbprint"),
        ({"alg": "ES256", "typ": TYP, "kid": "line\nbreak" + "k" * 33}, "not a key thumbprint"),
        ({"alg": "ES256", "typ": TYP, "kid": KEY.kid, "jwk": {}}, "forbidden"),
        ({"alg": "ES256", "typ": TYP, "kid": KEY.kid, "b64": False, "crit": ["b64"]}, "forbidden"),
    ],
)
def test_dangerous_headers_are_refused(header: dict[str, object], reason: str) -> None:
    with pytest.raises(InvalidSignatureError, match=reason):
        jws.verify(_forge_header(header), TRUSTED, typ=TYP)


@pytest.mark.parametrize("token", ["", "a.b", "a.b.c.d", "!!!.e30.AAAA", "W10.e30.AAAA"])
def test_malformed_tokens_are_refused(token: str) -> None:
    with pytest.raises(InvalidSignatureError):
        jws.verify(token, TRUSTED, typ=TYP)


def test_a_deeply_nested_header_is_refused_not_a_crash() -> None:
    """A peer's envelope may be 256 KiB: room for a header nested deep enough to exhaust
    the JSON parser's recursion, which no ValueError handler would catch."""
    head = b64url(b"[" * 20_000)
    with pytest.raises(InvalidSignatureError, match="header is too large"):
        jws.verify(f"{head}.e30.{b64url(bytes(64))}", TRUSTED, typ=TYP)


def test_detached_and_attached_are_not_interchangeable() -> None:
    attached = jws.sign(b"x", KEY, typ=TYP)
    detached = jws.sign(b"x", KEY, typ=TYP, detached=True)
    with pytest.raises(InvalidSignatureError, match="carries a payload"):
        jws.verify(attached, TRUSTED, typ=TYP, payload=b"x")
    with pytest.raises(InvalidSignatureError, match="without its payload"):
        jws.verify(detached, TRUSTED, typ=TYP)


def test_another_jose_library_verifies_our_signatures() -> None:
    value = {"b": [1, 2], "a": "é"}
    token = jws.sign_json(value, KEY, typ=TYP)
    checker = jwcrypto_jws.JWS()
    checker.deserialize(token)
    checker.verify(jwcrypto_jwk.JWK(**KEY.public().to_jwk()))
    assert checker.payload == canonical_json(value)


@given(
    st.binary(min_size=1, max_size=300), st.booleans(), st.integers(0, 10_000), st.integers(0, 7)
)
def test_tokens_are_interchangeable_with_joserfc(
    payload: bytes, detached: bool, index: int, bit: int
) -> None:
    """Our framing on cryptography and a general JOSE library accept each other's tokens, and
    neither accepts ours once one bit of its signature is flipped."""
    ours = jws.sign(payload, KEY, typ=TYP, detached=detached)
    public = KEY.public().jose
    seen = joserfc_jws.deserialize_compact(
        ours, public, algorithms=["ES256"], payload=payload if detached else None
    )
    assert seen.payload == payload
    assert seen.protected == {"alg": "ES256", "typ": TYP, "kid": KEY.kid}

    theirs = joserfc_jws.serialize_compact(
        {"alg": "ES256", "typ": TYP, "kid": KEY.kid}, payload, KEY.jose, algorithms=["ES256"]
    )
    if detached:
        head, _, sig = theirs.split(".")
        theirs = f"{head}..{sig}"
    assert jws.verify(theirs, TRUSTED, typ=TYP, payload=payload if detached else None).payload == (
        payload
    )

    head, body, sig = ours.split(".")
    tampered = f"{head}.{body}.{_flip(sig, index, bit)}"
    with pytest.raises(InvalidSignatureError):
        jws.verify(tampered, TRUSTED, typ=TYP, payload=payload if detached else None)
    with pytest.raises(JoseError):
        joserfc_jws.deserialize_compact(
            tampered, public, algorithms=["ES256"], payload=payload if detached else None
        )


@pytest.mark.parametrize("length", [0, 63, 65, 96])
def test_signatures_of_the_wrong_length_are_refused(length: int) -> None:
    head, body, _ = jws.sign(b"x", KEY, typ=TYP).split(".")
    sig = b64url(bytes([1]) * length)
    with pytest.raises(InvalidSignatureError, match="64 bytes"):
        jws.verify(f"{head}.{body}.{sig}", TRUSTED, typ=TYP)


def _signed_with_header(header: bytes, payload: bytes = b"{}") -> str:
    """A token whose protected header is exactly ``header``, validly signed by KEY."""
    head, body = b64url(header), b64url(payload)
    der = KEY.cryptography_key.sign(f"{head}.{body}".encode(), jws._ECDSA)
    r, s = decode_dss_signature(der)
    return f"{head}.{body}.{b64url(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"


@pytest.mark.parametrize(
    "template",
    [
        # A repeated parameter: another reader may take the first (alg none).
        '{{"alg":"none","alg":"ES256","typ":"{typ}","kid":"{kid}"}}',
        '{{"alg":"ES256","typ":"other","typ":"{typ}","kid":"{kid}"}}',
        '{{"alg":"ES256","typ":"{typ}","kid":"{kid}","x":NaN}}',
        '\ufeff{{"alg":"ES256","typ":"{typ}","kid":"{kid}"}}',  # a byte-order mark
    ],
)
def test_a_header_other_readers_could_read_otherwise_is_refused(template: str) -> None:
    header = template.format(typ=TYP, kid=KEY.kid).encode("utf-8")
    with pytest.raises(InvalidSignatureError, match="signature header is not strict JSON"):
        jws.verify(_signed_with_header(header), TRUSTED, typ=TYP)
    # Encoded otherwise than UTF-8, the same header is refused too.
    plain = f'{{"alg":"ES256","typ":"{TYP}","kid":"{KEY.kid}"}}'
    with pytest.raises(InvalidSignatureError, match="strict JSON"):
        jws.verify(_signed_with_header(plain.encode("utf-16")), TRUSTED, typ=TYP)
    assert jws.verify(_signed_with_header(plain.encode()), TRUSTED, typ=TYP).kid == KEY.kid
