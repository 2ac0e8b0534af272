"""The JSON API end to end through the Flask test client, on SQLite and PostgreSQL."""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from celery.signals import before_task_publish
from flask.testing import FlaskClient
from sqlalchemy import update

from service import jobs, registry, results
from service.db import session_scope
from service.models import (
    IdempotencyKey,
    Image,
    JobImage,
    JobImageStatus,
    JobStatus,
    Prediction,
    ReviewItem,
    ReviewStatus,
    Role,
    utcnow,
)
from service.settings import Settings
from service.web import create_app
from tests.support.broker import UNREACHABLE_BROKER, queued_messages
from tests.support.models import make_model_folder

Headers = dict[str, str]
Auth = Callable[[Role], Headers]


@pytest.fixture()
def enqueued(api_settings: Settings) -> Iterator[list[tuple[int, str]]]:
    """Every scan message as Celery publishes it, with the job's status as a *new* session
    sees it then (so a message sent before the commit would show up here)."""
    calls: list[tuple[int, str]] = []

    def record(sender: str | None = None, body: Any = None, **_: Any) -> None:
        if sender == "herpscore.scan_job":
            job_id = body[0][0]  # protocol 2: (args, kwargs, embed)
            with session_scope(api_settings.db_url) as session:
                calls.append((job_id, jobs.get_job(session, job_id).status.value))

    before_task_publish.connect(record, weak=False)
    yield calls
    before_task_publish.disconnect(record)


@pytest.fixture()
def site(photos_root: Path) -> Path:
    folder = photos_root / "site-1"
    folder.mkdir()
    return folder


def _create_job(client: FlaskClient, auth: Auth, **body: Any) -> dict[str, Any]:
    response = client.post("/api/v1/jobs", json=body, headers=auth(Role.REVIEWER))
    assert response.status_code == 201, response.get_json()
    job: dict[str, Any] = response.get_json()
    return job


# --- health and documentation ---


def test_health_needs_no_key(api_client: FlaskClient) -> None:
    response = api_client.get("/api/v1/health")
    assert response.status_code == 200
    assert response.get_json() == {"status": "ok", "database": "ok"}


# --- keys ---


def test_admin_manages_keys(api_client: FlaskClient, auth: Auth) -> None:
    admin = auth(Role.ADMIN)
    response = api_client.post(
        "/api/v1/keys", json={"name": "camera trap", "role": "viewer"}, headers=admin
    )
    assert response.status_code == 201
    assert response.headers["Cache-Control"] == "no-store"
    created = response.get_json()
    assert created["role"] == "viewer" and created["key"].startswith(f"hs_{created['prefix']}_")
    viewer = {"X-API-Key": created["key"]}
    assert api_client.get("/api/v1/jobs", headers=viewer).status_code == 200
    assert api_client.post("/api/v1/jobs", json={"folder": "x"}, headers=viewer).status_code == 403

    listing = api_client.get("/api/v1/keys", headers=admin).get_json()
    assert {k["name"] for k in listing["items"]} == {"test-admin", "camera trap"}
    assert created["key"] not in str(listing) and "hash" not in str(listing)
    used = next(k for k in listing["items"] if k["name"] == "camera trap")
    assert used["last_used_at"] is not None

    revoked = api_client.post(f"/api/v1/keys/{created['id']}/revoke", headers=admin)
    assert revoked.status_code == 200 and revoked.get_json()["revoked_at"]
    assert api_client.get("/api/v1/jobs", headers=viewer).status_code == 401
    assert api_client.post("/api/v1/keys/424242/revoke", headers=admin).status_code == 404


def test_create_key_validates_the_body(api_client: FlaskClient, auth: Auth) -> None:
    response = api_client.post(
        "/api/v1/keys", json={"name": "x", "role": "root"}, headers=auth(Role.ADMIN)
    )
    assert response.status_code == 400
    assert response.get_json()["details"][0]["field"] == "role"


# --- models ---


