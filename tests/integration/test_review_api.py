"""The review queue over the JSON API, with keys of every role (SQLite and PostgreSQL)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from flask.testing import FlaskClient
from sqlalchemy import event, select
from sqlalchemy.engine import Engine

from service import apikeys
from service.db import session_scope
from service.models import Annotation, ReviewItem, ReviewStatus, Role
from service.settings import Settings
from tests.integration.test_review import seed_queue

Headers = dict[str, str]


@pytest.fixture()
def seeded(api_settings: Settings):
    return seed_queue(api_settings.db_url, count=4)


@pytest.fixture()
def principals() -> dict[str, str]:
    """Key name -> the principal (`key:<id>`) that decisions and claims are recorded as."""
    return {}


@pytest.fixture()
def reviewer(api_settings: Settings, principals: dict[str, str]) -> Callable[[str], Headers]:
    """Headers for a reviewer key with the given name (the reviewer is the key, not the name)."""

    def headers(name: str) -> Headers:
        with session_scope(api_settings.db_url) as session:
            key, plaintext = apikeys.create_key(session, name, Role.REVIEWER)
            principals[name] = f"key:{key.id}"
        return {"X-API-Key": plaintext}

    return headers


def _decide(client: FlaskClient, headers: Headers, item_id: int, **body) -> dict:
    response = client.post(f"/api/v1/review/items/{item_id}/decision", headers=headers, json=body)
    return {"status": response.status_code, **response.get_json()}


def test_next_claims_and_is_sticky(api_client, seeded, reviewer, principals):
    ana, ben = reviewer("ana"), reviewer("ben")
    body = api_client.get("/api/v1/review/next", headers=ana).get_json()
    item = body["item"]
    assert item["id"] == seeded.item_ids[0] and item["claimed_by"] == principals["ana"]
    assert item["image"]["rel_path"] == "site_a/img_000.jpg"
    assert [t["rank"] for t in item["prediction"]["topk"]] == [1, 2, 3]
    assert item["reason"] == "low_confidence<0.9" and item["labels"]
    assert body["stats"]["available"] == 3 and body["stats"]["reviewer"] == principals["ana"]
    again = api_client.get("/api/v1/review/next", headers=ana).get_json()
    assert again["item"]["id"] == item["id"]
    other = api_client.get("/api/v1/review/next", headers=ben).get_json()
    assert other["item"]["id"] == seeded.item_ids[1]


def test_empty_queue_is_item_null(api_client, api_settings, reviewer, principals):
    seeded = seed_queue(api_settings.db_url, count=1)
    ana = reviewer("ana")
    item_id = api_client.get("/api/v1/review/next", headers=ana).get_json()["item"]["id"]
    assert _decide(api_client, ana, item_id, decision="unknown")["status"] == 201
    response = api_client.get("/api/v1/review/next", headers=ana)
    assert response.status_code == 200
    assert response.get_json() == {
        "item": None,
        "stats": {
            "pending": 0,
            "available": 0,
            "claimed": 0,
            "done": 1,
            "reviewer": principals["ana"],
            "decided_by_you_24h": 1,
        },
    }
    assert seeded.item_ids == [item_id]


def test_decide_records_an_annotation_as_the_key(
    api_client, api_settings, seeded, reviewer, principals
):
    ana = reviewer("ana")
    item_id = api_client.get("/api/v1/review/next", headers=ana).get_json()["item"]["id"]
    body = _decide(api_client, ana, item_id, decision="label", label=" Naja samarensis ")
    assert body["status"] == 201
    note = body["annotation"]
    assert (note["reviewer"], note["decision"], note["label"]) == (
        principals["ana"],
        "label",
        "Naja samarensis",
    )
    assert note["machine_label"] == "Naja_philippinensis" and note["undone_at"] is None
    with session_scope(api_settings.db_url) as session:
        assert session.get(ReviewItem, item_id).status == ReviewStatus.DONE
        assert session.scalar(select(Annotation.label)) == "Naja samarensis"


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"decision": "label"}, 400, "bad_input"),
        ({"decision": "label", "label": "  "}, 400, "bad_input"),
        ({"decision": "unknown", "label": "Naja"}, 400, "bad_input"),
        ({"decision": "maybe"}, 400, "bad_input"),
        ({"decision": "skip", "extra": 1}, 400, "bad_input"),
        ({"decision": "label", "label": 5}, 400, "bad_input"),
        ({}, 400, "bad_input"),
    ],
)
def test_bad_decisions_are_400(api_client, seeded, reviewer, body, status, code):
    ana = reviewer("ana")
    item_id = api_client.get("/api/v1/review/next", headers=ana).get_json()["item"]["id"]
    got = _decide(api_client, ana, item_id, **body)
    assert (got["status"], got["error"]) == (status, code)


def test_conflicts_are_409_and_missing_items_404(api_client, seeded, reviewer, principals):
    ana, ben = reviewer("ana"), reviewer("ben")
    item_id = api_client.get("/api/v1/review/next", headers=ana).get_json()["item"]["id"]
    taken = _decide(api_client, ben, item_id, decision="unknown")
    assert (taken["status"], taken["error"]) == (409, "invalid_state")
    assert taken["details"]["claimed_by"] == principals["ana"]
    assert _decide(api_client, ana, item_id, decision="unknown")["status"] == 201
    assert _decide(api_client, ana, item_id, decision="unusable")["status"] == 409
    assert _decide(api_client, ana, 999_999, decision="unknown")["status"] == 404


def test_skip_then_undo_through_the_api(api_client, seeded, reviewer):
    ana = reviewer("ana")
    first = api_client.get("/api/v1/review/next", headers=ana).get_json()["item"]["id"]
    assert _decide(api_client, ana, first, decision="skip")["status"] == 201
    second = api_client.get("/api/v1/review/next", headers=ana).get_json()["item"]["id"]
    assert second != first
    assert _decide(api_client, ana, second, decision="unusable")["status"] == 201

    undone = api_client.post("/api/v1/review/undo", headers=ana).get_json()
    assert undone["annotation"]["decision"] == "unusable"
    assert undone["annotation"]["undone_at"] is not None
    assert undone["item"]["id"] == second and undone["item"]["status"] == "pending"
    assert api_client.get("/api/v1/review/next", headers=ana).get_json()["item"]["id"] == second
    undone = api_client.post("/api/v1/review/undo", headers=ana).get_json()
    assert undone["item"]["id"] == first  # the skip, undone: first is ana's again
    assert api_client.get("/api/v1/review/next", headers=ana).get_json()["item"]["id"] == first
    assert api_client.post("/api/v1/review/undo", headers=ana).get_json() == {
        "annotation": None,
        "item": None,
    }


def test_stats_for_viewers_and_by_job(api_client, api_settings, auth, reviewer):
    one = seed_queue(api_settings.db_url, count=3)
    seed_queue(api_settings.db_url, count=2)
    api_client.get("/api/v1/review/next", headers=reviewer("ana"))
    stats = api_client.get("/api/v1/review/stats", headers=auth(Role.VIEWER)).get_json()
    assert (stats["pending"], stats["available"], stats["claimed"]) == (5, 4, 1)
    by_job = api_client.get(
        f"/api/v1/review/stats?job_id={one.job_id}", headers=auth(Role.VIEWER)
    ).get_json()
    assert (by_job["pending"], by_job["claimed"]) == (3, 1)
    bad = api_client.get("/api/v1/review/stats?job_id=zero", headers=auth(Role.VIEWER))
    assert bad.status_code == 400


@pytest.mark.parametrize(
    ("method", "url"),
    [
        ("GET", "/api/v1/review/next"),
        ("POST", "/api/v1/review/items/1/decision"),
        ("POST", "/api/v1/review/undo"),
    ],
)
def test_viewers_may_not_act(api_client, auth, method, url):
    response = api_client.open(url, method=method, headers=auth(Role.VIEWER), json={})
    assert response.status_code == 403
    assert api_client.open(url, method=method, json={}).status_code == 401


# ----------------------------------------------------------------------- the page's endpoints


def _login(client: FlaskClient, settings: Settings, role: Role) -> str:
    """Log a new user in through the form; returns the page's CSRF token."""
    import re

    from service import users

    with session_scope(settings.db_url) as session:
        users.create_user(session, f"{role.value}-user", "long-enough-pw", role)
    token = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', client.get("/login").text)
    assert token is not None
    form = {"csrf_token": token[1], "username": f"{role.value}-user", "password": "long-enough-pw"}
    assert client.post("/login", data=form).status_code == 303
    meta = re.search(r'<meta name="csrf-token" content="([^"]+)"', client.get("/").text)
    assert meta is not None
    return meta[1]


