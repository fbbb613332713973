"""getOpenAPI's paths: every access-right pattern the registry accepts is described by a valid
OpenAPI path template."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from openapi_spec_validator import validate

from core.errors import BadRequestError
from exchange.metadata import _templated
from registry.globalconf import path_matches, validate_path_pattern

segment = st.one_of(
    st.just("*"),
    st.text(st.characters(codec="ascii", exclude_characters="/?#*"), min_size=1, max_size=8),
)
patterns = st.one_of(
    st.just("**"),
    st.builds(
        lambda segs, tail: "/" + "/".join(segs + (["**"] if tail else [])),
        st.lists(segment, min_size=1, max_size=4),
        st.booleans(),
    ),
)


def _document(pattern: str) -> dict[str, object]:
    paths = {}
    for path, parameters in _templated("/v1", pattern):
        item: dict[str, object] = {"get": {"responses": {"200": {"description": "success"}}}}
        if parameters:
            item["parameters"] = parameters
        paths[path] = item
    return {"openapi": "3.1.0", "info": {"title": "t", "version": "1"}, "paths": paths}


@settings(max_examples=200, deadline=None)
@given(patterns)
def test_every_accepted_pattern_makes_a_valid_document(pattern: str) -> None:
    try:
        validate_path_pattern(pattern)
    except BadRequestError:
        return
    validate(_document(pattern))


def test_a_trailing_double_star_is_described_with_and_without_the_rest() -> None:
    assert path_matches("/public/**", "/public")  # "**" matches nothing too
    assert [p for p, _ in _templated("", "/public/**")] == ["/public", "/public/{rest}"]
    assert [p for p, _ in _templated("/v1", "**")] == ["/v1", "/v1/{rest}"]
    assert [p for p, _ in _templated("", "/persons/{cnic}")] == ["/persons/%7Bcnic%7D"]