def test_models_list_get_and_activate(
    api_client: FlaskClient, auth: Auth, active_model: int, api_settings: Settings, tmp_path: Path
) -> None:
    folder = make_model_folder(tmp_path / "second", labels=["Naja_naja", "Python_bivittatus"])
    with session_scope(api_settings.db_url) as session:
        second = registry.add_model(session, api_settings, folder).id

    listing = api_client.get("/api/v1/models", headers=auth(Role.VIEWER)).get_json()
    assert [m["id"] for m in listing["items"]] == [second, active_model]
    assert [m["status"] for m in listing["items"]] == ["candidate", "active"]
    one = api_client.get(f"/api/v1/models/{second}", headers=auth(Role.VIEWER)).get_json()
    assert one["labels"] == ["Naja_naja", "Python_bivittatus"] and one["input"]["size"] == 32
    assert "path" not in one

    response = api_client.post(f"/api/v1/models/{second}/activate", headers=auth(Role.ADMIN))
    assert response.status_code == 200 and response.get_json()["status"] == "active"
    old = api_client.get(f"/api/v1/models/{active_model}", headers=auth(Role.VIEWER)).get_json()
    assert old["status"] == "retired"
    missing = api_client.post("/api/v1/models/424242/activate", headers=auth(Role.ADMIN))
    assert missing.status_code == 404 and missing.get_json()["error"] == "not_found"


# --- jobs ---


def test_create_job_commits_then_enqueues(
    api_client: FlaskClient,
    auth: Auth,
    active_model: int,
    site: Path,
    enqueued: list[tuple[int, str]],
    api_settings: Settings,
) -> None:
    response = api_client.post(
        "/api/v1/jobs", json={"folder": str(site)}, headers=auth(Role.REVIEWER)
    )
    assert response.status_code == 201
    job = response.get_json()
    assert response.headers["Location"].endswith(f"/api/v1/jobs/{job['id']}")
    assert job["status"] == "queued" and job["folder"] == str(site.resolve())
    assert job["model_version_id"] == active_model
    assert job["threshold"] == api_settings.review_threshold
    assert re.fullmatch(r"key:\d+", job["created_by"])  # the key, never its name
    assert job["progress"]["total"] == 0 and "eta_seconds" in job["progress"]
    # The enqueue saw the committed row from another session.
    assert enqueued == [(job["id"], "queued")]


def test_create_job_retried_with_an_idempotency_key_returns_the_first_job(
    api_client: FlaskClient,
    auth: Auth,
    active_model: int,
    site: Path,
    enqueued: list[tuple[int, str]],
    api_settings: Settings,
) -> None:
    headers = {**auth(Role.REVIEWER), "Idempotency-Key": "9b2f4c1e-retry-1"}
    body = {"folder": str(site), "threshold": 0.7}
    first = api_client.post("/api/v1/jobs", json=body, headers=headers)
    assert first.status_code == 201
    job = first.get_json()
    # The client lost the answer and retries: same key, same body (fields in another order).
    retry = api_client.post("/api/v1/jobs", json={"threshold": 0.7, **body}, headers=headers)
    assert retry.status_code == 200, retry.get_json()
    assert retry.get_json()["id"] == job["id"]
    assert retry.headers["Idempotent-Replayed"] == "true"
    assert retry.headers["Location"] == first.headers["Location"]
    assert enqueued == [(job["id"], "queued")]  # sent once
    with session_scope(api_settings.db_url) as session:
        assert jobs.list_jobs(session)[1] == 1
    # Same key, another body: refused, and nothing is created.
    other = api_client.post(
        "/api/v1/jobs", json={"folder": str(site), "threshold": 0.5}, headers=headers
    )
    assert other.status_code == 422
    assert other.get_json()["error"] == "idempotency_key_reused"
    assert other.get_json()["details"] == {"job_id": job["id"]}
    # Another key, or another caller with the same key, is a new job.
    fresh = api_client.post(
        "/api/v1/jobs", json=body, headers={**headers, "Idempotency-Key": "another"}
    )
    assert fresh.status_code == 201 and fresh.get_json()["id"] != job["id"]
    admin = api_client.post(
        "/api/v1/jobs",
        json=body,
        headers={**auth(Role.ADMIN), "Idempotency-Key": "9b2f4c1e-retry-1"},
    )
    assert admin.status_code == 201 and admin.get_json()["id"] not in (
        job["id"],
        fresh.get_json()["id"],
    )
    # Without a key every post is a new job, as before.
    plain = [api_client.post("/api/v1/jobs", json=body, headers=auth(Role.REVIEWER)) for _ in "ab"]
    assert [r.status_code for r in plain] == [201, 201]
    assert plain[0].get_json()["id"] != plain[1].get_json()["id"]


