"""Errors rendered once: domain errors and HTTP errors as JSON, never a stack trace under /api/."""

from __future__ import annotations

import logging
import re

from flask import Flask, Response, jsonify, request
from flask.typing import ResponseReturnValue
from sqlalchemy.exc import OperationalError
from werkzeug.exceptions import HTTPException, InternalServerError

from service.errors import HerpscoreError

log = logging.getLogger(__name__)

API_PREFIX = "/api/"


def register_error_handlers(app: Flask) -> None:
    """Install the app-wide handlers (app-wide so that routing 404/405 are covered too)."""
    app.register_error_handler(HerpscoreError, render_domain_error)
    app.register_error_handler(HTTPException, render_http_error)
    app.register_error_handler(OperationalError, render_database_error)
    app.register_error_handler(Exception, render_unexpected_error)


def error_response(status: int, code: str, message: str, details: object = None) -> Response:
    """The one JSON error shape: {"error", "message", "details"?}."""
    body: dict[str, object] = {"error": code, "message": message}
    if details is not None:
        body["details"] = details
    response = jsonify(body)
    response.status_code = status
    return response


def render_domain_error(exc: HerpscoreError) -> ResponseReturnValue:
    response = error_response(exc.http_status, exc.code, exc.message, exc.details)
    if exc.http_status == 401:
        response.headers["WWW-Authenticate"] = 'Bearer realm="herpscore"'
    return response


def render_http_error(exc: HTTPException) -> ResponseReturnValue:
    if not request.path.startswith(API_PREFIX):
        return exc
    status = exc.code or 500
    code = re.sub(r"[^a-z0-9]+", "_", (exc.name or "error").lower()).strip("_")
    response = error_response(status, code, exc.description or exc.name)
    for name, value in exc.get_headers():
        if name.lower() != "content-type":  # keep e.g. Allow on 405
            response.headers[name] = value
    return response


def render_database_error(exc: OperationalError) -> ResponseReturnValue:
    log.error("database unavailable on %s %s: %s", request.method, request.path, exc.orig)
    if not request.path.startswith(API_PREFIX):
        return InternalServerError(original_exception=exc)
    response = error_response(
        503, "service_unavailable", "the database is unavailable or busy; try again shortly"
    )
    response.headers["Retry-After"] = "5"
    return response


def render_unexpected_error(exc: Exception) -> ResponseReturnValue:
    log.exception("unexpected error on %s %s", request.method, request.path, exc_info=exc)
    if not request.path.startswith(API_PREFIX):
        return InternalServerError(original_exception=exc)
    return error_response(500, "internal_error", "unexpected server error; it has been logged")
