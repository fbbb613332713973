"""Canonical JSON per RFC 8785 and the digests built on it."""

from __future__ import annotations

import json
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from core.canonical import b64url, b64url_decode, canonical_digest, canonical_json
from core.errors import BadRequestError

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**53) + 1, max_value=2**53 - 1)
    # JCS (and the rfc8785 library) limit integers to IEEE 754's exact range; a float that
    # prints as a larger integer would parse back outside it.
    | st.floats(
        allow_nan=False, allow_infinity=False, min_value=-(2.0**53) + 1, max_value=2.0**53 - 1
    )
    | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(), children, max_size=4)
    ),
    max_leaves=20,
)


def _shuffled(value: object, rng: random.Random) -> object:
    if isinstance(value, dict):
        items = list(value.items())
        rng.shuffle(items)
        return {k: _shuffled(v, rng) for k, v in items}
    if isinstance(value, list):
        return [_shuffled(v, rng) for v in value]
    return value


@given(json_values, st.randoms())
def test_key_order_does_not_change_the_canonical_form(value: object, rng: random.Random) -> None:
    assert canonical_json(_shuffled(value, rng)) == canonical_json(value)
    assert canonical_digest(_shuffled(value, rng)) == canonical_digest(value)


@given(json_values)
def test_canonical_form_is_a_fixed_point(value: object) -> None:
    # Parsing the canonical bytes and canonicalising again changes nothing, so a verifier
    # that re-derives the form from what it parsed gets the signer's bytes.
    once = canonical_json(value)
    assert canonical_json(json.loads(once)) == once


@given(json_values, st.integers(0xD800, 0xDFFF))
def test_a_lone_surrogate_has_no_canonical_form(value: object, code: int) -> None:
    # A client error (400) whichever encoder the value takes, never a UnicodeEncodeError.
    with pytest.raises(BadRequestError):
        canonical_json([value, chr(code)])
    with pytest.raises(BadRequestError):
        canonical_json({chr(code): value})


def test_rfc8785_number_and_string_forms() -> None:
    # Examples from RFC 8785 section 3.2.2: ECMAScript number forms, minimal escapes.
    assert canonical_json(
        {"numbers": [333333333.33333329, 1e30, 4.50, 2e-3, 0.000000000000000000000000001]}
    ) == (b'{"numbers":[333333333.3333333,1e+30,4.5,0.002,1e-27]}')
    assert canonical_json({"b": '\u20ac$\u000f\nA\'B"\\\\"/', "a": 1}) == (
        b'{"a":1,"b":"\xe2\x82\xac$\\u000f\\nA\'B\\"\\\\\\\\\\"/"}'
    )


def test_keys_sort_by_utf16_code_units() -> None:
    # RFC 8785 3.2.3: sorting is on UTF-16 code units, not code points.
    assert canonical_json({"\U0001f600": 1, "\ufb33": 2}) == '{"\U0001f600":1,"\ufb33":2}'.encode()


@pytest.mark.parametrize("value", [float("nan"), float("inf"), 2**60, {1: 2}])
def test_values_without_canonical_form_are_refused(value: object) -> None:
    with pytest.raises(BadRequestError, match="canonical"):
        canonical_json(value)


@given(st.binary())
def test_b64url_round_trip(data: bytes) -> None:
    assert b64url_decode(b64url(data)) == data


@pytest.mark.parametrize("text", ["a=", "ab+c", "ab/c", "a b", "A"])
def test_b64url_refuses_non_canonical_text(text: str) -> None:
    with pytest.raises(BadRequestError):
        b64url_decode(text)


text_anywhere = st.text(alphabet=st.characters(codec="utf-8"))
plain_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53) + 1, 2**53 - 1) | text_anywhere,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(text_anywhere, children, max_size=5)
    ),
    max_leaves=25,
)


@given(plain_values)
def test_the_fast_path_is_byte_for_byte_rfc8785(value: object) -> None:
    # Keys and strings from all of Unicode (astral keys take the library's path); ints and
    # nesting as documents hold them.
    import rfc8785

    assert canonical_json(value) == rfc8785.dumps(value)


def test_astral_keys_sort_by_utf16_even_beside_high_bmp_keys() -> None:
    # U+1F600 is D83D DE00 in UTF-16, which sorts before U+FB33: the opposite of code points.
    assert canonical_json({"\ufb33": 1, "\U0001f600": 2}) == '{"\U0001f600":2,"\ufb33":1}'.encode()


@given(st.binary(min_size=1, max_size=40), st.integers(0, 63))
def test_only_the_canonical_spelling_of_bytes_is_accepted(data: bytes, replacement: int) -> None:
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    text = b64url(data)
    other = text[:-1] + alphabet[replacement]
    try:
        decoded = b64url_decode(other)
    except BadRequestError:
        return
    # Whatever is accepted is the canonical spelling of what it decodes to.
    assert b64url(decoded) == other
