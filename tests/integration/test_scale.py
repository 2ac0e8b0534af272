"""Big-job behaviour: streamed downloads, custom plans on the web, keyset pages, folders."""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import event, select, text

from service import results
from service.db import insert_ignoring_conflicts, session_scope
from service.jobs import create_job
from service.models import Image, JobImage, JobImageStatus, JobStatus, Prediction, Role, ScanJob
from service.review.page import _siblings
from service.settings import Settings
from service.web import create_app
from service.web.context import db_read, db_session

Auth = Callable[[Role], dict[str, str]]
PATHS = [
    "top.jpg",
    *(f"site_a/cam1/IMG_{i:03d}.jpg" for i in range(7)),
    "site_a/cam1/deeper/IMG_002b.jpg",  # sorts among cam1's photos, but is not in cam1
    *(f"site_b/IMG_{i:03d}.jpg" for i in range(6)),
]


def _job(settings: Settings, model_id: int, site: Path, paths: list[str]) -> int:
    """A finished job over `paths`, written as the scan writes job images (bulk insert)."""
    with session_scope(settings.db_url) as session:
        job = create_job(session, settings, str(site))
        job.status, job.scan_complete, job.total = JobStatus.DONE, True, len(paths)
        images = [Image(path=f"{site}/{p}", sha256=f"{n:064d}") for n, p in enumerate(paths)]
        session.add_all(images)
        session.flush()
        insert_ignoring_conflicts(
            session,
            JobImage,
            [
                {
                    "job_id": job.id,
                    "image_id": image.id,
                    "rel_path": p,
                    "folder": p.rpartition("/")[0],
                    "status": JobImageStatus.SCORED,
                }
                for image, p in zip(images, paths, strict=True)
            ],
            ["job_id", "image_id"],
        )
        session.add_all(
            Prediction(image_id=image.id, model_version_id=model_id, job_id=job.id,
                       label="Naja_philippinensis", label_index=0, confidence=0.9,
                       topk=[["Naja_philippinensis", 0.9]])
            for image in images
        )  # fmt: skip
        return job.id


@pytest.fixture()
def site(photos_root: Path) -> Path:
    folder = photos_root / "site"
    folder.mkdir()
    return folder


# ---------------------------------------------------------------- downloads


