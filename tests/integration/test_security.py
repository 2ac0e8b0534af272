"""Attacks on the web app through the Flask test client (SQLite and PostgreSQL): rate limits,
session lifetime, user disable and roles, headers, NUL/CRLF/long names, body caps, identity."""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
from flask.testing import FlaskClient
from sqlalchemy import select

from service import apikeys, users
from service.db import session_scope
from service.models import Annotation, AuditEntry, ModelActivation, Role
from service.settings import Settings
from service.web import create_app
from tests.conftest import REDIS_URL, skip_or_fail
from tests.integration.test_admin_ui import PASSWORD, csrf_token, make_user
from tests.integration.test_review import seed_queue

Headers = dict[str, str]
STRONG_SECRET = "0123456789abcdef" * 4


def app_with(settings: Settings) -> FlaskClient:
    app = create_app(settings)
    app.testing = True
    return app.test_client()


def log_in(client: FlaskClient, username: str, password: str = PASSWORD, **kw: object) -> int:
    """Log in through the form; returns the status of the POST."""
    token = csrf_token(client)
    response = client.post(
        "/login", data={"username": username, "password": password, "csrf_token": token}, **kw
    )
    return response.status_code


def assert_json_error(response: object, status: int) -> dict[str, object]:
    assert response.status_code == status, response.get_data(as_text=True)  # type: ignore[attr-defined]
    body = response.get_json()  # type: ignore[attr-defined]
    assert set(body) <= {"error", "message", "details"} and body["message"]
    return body  # type: ignore[no-any-return]


# ---------------------------------------------------------------- 14: rate limits


def test_login_locks_out_after_failures_even_with_the_right_password(
    api_settings: Settings,
) -> None:
    client = app_with(api_settings.model_copy(update={"login_rate_limit": "3 per minute"}))
    make_user(api_settings, Role.VIEWER, "maria")
    for _ in range(3):
        assert log_in(client, "maria", "wrong-password") == 401
    response = client.post(
        "/login",
        data={"username": "maria", "password": PASSWORD, "csrf_token": csrf_token(client)},
    )
    assert response.status_code == 429
    page = response.get_data(as_text=True)
    assert "Too many failed attempts" in page and "Traceback" not in page


def test_login_lockout_follows_the_username_across_addresses(api_settings: Settings) -> None:
    client = app_with(api_settings.model_copy(update={"login_rate_limit": "2 per minute"}))
    make_user(api_settings, Role.VIEWER, "maria")
    make_user(api_settings, Role.VIEWER, "jose")
    for i in range(2):
        assert log_in(client, "maria", "wrong", environ_base={"REMOTE_ADDR": f"10.0.0.{i}"}) == 401
    assert log_in(client, "MARIA", environ_base={"REMOTE_ADDR": "10.0.0.9"}) == 429
    assert log_in(client, "jose", environ_base={"REMOTE_ADDR": "10.0.0.8"}) == 303


def test_api_key_failures_lock_out_the_address(
    api_settings: Settings, make_key: Callable[..., str]
) -> None:
    client = app_with(api_settings.model_copy(update={"api_auth_rate_limit": "3 per minute"}))
    good = {"X-API-Key": make_key(Role.VIEWER)}
    assert client.get("/api/v1/jobs", headers=good).status_code == 200  # successes never count
    for _ in range(3):
        bad = {"X-API-Key": "hs_guessing_" + uuid.uuid4().hex}
        assert_json_error(client.get("/api/v1/jobs", headers=bad), 401)
    body = assert_json_error(client.get("/api/v1/jobs", headers=good), 429)
    assert body["error"] == "too_many_requests"
    other = {"REMOTE_ADDR": "10.1.1.1"}
    assert client.get("/api/v1/jobs", headers=good, environ_base=other).status_code == 200


