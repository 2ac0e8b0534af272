"""The OpenAPI 3.1 document of /api/v1, built from the URL map, each view's `@requires` role
and its `@operation` declaration (the pydantic models that parse its input and describe its
answers); nothing here names a route."""

from __future__ import annotations

import copy
import inspect
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

from flask import Flask
from pydantic import TypeAdapter
from pydantic.json_schema import GenerateJsonSchema
from werkzeug.routing import Rule
from werkzeug.routing.converters import IntegerConverter, NumberConverter

from service.models import Role
from service.web.api.inputs import Query
from service.web.api.operations import JSON, Content, Error, Operation, declared_operation
from service.web.auth import declared_access

PREFIX = "/api/v1"
RULE_ARGUMENT = re.compile(r"<(?:[^:<>]+:)?(\w+)>")  # `<id:job_id>` -> job_id

INTRO = """\
herpscore scores folders of field photos with an ONNX species classifier and keeps every
prediction. Every route needs an API key, sent as `X-API-Key: <key>` (or
`Authorization: Bearer <key>`), except the public ones in the table below.

Roles: admin > reviewer > viewer; a role may do everything a lower role may. Each operation
also states its role in `x-required-role`. A missing or invalid key gives 401, a key whose
role is too low 403. Every error, whatever the status, has the body
`{"error": code, "message": text, "details"?: any}`.
"""

ERRORS = {
    400: "Invalid input: body, query parameter or folder (`details` lists the fields).",
    401: "Missing, invalid or revoked API key.",
    403: "The key's role is too low (or, for a folder, it is outside the allowed roots).",
    404: "No such resource.",
    409: "The resource is in a state that does not allow this.",
    413: "The body is larger than 1 MiB.",
    415: "The body is not `application/json`.",
    422: "The `Idempotency-Key` was sent before with a different body (`details.job_id`).",
    500: "Unexpected server error (logged, no details).",
    503: "The database is unavailable or busy.",
    429: "Too many failed API-key checks from this address; see `Retry-After`.",
}

SECURITY_SCHEMES = {
    "ApiKeyHeader": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
    "BearerKey": {
        "type": "http",
        "scheme": "bearer",
        "description": "The same API key, as `Authorization: Bearer <key>`.",
    },
}

# Missing views still appear (path, role, path ids); the tests demand a declaration.
_UNDECLARED = Operation(answers={200: Content("Undocumented answer.", {JSON: Any})})


@dataclass(frozen=True)
class Route:
    """One method of one /api/v1 URL rule, with its view's declarations."""

    rule: Rule
    method: str
    view: Callable[..., Any]
    role: Role | None
    op: Operation

    @property
    def path(self) -> str:
        return RULE_ARGUMENT.sub(r"{\1}", self.rule.rule.removeprefix(PREFIX))


def openapi_document(app: Flask) -> dict[str, Any]:
    """The document for this app, built on first use (the URL map is fixed by then)."""
    document: dict[str, Any] | None = app.extensions.get("herpscore.openapi")
    if document is None:
        document = app.extensions["herpscore.openapi"] = build_document(app)
    return document


def api_routes(app: Flask) -> Iterator[Route]:
    """Every method of every rule under /api/v1, in path order."""
    for rule in sorted(app.url_map.iter_rules(), key=lambda r: r.rule):
        if not rule.rule.startswith(PREFIX + "/"):
            continue
        view = app.view_functions[rule.endpoint]
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            op = declared_operation(view) or _UNDECLARED
            yield Route(rule, method.lower(), view, declared_access(view), op)


def build_document(app: Flask) -> dict[str, Any]:
    routes = list(api_routes(app))
    schemas = _Schemas(routes)
    paths: dict[str, dict[str, Any]] = {}
    for route in routes:
        paths.setdefault(route.path, {})[route.method] = _operation(route, schemas)
    role_rows = "\n".join(
        f"| {r.method.upper()} {r.path} | {r.role.value if r.role else 'public'} |" for r in routes
    )
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "herpscore API",
            "version": "1",
            "description": f"{INTRO}\n| Route | Least role |\n|---|---|\n{role_rows}\n",
        },
        "servers": [{"url": PREFIX}],
        "security": [{"ApiKeyHeader": []}, {"BearerKey": []}],
        "paths": paths,
        "components": {"securitySchemes": SECURITY_SCHEMES, "schemas": schemas.components},
    }


class _NoFieldTitles(GenerateJsonSchema):
    """Pydantic's schemas without a "title" on every field (the name says it)."""

    def field_title_should_be_set(self, schema: Any) -> bool:
        return False


