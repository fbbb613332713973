"""The schema registry's errors, each carrying Confluent's ``error_code``.

Confluent Schema Registry answers ``{"error_code": N, "message": "..."}``
with a five-digit code that refines the HTTP status (40401 subject not
found, 42201 invalid schema, ...). Clients written for Confluent branch on
those codes, so every error the schema registry raises names its code, and
:func:`confluent_body` renders any :class:`core.errors.ShahrahError` in that
shape (errors from elsewhere get the code Confluent uses for their status).
"""

from __future__ import annotations

from typing import Any

from core.errors import (
    BadRequestError,
    ConflictError,
    NotFoundError,
    PayloadTooLargeError,
    ShahrahError,
    UnauthorizedError,
    UnprocessableError,
)

__all__ = [
    "IncompatibleSchemaError",
    "InvalidCompatibilityLevelError",
    "InvalidSchemaError",
    "InvalidVersionError",
    "ReferenceExistsError",
    "SchemaNotFoundError",
    "SchemaRegistryError",
    "SchemaTooComplexError",
    "SubjectConfigNotFoundError",
    "SubjectNotFoundError",
    "SubjectNotSoftDeletedError",
    "SubjectSoftDeletedError",
    "UnprocessableRequestError",
    "VersionNotFoundError",
    "VersionNotSoftDeletedError",
    "VersionSoftDeletedError",
    "confluent_body",
]


class SchemaRegistryError(ShahrahError):
    """Mixin root: an error with Confluent's five-digit ``error_code``."""

    error_code: int = 50001


class SubjectNotFoundError(SchemaRegistryError, NotFoundError):
    error_code = 40401

    def __init__(self, subject: str) -> None:
        super().__init__(f"Subject '{subject}' not found.", detail={"subject": subject})


class VersionNotFoundError(SchemaRegistryError, NotFoundError):
    error_code = 40402

    def __init__(self, version: int | str) -> None:
        super().__init__(f"Version {version} not found.", detail={"version": version})


class SchemaNotFoundError(SchemaRegistryError, NotFoundError):
    error_code = 40403


class SubjectSoftDeletedError(SchemaRegistryError, NotFoundError):
    error_code = 40404

    def __init__(self, subject: str) -> None:
        super().__init__(
            f"Subject '{subject}' was soft deleted.Set permanent=true to delete permanently",
            detail={"subject": subject},
        )


class SubjectNotSoftDeletedError(SchemaRegistryError, NotFoundError):
    error_code = 40405

    def __init__(self, subject: str) -> None:
        super().__init__(
            f"Subject '{subject}' was not deleted first before being permanently deleted",
            detail={"subject": subject},
        )


class VersionSoftDeletedError(SchemaRegistryError, NotFoundError):
    error_code = 40406

    def __init__(self, subject: str, version: int) -> None:
        super().__init__(
            f"Subject '{subject}' Version {version} was soft deleted.Set permanent=true to "
            "delete permanently",
            detail={"subject": subject, "version": version},
        )


class VersionNotSoftDeletedError(SchemaRegistryError, NotFoundError):
    error_code = 40407

    def __init__(self, subject: str, version: int) -> None:
        super().__init__(
            f"Subject '{subject}' Version {version} was not deleted first before being "
            "permanently deleted",
            detail={"subject": subject, "version": version},
        )


class SubjectConfigNotFoundError(SchemaRegistryError, NotFoundError):
    error_code = 40408

    def __init__(self, subject: str) -> None:
        super().__init__(
            f"Subject '{subject}' does not have subject-level compatibility configured",
            detail={"subject": subject},
        )


class InvalidSchemaError(SchemaRegistryError, UnprocessableError):
    """The schema fails its meta-schema, names an unknown draft, or a ``$ref`` it may not."""

    error_code = 42201


class InvalidVersionError(SchemaRegistryError, UnprocessableError):
    error_code = 42202

    def __init__(self, version: str) -> None:
        super().__init__(
            f"The specified version '{version}' is not a valid version id. Allowed values are "
            'between [1, 2^31-1] and the string "latest"',
            detail={"version": version},
        )


class InvalidCompatibilityLevelError(SchemaRegistryError, UnprocessableError):
    error_code = 42203


class SchemaTooComplexError(InvalidSchemaError):
    """Checking the schema's compatibility would take more work than one request may cause
    (an anonymous compatibility check runs the same comparison as a registration)."""

    def __init__(self, limit: int) -> None:
        super().__init__(
            "Invalid schema: too complex to check for compatibility: comparing it with an "
            f"earlier version takes more than {limit} steps (pairs of subschemas compared, "
            "patternProperties tried, differences found); simplify it or split it into "
            "references",
            detail={"limit": limit},
        )


class ReferenceExistsError(SchemaRegistryError, UnprocessableError):
    """A version cannot be deleted while another schema references it (Confluent's code)."""

    error_code = 42206


class UnprocessableRequestError(SchemaRegistryError, UnprocessableError):
    """A well-formed JSON body with unknown or ill-typed fields (Confluent answers 422)."""

    error_code = 422


class IncompatibleSchemaError(SchemaRegistryError, ConflictError):
    """Registration refused by the subject's compatibility rule (HTTP 409, code 409)."""

    error_code = 409


def confluent_body(error: ShahrahError) -> tuple[int, dict[str, Any]]:
    """Render any Shahrah error as Confluent's ``{"error_code", "message"}``."""
    if isinstance(error, SchemaRegistryError):
        code = error.error_code
    elif isinstance(error, UnauthorizedError):
        code = 40101
    elif isinstance(error, PayloadTooLargeError | BadRequestError | NotFoundError):
        # Confluent's generic refusals (malformed JSON, unknown paths) carry the bare status.
        code = error.status
    elif error.status >= 500:
        code = 50001
    else:
        code = error.status
    return error.status, {"error_code": code, "message": error.message}
