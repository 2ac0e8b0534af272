"""The Flask app factory: settings in, an app with the JSON API (and later the admin UI) out."""

from __future__ import annotations

from typing import Any

from flask import Flask
from werkzeug.routing import IntegerConverter, Map

from service.settings import Settings, get_settings

MAX_DB_ID = 2**31 - 1


class IdConverter(IntegerConverter):
    """`<id:name>`: a positive id that fits a 32-bit INTEGER column, else the route is a 404."""

    def __init__(self, url_map: Map, *args: Any, **kwargs: Any) -> None:
        super().__init__(url_map, min=1, max=MAX_DB_ID)


def create_app(settings: Settings | None = None) -> Flask:
    """Build the web app; nothing connects to the database until a request needs it."""
    settings = settings or get_settings()
    if settings.log_json:
        from service.logs import use_json

        use_json()
    app = Flask(__name__)
    app.config["SECRET_KEY"] = settings.flask_secret()
    app.extensions["herpscore"] = settings
    app.json.sort_keys = False  # type: ignore[attr-defined]
    app.url_map.converters["id"] = IdConverter

    from service.web.admin import bp as admin_bp
    from service.web.admin import init_admin
    from service.web.api import bp as api_bp
    from service.web.errors import register_error_handlers
    from service.web.health import bp as health_bp
    from service.web.security import init_security

    register_error_handlers(app)
    init_security(app, settings, ui=admin_bp, api=api_bp)
    app.register_blueprint(api_bp)
    app.register_blueprint(health_bp)
    # The UI: sessions, CSRF on every form; the API authenticates by key, so no CSRF there.
    init_admin(app, csrf_exempt=(api_bp, health_bp))
    return app
