"""API security: every route needs a key of the right role; bad input is 4xx JSON, never HTML."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from service.db import dispose_engines
from service.models import Role
from service.settings import Settings
from service.web import create_app
from service.web.auth import declared_access, is_declared

Headers = dict[str, str]

# The intended role matrix. A new API route fails test_matrix_covers_every_route until it
# is added here on purpose, so access is never decided by accident.
EXPECTED_ACCESS: dict[str, Role | None] = {
    "api.health": None,
    "api.openapi": None,
    "api.list_jobs": Role.VIEWER,
    "api.get_job": Role.VIEWER,
    "api.list_predictions": Role.VIEWER,
    "api.export_results": Role.VIEWER,
    "api.list_sites": Role.VIEWER,
    "api.save_site": Role.ADMIN,
    "api.delete_site": Role.ADMIN,
    "api.list_species": Role.VIEWER,
    "api.save_species": Role.ADMIN,
    "api.export_species": Role.VIEWER,
    "api.import_species": Role.ADMIN,
    "api.create_job": Role.REVIEWER,
    "api.cancel_job": Role.REVIEWER,
    "api.list_models": Role.VIEWER,
    "api.get_model": Role.VIEWER,
    "api.activate_model": Role.ADMIN,
    "api.list_keys": Role.ADMIN,
    "api.create_key": Role.ADMIN,
    "api.revoke_key": Role.ADMIN,
    "api.review_stats": Role.VIEWER,
    "api.review_next": Role.REVIEWER,  # a GET, but it claims an item
    "api.review_decide": Role.REVIEWER,
    "api.review_undo": Role.REVIEWER,
    "api.list_suspects": Role.VIEWER,
    "api.rereview_suspect": Role.REVIEWER,
    "api.list_exports": Role.VIEWER,
    "api.get_export": Role.VIEWER,
    "api.get_test_set": Role.VIEWER,
    "api.list_training_runs": Role.VIEWER,
    "api.get_training_run": Role.VIEWER,
    "api.create_export": Role.ADMIN,
    "api.pin_test_set": Role.ADMIN,
    "api.retrain_now": Role.ADMIN,
    "api.promote_training_run": Role.ADMIN,
    "api.rollback_model": Role.ADMIN,
    "api.list_users": Role.ADMIN,
    "api.disable_user": Role.ADMIN,
    "api.enable_user": Role.ADMIN,
    "api.set_user_role": Role.ADMIN,
    "api.list_audit": Role.ADMIN,
}


def _url_map_routes() -> list[tuple[str, str, str]]:
    """(method, url with sample ids, endpoint) for every /api/v1 rule, read from a real app."""
    app = create_app(Settings(database_url="sqlite://", broker_url="memory://"))
    adapter = app.url_map.bind("localhost")
    return [
        (method, adapter.build(rule.endpoint, dict.fromkeys(rule.arguments, 1)), rule.endpoint)
        for rule in app.url_map.iter_rules()
        if rule.rule.startswith("/api/v1/")
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"})
    ]


ROUTES = _url_map_routes()


def _needed(endpoint: str) -> Role | None:
    return EXPECTED_ACCESS.get(endpoint, Role.ADMIN)


def _params(routes: list[tuple[str, str, str]], roles: bool = False) -> list[Any]:
    """pytest params named like "POST /api/v1/jobs" (plus " as viewer" per too-low role)."""
    if not roles:
        return [pytest.param(*r, id=f"{r[0]} {r[1]}") for r in routes]
    return [
        pytest.param(*r, role, id=f"{r[0]} {r[1]} as {role.value}")
        for r in routes
        for role in Role
        if not role.allows(_needed(r[2]) or Role.VIEWER)
    ]


PROTECTED = [r for r in ROUTES if _needed(r[2]) is not None]
WRITES = [r for r in ROUTES if r[0] != "GET"]


def call(
    client: FlaskClient, method: str, url: str, headers: Headers | None = None
) -> TestResponse:
    return client.open(
        url, method=method, headers=headers or {}, json={} if method != "GET" else None
    )


def assert_json_error(response: TestResponse, status: int, code: str | None = None) -> None:
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == "application/json"
    body = response.get_json()
    assert set(body) <= {"error", "message", "details"} and body["message"], body
    if code is not None:
        assert body["error"] == code
    text = response.get_data(as_text=True)
    assert "Traceback" not in text and "<html" not in text.lower()


def test_matrix_covers_every_route() -> None:
    assert {endpoint for _, _, endpoint in ROUTES} == set(EXPECTED_ACCESS)


def test_views_declare_the_expected_access() -> None:
    app = create_app(Settings(database_url="sqlite://", broker_url="memory://"))
    for endpoint, expected in EXPECTED_ACCESS.items():
        view = app.view_functions[endpoint]
        assert is_declared(view), f"{endpoint} does not declare its access"
        assert declared_access(view) == expected, endpoint


def test_write_routes_all_need_more_than_viewer() -> None:
    assert WRITES
    for _, _, endpoint in WRITES:
        needed = EXPECTED_ACCESS[endpoint]
        assert needed is not None and needed != Role.VIEWER, endpoint


@pytest.mark.parametrize(("method", "url", "endpoint"), _params(PROTECTED))
def test_no_key_is_401(api_client: FlaskClient, method: str, url: str, endpoint: str) -> None:
    response = call(api_client, method, url)
    assert_json_error(response, 401, "unauthorized")
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


@pytest.mark.parametrize(("method", "url", "endpoint"), _params(PROTECTED))
def test_bad_key_is_401(
    api_client: FlaskClient, make_key: Callable[..., str], method: str, url: str, endpoint: str
) -> None:
    real = make_key(Role.ADMIN)
    tampered = real[:-4] + ("AAAA" if not real.endswith("AAAA") else "BBBB")
    for bad in (tampered, "hs_nosuchke_" + "x" * 43, "not-a-key", "Bearer"):
        assert_json_error(call(api_client, method, url, {"X-API-Key": bad}), 401, "unauthorized")


@pytest.mark.parametrize(("method", "url", "endpoint"), _params(WRITES))
def test_viewer_key_on_write_route_is_403(
    api_client: FlaskClient, auth: Callable[[Role], Headers], method: str, url: str, endpoint: str
) -> None:
    assert_json_error(call(api_client, method, url, auth(Role.VIEWER)), 403, "forbidden")


@pytest.mark.parametrize(("method", "url", "endpoint", "role"), _params(PROTECTED, roles=True))
def test_role_below_required_is_403(
    api_client: FlaskClient,
    auth: Callable[[Role], Headers],
    method: str,
    url: str,
    endpoint: str,
    role: Role,
) -> None:
    response = call(api_client, method, url, auth(role))
    assert_json_error(response, 403, "forbidden")
    assert response.get_json()["details"]["key_role"] == role.value


@pytest.mark.parametrize(("method", "url", "endpoint"), _params(PROTECTED))
def test_required_role_gets_past_auth(
    api_client: FlaskClient, auth: Callable[[Role], Headers], method: str, url: str, endpoint: str
) -> None:
    needed = EXPECTED_ACCESS[endpoint]
    assert needed is not None
    response = call(api_client, method, url, auth(needed))
    assert response.status_code not in (401, 403), response.get_json()
    assert response.mimetype in ("application/json", "text/csv")


def test_public_routes_need_no_key(api_client: FlaskClient) -> None:
    assert api_client.get("/api/v1/health").status_code == 200
    assert api_client.get("/api/v1/openapi.json").status_code == 200


def test_bearer_header_is_accepted(api_client: FlaskClient, make_key: Callable[..., str]) -> None:
    key = make_key(Role.VIEWER)
    assert (
        api_client.get("/api/v1/jobs", headers={"Authorization": f"Bearer {key}"}).status_code
        == 200
    )
    assert (
        api_client.get("/api/v1/jobs", headers={"Authorization": f"bearer {key}"}).status_code
        == 200
    )
    response = api_client.get("/api/v1/jobs", headers={"Authorization": f"Basic {key}"})
    assert_json_error(response, 401, "unauthorized")


def test_revoked_key_is_401(
    api_client: FlaskClient, auth: Callable[[Role], Headers], make_key: Callable[..., str]
) -> None:
    victim = make_key(Role.VIEWER, name="laptop")
    keys = api_client.get("/api/v1/keys", headers=auth(Role.ADMIN)).get_json()["items"]
    victim_id = next(k["id"] for k in keys if k["name"] == "laptop")
    assert (
        api_client.post(f"/api/v1/keys/{victim_id}/revoke", headers=auth(Role.ADMIN)).status_code
        == 200
    )
    response = api_client.get("/api/v1/jobs", headers={"X-API-Key": victim})
    assert_json_error(response, 401, "unauthorized")


# --- folders outside the allowed roots (the check lives in service.jobs.create_job) ---


@pytest.fixture()
def outside(tmp_path: Path) -> Path:
    folder = tmp_path / "outside"
    folder.mkdir()
    (folder / "secret.jpg").write_bytes(b"not a photo")
    return folder


def _escape_attempts(photos_root: Path, outside: Path) -> list[str]:
    link = photos_root / "innocent"
    link.symlink_to(outside, target_is_directory=True)
    nested = photos_root / "a" / "b"
    nested.mkdir(parents=True)
    return [
        str(photos_root / ".." / "outside"),  # `..` traversal, absolute
        "../outside",  # `..` traversal, relative to the root
        "a/b/../../../outside",  # deeper traversal
        "/etc",  # an absolute path elsewhere
        str(outside),
        "innocent",  # a symlink inside the root pointing outside
        str(link),
        str(link / "."),
    ]


def test_folders_outside_the_roots_are_403(
    api_client: FlaskClient,
    auth: Callable[[Role], Headers],
    active_model: int,
    photos_root: Path,
    outside: Path,
) -> None:
    for folder in _escape_attempts(photos_root, outside):
        response = api_client.post(
            "/api/v1/jobs", json={"folder": folder}, headers=auth(Role.REVIEWER)
        )
        assert_json_error(response, 403, "forbidden")
    listing = api_client.get("/api/v1/jobs", headers=auth(Role.VIEWER)).get_json()
    assert listing["total"] == 0


def test_a_folder_inside_the_roots_is_accepted(
    api_client: FlaskClient,
    auth: Callable[[Role], Headers],
    active_model: int,
    photos_root: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    (photos_root / "site-1").mkdir()
    response = api_client.post(
        "/api/v1/jobs", json={"folder": "site-1"}, headers=auth(Role.REVIEWER)
    )
    assert response.status_code == 201, response.get_json()
    assert response.get_json()["folder"] == str((photos_root / "site-1").resolve())


def test_a_folder_whose_name_is_not_utf8_is_400(
    api_client: FlaskClient,
    auth: Callable[[Role], Headers],
    active_model: int,
    photos_root: Path,
) -> None:
    (photos_root / os.fsdecode(b"caf\xe9")).mkdir()  # Latin-1 bytes: no database stores them
    body = '{"folder": "caf\\udce9"}'  # JSON can spell that name as a lone surrogate
    response = api_client.post(
        "/api/v1/jobs", data=body, content_type="application/json", headers=auth(Role.REVIEWER)
    )
    assert_json_error(response, 400, "bad_input")


# --- bad requests: always 4xx JSON ---


@pytest.mark.parametrize(
    ("data", "content_type", "status", "code"),
    [
        ("{not json", "application/json", 400, "bad_input"),
        ("", "application/json", 400, "bad_input"),
        ("[1, 2]", "application/json", 400, "bad_input"),
        ('{"folder": 5}', "application/json", 400, "bad_input"),
        ('{"folder": "x", "threshold": "high"}', "application/json", 400, "bad_input"),
        ('{"folder": "x", "threshold": "0.5"}', "application/json", 400, "bad_input"),
        ('{"folder": "x", "threshold": 1.5}', "application/json", 400, "bad_input"),
        ('{"folder": "x", "recursive": "yes"}', "application/json", 400, "bad_input"),
        ('{"folder": "x", "extensions": "jpg"}', "application/json", 400, "bad_input"),
        ('{"folder": "x", "model_id": 99999999999}', "application/json", 400, "bad_input"),
        ('{"folder": "x", "colour": "red"}', "application/json", 400, "bad_input"),
        ('{"folder": "x"}', "text/plain", 415, "unsupported_media_type"),
        ("folder=x", "application/x-www-form-urlencoded", 415, "unsupported_media_type"),
    ],
)
def test_bad_job_bodies(
    api_client: FlaskClient,
    auth: Callable[[Role], Headers],
    data: str,
    content_type: str,
    status: int,
    code: str,
) -> None:
    response = api_client.post(
        "/api/v1/jobs", data=data, content_type=content_type, headers=auth(Role.REVIEWER)
    )
    assert_json_error(response, status, code)


def test_bad_body_names_the_field(api_client: FlaskClient, auth: Callable[[Role], Headers]) -> None:
    response = api_client.post(
        "/api/v1/jobs", json={"folder": "x", "threshold": "high"}, headers=auth(Role.REVIEWER)
    )
    assert_json_error(response, 400, "bad_input")
    assert [d["field"] for d in response.get_json()["details"]] == ["threshold"]


@pytest.mark.parametrize(
    ("url", "status"),
    [
        ("/api/v1/jobs/424242", 404),
        ("/api/v1/jobs/424242/predictions", 404),
        ("/api/v1/jobs/424242/results.csv", 404),
        ("/api/v1/jobs/99999999999999999999", 404),
        ("/api/v1/jobs/0", 404),
        ("/api/v1/jobs/-1", 404),
        ("/api/v1/jobs/abc", 404),
        ("/api/v1/models/424242", 404),
        ("/api/v1/no-such-route", 404),
        ("/api/v1/jobs?limit=-1", 400),
        ("/api/v1/jobs?limit=0", 400),
        ("/api/v1/jobs?limit=1001", 400),
        ("/api/v1/jobs?limit=ten", 400),
        ("/api/v1/jobs?offset=-5", 400),
        ("/api/v1/jobs?status=sleeping", 400),
        ("/api/v1/jobs?colour=red", 400),
        ("/api/v1/jobs/1/predictions?min_confidence=abc", 400),
        ("/api/v1/jobs/1/predictions?min_confidence=nan", 400),
        ("/api/v1/jobs/1/predictions?max_confidence=2", 400),
        ("/api/v1/jobs/1/predictions?min_confidence=0.9&max_confidence=0.1", 400),
        ("/api/v1/jobs/1/predictions?needs_review=maybe", 400),
        ("/api/v1/jobs/1/predictions?failed=2", 400),
        ("/api/v1/jobs/1/results.csv?format=xml", 400),
    ],
)
def test_bad_reads(
    api_client: FlaskClient, auth: Callable[[Role], Headers], url: str, status: int
) -> None:
    assert_json_error(api_client.get(url, headers=auth(Role.VIEWER)), status)


def test_wrong_method_is_405_json(api_client: FlaskClient, auth: Callable[[Role], Headers]) -> None:
    response = api_client.delete("/api/v1/jobs", headers=auth(Role.ADMIN))
    assert_json_error(response, 405, "method_not_allowed")
    assert "POST" in response.headers["Allow"]


def test_oversized_body_is_413_json(
    api_client: FlaskClient, auth: Callable[[Role], Headers]
) -> None:
    body = '{"folder": "' + "x" * (2 * 1024 * 1024) + '"}'
    response = api_client.post(
        "/api/v1/jobs", data=body, content_type="application/json", headers=auth(Role.REVIEWER)
    )
    assert_json_error(response, 413)


def test_unexpected_error_is_500_json_without_details(
    api_client: FlaskClient, auth: Callable[[Role], Headers], monkeypatch: pytest.MonkeyPatch
) -> None:
    def explode(session: object) -> None:
        raise RuntimeError("password=hunter2 in /srv/secret/path")

    monkeypatch.setattr("service.registry.list_models", explode)
    response = api_client.get("/api/v1/models", headers=auth(Role.VIEWER))
    assert_json_error(response, 500, "internal_error")
    assert "hunter2" not in response.get_data(as_text=True)


def test_unreachable_database_is_503_json(tmp_path: Path) -> None:
    missing = tmp_path / "no" / "such" / "dir" / "db.sqlite"
    app = create_app(Settings(database_url=f"sqlite:///{missing}", broker_url="memory://"))
    client = app.test_client()
    try:
        health = client.get("/api/v1/health")
        assert health.status_code == 503
        assert health.get_json() == {"status": "error", "database": "unavailable"}
        response = client.get("/api/v1/jobs", headers={"X-API-Key": "hs_abcdefgh_" + "x" * 43})
        assert_json_error(response, 503, "service_unavailable")
    finally:
        dispose_engines()
    assert not os.path.exists(missing.parent)
