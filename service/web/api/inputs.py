"""Request parsing with pydantic: bodies, query strings and pages; failures become BadInput."""

from __future__ import annotations

from typing import Any, TypeVar

from flask import request
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from werkzeug.exceptions import UnsupportedMediaType

from service.errors import BadInput

M = TypeVar("M", bound=BaseModel)

MAX_LIMIT = 1000
MAX_OFFSET = 2**31 - 1


class Body(BaseModel):
    """Base of JSON bodies: unknown fields are errors, not silently ignored."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)


class Query(BaseModel):
    """Base of query strings: unknown parameters are errors (a typo must not drop a filter)."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)


class PageQuery(Query):
    limit: int = Field(default=100, ge=1, le=MAX_LIMIT)
    """Page size."""
    offset: int = Field(default=0, ge=0, le=MAX_OFFSET)
    """Rows to skip."""


def parse_body(model: type[M]) -> M:
    """The JSON body validated strictly (no "1" for 1); 415 without a JSON content type."""
    if not request.is_json:
        raise UnsupportedMediaType("send a JSON body with 'Content-Type: application/json'")
    try:
        return model.model_validate_json(request.get_data(), strict=True)
    except ValidationError as exc:
        raise BadInput("invalid request body", validation_details(exc)) from None


def parse_query(model: type[M]) -> M:
    """The query string validated (strings coerced: "0.5", "true"); repeated keys use the first."""
    try:
        return model.model_validate(request.args.to_dict())
    except ValidationError as exc:
        raise BadInput("invalid query parameters", validation_details(exc)) from None


def validation_details(exc: ValidationError) -> list[dict[str, Any]]:
    """Pydantic errors as [{"field", "message", "type"}], without echoing the input."""
    return [
        {
            "field": ".".join(str(part) for part in err["loc"]) or "(body)",
            "message": err["msg"],
            "type": err["type"],
        }
        for err in exc.errors(include_url=False, include_input=False, include_context=False)
    ]


def page(items: list[Any], total: int, query: PageQuery) -> dict[str, Any]:
    """The one shape of a paginated answer."""
    return {"items": items, "total": total, "limit": query.limit, "offset": query.offset}