def test_limits_are_shared_through_redis(api_settings: Settings) -> None:
    """With a Redis broker the counts live in Redis: two web processes share one limit."""
    import redis

    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2).ping()
    except redis.RedisError:
        skip_or_fail(f"Redis is not reachable at {REDIS_URL}")
    prefix = f"herpscore-test-{uuid.uuid4().hex}"
    settings = api_settings.model_copy(
        update={
            "broker_url": REDIS_URL,
            "rate_limit_key_prefix": prefix,
            "login_rate_limit": "2 per minute",
        }
    )
    assert settings.rate_limit_storage_uri == REDIS_URL
    make_user(api_settings, Role.VIEWER, "maria")
    first, second = app_with(settings), app_with(settings)
    assert log_in(first, "maria", "wrong") == 401
    assert log_in(second, "maria", "wrong") == 401
    assert log_in(first, "maria") == 429
    keys = redis.Redis.from_url(REDIS_URL).keys(f"*{prefix}*")
    assert keys
    redis.Redis.from_url(REDIS_URL).delete(*keys)


# ---------------------------------------------------------------- 15: sessions, disable, roles


def test_a_copied_cookie_dies_at_logout(api_client: FlaskClient, api_settings: Settings) -> None:
    make_user(api_settings, Role.VIEWER, "maria")
    assert log_in(api_client, "maria") == 303
    cookie = api_client.get_cookie("session")
    assert cookie is not None
    thief = api_client.application.test_client()
    thief.set_cookie("session", cookie.value)
    assert thief.get("/").status_code == 200
    token = csrf_token(api_client, "/")
    assert api_client.post("/logout", data={"csrf_token": token}).status_code == 303
    assert thief.get("/").status_code == 302


def test_a_new_password_ends_every_session(api_client: FlaskClient, api_settings: Settings) -> None:
    make_user(api_settings, Role.VIEWER, "maria")
    assert log_in(api_client, "maria") == 303
    with session_scope(api_settings.db_url) as session:
        users.set_password(session, "maria", "another-password-1")
    assert api_client.get("/").status_code == 302


def test_disabling_a_user_stops_their_sessions_and_keys(
    api_client: FlaskClient, api_settings: Settings, auth: Callable[[Role], Headers]
) -> None:
    user_id = make_user(api_settings, Role.REVIEWER, "maria")
    with session_scope(api_settings.db_url) as session:
        _, secret = apikeys.create_key(session, "maria-laptop", Role.REVIEWER, user_id=user_id)
    theirs = {"X-API-Key": secret}
    assert log_in(api_client, "maria") == 303
    assert api_client.get("/api/v1/jobs", headers=theirs).status_code == 200
    admin = auth(Role.ADMIN)

    disabled = api_client.post(f"/api/v1/users/{user_id}/disable", headers=admin)
    assert disabled.status_code == 200 and disabled.get_json()["disabled"] is True
    assert api_client.get("/").status_code == 302
    assert_json_error(api_client.get("/api/v1/jobs", headers=theirs), 401)
    assert log_in(api_client, "maria") == 401

    assert api_client.post(f"/api/v1/users/{user_id}/enable", headers=admin).status_code == 200
    assert api_client.get("/api/v1/jobs", headers=theirs).status_code == 200
    assert log_in(api_client, "maria") == 303


def test_role_changes_apply_to_the_next_request(
    api_client: FlaskClient, api_settings: Settings, auth: Callable[[Role], Headers]
) -> None:
    user_id = make_user(api_settings, Role.VIEWER, "maria")
    assert log_in(api_client, "maria") == 303
    assert api_client.get("/jobs/new").status_code == 403
    changed = api_client.post(
        f"/api/v1/users/{user_id}/role", json={"role": "reviewer"}, headers=auth(Role.ADMIN)
    )
    assert changed.status_code == 200 and changed.get_json()["role"] == "reviewer"
    assert api_client.get("/jobs/new").status_code == 200
    bad = api_client.post(
        f"/api/v1/users/{user_id}/role", json={"role": "root"}, headers=auth(Role.ADMIN)
    )
    assert_json_error(bad, 400)


