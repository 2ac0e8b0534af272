"""Check API responses against the app's own OpenAPI document (status, media type, body)."""

from __future__ import annotations

import re
from typing import Any

from flask import Flask, Response, request
from jsonschema import Draft202012Validator

from service.web.api.openapi import PREFIX, openapi_document
from service.web.api.operations import declared_operation

FORMATS = Draft202012Validator.FORMAT_CHECKER


def spec_path(rule: str) -> str:
    """A Flask rule as an OpenAPI path: `/api/v1/jobs/<id:job_id>` -> `/jobs/{job_id}`."""
    return re.sub(r"<(?:[^:<>]+:)?(\w+)>", r"{\1}", rule.removeprefix(PREFIX))


class ResponseChecker:
    """An `after_request` hook that records every /api/v1 answer the document does not
    describe: an undocumented status or media type, or a JSON body that breaks its schema
    (a missing field, a field the response model lacks, a wrong type or format)."""

    def __init__(self, app: Flask) -> None:
        self.document = openapi_document(app)
        self.components = {"components": self.document["components"]}
        self._validators: dict[int, Draft202012Validator] = {}
        self.views = app.view_functions
        self.failures: list[str] = []

    def __call__(self, response: Response) -> Response:
        rule = request.url_rule
        if (
            rule is None
            or not rule.rule.startswith(PREFIX)
            or request.method in ("HEAD", "OPTIONS")
        ):
            return response
        if declared_operation(self.views[rule.endpoint]) is None:
            return response  # test_openapi asks for the declaration; one failure is enough
        where = f"{request.method} {request.path} -> {response.status_code}"
        op = self.document["paths"][spec_path(rule.rule)][request.method.lower()]
        answer = op["responses"].get(str(response.status_code))
        if answer is None:
            self.failures.append(f"{where}: status not in the document ({op['operationId']})")
            return response
        if response.status_code == 204 and not answer.get("content"):
            return response  # no body, as documented
        media = (response.mimetype or "").lower()
        if media not in answer.get("content", {}):
            self.failures.append(f"{where}: media type {media!r} not in the document")
            return response
        if media == "application/json" and not response.is_streamed:
            for error in self._validator(answer).iter_errors(response.get_json()):
                path = "/".join(str(p) for p in error.absolute_path) or "(body)"
                self.failures.append(f"{where}: {path}: {error.message[:300]}")
        return response

    def _validator(self, answer: dict[str, Any]) -> Draft202012Validator:
        key = id(answer)
        if key not in self._validators:
            # The schema's root carries the components, so "#/components/..." resolves.
            schema = {**answer["content"]["application/json"]["schema"], **self.components}
            self._validators[key] = Draft202012Validator(schema, format_checker=FORMATS)
        return self._validators[key]


def install_checker(app: Flask) -> ResponseChecker:
    """Check every API answer of this app; the caller asserts `checker.failures` is empty."""
    checker = ResponseChecker(app)
    app.after_request(checker)
    return checker


def describe(failures: list[str]) -> str:
    return (
        "answers that the OpenAPI document does not describe (fix the view or the response "
        "model / @operation next to it):\n" + "\n".join(failures[:20])
    )