def test_idempotency_key_expires_and_is_checked(
    api_client: FlaskClient, auth: Auth, active_model: int, site: Path, api_settings: Settings
) -> None:
    headers = {**auth(Role.REVIEWER), "Idempotency-Key": "day-old"}
    first = api_client.post("/api/v1/jobs", json={"folder": str(site)}, headers=headers)
    assert first.status_code == 201
    with session_scope(api_settings.db_url) as session:  # a day later
        session.execute(
            update(IdempotencyKey).values(created_at=utcnow() - timedelta(hours=24, seconds=1))
        )
    later = api_client.post("/api/v1/jobs", json={"folder": str(site)}, headers=headers)
    assert later.status_code == 201 and later.get_json()["id"] != first.get_json()["id"]
    for bad in ("", "x" * 256, "tab\there", "caf\u00e9"):
        response = api_client.post(
            "/api/v1/jobs", json={"folder": str(site)}, headers={**headers, "Idempotency-Key": bad}
        )
        assert response.status_code == 400, bad
        assert "Idempotency-Key" in response.get_json()["message"]


def test_create_job_with_every_option(
    api_client: FlaskClient, auth: Auth, active_model: int, site: Path, enqueued: list[Any]
) -> None:
    job = _create_job(
        api_client,
        auth,
        folder="site-1",
        model_id=active_model,
        threshold=0.8,
        recursive=False,
        extensions=[".JPG", "png"],
    )
    assert job["threshold"] == 0.8 and job["recursive"] is False
    assert job["extensions"] == ["jpg", "png"]


def test_create_job_model_errors(
    api_client: FlaskClient, auth: Auth, site: Path, enqueued: list[Any]
) -> None:
    no_active = api_client.post(
        "/api/v1/jobs", json={"folder": "site-1"}, headers=auth(Role.REVIEWER)
    )
    assert no_active.status_code == 409 and no_active.get_json()["error"] == "invalid_state"
    unknown = api_client.post(
        "/api/v1/jobs", json={"folder": "site-1", "model_id": 424242}, headers=auth(Role.REVIEWER)
    )
    assert unknown.status_code == 404
    missing = api_client.post(
        "/api/v1/jobs", json={"folder": "nowhere"}, headers=auth(Role.REVIEWER)
    )
    assert missing.status_code in (400, 409)
    assert enqueued == []


def test_create_job_really_enqueues_on_the_embedded_broker(
    api_client: FlaskClient, auth: Auth, active_model: int, site: Path, api_settings: Settings
) -> None:
    job = _create_job(api_client, auth, folder="site-1")
    assert (job["queued"], job["waiting_for_broker"]) == (True, False)
    assert queued_messages(api_settings) == [("herpscore.scan_job", [job["id"]])]


