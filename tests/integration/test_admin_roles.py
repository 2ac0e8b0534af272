"""UI access control: every admin route, for anonymous visitors and for every role."""

from __future__ import annotations

import pytest
from flask import Flask
from werkzeug.routing.converters import AnyConverter

from service.models import Role
from service.settings import Settings
from service.web import create_app
from service.web.auth import declared_access, is_declared
from tests.integration.test_admin_ui import log_in_session, make_user

# The intended matrix, written by hand: the test compares what the views declare with it,
# so it must never be computed from the code under test. A new admin page adds its row here.
EXPECTED_ACCESS: dict[str, Role | None] = {
    "admin.login": None,
    "admin.logout": Role.VIEWER,
    "admin.dashboard": Role.VIEWER,
    "admin.list_jobs": Role.VIEWER,
    "admin.job_page": Role.VIEWER,
    "admin.job_progress": Role.VIEWER,
    "admin.download_results": Role.VIEWER,
    "admin.image_file": Role.VIEWER,
    "admin.image_thumbnail": Role.VIEWER,
    "admin.list_exports": Role.VIEWER,
    "admin.list_models": Role.VIEWER,
    "admin.list_training_runs": Role.VIEWER,
    "admin.training_run": Role.VIEWER,
    "admin.training_plot": Role.VIEWER,
    "admin.new_job": Role.REVIEWER,
    "admin.cancel_job": Role.REVIEWER,
    "admin.confirm_selected": Role.REVIEWER,
    "admin.review_page": Role.REVIEWER,
    "admin.review_next": Role.REVIEWER,
    "admin.review_decide": Role.REVIEWER,
    "admin.review_undo": Role.REVIEWER,
    "admin.review_annotation": Role.REVIEWER,
    "admin.export_now": Role.ADMIN,
    "admin.pin_test_set": Role.ADMIN,
    "admin.activate_model": Role.ADMIN,
    "admin.retrain_now": Role.ADMIN,
    "admin.promote_training_run": Role.ADMIN,
    "admin.rollback_model": Role.ADMIN,
    "admin.image_display": Role.VIEWER,
    "admin.review_change": Role.REVIEWER,
    "admin.suspects_page": Role.VIEWER,
    "admin.rereview_suspect": Role.REVIEWER,
    "admin.list_users": Role.ADMIN,
    "admin.disable_user": Role.ADMIN,
    "admin.enable_user": Role.ADMIN,
    "admin.set_user_role": Role.ADMIN,
    "admin.audit_log": Role.ADMIN,
    "admin.sites_page": Role.VIEWER,
    "admin.save_site": Role.ADMIN,
    "admin.delete_site": Role.ADMIN,
    "admin.species_page": Role.VIEWER,
    "admin.save_species": Role.ADMIN,
    "admin.import_species": Role.ADMIN,
    "admin.export_species": Role.VIEWER,
}


def _admin_app() -> Flask:
    return create_app(Settings(database_url="sqlite://", broker_url="memory://"))


def _admin_routes() -> list[tuple[str, str, str]]:
    """(method, url with sample arguments, endpoint) for every rule of the admin blueprint."""
    app = _admin_app()
    adapter = app.url_map.bind("localhost")
    routes = []
    for rule in app.url_map.iter_rules():
        if rule.endpoint.split(".")[0] != "admin":
            continue
        args = {
            name: sorted(conv.items)[0] if isinstance(conv, AnyConverter) else 1
            for name, conv in rule._converters.items()
        }
        url = adapter.build(rule.endpoint, args)
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            routes.append((method, url, rule.endpoint))
    return routes


ROUTES = _admin_routes()
ROUTE_IDS = [f"{method} {url}" for method, url, _ in ROUTES]


@pytest.fixture()
def app(api_app: Flask) -> Flask:
    api_app.config["WTF_CSRF_ENABLED"] = False  # access control alone; CSRF has its own tests
    return api_app


def test_the_matrix_names_exactly_the_admin_routes() -> None:
    endpoints = {endpoint for _, _, endpoint in ROUTES}
    assert sorted(endpoints - set(EXPECTED_ACCESS)) == [], "add their rows to EXPECTED_ACCESS"
    assert sorted(set(EXPECTED_ACCESS) - endpoints) == [], "these routes are gone"


def test_every_admin_view_declares_its_access() -> None:
    app = _admin_app()
    for _, url, endpoint in ROUTES:
        view = app.view_functions[endpoint]
        assert is_declared(view), f"{url}: add @role_required(Role.X) (or @public) to {endpoint}"
        assert declared_access(view) == EXPECTED_ACCESS[endpoint], endpoint


@pytest.mark.parametrize(("method", "url", "endpoint"), ROUTES, ids=ROUTE_IDS)
def test_anonymous_visitors_are_sent_to_login(
    app: Flask, method: str, url: str, endpoint: str
) -> None:
    response = app.test_client().open(url, method=method)
    if EXPECTED_ACCESS[endpoint] is None:
        assert response.status_code in (200, 400), response.status_code
    elif url.endswith(".json"):
        assert response.status_code == 401
        assert response.get_json()["error"] == "unauthorized"
    else:
        assert response.status_code == 302
        assert response.headers["Location"].startswith("/login?next=")


@pytest.mark.parametrize(("method", "url", "endpoint"), ROUTES, ids=ROUTE_IDS)
def test_each_role_gets_what_it_needs_and_nothing_more(
    app: Flask, api_settings: Settings, method: str, url: str, endpoint: str
) -> None:
    needed = EXPECTED_ACCESS[endpoint]
    for role in (Role.VIEWER, Role.REVIEWER, Role.ADMIN):
        client = app.test_client()
        log_in_session(client, make_user(api_settings, role))
        with client.open(url, method=method) as response:
            allowed = needed is None or role.allows(needed)
            if allowed:
                assert response.status_code not in (401, 403), (role, response.status_code)
                assert not response.headers.get("Location", "").startswith("/login?")
                assert response.status_code < 500, (role, response.get_data(as_text=True))
            else:
                assert response.status_code == 403, (role, response.status_code)
                assert "needs the" in response.get_data(as_text=True)


def test_a_json_endpoint_answers_json_even_when_forbidden_or_missing(
    app: Flask, api_settings: Settings
) -> None:
    client = app.test_client()
    log_in_session(client, make_user(api_settings, Role.VIEWER))
    missing = client.get("/jobs/424242/progress.json")
    assert missing.status_code == 404 and missing.get_json()["error"] == "not_found"
    page = client.get("/jobs/424242")
    assert page.status_code == 404 and "job 424242 does not exist" in page.get_data(as_text=True)