def test_admins_manage_users_in_the_ui(api_client: FlaskClient, api_settings: Settings) -> None:
    make_user(api_settings, Role.ADMIN, "boss")
    make_user(api_settings, Role.VIEWER, "maria")
    assert log_in(api_client, "boss") == 303
    page = api_client.get("/users").get_data(as_text=True)
    assert "maria" in page
    token = csrf_token(api_client, "/users")
    assert (
        api_client.post("/users/maria/role", data={"role": "admin", "csrf_token": token})
    ).status_code == 303
    assert api_client.post("/users/maria/disable", data={"csrf_token": token}).status_code == 303
    with session_scope(api_settings.db_url) as session:
        maria = users.require_user(session, "maria")
        assert maria.disabled and maria.role is Role.ADMIN
    assert api_client.post("/users/boss/disable", data={"csrf_token": token}).status_code == 303
    with session_scope(api_settings.db_url) as session:  # the last enabled admin stays
        assert not users.require_user(session, "boss").disabled
    audit_page = api_client.get("/audit").get_data(as_text=True)
    assert "user.disable" in audit_page and "user.set_role" in audit_page


def test_cli_disables_users_and_changes_roles(api_settings: Settings) -> None:
    from click.testing import CliRunner

    from service.cli import main

    make_user(api_settings, Role.VIEWER, "maria")
    env = {"HERPSCORE_DATABASE_URL": api_settings.db_url, "HERPSCORE_DATA_DIR": "unused"}
    runner = CliRunner()
    assert runner.invoke(main, ["users", "set-role", "maria", "reviewer"], env=env).exit_code == 0
    assert runner.invoke(main, ["users", "disable", "maria"], env=env).exit_code == 0
    missing = runner.invoke(main, ["users", "disable", "nobody"], env=env)
    assert missing.exit_code == 2 and "does not exist" in missing.output
    with session_scope(api_settings.db_url) as session:
        maria = users.require_user(session, "maria")
        assert maria.disabled and maria.role is Role.REVIEWER
        actions = session.scalars(select(AuditEntry.action).where(AuditEntry.actor == "cli"))
        assert set(actions) == {"user.set_role", "user.disable"}


# ---------------------------------------------------------------- 16: headers, cookies, secret


@pytest.mark.parametrize("path", ["/login", "/api/v1/health", "/api/v1/nowhere", "/healthz"])
def test_every_response_carries_the_security_headers(api_client: FlaskClient, path: str) -> None:
    response = api_client.get(path)
    csp = response.headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert "unsafe-inline" not in csp
    assert response.headers["X-Frame-Options"] == "DENY"
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Referrer-Policy"] == "same-origin"


def test_no_template_has_inline_script_or_style() -> None:
    templates = Path(__file__).resolve().parents[2] / "service" / "web" / "templates"
    for template in templates.rglob("*.html"):
        text = template.read_text(encoding="utf-8")
        assert not re.search(r"<script(?![^>]*\bsrc=)|<style|\sstyle=|\son[a-z]+=", text), template


def test_secure_cookie_setting(api_settings: Settings) -> None:
    make_user(api_settings, Role.VIEWER, "maria")
    client = app_with(api_settings.model_copy(update={"cookie_secure": True}))
    log_in(client, "maria")
    cookie = client.get_cookie("session")
    assert cookie is not None and cookie.secure
    assert "max-age" in client.get("/login").headers["Strict-Transport-Security"]


@pytest.mark.parametrize("secret", ["changeme", "secret-key-for-herpscore", "a" * 64])
def test_a_weak_secret_key_is_refused(api_settings: Settings, secret: str) -> None:
    with pytest.raises(ValueError, match="HERPSCORE_SECRET_KEY is weak"):
        create_app(api_settings.model_copy(update={"secret_key": secret}))
    create_app(api_settings.model_copy(update={"secret_key": STRONG_SECRET}))


def test_compose_sends_cookies_over_https_only() -> None:
    yaml = pytest.importorskip("yaml")

    path = Path(__file__).resolve().parents[2] / "docker-compose.yml"
    compose = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert compose["x-common"]["environment"]["HERPSCORE_COOKIE_SECURE"].endswith(":-true}")


# ---------------------------------------------------------------- 18: NUL, CRLF, long names


def test_nul_in_the_label_filter_is_400(
    api_client: FlaskClient, api_settings: Settings, auth: Callable[[Role], Headers]
) -> None:
    seeded = seed_queue(api_settings.db_url, count=2)
    url = f"/api/v1/jobs/{seeded.job_id}/predictions?label=Naja%00x"
    assert_json_error(api_client.get(url, headers=auth(Role.VIEWER)), 400)