def test_create_job_waits_for_a_broker_that_is_down(
    auth: Auth,
    active_model: int,
    site: Path,
    api_settings: Settings,
) -> None:
    app = create_app(api_settings.model_copy(update={"broker_url": UNREACHABLE_BROKER}))
    client = app.test_client()
    response = client.post("/api/v1/jobs", json={"folder": "site-1"}, headers=auth(Role.REVIEWER))
    # Recorded, not queued: 202 and a message saying so (requeue_stalled sends it later).
    assert response.status_code == 202, response.get_json()
    job = response.get_json()
    assert (job["queued"], job["waiting_for_broker"]) == (False, True)
    assert f"job {job['id']} recorded and waiting for the broker" in job["message"]
    listing = client.get("/api/v1/jobs", headers=auth(Role.VIEWER)).get_json()
    assert [(j["id"], j["status"]) for j in listing["items"]] == [(job["id"], "queued")]


def test_list_get_and_cancel_jobs(
    api_client: FlaskClient, auth: Auth, active_model: int, site: Path, enqueued: list[Any]
) -> None:
    ids = [_create_job(api_client, auth, folder="site-1")["id"] for _ in range(3)]
    viewer = auth(Role.VIEWER)

    page = api_client.get("/api/v1/jobs?limit=2", headers=viewer).get_json()
    assert [j["id"] for j in page["items"]] == ids[::-1][:2]
    assert (page["total"], page["limit"], page["offset"]) == (3, 2, 0)
    rest = api_client.get("/api/v1/jobs?limit=2&offset=2", headers=viewer).get_json()
    assert [j["id"] for j in rest["items"]] == [ids[0]]

    cancelled = api_client.post(f"/api/v1/jobs/{ids[1]}/cancel", headers=auth(Role.REVIEWER))
    assert cancelled.status_code == 200 and cancelled.get_json()["status"] == "cancelled"
    again = api_client.post(f"/api/v1/jobs/{ids[1]}/cancel", headers=auth(Role.REVIEWER))
    assert again.status_code == 409 and again.get_json()["error"] == "invalid_state"

    only = api_client.get("/api/v1/jobs?status=cancelled", headers=viewer).get_json()
    assert [j["id"] for j in only["items"]] == [ids[1]] and only["total"] == 1
    one = api_client.get(f"/api/v1/jobs/{ids[1]}", headers=viewer).get_json()
    assert one["status"] == "cancelled" and one["finished_at"] is not None
    assert set(one["progress"]) >= {
        "total",
        "scored",
        "failed",
        "pending",
        "images_per_second",
        "eta_seconds",
    }


# --- results ---

ROWS = [
    # rel_path, status, label, confidence, review status
    ("a.jpg", JobImageStatus.SCORED, "Naja_philippinensis", 0.95, None),
    ("b.jpg", JobImageStatus.SCORED, "Ptyas_carinata", 0.40, ReviewStatus.PENDING),
    ("c.jpg", JobImageStatus.FAILED, None, None, None),
    ("d.jpg", JobImageStatus.SCORED, "Naja_philippinensis", 0.55, ReviewStatus.DONE),
]


@pytest.fixture()
def scored_job(api_settings: Settings, active_model: int, site: Path) -> int:
    """A job with four images: confident, under review, failed, reviewed."""
    with session_scope(api_settings.db_url) as session:
        job = jobs.create_job(session, api_settings, str(site))
        job.status = JobStatus.DONE
        for rel, status, label, confidence, review in ROWS:
            image = Image(path=str(site / rel), sha256=rel[0] * 64, size_bytes=10)
            session.add(image)
            session.flush()
            session.add(
                JobImage(
                    job_id=job.id,
                    image_id=image.id,
                    rel_path=rel,
                    status=status,
                    failure_reason="decode_error" if status == JobImageStatus.FAILED else None,
                )
            )
            if label is None or confidence is None:
                continue
            prediction = Prediction(
                image_id=image.id,
                model_version_id=active_model,
                job_id=job.id,
                label=label,
                label_index=0,
                confidence=confidence,
                topk=[[label, confidence], ["Boiga_dendrophila", 1 - confidence]],
            )
            session.add(prediction)
            session.flush()
            if review is not None:
                session.add(
                    ReviewItem(
                        prediction_id=prediction.id,
                        image_id=image.id,
                        job_id=job.id,
                        reason="low_confidence",
                        status=review,
                    )
                )
        return job.id


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("", ["a.jpg", "b.jpg", "c.jpg", "d.jpg"]),
        ("?label=Naja_philippinensis", ["a.jpg", "d.jpg"]),
        ("?min_confidence=0.5", ["a.jpg", "d.jpg"]),
        ("?max_confidence=0.5", ["b.jpg"]),
        ("?min_confidence=0.5&max_confidence=0.9", ["d.jpg"]),
        ("?needs_review=true", ["b.jpg"]),
        ("?needs_review=false", ["a.jpg", "c.jpg", "d.jpg"]),
        ("?failed=true", ["c.jpg"]),
        ("?failed=0", ["a.jpg", "b.jpg", "d.jpg"]),
        ("?label=Nobody", []),
    ],
)
def test_predictions_filters(
    api_client: FlaskClient, auth: Auth, scored_job: int, query: str, expected: list[str]
) -> None:
    response = api_client.get(
        f"/api/v1/jobs/{scored_job}/predictions{query}", headers=auth(Role.VIEWER)
    )
    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    assert [row["rel_path"] for row in body["items"]] == expected
    assert body["total"] == len(expected)