def test_page_endpoints_need_a_reviewer_session_and_csrf(api_client, api_settings, seeded):
    assert "/login" in api_client.get("/review").headers["Location"]
    token = _login(api_client, api_settings, Role.REVIEWER)
    assert api_client.get("/review").status_code == 200
    assert api_client.post("/review/next.json", json={}).status_code == 400  # no CSRF token
    csrf = {"X-CSRFToken": token}
    state = api_client.post("/review/next.json", json={}, headers=csrf).get_json()
    item = state["item"]
    assert item["id"] == seeded.item_ids[0] and item["claimed_by"] == "reviewer-user"
    assert item["image"]["url"] == f"/images/{item['image']['id']}"
    assert item["siblings"][0]["thumbnail_url"].endswith("/thumbnail.jpg")
    url = f"/review/items/{item['id']}/decision.json"
    decided = api_client.post(url, json={"decision": "unusable"}, headers=csrf).get_json()
    assert decided["annotation"]["decision"] == "unusable"
    assert decided["item"]["id"] == seeded.item_ids[1]
    assert decided["recent"][0]["id"] == decided["annotation"]["id"]
    past = api_client.get(f"/review/annotations/{decided['annotation']['id']}.json").get_json()
    assert past["item"]["id"] == item["id"] and past["item"]["status"] == "done"
    undone = api_client.post("/review/undo.json", json={}, headers=csrf).get_json()
    assert undone["item"]["id"] == item["id"] and undone["recent"] == []


