"""Domain exceptions, rendered once by the API, the UI and the CLI."""

from __future__ import annotations

from typing import Any


class HerpscoreError(Exception):
    """Base of every error a user may see; `code` is the machine-readable name."""

    code = "error"
    http_status = 400

    def __init__(self, message: str, details: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details

    def to_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {"error": self.code, "message": self.message}
        if self.details is not None:
            body["details"] = self.details
        return body


class BadInput(HerpscoreError):
    code = "bad_input"
    http_status = 400


class Unauthorized(HerpscoreError):
    code = "unauthorized"
    http_status = 401


class Forbidden(HerpscoreError):
    code = "forbidden"
    http_status = 403


class NotFound(HerpscoreError):
    code = "not_found"
    http_status = 404


class InvalidState(HerpscoreError):
    code = "invalid_state"
    http_status = 409


class InvalidModel(BadInput):
    code = "invalid_model"


class KeyReused(HerpscoreError):
    """An Idempotency-Key sent again with a different request."""

    code = "idempotency_key_reused"
    http_status = 422
