"""Request bodies of the Confluent-compatible API (shared by the HTTP API and the CLI)."""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from registry.schemareg.documents import Reference
from registry.schemareg.errors import InvalidSchemaError, UnprocessableRequestError

__all__ = ["ConfigRequest", "SchemaRequest", "parse_request"]

T = TypeVar("T", bound=BaseModel)


class SchemaRequest(BaseModel):
    """``POST /subjects/{s}/versions``, ``POST /subjects/{s}`` and the compatibility checks."""

    model_config = ConfigDict(extra="forbid")

    schema_: str = Field(alias="schema", description="the JSON Schema, as a JSON string")
    schemaType: str = Field(
        default="JSON",
        description="only JSON is held here; absent means JSON (Confluent would assume AVRO)",
    )
    references: list[Reference] = []
    # Confluent's data-contract fields: current clients send them, often as null. Shahrah has
    # no data contracts, so anything but an empty value is refused rather than ignored.
    metadata: dict[str, Any] | None = None
    ruleSet: dict[str, Any] | None = None

    @field_validator("schemaType")
    @classmethod
    def _json_only(cls, value: str) -> str:
        if value.upper() != "JSON":
            raise InvalidSchemaError(
                f"Invalid schema type {value}: this registry holds JSON Schema only (JSON)"
            )
        return "JSON"

    def check_contract_fields(self) -> None:
        for name in ("metadata", "ruleSet"):
            if getattr(self, name):
                raise InvalidSchemaError(
                    f"Invalid schema: {name} (Confluent data contracts) is not supported here"
                )


class ConfigRequest(BaseModel):
    """``PUT /config`` and ``PUT /config/{s}``: a level, and Shahrah's policy extension."""

    model_config = ConfigDict(extra="forbid")

    compatibility: str | None = Field(
        default=None, description="NONE, BACKWARD, FORWARD, FULL or a *_TRANSITIVE form"
    )
    compatibilityPolicy: str | None = Field(
        default=None, description="STRICT (default) or LENIENT; see docs/schemas.md"
    )


def parse_request(model: type[T], value: Any) -> T:
    """Validate a body into ``model``; Confluent answers shape errors with 422 (code 422)."""
    try:
        parsed = model.model_validate(value)
    except ValidationError as e:
        for err in e.errors():
            cause = (err.get("ctx") or {}).get("error")
            if isinstance(cause, InvalidSchemaError):
                raise cause from e
        first = e.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "(body)"
        raise UnprocessableRequestError(
            f"Unprocessable field '{where}': {first['msg']}", detail=e.errors(include_url=False)
        ) from e
    if isinstance(parsed, SchemaRequest):
        parsed.check_contract_fields()
    return parsed