def test_page_endpoints_refuse_viewers(api_client, api_settings, seeded):
    token = _login(api_client, api_settings, Role.VIEWER)
    assert api_client.get("/review").status_code == 403
    response = api_client.post("/review/next.json", json={}, headers={"X-CSRFToken": token})
    assert response.status_code == 403 and response.get_json()["error"] == "forbidden"


def test_next_is_a_fixed_handful_of_statements(api_client, seeded, reviewer):
    """Each statement is a round trip, and on a busy server round trips are most of review
    next's time: the claim is one UPDATE (whether it renews the reviewer's item or takes a
    new one), and the page's photo, site, siblings with their labels, human decisions,
    known labels, species and counts take one each (13 before)."""
    ana = reviewer("ana")
    seen: list[str] = []

    def count(conn, cursor, statement, *_):
        if not statement.startswith("BEGIN") and "api_keys" not in statement:  # SQLite, the key
            seen.append(statement)

    event.listen(Engine, "before_cursor_execute", count)
    try:
        for _ in range(2):  # a new claim, then the same item renewed
            seen.clear()
            assert api_client.get("/api/v1/review/next", headers=ana).get_json()["item"]
            claims = [s for s in seen if "review_items" in s and s.lstrip().startswith("UPDATE")]
            assert len(claims) == 1
            assert len(seen) <= 8, seen
    finally:
        event.remove(Engine, "before_cursor_execute", count)