def test_results_download_starts_before_the_rows_are_read(
    api_client: FlaskClient,
    api_settings: Settings,
    active_model: int,
    site: Path,
    auth: Auth,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The first bytes leave before the job's rows are read (nothing spooled first)."""
    paths = [f"cam/IMG_{i:05d}.jpg" for i in range(2500)]
    job_id = _job(api_settings, active_model, site, paths)
    made: list[int] = []
    row = results._row

    def counted(*args: Any) -> dict[str, Any]:
        made.append(1)
        return row(*args)

    monkeypatch.setattr(results, "_row", counted)
    response = api_client.get(
        f"/api/v1/jobs/{job_id}/results.csv", headers=auth(Role.VIEWER), buffered=False
    )
    assert response.status_code == 200
    chunks = iter(response.response)
    first = next(chunks)
    assert first.startswith(b"image_id,rel_path")
    assert len(made) < len(paths)  # the old code had written every row by now
    body = first + b"".join(chunks)
    response.close()
    rows = list(csv.DictReader(io.StringIO(body.decode())))
    assert [r["rel_path"] for r in rows] == paths and len(made) == len(paths)


def test_streamed_results_carry_each_rows_current_human_decision(
    api_settings: Settings, active_model: int, site: Path
) -> None:
    """Decisions read per batch land on their own rows, in every batch: the latest live
    one, not an undone one, not a skip; undecided rows stay machine-labelled."""
    from service.models import Annotation, Decision, utcnow

    paths = [f"cam/IMG_{i:03d}.jpg" for i in range(11)]
    job_id = _job(api_settings, active_model, site, paths)
    with session_scope(api_settings.db_url) as session:
        ids = list(session.scalars(select(JobImage.image_id).where(JobImage.job_id == job_id)))
        now = utcnow()
        for n, image_id in enumerate(ids[::2]):
            session.add(Annotation(image_id=image_id, reviewer="ana", decision=Decision.LABEL,
                                   label=f"Human_{n}", created_at=now))  # fmt: skip
        later = {"image_id": ids[2], "reviewer": "ben", "created_at": now}
        session.add(Annotation(**later, decision=Decision.UNKNOWN))
        session.add(Annotation(**later, decision=Decision.LABEL, label="Undone", undone_at=now))
        session.add(Annotation(image_id=ids[1], reviewer="ben", decision=Decision.SKIP,
                               created_at=now))  # fmt: skip
    with session_scope(api_settings.db_url) as session:
        rows = {r["image_id"]: r for r in results.iter_results(session, job_id, batch=3)}
    assert len(rows) == len(ids)
    for n, image_id in enumerate(ids[::2]):
        expected = (
            (None, "unknown", "ben") if image_id == ids[2] else (f"Human_{n}", "label", "ana")
        )
        row = rows[image_id]
        assert (row["final_label"], row["human_decision"], row["reviewed_by"]) == expected
    for image_id in ids[1::2]:
        assert rows[image_id]["final_source"] == "machine"
        assert rows[image_id]["final_label"] == "Naja_philippinensis"


def test_results_download_of_an_unknown_job_is_a_404(api_client: FlaskClient, auth: Auth) -> None:
    response = api_client.get("/api/v1/jobs/99999/results.csv", headers=auth(Role.VIEWER))
    assert response.status_code == 404 and response.get_json()["error"] == "not_found"


# ---------------------------------------------------------------- plans


@pytest.mark.postgres
def test_web_connections_plan_every_statement_for_its_parameters(
    pg_url: str, make_settings: Callable[..., Settings]
) -> None:
    app: Flask = create_app(make_settings(pg_url))
    with app.app_context():
        with db_read() as session:
            assert session.scalar(text("SHOW plan_cache_mode")) == "force_custom_plan"
        with db_session() as session:
            assert session.scalar(text("SHOW plan_cache_mode")) == "force_custom_plan"
    with session_scope(pg_url) as session:  # workers keep PostgreSQL's default
        assert session.scalar(text("SHOW plan_cache_mode")) == "auto"


# ---------------------------------------------------------------- pages


def test_keyset_pages_walk_the_job_in_path_order(
    api_client: FlaskClient, api_settings: Settings, active_model: int, site: Path, auth: Auth
) -> None:
    job_id = _job(api_settings, active_model, site, PATHS)
    base = f"/api/v1/jobs/{job_id}/predictions?limit=4"
    whole = api_client.get(f"/api/v1/jobs/{job_id}/predictions", headers=auth(Role.VIEWER))
    expected = [r["rel_path"] for r in whole.get_json()["items"]]
    assert expected == sorted(PATHS) and whole.get_json()["total"] == len(PATHS)
    seen: list[str] = []
    url = base
    for _ in range(10):
        page = api_client.get(url, headers=auth(Role.VIEWER)).get_json()
        seen += [r["rel_path"] for r in page["items"]]
        assert page["total"] == len(PATHS)
        if page["next_after"] is None:
            break
        assert page["next_after"] == page["items"][-1]["image_id"]
        url = f"{base}&after={page['next_after']}"
    assert seen == expected
    # A filtered walk keeps its filter; an image of another job is a 400.
    page = api_client.get(
        f"{base}&site=none&after={whole.get_json()['items'][0]['image_id']}",
        headers=auth(Role.VIEWER),
    ).get_json()
    assert page["items"] == [] and page["total"] == 0 and page["next_after"] is None
    other = _job(api_settings, active_model, site, ["x.jpg"])
    with session_scope(api_settings.db_url) as session:
        foreign = session.scalar(select(JobImage.image_id).where(JobImage.job_id == other))
    response = api_client.get(f"{base}&after={foreign}", headers=auth(Role.VIEWER))
    assert response.status_code == 400 and "after" in response.get_json()["message"]


def test_unfiltered_total_is_the_scans_count(api_settings: Settings, active_model: int, site: Path):
    job_id = _job(api_settings, active_model, site, PATHS)
    with session_scope(api_settings.db_url) as session:
        job = session.get(ScanJob, job_id)
        assert job is not None
        counts: list[str] = []

        def record(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
            counts.extend(re.findall(r"count\(", statement, re.IGNORECASE))

        event.listen(session.get_bind(), "before_cursor_execute", record)
        try:
            _, total = results.query_results(session, job_id, results.ResultFilters(), limit=1)
            assert total == job.total == len(PATHS) and not counts  # no rows counted
            labelled = results.ResultFilters(label="Naja_philippinensis")
            found, total = results.query_results(session, job_id, labelled, limit=100)
            assert total == len(found) == len(PATHS) and counts  # a filter counts
        finally:
            event.remove(session.get_bind(), "before_cursor_execute", record)


def test_label_pages_sort_their_matches_across_reused_predictions(
    api_client: FlaskClient, api_settings: Settings, active_model: int, site: Path, auth: Auth
) -> None:
    """A label's rows are found from its predictions, then sorted: the pages (offset and
    keyset) and totals are those of the job's path order, also for images whose prediction
    another job made (byte-identical photos are scored once)."""
    first = _job(api_settings, active_model, site, PATHS)
    with session_scope(api_settings.db_url) as session:
        ids = dict(session.execute(
            select(JobImage.rel_path, JobImage.image_id).where(JobImage.job_id == first)
        ).all())  # fmt: skip
        late = [path for path in PATHS if path >= "site_a/cam1/IMG_004.jpg"]  # sorts late
        for prediction in session.scalars(
            select(Prediction).where(Prediction.image_id.in_([ids[p] for p in late]))
        ):
            prediction.label = "Ptyas_carinata"
        # A second job holds the first one's photos under other paths, in reverse order; its
        # rows reuse the first job's predictions (their job_id names the first job).
        second = create_job(session, api_settings, str(site))
        second.status, second.scan_complete, second.total = JobStatus.DONE, True, len(PATHS)
        renamed = {path: f"b/{len(PATHS) - n:02d}.jpg" for n, path in enumerate(PATHS)}
        session.add_all(
            JobImage(job_id=second.id, image_id=ids[path], rel_path=renamed[path],
                     folder="b", status=JobImageStatus.SCORED)
            for path in PATHS
        )  # fmt: skip
        second_id = second.id
    for job_id, path_of in ((first, {p: p for p in PATHS}), (second_id, renamed)):
        expected = sorted(path_of[p] for p in late)
        url = f"/api/v1/jobs/{job_id}/predictions?label=Ptyas_carinata"
        base = f"{url}&limit=2"
        whole = api_client.get(url, headers=auth(Role.VIEWER)).get_json()
        assert [r["rel_path"] for r in whole["items"]] == expected
        assert whole["total"] == len(expected)
        deep = api_client.get(f"{base}&offset=3", headers=auth(Role.VIEWER)).get_json()
        assert [r["rel_path"] for r in deep["items"]] == expected[3:5]
        assert deep["total"] == len(expected)
        past = api_client.get(f"{base}&offset=50", headers=auth(Role.VIEWER)).get_json()
        assert past["items"] == [] and past["total"] == len(expected)
        seen: list[str] = []
        url = base
        while url:
            page = api_client.get(url, headers=auth(Role.VIEWER)).get_json()
            seen += [r["rel_path"] for r in page["items"]]
            url = f"{base}&after={page['next_after']}" if page["next_after"] else ""
        assert seen == expected
        nobody = api_client.get(
            f"/api/v1/jobs/{job_id}/predictions?label=Nobody", headers=auth(Role.VIEWER)
        ).get_json()
        assert nobody["items"] == [] and nobody["total"] == 0


def test_job_sites_are_each_site_of_that_job_once_by_name(
    api_settings: Settings, active_model: int, site: Path
) -> None:
    paths = ["b/1.jpg", "a/1.jpg", "b/2.jpg", "top.jpg", "c/1.jpg", "a/2.jpg"]
    job_id = _job(api_settings, active_model, site, paths)
    other = _job(api_settings, active_model, site, ["z/1.jpg", "0/1.jpg"])
    with session_scope(api_settings.db_url) as session:
        for ji in session.scalars(select(JobImage).where(JobImage.job_id.in_([job_id, other]))):
            ji.site = None if ji.rel_path == "top.jpg" else ji.rel_path.split("/")[0]
        session.flush()
        assert results.job_sites(session, job_id) == ["a", "b", "c"]
        assert results.job_sites(session, other) == ["0", "z"]
        assert results.job_sites(session, 99999) == []


# ---------------------------------------------------------------- neighbours


def test_neighbours_are_the_photos_of_the_same_folder(
    api_settings: Settings, active_model: int, site: Path
) -> None:
    job_id = _job(api_settings, active_model, site, PATHS)
    with session_scope(api_settings.db_url) as session:
        folders = dict(session.execute(select(JobImage.rel_path, JobImage.folder)).all())
        assert folders["top.jpg"] == "" and folders["site_b/IMG_000.jpg"] == "site_b"
        assert folders["site_a/cam1/deeper/IMG_002b.jpg"] == "site_a/cam1/deeper"
        near = _siblings(session, job_id, "site_a/cam1/IMG_003.jpg", active_model)
        assert [path for _, path, _ in near] == [f"site_a/cam1/IMG_{i:03d}.jpg" for i in range(7)]
        alone = _siblings(session, job_id, "top.jpg", active_model)
        assert [path for _, path, _ in alone] == ["top.jpg"]


def test_the_scan_stores_each_images_folder(
    api_settings: Settings, active_model: int, site: Path
) -> None:
    from service.scanning import run_scan
    from tests.support.photos import write_photo

    for rel in ("top.jpg", "site_a/cam1/IMG_001.jpg", "site_a/cam1/deeper/IMG_002.jpg"):
        (site / rel).parent.mkdir(parents=True, exist_ok=True)
        write_photo(site / rel)
    with session_scope(api_settings.db_url) as session:
        job_id = create_job(session, api_settings, str(site)).id
    run_scan(api_settings, job_id, lambda chunk_ids: None)
    with session_scope(api_settings.db_url) as session:
        stored = dict(
            session.execute(
                select(JobImage.rel_path, JobImage.folder).where(JobImage.job_id == job_id)
            ).all()
        )
    assert stored == {
        "top.jpg": "",
        "site_a/cam1/IMG_001.jpg": "site_a/cam1",
        "site_a/cam1/deeper/IMG_002.jpg": "site_a/cam1/deeper",
    }


def test_known_labels_are_the_live_human_labels(db_url: str) -> None:
    from service.models import Annotation, Decision, utcnow
    from service.review.page import known_labels

    with session_scope(db_url) as session:
        image = Image(path="/x.jpg")
        session.add(image)
        session.flush()
        for label, decision, undone in [
            ("Boiga", Decision.LABEL, False),
            ("Boiga", Decision.LABEL, True),
            ("Ahaetulla", Decision.LABEL, True),  # only undone: not offered
            ("Zaocys", Decision.LABEL, False),
            ("Naja", Decision.LABEL, False),
        ]:
            session.add(
                Annotation(image_id=image.id, reviewer="ana", decision=decision, label=label,
                           undone_at=utcnow() if undone else None)
            )  # fmt: skip
        session.add(Annotation(image_id=image.id, reviewer="ana", decision=Decision.UNKNOWN))
    with session_scope(db_url) as session:
        assert known_labels(session) == ["Boiga", "Naja", "Zaocys"]
