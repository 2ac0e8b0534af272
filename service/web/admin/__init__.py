"""The `admin` blueprint: the browser UI (sessions, roles, CSRF-protected forms).

Access is declared per view, as in the API (the same registry, service.web.auth):
`@role_required(Role.X)` for the least role a view needs, `@public` for the login page.
A view that declares nothing needs an admin (fail closed). The check runs once, before
every view of this blueprint: anonymous visitors are sent to the login page (or get a 401
on JSON endpoints), logged-in users without the role get a 403.

Adding pages: write `service/web/admin/<name>.py` that does `from service.web.admin import
bp, role_required`, declares its views on `bp` (under `@role_required`), and add its name to
the import at the bottom of this file.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from flask import (
    Blueprint,
    Flask,
    abort,
    current_app,
    flash,
    redirect,
    render_template,
    request,
    url_for,
)
from flask.typing import ResponseReturnValue
from flask_login import current_user
from flask_wtf.csrf import CSRFError, CSRFProtect
from werkzeug.exceptions import HTTPException

from service.errors import HerpscoreError
from service.models import Role
from service.tasks_client import Enqueued
from service.web.auth import declared_access, public
from service.web.auth import requires as role_required
from service.web.errors import error_response

__all__ = [
    "bp",
    "describe_problems",
    "flash_enqueued",
    "init_admin",
    "public",
    "role_required",
    "safe_next_url",
    "wants_json",
]

bp = Blueprint("admin", __name__)
csrf = CSRFProtect()


def init_admin(app: Flask, csrf_exempt: tuple[Blueprint, ...] = ()) -> None:
    """Register the UI on an app: the blueprint, Flask-Login and CSRF on every form.

    `csrf_exempt` lists blueprints that authenticate otherwise (the key-based JSON API).
    """
    from service.web.admin.auth import login_manager

    app.config["SESSION_COOKIE_SAMESITE"] = "Lax"
    app.config["SESSION_COOKIE_HTTPONLY"] = True
    app.config.setdefault("WTF_CSRF_TIME_LIMIT", None)  # the token lives as long as the session
    login_manager.init_app(app)
    csrf.init_app(app)
    for blueprint in csrf_exempt:
        csrf.exempt(blueprint)
    app.register_blueprint(bp)


def wants_json() -> bool:
    """True for the fetch() endpoints (`*.json`) and for clients that prefer JSON."""
    best = request.accept_mimetypes.best_match(["text/html", "application/json"])
    return request.path.endswith(".json") or best == "application/json"


def safe_next_url(target: str | None, fallback: str) -> str:
    """A same-site path to go back to (never another host: no open redirect)."""
    if not target:
        return fallback
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not target.startswith("/") or target.startswith("//"):
        return fallback
    if "\\" in target:
        return fallback
    return target


def flash_enqueued(sent: Enqueued, detail: str = "") -> None:
    """Say what became of the work just recorded: queued, or waiting for the broker."""
    message = sent.message[:1].upper() + sent.message[1:] + (f" ({detail})" if detail else "")
    flash(message + ".", "success" if sent.queued else "warning")


def back_url() -> str:
    """Where a failed form post returns: the page it came from, if it is ours."""
    referrer = request.referrer
    if referrer:
        parts = urlsplit(referrer)
        if parts.netloc == request.host:
            path = parts.path + (f"?{parts.query}" if parts.query else "")
            return safe_next_url(path, url_for("admin.dashboard"))
    return url_for("admin.dashboard")


@bp.before_request
def _check_access() -> ResponseReturnValue | None:
    assert request.endpoint is not None  # blueprint hooks run only for matched routes
    needed = declared_access(current_app.view_functions[request.endpoint])
    if needed is None:
        return None
    if not current_user.is_authenticated:
        if wants_json():
            abort(401)
        from service.web.admin.auth import login_manager

        return login_manager.unauthorized()
    if not current_user.role.allows(needed):
        abort(403, f"this page needs the {needed.value} role; you are {current_user.role.value}")
    return None


@bp.context_processor
def _template_helpers() -> dict[str, object]:
    def can(role: str) -> bool:
        return bool(current_user.is_authenticated and current_user.role.allows(Role(role)))

    return {"can": can, "Role": Role}


def describe_problems(details: object) -> str:
    """Field problems ([{"field", "message"}]) as one sentence a person can act on."""
    if not isinstance(details, list):
        return ""
    parts = []
    for problem in details:
        if isinstance(problem, dict):
            message = str(problem.get("message", "")).removeprefix("Value error, ")
            field = str(problem.get("field", "")).replace("_", " ")
            parts.append(message if field in ("", "(body)") else f"{field}: {message}")
    return "; ".join(parts) + "." if parts else ""


@bp.errorhandler(HerpscoreError)
def _domain_error(exc: HerpscoreError) -> ResponseReturnValue:
    """Domain errors as a flashed message: back to the form after a POST, else an error page."""
    if wants_json():
        return error_response(exc.http_status, exc.code, exc.message, exc.details)
    problems = describe_problems(exc.details)
    flash(f"{exc.message}: {problems}" if problems else exc.message, "error")
    if request.method == "POST":
        return redirect(back_url(), 303)
    return render_template("error.html", status=exc.http_status), exc.http_status


@bp.errorhandler(HTTPException)
def _http_error(exc: HTTPException) -> ResponseReturnValue:
    status = exc.code or 500
    if status < 400:  # redirects raised by routing
        return exc
    if wants_json():
        return error_response(
            status, (exc.name or "error").lower().replace(" ", "_"), exc.description or ""
        )
    message: str | None = exc.name
    if isinstance(exc, CSRFError):
        message = "The form was missing its security token or it expired; please try again."
    elif status == 429:
        message = "Too many failed attempts. Please wait a few minutes and try again."
    elif status == 413:
        message = "That request was too large."
    elif status in (400, 403, 404, 409):
        message = exc.description or exc.name
    flash(message or "error", "error")
    return render_template("error.html", status=status), status


# View modules attach their routes to `bp` when imported: add yours to this import.
from service.web.admin import (  # noqa: E402, F401
    auth,
    dashboard,
    exports,
    field,
    jobs,
    media,
    models,
    review,
    suspects,
    training,
    users,
)
