"""Running an operator action from a form, with the API's validation and error messages.

A page builds the same request body the HTTP API takes (``registry.payloads``),
validates it with :func:`core.web.parse_model` and runs the same service
function in one transaction through :func:`registry.api.write`, which wakes the
publisher. What the service refuses comes back as messages per form field, so
the page can show each next to the field it is about.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from aiohttp import web
from pydantic import BaseModel
from sqlalchemy.ext.asyncio import AsyncSession

from core.errors import BadRequestError, ConflictError, NotFoundError, ShahrahError
from core.web import parse_model
from registry.api import write

__all__ = ["FORM_ERROR", "Outcome", "attempt", "choices", "errors_of", "perform"]

B = TypeVar("B", bound=BaseModel)
T = TypeVar("T")

FORM_ERROR = ""  # key of a message about the form as a whole

#: Errors a person can correct in the form; anything else is the kit's error page.
_CORRECTABLE = (BadRequestError, ConflictError, NotFoundError)


@dataclass
class Outcome(Generic[T]):
    value: T | None = None
    errors: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.errors


def errors_of(
    error: ShahrahError, fields: Mapping[str, str], *, blame: str = FORM_ERROR
) -> dict[str, str]:
    """The error's message(s) keyed by form field.

    ``fields`` maps a body field (the first part of a validation error's location,
    or a service error's ``detail['field']``) to the form field showing it; an
    error naming no known field goes to ``blame`` (a field the page knows the error
    is about, e.g. the code on a "already exists"), else to the form as a whole.
    """
    found: dict[str, str] = {}
    detail = error.detail
    items = detail if isinstance(detail, list) else [detail] if isinstance(detail, dict) else []
    for item in items:
        if not isinstance(item, dict) or "field" not in item:
            continue
        head = str(item["field"]).split(".")[0]
        target = fields.get(head)
        if target is not None and target not in found:
            found[target] = str(item.get("message") or error.message)
    if not found:
        found[blame] = error.message
    return found


Runner = Callable[[web.Request, Callable[[AsyncSession], Awaitable[T]]], Awaitable[T]]


async def attempt(
    request: web.Request,
    action: Callable[[AsyncSession], Awaitable[T]],
    *,
    fields: Mapping[str, str] | None = None,
    blame: str = FORM_ERROR,
    run: Runner[T] = write,
) -> Outcome[T]:
    """Run ``action`` in one transaction; a correctable refusal becomes form errors."""
    try:
        return Outcome(await run(request, action))
    except _CORRECTABLE as e:
        return Outcome(errors=errors_of(e, fields or {}, blame=blame))


async def perform(
    request: web.Request,
    model: type[B],
    data: Mapping[str, Any],
    action: Callable[[AsyncSession, B], Awaitable[T]],
    *,
    fields: Mapping[str, str],
    blame: str = FORM_ERROR,
    run: Runner[T] = write,
) -> Outcome[T]:
    """Validate ``data`` as ``model`` (the API's body) and run ``action`` with it."""
    try:
        body = parse_model(model, data, where="form")
    except BadRequestError as e:
        return Outcome(errors=errors_of(e, fields, blame=blame))
    return await attempt(request, lambda s: action(s, body), fields=fields, blame=blame, run=run)


def choices(pairs: Iterable[tuple[str, str]], prompt: str) -> list[tuple[str, str]]:
    """Options for a select: a prompt meaning "none chosen yet", then ``pairs``."""
    return [("", prompt), *pairs]
