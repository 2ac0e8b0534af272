"""The OpenAPI document: built from the routes, complete, valid, and true to the answers."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from flask import Flask, jsonify, request
from flask.testing import FlaskClient
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from openapi_spec_validator import validate
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from service.models import Role
from service.web.api.openapi import PREFIX
from service.web.api.operations import declared_operation
from tests.integration.test_api_security import EXPECTED_ACCESS
from tests.support.openapi import ResponseChecker, spec_path

Auth = Callable[[Role], dict[str, str]]


@pytest.fixture()
def document(api_client: FlaskClient) -> dict[str, Any]:
    response = api_client.get(f"{PREFIX}/openapi.json")  # no key: it is documentation
    assert response.status_code == 200
    spec: dict[str, Any] = response.get_json()
    return spec


def _registered(app: Flask) -> Iterator[tuple[str, str, str]]:
    """(OpenAPI path, method, endpoint) of every /api/v1 rule of the app."""
    for rule in app.url_map.iter_rules():
        if rule.rule.startswith(f"{PREFIX}/"):
            for method in (rule.methods or set()) - {"HEAD", "OPTIONS"}:
                yield spec_path(rule.rule), method.lower(), rule.endpoint


def test_every_route_is_documented_with_its_methods_and_role(
    api_app: Flask, document: dict[str, Any]
) -> None:
    registered = {(path, method): endpoint for path, method, endpoint in _registered(api_app)}
    documented = {(path, method) for path, ops in document["paths"].items() for method in ops}
    assert documented == set(registered)
    for (path, method), endpoint in registered.items():
        view = api_app.view_functions[endpoint]
        assert declared_operation(view), f"{endpoint}: add @operation(...) under its @requires"
        op = document["paths"][path][method]
        assert op["summary"], f"{endpoint}: give the view a docstring (its first line)"
        assert op["operationId"] == endpoint.removeprefix("api.")
        # The hand-written matrix of test_api_security, not the code under test.
        role = EXPECTED_ACCESS[endpoint]
        assert op["x-required-role"] == (role.value if role else "public"), endpoint
        assert (op.get("security") == []) == (role is None), endpoint
        if role is not None:
            assert {"401", "403"} <= set(op["responses"]), endpoint
        assert (
            f"| {method.upper()} {path} | {op['x-required-role']} |"
            in document["info"]["description"]
        )
        params = {p["name"] for p in op.get("parameters", []) if p["in"] == "path"}
        assert params == set(re.findall(r"{(\w+)}", path)), endpoint


def test_inputs_are_described_by_the_models_that_parse_them(
    api_app: Flask, document: dict[str, Any]
) -> None:
    schemas = document["components"]["schemas"]
    for path, method, endpoint in _registered(api_app):
        declared = declared_operation(api_app.view_functions[endpoint])
        assert declared is not None, endpoint
        op = document["paths"][path][method]
        query = {p["name"] for p in op.get("parameters", []) if p["in"] == "query"}
        assert query == set(declared.query.model_fields if declared.query else ()), endpoint
        if declared.raw_body is not None:  # a non-JSON body the view reads itself (CSV)
            assert set(op["requestBody"]["content"]) == set(declared.raw_body.media), endpoint
            continue
        if declared.body is None:
            assert "requestBody" not in op, endpoint
            continue
        ref = op["requestBody"]["content"]["application/json"]["schema"]["$ref"]
        body = schemas[ref.rsplit("/", 1)[-1]]
        assert set(body["properties"]) == set(declared.body.model_fields), endpoint
        assert body["additionalProperties"] is False, endpoint  # unknown fields are a 400
        assert {"400", "413", "415"} <= set(op["responses"]), endpoint


def test_document_is_valid_openapi_3_1(document: dict[str, Any]) -> None:
    assert document["openapi"] == "3.1.0"
    validate(document)  # raises on the first violation
    schemes = document["components"]["securitySchemes"]
    assert schemes["ApiKeyHeader"] == {"type": "apiKey", "in": "header", "name": "X-API-Key"}
    assert {"ApiKeyHeader": []} in document["security"]
    refs = set(re.findall(r"#/components/schemas/(\w+)", str(document)))
    assert refs and refs <= set(document["components"]["schemas"])
    assert document["components"]["schemas"]["Error"]["required"] == ["error", "message"]


def test_the_checker_catches_an_undocumented_field(api_app: Flask) -> None:
    """The fixture's response check is what keeps response models true; prove it bites."""
    checker = ResponseChecker(api_app)
    with api_app.test_request_context(f"{PREFIX}/health"):
        request.url_rule = api_app.url_map.bind("localhost").match(
            f"{PREFIX}/health", return_rule=True
        )[0]
        checker(jsonify({"status": "ok", "database": "ok", "version": "9"}))
        checker(jsonify({"status": "ok", "database": "ok"}))
    assert len(checker.failures) == 1 and "version" in checker.failures[0]


# A short fuzzing run, in-process: enough to catch a 500 or an undocumented answer on every
# route without making the suite slow. Raise EXAMPLES locally for a longer hunt.
EXAMPLES = 10


@pytest.mark.slow
def test_schemathesis_finds_no_server_error_and_no_undocumented_answer(
    api_app: Flask, api_client: FlaskClient, auth: Auth, active_model: int, photos_root: Path
) -> None:
    (photos_root / "site-1").mkdir()
    created = api_client.post(
        f"{PREFIX}/jobs", json={"folder": "site-1"}, headers=auth(Role.REVIEWER)
    )
    assert created.status_code == 201, created.get_json()
    admin = auth(Role.ADMIN)
    schema = schemathesis.openapi.from_wsgi(f"{PREFIX}/openapi.json", api_app)
    checks = [
        not_a_server_error,
        status_code_conformance,
        content_type_conformance,
        response_schema_conformance,
    ]
    tested = set()
    for operation in schema.get_all_operations():
        api_operation = operation.ok()
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @settings(
                max_examples=EXAMPLES,
                deadline=None,
                database=None,
                derandomize=True,
                phases=[Phase.generate],
                suppress_health_check=list(HealthCheck),
            )
            @given(case=api_operation.as_strategy(generation_mode=mode))
            def run(case: schemathesis.Case) -> None:
                case.call_and_validate(headers=admin, checks=checks)

            try:
                run()
            except Unsatisfiable:  # nothing to make invalid (no parameters, no body)
                assert mode is GenerationMode.NEGATIVE, api_operation.label
            tested.add(api_operation.label)
    # schemathesis leaves out the document's own route.
    routes = {f"{method.upper()} {path}" for path, method, _ in _registered(api_app)}
    assert tested == routes - {"GET /openapi.json"}