def test_nul_in_the_login_username_is_400(api_client: FlaskClient) -> None:
    token = csrf_token(api_client)
    response = api_client.post(
        "/login", data={"username": "ma\x00ria", "password": PASSWORD, "csrf_token": token}
    )
    assert response.status_code == 400
    assert "Traceback" not in response.get_data(as_text=True)


def test_nul_in_a_key_name_is_400(api_client: FlaskClient, auth: Callable[[Role], Headers]) -> None:
    response = api_client.post(
        "/api/v1/keys", json={"name": "cam\u0000era", "role": "viewer"}, headers=auth(Role.ADMIN)
    )
    assert_json_error(response, 400)


def test_crlf_in_next_is_400(api_client: FlaskClient, api_settings: Settings) -> None:
    make_user(api_settings, Role.VIEWER, "maria")
    assert api_client.get("/login?next=/jobs%0d%0aSet-Cookie:%20x=1").status_code == 400
    token = csrf_token(api_client)
    response = api_client.post(
        "/login?next=/jobs%0d%0aSet-Cookie:%20x=1",
        data={"username": "maria", "password": PASSWORD, "csrf_token": token},
    )
    assert response.status_code == 400


def test_a_name_over_255_bytes_is_400(
    api_client: FlaskClient, auth: Callable[[Role], Headers]
) -> None:
    for folder in ("a" * 256, "survey/" + "é" * 128 + "/x"):
        response = api_client.post(
            "/api/v1/jobs", json={"folder": folder}, headers=auth(Role.REVIEWER)
        )
        assert_json_error(response, 400)


def test_cli_refuses_a_name_over_255_bytes(api_settings: Settings, photos_root: Path) -> None:
    from click.testing import CliRunner

    from service.cli import main

    env = {
        "HERPSCORE_DATABASE_URL": api_settings.db_url,
        "HERPSCORE_ALLOWED_ROOTS": str(photos_root),
        "HERPSCORE_BROKER_URL": "memory://",
    }
    result = CliRunner().invoke(main, ["score", str(photos_root / ("a" * 300))], env=env)
    assert result.exit_code == 2, result.output
    assert "longer than 255 bytes" in result.output and "Traceback" not in result.output


# ---------------------------------------------------------------- 19: principals, audit


def test_a_key_named_like_a_user_cannot_undo_their_decision(
    api_client: FlaskClient, api_settings: Settings, make_key: Callable[..., str]
) -> None:
    seed_queue(api_settings.db_url, count=2)
    make_user(api_settings, Role.REVIEWER, "ana")
    assert log_in(api_client, "ana") == 303
    token = {"X-CSRFToken": csrf_token(api_client, "/review")}
    item = api_client.post("/review/next.json", json={}, headers=token).get_json()["item"]
    decided = api_client.post(
        f"/review/items/{item['id']}/decision.json",
        json={"decision": "unusable"},
        headers=token,
    )
    assert decided.status_code == 200, decided.get_data(as_text=True)
    impostor = {"X-API-Key": make_key(Role.REVIEWER, name="ana")}
    undone = api_client.post("/api/v1/review/undo", headers=impostor, json={})
    assert undone.status_code == 200 and undone.get_json()["annotation"] is None
    with session_scope(api_settings.db_url) as session:
        note = session.scalars(select(Annotation)).one()
        assert note.reviewer == "ana" and note.undone_at is None


def test_key_names_are_unique(api_client: FlaskClient, auth: Callable[[Role], Headers]) -> None:
    admin = auth(Role.ADMIN)
    first = api_client.post("/api/v1/keys", json={"name": "trap", "role": "viewer"}, headers=admin)
    assert first.status_code == 201
    again = api_client.post("/api/v1/keys", json={"name": "trap", "role": "viewer"}, headers=admin)
    assert_json_error(again, 409)