class _Schemas:
    """Every type the routes name, rendered by pydantic in one pass into shared components."""

    def __init__(self, routes: list[Route]) -> None:
        inputs: dict[tuple[Any, str], TypeAdapter[Any]] = {
            (Error, "serialization"): TypeAdapter(Error)
        }
        for route in routes:
            for model in (route.op.query, route.op.body):
                if model is not None:
                    inputs[(model, "validation")] = TypeAdapter(model)
            for answer in route.op.answers.values():
                for kind in answer.media.values() if isinstance(answer, Content) else [answer]:
                    inputs[(kind, "serialization")] = TypeAdapter(kind)
        refs, defs = TypeAdapter.json_schemas(
            [(kind, mode, adapter) for (kind, mode), adapter in inputs.items()],  # type: ignore[misc]
            ref_template="#/components/schemas/{model}",
            schema_generator=_NoFieldTitles,
        )
        self._refs = refs
        self.components: dict[str, Any] = defs.get("$defs", {})
        # Query models become parameters, not schemas of their own.
        queries = {route.op.query for route in routes if route.op.query is not None}
        self._queries = {model: self.components.pop(self._name(model)) for model in queries}

    def request(self, kind: Any) -> dict[str, Any]:
        """The schema (usually a reference) of a type the API reads."""
        schema: dict[str, Any] = self._refs[(kind, "validation")]
        return schema

    def answer(self, kind: Any) -> dict[str, Any]:
        """The schema (usually a reference) of a type the API writes."""
        schema: dict[str, Any] = self._refs[(kind, "serialization")]
        return schema

    def query_parameters(self, model: type[Query]) -> list[dict[str, Any]]:
        schema = copy.deepcopy(self._queries[model])
        required = set(schema.get("required", []))
        params = []
        for name, prop in schema.get("properties", {}).items():
            param: dict[str, Any] = {"name": name, "in": "query", "required": name in required}
            if "description" in prop:
                param["description"] = prop.pop("description")
            param["schema"] = _without_null(prop)
            params.append(param)
        return params

    def _name(self, model: Any) -> str:
        return str(self.request(model)["$ref"]).rsplit("/", 1)[-1]


def _without_null(schema: dict[str, Any]) -> dict[str, Any]:
    """An optional query parameter is absent, never null: drop the null branch."""
    schema = {k: v for k, v in schema.items() if not (k == "default" and v is None)}
    branches = schema.get("anyOf")
    if branches:
        kept = [b for b in branches if b != {"type": "null"}]
        if len(kept) == 1:
            del schema["anyOf"]
            schema = {**kept[0], **schema}
        else:
            schema["anyOf"] = kept
    return schema


def _operation(route: Route, schemas: _Schemas) -> dict[str, Any]:
    op = route.op
    summary, _, description = (inspect.getdoc(route.view) or route.rule.endpoint).partition("\n")
    result: dict[str, Any] = {
        "operationId": route.rule.endpoint.removeprefix("api."),
        "tags": [route.view.__module__.rsplit(".", 1)[-1]],
        "summary": summary.rstrip("."),
        "x-required-role": route.role.value if route.role else "public",
    }
    if description.strip():
        result["description"] = description.strip()
    if route.role is None:
        result["security"] = []
    parameters = _path_parameters(route.rule)
    if op.query is not None:
        parameters += schemas.query_parameters(op.query)
    parameters += [
        {"name": name, "in": "header", "required": False, "description": text,
         "schema": {"type": "string"}}
        for name, text in op.headers.items()
    ]  # fmt: skip
    if parameters:
        result["parameters"] = parameters
    if op.body is not None:
        result["requestBody"] = {
            "required": True,
            "content": {JSON: {"schema": schemas.request(op.body)}},
        }
    elif op.raw_body is not None:
        result["requestBody"] = {
            "required": True,
            "description": op.raw_body.description,
            "content": {m: {"schema": schemas.answer(t)} for m, t in op.raw_body.media.items()},
        }
    result["responses"] = _responses(route, schemas)
    return result


def _responses(route: Route, schemas: _Schemas) -> dict[str, Any]:
    op = route.op
    responses: dict[str, Any] = {}
    for status, answer in sorted(op.answers.items()):
        if isinstance(answer, Content):
            responses[str(status)] = {
                "description": answer.description,
                "content": {m: {"schema": schemas.answer(t)} for m, t in answer.media.items()},
            }
            if answer.headers:
                responses[str(status)]["headers"] = {
                    name: {"description": text, "schema": {"type": "string"}}
                    for name, text in answer.headers.items()
                }
        else:
            doc = (inspect.getdoc(answer) or answer.__name__).partition("\n")[0]
            responses[str(status)] = {
                "description": f"{HTTPStatus(status).phrase}: {doc}",
                "content": {JSON: {"schema": schemas.answer(answer)}},
            }
    errors = set(op.errors) | {500, 503}
    if op.query is not None or op.body is not None or op.raw_body is not None:
        errors.add(400)
    if op.body is not None or op.raw_body is not None:
        errors |= {413, 415}
    if route.role is not None:
        errors |= {401, 403, 429}
    if route.rule.arguments:
        errors.add(404)
    for status in errors - set(op.answers):
        responses[str(status)] = {
            "description": ERRORS[status],
            "content": {JSON: {"schema": schemas.answer(Error)}},
        }
    return dict(sorted(responses.items()))


def _path_parameters(rule: Rule) -> list[dict[str, Any]]:
    params = []
    for name in RULE_ARGUMENT.findall(rule.rule):
        converter = rule._converters[name]
        schema: dict[str, Any] = {"type": "string"}
        if isinstance(converter, NumberConverter):
            schema = {"type": "integer" if isinstance(converter, IntegerConverter) else "number"}
            low = converter.min if converter.min is not None else (None if converter.signed else 0)
            if low is not None:
                schema["minimum"] = low
            if converter.max is not None:
                schema["maximum"] = converter.max
        param = {"name": name, "in": "path", "required": True, "schema": schema}
        if name.endswith("_id"):
            param["description"] = f"The {name.removesuffix('_id').replace('_', ' ')} id."
        params.append(param)
    return params
