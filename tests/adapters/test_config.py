"""Configuration files: every mistake is reported with its file, line and field."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from adapters.config import load_adapters
from adapters.errors import ConfigError
from tests.adapters.conftest import write

SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "required": ["cnic", "name"],
    "properties": {
        "cnic": {"type": "string"},
        "name": {"type": "string"},
        "age": {"type": "integer"},
        "address": {
            "type": "object",
            "required": ["district"],
            "properties": {"district": {"type": "string"}, "tehsil": {"type": "string"}},
        },
        "owners": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["name"],
                "properties": {"name": {"type": "string"}},
            },
        },
    },
}

GOOD = """
adapter: 1
code_tables:
  district: {"101": Lahore}
services:
  PK/FED/NADRA/civil-registry/person/v1:
    kind: sql
    url: "sqlite:///{db}"
    response_schema: schema.json
    routes:
      GET /persons/{{cnic}}:
        params:
          cnic: {{transforms: [cnic_digits]}}
        query: SELECT * FROM P WHERE CNIC = :cnic
        mapping:
          /cnic: {{from: CNIC, transforms: [cnic], required: true}}
          /name: {{from: [FIRST, LAST], required: true}}
          /age: {{from: AGE, as: integer}}
"""


async def load(tmp_path: Path, text: str, env: dict[str, str] | None = None) -> None:
    (tmp_path / "schema.json").write_text(json.dumps(SCHEMA))
    config = write(tmp_path / "adapter.yaml", text.replace("{db}", str(tmp_path / "x.db")))
    adapters = await load_adapters(config, environ=env or {})
    await adapters.close()


async def fails(tmp_path: Path, text: str, env: dict[str, str] | None = None) -> ConfigError:
    with pytest.raises(ConfigError) as e:
        await load(tmp_path, text, env)
    return e.value


def edit(old: str, new: str) -> str:
    assert old in GOOD
    return GOOD.replace(old, new)


def line_of(text: str, needle: str) -> int:
    lines = text.lstrip().splitlines()
    return next(i for i, line in enumerate(lines, start=1) if needle in line)


async def test_a_good_file_loads(tmp_path: Path) -> None:
    await load(tmp_path, GOOD.replace("{{", "{").replace("}}", "}"))


@pytest.mark.parametrize(
    ("old", "new", "needle", "message"),
    [
        ("kind: sql", "kind: ftp", "kind: ftp", "does not match any of the expected tags"),
        ("adapter: 1", "adapter: 2", "adapter: 2", "Input should be 1"),
        ('url: "sqlite', 'pool_size: many\n    url: "sqlite', "pool_size", "valid integer"),
        ("[cnic_digits]", "[soundex]", "soundex", "unknown transform 'soundex'"),
        ("as: integer}", "as: date}", "AGE", "Input should be 'string'"),
        ("GET /persons/{{cnic}}:", "FETCH /persons/{{cnic}}:", "FETCH", "must start with a method"),
        (
            "WHERE CNIC = :cnic",
            "WHERE CNIC = :cnic AND X = :other",
            "SELECT",
            "undeclared parameters",
        ),
        ("SELECT * FROM P", "DELETE FROM P", "DELETE", "must be a SELECT"),
        ("WHERE CNIC = :cnic", "WHERE CNIC = '{{cnic}}'", "SELECT", "never written as {name}"),
        (
            "PK/FED/NADRA/civil-registry/person/v1:",
            "PK/FED/NADRA/person:",
            "PK/FED",
            "SUBSYSTEM/SERVICE",
        ),
        ("/age: {{from: AGE", "/agee: {{from: AGE", "/agee", "no such property"),
        (
            "/age: {{from: AGE, as: integer}}",
            "/age: {{from: AGE, as: string}}",
            "/age",
            "schema wants integer",
        ),
        (
            "/name: {{from: [FIRST, LAST], required: true}}",
            "/name: {{from: [FIRST, LAST]}}",
            "/name",
            "the schema requires it",
        ),
        (
            "/age: {{from: AGE, as: integer}}",
            "/age: {{from: AGE, as: integer}}\n          /address/tehsil: T",
            "/address/tehsil",
            "/address/district: the schema requires it",
        ),
        (
            "/age: {{from: AGE, as: integer}}",
            "/age: {{from: AGE, value: 3}}",
            "/age",
            "exactly one of",
        ),
        ("/age: {{from: AGE, as: integer}}", "/cnic/x: AGE", "/cnic/x", "overlaps with /cnic"),
        (
            "/age: {{from: AGE, as: integer}}",
            "/age: {{from: AGE, transforms: [{{replace: {{pattern: '(1)', with: '\\2'}}}}]}}",
            "/age",
            "replace with: invalid group reference 2",
        ),
        (
            "/age: {{from: AGE, as: integer}}",
            "/owners: {{each: '*', mapping: {{/nom: N}}}}",
            "/owners",
            "/owners[]/name: the schema requires it",
        ),
        (
            "/age: {{from: AGE, as: integer}}",
            "/age: {{from: AGE, transforms: [{{code: tehsil}}]}}",
            "/age",
            "code table 'tehsil'",
        ),
        (
            "response_schema: schema.json",
            "response_schema: missing.json",
            "response_schema",
            "cannot read the JSON Schema",
        ),
    ],
)
async def test_mistakes_name_their_line_and_field(
    tmp_path: Path, old: str, new: str, needle: str, message: str
) -> None:
    text = edit(old, new).replace("{{", "{").replace("}}", "}")
    error = await fails(tmp_path, text)
    assert message in error.message
    assert error.file == str(tmp_path / "adapter.yaml")
    assert error.line == line_of(text, needle), error.message


async def test_duplicate_keys_anchors_and_unknown_variables_are_refused(tmp_path: Path) -> None:
    text = GOOD.replace("{{", "{").replace("}}", "}")
    dup = text.replace('  district: {"101": Lahore}', '  district: {"101": Lahore}\n  district: {}')
    error = await fails(tmp_path, dup)
    assert "duplicate key 'district'" in error.message
    assert error.line == line_of(dup, "district: {}")
    anchored = text.replace(
        '  district: {"101": Lahore}', '  district: &d {"101": Lahore}\n  again: *d'
    )
    assert "anchors and aliases" in (await fails(tmp_path, anchored)).message
    variable = text.replace('url: "sqlite:///', 'url: "${NADRA_URL}')
    error = await fails(tmp_path, variable)
    assert "variable ${NADRA_URL} is not set" in error.message
    assert error.line == line_of(variable, "NADRA_URL")


async def test_variables_fill_strings_and_double_dollar_escapes(tmp_path: Path) -> None:
    text = (
        GOOD.replace("{{", "{").replace("}}", "}").replace('url: "sqlite:///', 'url: "${DB_PREFIX}')
    )
    await load(tmp_path, text, {"DB_PREFIX": "sqlite:///"})
    escaped = text.replace(
        "/age: {from: AGE, as: integer}", "/age: {from: AGE, as: integer, default: 0}"
    )
    await load(
        tmp_path,
        escaped.replace("FROM P", "FROM P -- $${not a variable}"),
        {"DB_PREFIX": "sqlite:///"},
    )


async def test_yaml_syntax_errors_name_the_line(tmp_path: Path) -> None:
    error = await fails(tmp_path, "adapter: 1\nservices:\n  - [unclosed\n")
    assert "YAML syntax" in error.message
    assert error.line == 4


async def test_a_service_without_a_schema_is_refused(tmp_path: Path) -> None:
    text = (
        GOOD.replace("{{", "{").replace("}}", "}").replace("    response_schema: schema.json\n", "")
    )
    error = await fails(tmp_path, text)
    assert "no response schema is registered" in error.message


async def test_a_schema_lookup_replaces_the_files(tmp_path: Path) -> None:
    text = (
        GOOD.replace("{{", "{").replace("}}", "}").replace("    response_schema: schema.json\n", "")
    )
    config = write(tmp_path / "adapter.yaml", text.replace("{db}", str(tmp_path / "x.db")))
    asked = []

    def lookup(service: object) -> dict[str, object]:
        asked.append(str(service))
        return SCHEMA

    adapters = await load_adapters(config, schemas=lookup)
    await adapters.close()
    assert asked == ["PK/FED/NADRA/civil-registry/person/v1"]


# A password with "@" and ":" that is not percent-encoded puts its tail where the port goes.
PASSWORD = "s3cret@pw:tail-of-the-secret"


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("nosuch://nadra:pw@db.nadra.local/registry", "no driver for 'nosuch'"),
        ("oracle://nadra:pw@db.nadra.local/registry", "no driver for 'oracle'"),
        (
            "postgresql+nosuch://nadra:pw@db.nadra.local/registry",
            "no driver for 'postgresql+nosuch'",
        ),
        ("postgresql://nadra:${DB_PASSWORD}@db.nadra.local/registry", "not a database URL"),
    ],
)
async def test_a_database_url_that_cannot_be_used_is_a_config_error(
    tmp_path: Path, url: str, message: str
) -> None:
    text = edit('url: "sqlite:///{db}"', f'url: "{url}"').replace("{{", "{").replace("}}", "}")
    error = await fails(tmp_path, text, {"DB_PASSWORD": PASSWORD})
    assert message in error.message
    assert error.line == line_of(text, "url:")
    assert "secret" not in error.message


@pytest.mark.parametrize(
    "url", ["postgresql://lmc:${DB_PASSWORD}@db.local/state", "postgresql://lmc:pw@db.local:x/s"]
)
async def test_a_state_url_that_cannot_be_used_is_a_config_error(tmp_path: Path, url: str) -> None:
    text = f"state: {url}\n" + GOOD.replace("{{", "{").replace("}}", "}")
    error = await fails(tmp_path, text, {"DB_PASSWORD": PASSWORD})
    assert "not a database URL" in error.message
    assert error.field == "state"
    assert error.line == line_of(text, "state:")
    assert "secret" not in error.message


async def test_a_file_nested_too_deeply_is_a_config_error(tmp_path: Path) -> None:
    # PyYAML composes recursively: a deep enough file ran out of stack (RecursionError).
    text = "adapter: 1\nservices: " + "[" * 5000 + "]" * 5000 + "\n"
    error = await fails(tmp_path, text)
    assert error.message.endswith("adapter.yaml: the file nests too deeply")


@pytest.mark.parametrize(
    ("csv_text", "message"),
    [
        # A lookup trims the code and reads Urdu digits as ASCII: so does the table, and two
        # rows that would answer the same code are a mistake, not a silent overwrite.
        ("code,district\n101,Lahore\n 101 ,Kasur\n", "line 3: code '101' is already in"),
        ("code,district\n101,Lahore\n۱۰۱,Kasur\n", "line 3: code '101' is already in"),
        ("code,district\n101,Lahore\n  ,Kasur\n", "line 3: the code is empty"),
        ("code,district\n101\n", "line 2: needs a code and a value"),
    ],
)
async def test_a_code_table_file_holds_each_code_once(
    tmp_path: Path, csv_text: str, message: str
) -> None:
    (tmp_path / "districts.csv").write_text(csv_text, "utf-8")
    text = edit('district: {"101": Lahore}', "district: {file: districts.csv}")
    error = await fails(tmp_path, text.replace("{{", "{").replace("}}", "}"))
    assert message in error.message
    assert error.line == line_of(text, "file: districts.csv")


async def test_an_inline_code_table_holds_each_code_once(tmp_path: Path) -> None:
    text = edit('district: {"101": Lahore}', 'district: {"101": Lahore, "۱۰۱": Kasur}')
    error = await fails(tmp_path, text.replace("{{", "{").replace("}}", "}"))
    assert "code '۱۰۱': code '101' is already in code table 'district'" in error.message
