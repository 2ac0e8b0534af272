"""The review page's server side and the admin pages' dead ends, through the Flask test client."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from service.db import session_scope
from service.models import (
    Annotation,
    DatasetExport,
    ExportStatus,
    ReviewItem,
    Role,
    RunStatus,
    TrainingRun,
)
from service.settings import Settings
from tests.integration.test_admin_ui import log_in_session, make_user, score_folder
from tests.support.photos import make_photo_folder


@pytest.fixture()
def client(api_app: Flask) -> FlaskClient:
    api_app.config["WTF_CSRF_ENABLED"] = False  # CSRF has its own tests
    return api_app.test_client()


@pytest.fixture()
def as_role(client: FlaskClient, api_settings: Settings) -> Callable[[Role], FlaskClient]:
    def login(role: Role) -> FlaskClient:
        log_in_session(client, make_user(api_settings, role, f"{role.value}-ui"))
        return client

    return login


@pytest.fixture()
def two_jobs(api_settings: Settings, active_model: int, photos_root: Path) -> tuple[int, int]:
    """Two scored jobs whose every photo waits for review."""
    api_settings.review_threshold = 1.0
    make_photo_folder(photos_root / "north", count=3)
    make_photo_folder(photos_root / "south", count=3)
    return score_folder(api_settings, "north"), score_folder(api_settings, "south")


def test_review_page_explains_a_bad_job_id(
    as_role: Callable[[Role], FlaskClient], two_jobs: tuple[int, int]
) -> None:
    client = as_role(Role.REVIEWER)
    bad = client.get("/review?job_id=abc")
    assert bad.status_code == 400
    assert "“abc” is not a job number" in bad.get_data(as_text=True)
    missing = client.get("/review?job_id=999")
    assert missing.status_code == 404
    assert "There is no job #999" in missing.get_data(as_text=True)
    page = client.get(f"/review?job_id={two_jobs[1]}").get_data(as_text=True)
    assert f"job #{two_jobs[1]}</a>" in page and "south" in page  # the job is named
    job_page = client.get(f"/jobs/{two_jobs[1]}").get_data(as_text=True)
    assert f'href="/review?job_id={two_jobs[1]}">Review this job' in job_page


def test_viewers_get_no_review_link(as_role: Callable[[Role], FlaskClient]) -> None:
    page = as_role(Role.VIEWER).get("/jobs").get_data(as_text=True)
    assert 'href="/review"' not in page
    page = as_role(Role.REVIEWER).get("/jobs").get_data(as_text=True)
    assert 'href="/review"' in page


def _post(client: FlaskClient, url: str, **body: object) -> dict:
    response = client.post(url, json=body)
    assert response.status_code == 200, response.get_data(as_text=True)
    return response.get_json()


def test_undo_stays_in_the_job_queue_and_on_the_photo_shown(
    as_role: Callable[[Role], FlaskClient], api_settings: Settings, two_jobs: tuple[int, int]
) -> None:
    north, south = two_jobs
    client = as_role(Role.REVIEWER)
    state = _post(client, "/review/next.json", job_id=north)
    assert len(state["upcoming"]) == 2 and all("/display.jpg" in u for u in state["upcoming"])
    north_item = state["item"]["id"]
    # The next two are held for this reviewer, in the order the queue hands them out.
    ahead = [a["id"] for a in state["ahead"]]
    assert len(ahead) == 2 and north_item not in ahead
    state = _post(
        client, f"/review/items/{north_item}/decision.json", decision="unknown", job_id=north
    )
    assert state["item"]["id"] == ahead[0] and [a["id"] for a in state["ahead"]] == ahead[1:]
    state = _post(client, "/review/next.json", job_id=south)
    first_south = state["item"]["id"]
    state = _post(
        client, f"/review/items/{first_south}/decision.json", decision="unusable", job_id=south
    )
    second_south = state["item"]["id"]
    state = _post(
        client, f"/review/items/{second_south}/decision.json", decision="unknown", job_id=south
    )
    assert [r["decision"] for r in state["recent"]] == ["unknown", "unusable"]  # south only

    # On the photo shown: the older south decision, not the latest.
    shown = state["recent"][1]["id"]
    state = _post(client, "/review/undo.json", job_id=south, annotation_id=shown)
    assert state["annotation"]["id"] == shown and state["item"]["id"] == first_south
    # Without a photo shown: the latest decision of this job's queue, never another job's.
    _post(client, f"/review/items/{first_south}/decision.json", decision="skip", job_id=south)
    state = _post(client, "/review/undo.json", job_id=north)
    assert state["annotation"]["review_item_id"] == north_item
    assert state["item"]["id"] == north_item


def test_a_changed_decision_is_a_new_annotation_with_the_known_spelling(
    as_role: Callable[[Role], FlaskClient], api_settings: Settings, two_jobs: tuple[int, int]
) -> None:
    client = as_role(Role.REVIEWER)
    item = _post(client, "/review/next.json")["item"]
    # "naja philippinensis" is the model's Naja_philippinensis: stored in that spelling.
    state = _post(
        client,
        f"/review/items/{item['id']}/decision.json",
        decision="label",
        label="  NAJA-philippinénsis ",
    )
    first = state["annotation"]
    assert first["label"] == "Naja_philippinensis"
    state = _post(
        client, f"/review/annotations/{first['id']}/change.json", decision="label", label="Naja x"
    )
    assert state["annotation"]["label"] == "Naja x" and state["annotation"]["id"] != first["id"]
    with session_scope(api_settings.db_url) as session:
        on_item = select(Annotation).where(Annotation.review_item_id == item["id"])
        notes = session.scalars(on_item.order_by(Annotation.id)).all()
        assert [(n.label, n.undone_at is not None) for n in notes] == [
            ("Naja_philippinensis", True),
            ("Naja x", False),
        ]
        assert session.get(ReviewItem, item["id"]).status.value == "done"
    # Changing it again through the old annotation is refused in words, without ids.
    again = client.post(
        f"/review/annotations/{first['id']}/change.json", json={"decision": "unknown"}
    )
    assert again.status_code == 409
    assert again.get_json()["message"] == "this decision was already undone or changed"


def test_an_empty_export_says_why(
    as_role: Callable[[Role], FlaskClient], api_settings: Settings
) -> None:
    with session_scope(api_settings.db_url) as session:
        session.add(
            DatasetExport(
                status=ExportStatus.DONE,
                options={"min_per_class": 10},
                counts={
                    "total": 0,
                    "dropped_classes": {"Naja_philippinensis": 3},
                    "excluded": {"human_unusable": 2},
                },
            )
        )
    page = as_role(Role.ADMIN).get("/exports").get_data(as_text=True)
    assert "Why nothing?" in page
    assert "Classes with fewer than 10 images were dropped: Naja_philippinensis (3)." in page
    assert "2 images: marked not usable by a reviewer." in page


def test_retraining_without_torch_is_refused_up_front(
    as_role: Callable[[Role], FlaskClient], api_settings: Settings
) -> None:
    api_settings.training_available = False
    client = as_role(Role.ADMIN)
    response = client.post("/training/retrain", follow_redirects=True)
    assert "Retraining needs PyTorch" in response.get_data(as_text=True)
    with session_scope(api_settings.db_url) as session:
        assert session.scalars(select(TrainingRun)).all() == []  # nothing queued to fail


def test_a_failed_run_says_failed(
    as_role: Callable[[Role], FlaskClient], api_settings: Settings
) -> None:
    with session_scope(api_settings.db_url) as session:
        run = TrainingRun(
            status=RunStatus.FAILED, params={}, trigger="manual", error="DataError: no classes"
        )
        session.add(run)
        session.flush()
        run_id = run.id
    page = as_role(Role.VIEWER).get(f"/training/{run_id}").get_data(as_text=True)
    assert "No decision: the run failed (DataError: no classes)." in page
    assert "Not decided yet" not in page
