"""What each API route takes and answers, declared next to it with `@operation(...)`.

The declaration is used twice: it parses the query string and the JSON body with the named
pydantic models (the view receives them as `query=` and `body=`), and it is what
service.web.api.openapi builds the OpenAPI document from, so the two cannot drift apart.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ConfigDict

from service.web.api.inputs import Body, Query, parse_body, parse_query

View = TypeVar("View", bound=Callable[..., Any])
Item = TypeVar("Item", bound=BaseModel)

JSON = "application/json"


class Output(BaseModel):
    """Base of response models: a field the view returns but the model lacks is an error
    in the tests (and in schemathesis' conformance check), so the document stays true."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)


class Error(Output):
    """The one error shape, whatever the status."""

    error: str
    """Machine-readable code, e.g. `not_found`."""
    message: str
    """What went wrong, for humans."""
    details: Any = None
    """Extra data, e.g. the invalid fields of a 400."""


class Sent(Output):
    """What became of the message that hands recorded work to the workers."""

    queued: bool
    """False when the broker was unreachable: the work is recorded and the scheduler sends
    it once the broker answers again (do not submit it twice)."""
    waiting_for_broker: bool
    message: str


class Page(Output, Generic[Item]):
    """One page of a longer list (see `limit` and `offset`)."""

    items: list[Item]
    total: int
    """Rows matching, over all pages."""
    limit: int
    offset: int


class ItemList(Output, Generic[Item]):
    """A whole (short) list."""

    items: list[Item]
    total: int


@dataclass(frozen=True)
class Content:
    """An answer that is not one JSON model: its description and a type per media type."""

    description: str
    media: Mapping[str, Any]
    headers: Mapping[str, str] = field(default_factory=dict)


Answer = type[BaseModel] | Content


@dataclass(frozen=True)
class Operation:
    """One route's declaration: inputs, success answers and the errors beyond the usual."""

    answers: Mapping[int, Answer]
    query: type[Query] | None = None
    body: type[Body] | None = None
    errors: tuple[int, ...] = ()
    raw_body: Content | None = None  # a body that is not JSON (the view reads it itself)
    headers: Mapping[str, str] = field(default_factory=dict)  # optional request headers


_OPERATIONS: dict[Callable[..., Any], Operation] = {}


def operation(
    answers: type[BaseModel] | Mapping[int, Answer],
    *,
    query: type[Query] | None = None,
    body: type[Body] | None = None,
    errors: tuple[int, ...] = (),
    raw_body: Content | None = None,
    headers: Mapping[str, str] | None = None,
) -> Callable[[View], View]:
    """Declare a route's answers (a model for a 200, or {status: model or Content}) and the
    models that parse its query and body. Write it under `@requires(...)`.

    The usual errors need no listing: 400 with a query or body, 413/415 with a body, 401/403
    with a role, 404 with a path id, 500 and 503 always; `errors` adds others (409).
    """
    declared = Operation(
        answers=answers if isinstance(answers, Mapping) else {200: answers},
        query=query,
        body=body,
        errors=errors,
        raw_body=raw_body,
        headers=headers or {},
    )

    def declare(view: View) -> View:
        @functools.wraps(view)
        def parsed(**kwargs: Any) -> Any:
            if query is not None:
                kwargs["query"] = parse_query(query)
            if body is not None:
                kwargs["body"] = parse_body(body)
            return view(**kwargs)

        _OPERATIONS[parsed] = declared
        return parsed  # type: ignore[return-value]

    return declare


def declared_operation(view: Callable[..., Any]) -> Operation | None:
    """The declaration of a view, None if it has none."""
    return _OPERATIONS.get(view)