def test_predictions_pagination_and_row_shape(
    api_client: FlaskClient, auth: Auth, scored_job: int
) -> None:
    url = f"/api/v1/jobs/{scored_job}/predictions?limit=2&offset=1"
    body = api_client.get(url, headers=auth(Role.VIEWER)).get_json()
    assert (body["total"], body["limit"], body["offset"]) == (4, 2, 1)
    first, second = body["items"]
    assert first["rel_path"] == "b.jpg" and first["needs_review"] is True
    assert first["top_k"][0] == {"label": "Ptyas_carinata", "confidence": 0.4}
    assert second["status"] == "failed" and second["label"] is None


def test_results_csv_export(api_client: FlaskClient, auth: Auth, scored_job: int) -> None:
    response = api_client.get(f"/api/v1/jobs/{scored_job}/results.csv", headers=auth(Role.VIEWER))
    assert response.status_code == 200 and response.mimetype == "text/csv"
    assert f"job-{scored_job}-results.csv" in response.headers["Content-Disposition"]
    table = list(csv.reader(io.StringIO(response.get_data(as_text=True))))
    assert table[0] == results.CSV_COLUMNS
    rows = [dict(zip(table[0], line, strict=True)) for line in table[1:]]
    assert sorted(r["rel_path"] for r in rows) == ["a.jpg", "b.jpg", "c.jpg", "d.jpg"]
    b = next(r for r in rows if r["rel_path"] == "b.jpg")
    assert (b["machine_label"], b["needs_review"]) == ("Ptyas_carinata", "yes")


def test_results_json_export(api_client: FlaskClient, auth: Auth, scored_job: int) -> None:
    url = f"/api/v1/jobs/{scored_job}/results.csv?format=json"
    response = api_client.get(url, headers=auth(Role.VIEWER))
    assert response.status_code == 200 and response.mimetype == "application/json"
    rows = response.get_json()
    assert sorted(r["rel_path"] for r in rows) == ["a.jpg", "b.jpg", "c.jpg", "d.jpg"]
    assert next(r for r in rows if r["rel_path"] == "c.jpg")["failure_reason"] == "decode_error"


def test_empty_job_exports_only_the_header(
    api_client: FlaskClient, auth: Auth, active_model: int, site: Path, enqueued: list[Any]
) -> None:
    job = _create_job(api_client, auth, folder="site-1")
    csv_text = api_client.get(f"/api/v1/jobs/{job['id']}/results.csv", headers=auth(Role.VIEWER))
    assert csv_text.get_data(as_text=True).strip() == ",".join(results.CSV_COLUMNS)
    as_json = api_client.get(
        f"/api/v1/jobs/{job['id']}/results.csv?format=json", headers=auth(Role.VIEWER)
    )
    assert as_json.get_json() == []
