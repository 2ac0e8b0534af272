"""Web hardening: security headers, cookie flags, body caps, NUL guards and rate limits.

See docs/security.md for what each measure protects against and the settings behind it.
"""

from __future__ import annotations

import logging

from flask import Blueprint, Flask, Response, request
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address
from werkzeug.exceptions import BadRequest

from service.settings import Settings

log = logging.getLogger(__name__)

# No inline script or style anywhere: templates load static files only, and JS sets styles
# through the CSSOM (allowed by CSP), never through style attributes in markup.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
    "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'self'; "
    "form-action 'self'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    # Same-origin: the UI's "back to the form" needs its own referrer, nobody else gets it.
    "Referrer-Policy": "same-origin",
    "Cross-Origin-Opener-Policy": "same-origin",
}
LOGIN_ENDPOINT = "admin.login"


def init_security(app: Flask, settings: Settings, ui: Blueprint, api: Blueprint) -> Limiter:
    """Install every measure on the app; returns the limiter (tests reset it)."""
    weak = settings.weak_secret_key()
    if weak:
        raise ValueError(weak)
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    app.config["SESSION_COOKIE_SECURE"] = settings.cookie_secure
    app.config["REMEMBER_COOKIE_SECURE"] = settings.cookie_secure
    app.before_request(_refuse_nul_bytes)
    hsts = settings.cookie_secure  # the cookie flag says "this site is served over HTTPS"

    @app.after_request
    def _headers(response: Response) -> Response:
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        if hsts:
            response.headers.setdefault("Strict-Transport-Security", "max-age=31536000")
        return response

    return _init_limiter(app, settings, ui, api)


def _refuse_nul_bytes() -> None:
    """A NUL in a query, a form or a JSON string is a 400: PostgreSQL cannot store one.
    (An HTTP 400, not BadInput: the UI answers it with an error page, not a redirect.)"""
    values = [*request.args.values()]
    if request.mimetype in ("application/x-www-form-urlencoded", "multipart/form-data"):
        values += request.form.values()
    if any("\x00" in value for value in values) or (
        request.is_json and b"\\u0000" in request.get_data()
    ):
        raise BadRequest("the request contains a NUL character")


def _init_limiter(app: Flask, settings: Settings, ui: Blueprint, api: Blueprint) -> Limiter:
    """Failed logins and failed API keys are counted per client (and per username for logins);
    past the limit, the next attempt is a 429 even with the right password or key."""
    limiter = Limiter(
        get_remote_address,
        app=app,
        storage_uri=settings.rate_limit_storage_uri,
        key_prefix=settings.rate_limit_key_prefix,
        headers_enabled=True,
        swallow_errors=True,  # a store outage must not lock everybody out
    )

    def not_a_login() -> bool:
        return request.endpoint != LOGIN_ENDPOINT or request.method != "POST"

    def failed(response: Response) -> bool:
        return response.status_code == 401

    def login_username() -> str:
        return "user:" + request.form.get("username", "").strip().lower()[:100]

    for key_func in (get_remote_address, login_username):
        limiter.limit(
            settings.login_rate_limit,
            key_func=key_func,
            deduct_when=failed,
            exempt_when=not_a_login,
            per_method=True,
        )(ui)
    limiter.limit(settings.api_auth_rate_limit, deduct_when=failed)(api)
    return limiter