def test_admin_actions_are_audited_with_their_actor(
    api_client: FlaskClient,
    api_settings: Settings,
    auth: Callable[[Role], Headers],
    active_model: int,
) -> None:
    admin = auth(Role.ADMIN)
    with session_scope(api_settings.db_url) as session:
        admin_key_id = apikeys.list_keys(session)[0].id
    response = api_client.post(f"/api/v1/models/{active_model}/activate", headers=admin)
    assert response.status_code == 200
    created = api_client.post("/api/v1/keys", json={"name": "cam", "role": "viewer"}, headers=admin)
    api_client.post(f"/api/v1/keys/{created.get_json()['id']}/revoke", headers=admin)
    page = api_client.get("/api/v1/audit?limit=2", headers=admin).get_json()
    assert page["total"] >= 3 and len(page["items"]) == 2
    assert [e["action"] for e in page["items"]] == ["key.revoke", "key.create"]
    assert {e["actor"] for e in page["items"]} == {f"key:{admin_key_id}"}
    assert_json_error(api_client.get("/api/v1/audit", headers=auth(Role.REVIEWER)), 403)


def test_api_activation_records_its_actor(
    api_client: FlaskClient,
    api_settings: Settings,
    auth: Callable[[Role], Headers],
    tmp_path: Path,
) -> None:
    from service import registry
    from tests.support.models import make_model_folder

    with session_scope(api_settings.db_url) as session:
        model = registry.add_model(session, api_settings, make_model_folder(tmp_path / "m"))
        model_id = model.id
    admin = auth(Role.ADMIN)
    assert api_client.post(f"/api/v1/models/{model_id}/activate", headers=admin).status_code == 200
    with session_scope(api_settings.db_url) as session:
        last = session.scalars(select(ModelActivation).order_by(ModelActivation.id.desc())).first()
        assert last is not None and re.fullmatch(r"key:\d+", last.actor)


def test_cli_activation_and_rollback_are_audited_as_the_cli(
    api_settings: Settings, tmp_path: Path
) -> None:
    from click.testing import CliRunner

    from service import registry
    from service.cli import main
    from tests.support.models import make_model_folder

    with session_scope(api_settings.db_url) as session:
        first, second = (
            registry.add_model(session, api_settings, make_model_folder(tmp_path / n, seed=s)).id
            for n, s in (("a", 1), ("b", 2))
        )
    env = {"HERPSCORE_DATABASE_URL": api_settings.db_url, "HERPSCORE_DATA_DIR": "unused"}
    runner = CliRunner()
    for args in (["activate", str(first)], ["activate", str(second)], ["rollback"]):
        result = runner.invoke(main, ["models", *args], env=env)
        assert result.exit_code == 0, result.output
    with session_scope(api_settings.db_url) as session:
        activations = session.scalars(select(ModelActivation).order_by(ModelActivation.id))
        assert [(a.model_version_id, a.actor) for a in activations] == [
            (first, "cli"), (second, "cli"), (first, "cli"),
        ]  # fmt: skip
        entries = session.scalars(
            select(AuditEntry).where(AuditEntry.action.startswith("model.")).order_by(AuditEntry.id)
        )
        assert [(e.actor, e.action, e.target) for e in entries] == [
            ("cli", "model.activate", f"model:{first}"),
            ("cli", "model.activate", f"model:{second}"),
            ("cli", "model.rollback", f"model:{first}"),
        ]


# ---------------------------------------------------------------- 20: body caps, ~user


def test_ui_json_endpoints_refuse_huge_bodies(
    api_client: FlaskClient, api_settings: Settings
) -> None:
    make_user(api_settings, Role.REVIEWER, "ana")
    assert log_in(api_client, "ana") == 303
    token = {"X-CSRFToken": csrf_token(api_client, "/review")}
    huge = b'{"job_id": 1, "pad": "' + b"x" * (3 * 1024 * 1024) + b'"}'
    response = api_client.post(
        "/review/next.json", data=huge, content_type="application/json", headers=token
    )
    assert response.status_code == 413


def test_home_folders_of_unknown_and_real_users_look_the_same(
    api_client: FlaskClient, auth: Callable[[Role], Headers]
) -> None:
    answers = []
    for folder in ("~nosuchuser-7f3a/photos", "~root/photos"):
        response = api_client.post(
            "/api/v1/jobs", json={"folder": folder}, headers=auth(Role.REVIEWER)
        )
        body = assert_json_error(response, 403)
        answers.append((body["error"], body["details"]))
    assert answers[0] == answers[1]
