"""The admin UI through the Flask test client: login, CSRF, jobs, contact sheet, media."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from service import copies, display, thumbnails, users
from service.db import session_scope
from service.jobs import create_job, get_job
from service.models import (
    Annotation,
    DatasetExport,
    ExportStatus,
    Image,
    JobImage,
    JobStatus,
    ReviewItem,
    ReviewStatus,
    Role,
    RunStatus,
    TrainingRun,
)
from service.settings import Settings
from service.tasks_client import RENDER_DISPLAY_TASK, RENDER_THUMBNAIL_TASK
from service.web import create_app
from tests.conftest import screenshot_dir
from tests.support.broker import UNREACHABLE_BROKER, queued_messages
from tests.support.browser import CHROMIUM, csp_violations, launch, log_in, serving, wait_until
from tests.support.photos import make_photo_folder, write_photo
from tests.support.scoring import scan_and_score

PASSWORD = "field-notes-2024"


# ---------------------------------------------------------------- helpers shared with
# test_admin_roles.py (plain functions, so both files use the API fixtures of conftest.py)


def make_user(settings: Settings, role: Role, username: str | None = None) -> int:
    """A user with PASSWORD; returns its id."""
    with session_scope(settings.db_url) as session:
        return users.create_user(session, username or f"{role.value}-user", PASSWORD, role).id


def log_in_session(client: FlaskClient, user_id: int) -> None:
    """Log a test client in without the form (Flask-Login keeps the id in the session)."""
    with client.session_transaction() as session:
        session["_user_id"] = f"{user_id}:0"  # id:session version; a new user's is 0
        session["_fresh"] = True


def csrf_token(client: FlaskClient, path: str = "/login") -> str:
    """The CSRF token a page embeds (the same token for the whole session)."""
    page = client.get(path).get_data(as_text=True)
    found = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', page) or re.search(
        r'id="csrf_token"[^>]*value="([^"]+)"', page
    )
    assert found, f"no CSRF token on {path}"
    return found.group(1)


def score_folder(settings: Settings, folder: str) -> int:
    """Create and run a job through the domain path (scan, score every chunk), no Celery."""

    with session_scope(settings.db_url) as session:
        job_id = create_job(session, settings, folder, created_by="test").id
    scan_and_score(settings, job_id)
    return job_id


# ---------------------------------------------------------------- fixtures


@pytest.fixture()
def client(api_app: Flask) -> FlaskClient:
    return api_app.test_client()


@pytest.fixture()
def as_role(client: FlaskClient, api_settings: Settings) -> Callable[[Role], FlaskClient]:
    """Log the client in as a fresh user of a role."""

    def login(role: Role) -> FlaskClient:
        log_in_session(client, make_user(api_settings, role))
        return client

    return login


@pytest.fixture()
def no_csrf(api_app: Flask) -> None:
    """Tests of behaviour other than CSRF post without tokens (CSRF has its own tests)."""
    api_app.config["WTF_CSRF_ENABLED"] = False


@pytest.fixture()
def scored_job(api_settings: Settings, active_model: int, photos_root: Path) -> int:
    """A finished job over 6 photos (red, green, blue) and one broken file."""
    make_photo_folder(photos_root / "survey", count=6)
    (photos_root / "survey" / "broken.jpg").write_bytes(b"not really a jpeg")
    return score_folder(api_settings, "survey")


# ---------------------------------------------------------------- login, sessions, CSRF


def test_login_with_wrong_password_fails(client: FlaskClient, api_settings: Settings) -> None:
    make_user(api_settings, Role.VIEWER, "ana")
    token = csrf_token(client)
    wrong = client.post(
        "/login", data={"username": "ana", "password": "nope-nope", "csrf_token": token}
    )
    assert wrong.status_code == 401
    assert "wrong username or password" in wrong.get_data(as_text=True)
    unknown = client.post(
        "/login", data={"username": "bob", "password": PASSWORD, "csrf_token": token}
    )
    assert unknown.status_code == 401
    assert client.get("/").status_code == 302  # still anonymous

    right = client.post(
        "/login", data={"username": "ANA", "password": PASSWORD, "csrf_token": token}
    )
    assert right.status_code == 303 and right.headers["Location"] == "/"
    page = client.get("/")
    assert page.status_code == 200 and "ana" in page.get_data(as_text=True)


def test_login_returns_to_next_but_never_to_another_site(
    client: FlaskClient, api_settings: Settings
) -> None:
    make_user(api_settings, Role.VIEWER, "ana")
    assert client.get("/jobs").headers["Location"] == "/login?next=%2Fjobs"

    def form() -> dict[str, str]:  # a login starts a new session, so a new token each time
        return {"username": "ana", "password": PASSWORD, "csrf_token": csrf_token(client)}

    assert client.post("/login?next=/jobs", data=form()).headers["Location"] == "/jobs"
    for evil in ("https://evil.example/", "//evil.example/x", "/\\evil.example"):
        response = client.post("/login", query_string={"next": evil}, data=form())
        assert response.headers["Location"] == "/"


def test_logout_ends_the_session(client: FlaskClient, api_settings: Settings) -> None:
    log_in_session(client, make_user(api_settings, Role.VIEWER))
    token = csrf_token(client, "/")
    assert client.post("/logout", data={"csrf_token": token}).status_code == 303
    assert client.get("/").status_code == 302


def test_disabled_user_is_logged_out_at_once(client: FlaskClient, api_settings: Settings) -> None:
    user_id = make_user(api_settings, Role.ADMIN)
    log_in_session(client, user_id)
    assert client.get("/").status_code == 200
    with session_scope(api_settings.db_url) as session:
        user = users.get_user(session, user_id)
        assert user is not None
        user.disabled = True
    assert client.get("/").status_code == 302


def test_posts_without_csrf_token_are_rejected(
    client: FlaskClient, api_settings: Settings, auth: Callable[[Role], dict[str, str]]
) -> None:
    log_in_session(client, make_user(api_settings, Role.ADMIN))
    for path in ("/logout", "/jobs/new", "/jobs/1/cancel", "/jobs/1/confirm"):
        response = client.post(path, data={"image_ids": "1"})
        assert response.status_code == 400, path
        assert "security token" in response.get_data(as_text=True)
    bad = client.post("/jobs/1/cancel", data={"csrf_token": "forged"})
    assert bad.status_code == 400
    assert client.post("/login", data={"username": "x", "password": "y"}).status_code == 400
    # The key-authenticated JSON API is exempt: a key, no token, and the POST goes through.
    created = client.post(
        "/api/v1/keys", json={"name": "ci", "role": "viewer"}, headers=auth(Role.ADMIN)
    )
    assert created.status_code == 201


# ---------------------------------------------------------------- dashboard


def test_dashboard_shows_model_backlog_jobs_exports_and_runs(
    as_role: Callable[[Role], FlaskClient], api_settings: Settings, scored_job: int
) -> None:
    client = as_role(Role.VIEWER)
    page = client.get("/").get_data(as_text=True)
    assert "No dataset export yet." in page and "No training run yet." in page
    assert "No job is running." in page

    with session_scope(api_settings.db_url) as session:
        backlog = len(
            session.scalars(
                select(ReviewItem.id).where(ReviewItem.status == ReviewStatus.PENDING)
            ).all()
        )
        for n in range(7):
            # The shape run_export records: the image count is "total".
            session.add(
                DatasetExport(status=ExportStatus.DONE, options={}, counts={"total": 100 + n})
            )
        session.add(TrainingRun(status=RunStatus.RUNNING, params={}, trigger="schedule"))
        running = create_job(session, api_settings, "survey")
        running.status = JobStatus.SCORING
    page = client.get("/").get_data(as_text=True)
    assert f'<p class="big">{backlog}</p>' in page
    assert page.count("status-done") == 5  # the latest five exports only
    assert "<td>106</td>" in page and "<td>102</td>" in page and "<td>101</td>" not in page
    assert 'href="/review"' not in page  # a viewer cannot review: no link to the queue
    assert "schedule" in page
    assert f"/jobs/{running.id}/progress.json" in page  # polled live by jobs.js


# ---------------------------------------------------------------- jobs


def test_job_page_renders_a_contact_sheet_of_the_scored_job(
    as_role: Callable[[Role], FlaskClient], scored_job: int
) -> None:
    client = as_role(Role.VIEWER)
    response = client.get(f"/jobs/{scored_job}")
    assert response.status_code == 200
    page = response.get_data(as_text=True)
    thumbs = re.findall(r'src="/images/(\d+)/thumbnail\.jpg"', page)
    assert len(thumbs) == 6
    assert "Naja_philippinensis" in page and "not_an_image" in page
    assert re.search(r'class="conf (low|high)">\d+%<', page)
    assert 'name="image_ids"' not in page  # viewers cannot confirm
    for image_id in thumbs:
        thumb = client.get(f"/images/{image_id}/thumbnail.jpg")
        assert thumb.status_code == 200 and thumb.mimetype == "image/jpeg"


def test_contact_sheet_filters_and_pages(
    as_role: Callable[[Role], FlaskClient], scored_job: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = as_role(Role.REVIEWER)

    def sheet(**args: object) -> str:
        response = client.get(f"/jobs/{scored_job}", query_string=args)
        assert response.status_code == 200, response.get_data(as_text=True)
        return response.get_data(as_text=True)

    def tiles(page: str) -> int:
        return page.count('<li class="tile')

    assert tiles(sheet()) == 7
    assert tiles(sheet(label="Naja_philippinensis")) == 2
    assert tiles(sheet(failed="true")) == 1 and "not_an_image" in sheet(failed="true")
    assert tiles(sheet(failed="false", min_confidence="0", max_confidence="1")) == 6
    assert tiles(sheet(min_confidence="1.0", label="", needs_review="")) == 0
    assert "No image matches these filters." in sheet(min_confidence="1.0")
    assert tiles(sheet(needs_review="false")) + tiles(sheet(needs_review="true")) == 7
    assert 'name="image_ids"' in sheet()  # reviewers get checkboxes

    monkeypatch.setattr("service.web.admin.jobs.IMAGES_PER_PAGE", 3)
    first, last = sheet(), sheet(offset=6)
    assert tiles(first) == 3 and "Next →" in first and "1–3 of 7" in first
    assert tiles(last) == 1 and "← Previous" in last

    bad = client.get(f"/jobs/{scored_job}", query_string={"min_confidence": "lots"})
    # Bad filters: the page itself, unfiltered, says what was wrong (not a bare error page).
    text = bad.get_data(as_text=True)
    assert bad.status_code == 400 and "Filters not applied: min confidence:" in text
    assert tiles(text) == 3
    inverted = client.get(
        f"/jobs/{scored_job}", query_string={"min_confidence": "0.9", "max_confidence": "0.1"}
    )
    text = inverted.get_data(as_text=True)
    assert inverted.status_code == 400 and tiles(text) == 3
    assert "min_confidence must not exceed max_confidence" in text


def test_progress_endpoint_and_downloads(
    as_role: Callable[[Role], FlaskClient], scored_job: int
) -> None:
    client = as_role(Role.VIEWER)
    progress = client.get(f"/jobs/{scored_job}/progress.json")
    assert progress.status_code == 200 and progress.headers["Cache-Control"] == "no-store"
    body = progress.get_json()
    assert body["status"] == "done" and body["progress"]["total"] == 7
    assert client.get("/jobs/999/progress.json").get_json()["error"] == "not_found"

    as_csv = client.get(f"/jobs/{scored_job}/results.csv")
    assert as_csv.mimetype == "text/csv"
    assert "attachment" in as_csv.headers["Content-Disposition"]
    rows = list(csv.DictReader(io.StringIO(as_csv.get_data(as_text=True))))
    assert len(rows) == 7 and {
        "machine_label",
        "machine_confidence",
        "final_label",
        "failure_reason",
    } <= set(rows[0])
    as_json = client.get(f"/jobs/{scored_job}/results.json")
    assert len(json.loads(as_json.get_data(as_text=True))) == 7
    assert client.get(f"/jobs/{scored_job}/results.xml").status_code == 404


def test_job_list_paginates(
    as_role: Callable[[Role], FlaskClient],
    api_settings: Settings,
    active_model: int,
    photos_root: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with session_scope(api_settings.db_url) as session:
        ids = [create_job(session, api_settings, str(photos_root)).id for _ in range(4)]
    monkeypatch.setattr("service.web.admin.jobs.JOBS_PER_PAGE", 3)
    client = as_role(Role.VIEWER)
    first = client.get("/jobs").get_data(as_text=True)
    assert f"#{ids[-1]}<" in first and f"#{ids[0]}<" not in first and "Next →" in first
    second = client.get("/jobs?offset=3").get_data(as_text=True)
    assert f"#{ids[0]}<" in second
    assert client.get("/jobs?status=queued").status_code == 200
    assert client.get("/jobs?status=bogus").status_code == 400
    assert "Start a job" not in first  # viewers cannot start jobs


def test_start_a_job_from_the_form(
    as_role: Callable[[Role], FlaskClient],
    api_settings: Settings,
    active_model: int,
    photos_root: Path,
    monkeypatch: pytest.MonkeyPatch,
    no_csrf: None,
) -> None:
    (photos_root / "2024" / "site-07").mkdir(parents=True)
    client = as_role(Role.REVIEWER)
    form = client.get("/jobs/new").get_data(as_text=True)
    assert str(photos_root.resolve()) in form

    response = client.post(
        "/jobs/new",
        data={"root": "0", "subfolder": "2024/site-07", "threshold": "0.75", "recursive": "y"},
    )
    assert response.status_code == 303
    job_id = int(response.headers["Location"].rsplit("/", 1)[1])
    assert queued_messages(api_settings) == [("herpscore.scan_job", [job_id])]
    with session_scope(api_settings.db_url) as session:
        job = get_job(session, job_id)
        assert job.folder == str((photos_root / "2024" / "site-07").resolve())
        assert (job.threshold, job.created_by) == (0.75, "reviewer-user")
    assert f"Job {job_id} queued" in client.get(f"/jobs/{job_id}").get_data(as_text=True)


def test_a_job_started_while_the_broker_is_down_says_it_waits(
    api_settings: Settings, active_model: int, photos_root: Path
) -> None:
    app = create_app(api_settings.model_copy(update={"broker_url": UNREACHABLE_BROKER}))
    app.config["WTF_CSRF_ENABLED"] = False
    client = app.test_client()
    log_in_session(client, make_user(api_settings, Role.REVIEWER))
    (photos_root / "site-1").mkdir()
    response = client.post("/jobs/new", data={"root": "0", "subfolder": "site-1"})
    assert response.status_code == 303
    job_id = int(response.headers["Location"].rsplit("/", 1)[1])
    page = client.get(f"/jobs/{job_id}").get_data(as_text=True)
    assert f"Job {job_id} recorded and waiting for the broker" in page
    assert '<p class="flash flash-warning">' in page


@pytest.mark.parametrize(
    ("data", "status", "message"),
    [
        ({"root": "0", "subfolder": "../.."}, 403, "outside the allowed roots"),
        ({"root": "0", "subfolder": "missing"}, 400, "does not exist"),
        ({"root": "0", "subfolder": "/etc"}, 400, "relative to the chosen root"),
        ({"root": "7", "subfolder": ""}, 400, "Not a valid choice"),
        ({"root": "0", "threshold": "1.5"}, 400, "between 0"),
    ],
)
def test_bad_job_forms_are_refused_with_a_message(
    as_role: Callable[[Role], FlaskClient],
    api_settings: Settings,
    active_model: int,
    no_csrf: None,
    data: dict[str, str],
    status: int,
    message: str,
) -> None:
    response = as_role(Role.REVIEWER).post("/jobs/new", data=data)
    assert queued_messages(api_settings) == []
    assert response.status_code == status
    assert message in response.get_data(as_text=True)
    assert "<form" in response.get_data(as_text=True)  # the form is shown again


def test_cancel_a_job(
    as_role: Callable[[Role], FlaskClient],
    api_settings: Settings,
    active_model: int,
    photos_root: Path,
    no_csrf: None,
) -> None:
    with session_scope(api_settings.db_url) as session:
        job_id = create_job(session, api_settings, str(photos_root)).id
    client = as_role(Role.REVIEWER)
    assert "Cancel job" in client.get(f"/jobs/{job_id}").get_data(as_text=True)
    response = client.post(f"/jobs/{job_id}/cancel", headers={"Referer": f"/jobs/{job_id}"})
    assert response.status_code == 303
    page = client.get(f"/jobs/{job_id}").get_data(as_text=True)
    assert "is cancelled" in page and "Cancel job" not in page
    again = client.post(f"/jobs/{job_id}/cancel", follow_redirects=True)
    assert "already cancelled" in again.get_data(as_text=True)


# ---------------------------------------------------------------- images and thumbnails


def test_unknown_and_outside_images_are_refused(
    as_role: Callable[[Role], FlaskClient], api_settings: Settings, tmp_path: Path
) -> None:
    outside = write_photo(tmp_path / "elsewhere" / "secret.jpg")
    inside = write_photo(Path(api_settings.allowed_roots[0]) / "link-target.jpg")
    link = Path(api_settings.allowed_roots[0]) / "escape.jpg"
    link.symlink_to(outside)
    with session_scope(api_settings.db_url) as session:
        rows = [
            Image(path=str(outside), sha256="a" * 64, format="JPEG"),
            Image(path=str(link), sha256="b" * 64, format="JPEG"),
            Image(path="relative/x.jpg", sha256="c" * 64, format="JPEG"),
            Image(path=str(inside), sha256="d" * 64, format="JPEG", size_bytes=1),
        ]
        session.add_all(rows)
        session.flush()
        ids = [row.id for row in rows]
    client = as_role(Role.ADMIN)
    for image_id in ids:
        for url in (f"/images/{image_id}", f"/images/{image_id}/thumbnail.jpg"):
            response = client.get(url)
            assert response.status_code == 404, url
            assert response.mimetype == "text/html"
    assert client.get("/images/987654").status_code == 404
    assert client.get("/images/987654/thumbnail.jpg").status_code == 404
    assert not api_settings.thumbnails_path.exists()


def _first_jpeg(settings: Settings) -> tuple[int, str, Path]:
    with session_scope(settings.db_url) as session:
        image = session.scalars(select(Image).where(Image.format == "JPEG").limit(1)).one()
        assert image.sha256 is not None
        return image.id, image.sha256, Path(image.path)


@pytest.fixture()
def no_decoding(monkeypatch: pytest.MonkeyPatch) -> Callable[[], None]:
    """Make any decode in this process fail the test (the web must only read files);
    call the returned function to allow decoding again (a worker's turn)."""
    import PIL.Image

    def refuse(*args: object, **kwargs: object) -> None:
        pytest.fail("the web process opened a photo with Pillow")

    monkeypatch.setattr(PIL.Image, "open", refuse)
    return monkeypatch.undo


def test_thumbnails_made_by_the_scoring_worker_are_served_from_disk(
    as_role: Callable[[Role], FlaskClient],
    api_settings: Settings,
    scored_job: int,
    no_decoding: Callable[[], None],
) -> None:
    image_id, sha256, path = _first_jpeg(api_settings)
    client = as_role(Role.VIEWER)
    first = client.get(f"/images/{image_id}/thumbnail.jpg")
    second = client.get(f"/images/{image_id}/thumbnail.jpg")
    assert first.status_code == second.status_code == 200
    assert first.mimetype == "image/jpeg" and first.data == second.data
    assert thumbnails.thumbnail_file(api_settings, sha256).read_bytes() == first.data
    assert first.headers["ETag"] == f'"{sha256}-256"'
    assert "private" in first.headers["Cache-Control"]
    assert "max-age" in first.headers["Cache-Control"]
    assert queued_messages(api_settings) == []  # nothing asked of the workers

    cached = client.get(
        f"/images/{image_id}/thumbnail.jpg", headers={"If-None-Match": first.headers["ETag"]}
    )
    assert cached.status_code == 304 and not cached.data

    with client.get(f"/images/{image_id}") as full:
        assert full.status_code == 200 and full.mimetype == "image/jpeg"
        assert full.data == path.read_bytes()
        assert full.headers["ETag"] == f'"{sha256}"'
        assert full.headers["X-Content-Type-Options"] == "nosniff"
        assert "private" in full.headers["Cache-Control"]
    assert (
        client.get(f"/images/{image_id}", headers={"If-None-Match": f'"{sha256}"'}).status_code
        == 304
    )


def test_a_missing_copy_is_queued_for_a_worker_never_decoded_by_the_web(
    as_role: Callable[[Role], FlaskClient],
    api_settings: Settings,
    scored_job: int,
    no_decoding: Callable[[], None],
) -> None:
    image_id, sha256, _ = _first_jpeg(api_settings)
    thumbnails.thumbnail_file(api_settings, sha256).unlink()  # a wiped cache, an old job
    display.display_file(api_settings, sha256).unlink(missing_ok=True)
    client = as_role(Role.VIEWER)

    pending = [client.get(f"/images/{image_id}/thumbnail.jpg") for _ in range(3)]
    for response in pending:
        assert response.status_code == 200 and response.mimetype == "image/svg+xml"
        assert response.headers["X-Herpscore-Thumbnail"] == "pending"
        assert "no-store" in response.headers["Cache-Control"]
        assert "max-age" not in response.headers["Cache-Control"]
    # The review page's photo: the original as it is, until the display copy exists.
    shown = client.get(f"/images/{image_id}/display.jpg")
    assert shown.status_code == 302 and shown.headers["Location"] == f"/images/{image_id}"
    assert shown.headers["X-Herpscore-Thumbnail"] == "pending"
    assert "no-store" in shown.headers["Cache-Control"]
    # One render each, however often the page asked.
    queued = queued_messages(api_settings)
    assert sorted(queued) == [
        (RENDER_DISPLAY_TASK, [image_id]),
        (RENDER_THUMBNAIL_TASK, [image_id]),
    ]

    no_decoding()  # the worker's turn
    sides = {RENDER_THUMBNAIL_TASK: thumbnails.THUMBNAIL_SIDE, RENDER_DISPLAY_TASK: 1600}
    for task, (queued_id,) in queued:
        assert copies.render_copy(api_settings, queued_id, sides[task])
    thumb = client.get(f"/images/{image_id}/thumbnail.jpg")
    assert thumb.status_code == 200 and thumb.mimetype == "image/jpeg"
    assert thumb.data == thumbnails.thumbnail_file(api_settings, sha256).read_bytes()
    copy = client.get(f"/images/{image_id}/display.jpg")
    assert copy.status_code == 200 and copy.mimetype == "image/jpeg"
    assert copy.headers["ETag"] == f'"{sha256}-1600"'
    assert display.display_file(api_settings, sha256).read_bytes() == copy.data
    assert not list(api_settings.thumbnails_path.rglob("*.pending"))


def test_a_lost_render_is_asked_for_again_after_a_while(
    as_role: Callable[[Role], FlaskClient], api_settings: Settings, scored_job: int
) -> None:
    image_id, sha256, _ = _first_jpeg(api_settings)
    thumbnails.thumbnail_file(api_settings, sha256).unlink()
    client = as_role(Role.VIEWER)
    client.get(f"/images/{image_id}/thumbnail.jpg")
    marker = thumbnails.thumbnail_file(api_settings, sha256).with_suffix(".pending")
    old = time.time() - copies.PENDING_SECONDS - 1
    os.utime(marker, (old, old))  # the message went with a broker outage
    client.get(f"/images/{image_id}/thumbnail.jpg")
    assert queued_messages(api_settings) == [(RENDER_THUMBNAIL_TASK, [image_id])] * 2


def test_undecodable_images_get_a_placeholder_not_an_error(
    as_role: Callable[[Role], FlaskClient], api_settings: Settings, scored_job: int
) -> None:
    root = Path(api_settings.allowed_roots[0])
    truncated = root / "truncated.jpg"
    good = write_photo(root / "good.jpg", size=(300, 200))
    truncated.write_bytes(good.read_bytes()[:300])
    with session_scope(api_settings.db_url) as session:
        broken = session.scalars(select(Image).where(Image.path.endswith("broken.jpg"))).one()
        corrupt = Image(
            path=str(truncated),
            sha256="e" * 64,
            format="JPEG",
            size_bytes=truncated.stat().st_size,
        )
        session.add(corrupt)
        session.flush()
        ids = [corrupt.id, broken.id]
    client = as_role(Role.VIEWER)
    for image_id in ids:
        first = client.get(f"/images/{image_id}/thumbnail.jpg")
        assert first.headers["X-Herpscore-Thumbnail"] == "pending"
        assert not copies.render_copy(api_settings, image_id, thumbnails.THUMBNAIL_SIDE)
        response = client.get(f"/images/{image_id}/thumbnail.jpg")
        assert response.status_code == 200
        assert response.mimetype == "image/svg+xml"
        assert response.headers["X-Herpscore-Thumbnail"] == "placeholder"
    assert len(queued_messages(api_settings)) == 2  # one render each, then not asked again
    assert client.get(f"/images/{broken.id}").status_code == 404  # not an image: not served


# ---------------------------------------------------------------- bulk confirm


def test_confirm_selected_images_from_the_contact_sheet(
    as_role: Callable[[Role], FlaskClient],
    api_settings: Settings,
    scored_job: int,
    no_csrf: None,
) -> None:
    client = as_role(Role.REVIEWER)
    page = client.get(f"/jobs/{scored_job}", query_string={"failed": "false"})
    ids = re.findall(r'name="image_ids" value="(\d+)"', page.get_data(as_text=True))
    assert len(ids) == 6
    back = f"/jobs/{scored_job}?failed=false"
    response = client.post(f"/jobs/{scored_job}/confirm", data={"image_ids": ids[:2], "back": back})
    assert response.status_code == 303 and response.headers["Location"] == back
    assert "Confirmed 2 of 2 selected images." in client.get(back).get_data(as_text=True)
    with session_scope(api_settings.db_url) as session:
        notes = session.scalars(select(Annotation).order_by(Annotation.image_id)).all()
        assert [n.image_id for n in notes] == sorted(int(i) for i in ids[:2])
        assert {(n.reviewer, n.label == n.machine_label) for n in notes} == {
            ("reviewer-user", True)
        }
        still_pending = session.scalars(
            select(ReviewItem).where(
                ReviewItem.image_id.in_([n.image_id for n in notes]),
                ReviewItem.status == ReviewStatus.PENDING,
            )
        ).all()
        assert still_pending == []

    again = client.post(f"/jobs/{scored_job}/confirm", data={"image_ids": ids[:2]})
    assert again.status_code == 303
    assert "Confirmed 0 of 2" in client.get(f"/jobs/{scored_job}").get_data(as_text=True)


@pytest.mark.parametrize(
    ("image_ids", "message"),
    [([], "select at least one image"), (["x"], "must be numbers"), (["0"], "positive")],
)
def test_confirm_refuses_bad_selections(
    as_role: Callable[[Role], FlaskClient],
    scored_job: int,
    no_csrf: None,
    image_ids: list[str],
    message: str,
) -> None:
    client = as_role(Role.REVIEWER)
    response = client.post(
        f"/jobs/{scored_job}/confirm",
        data={"image_ids": image_ids, "back": "https://evil.example/"},
        headers={"Referer": f"http://localhost/jobs/{scored_job}"},
        follow_redirects=True,
    )
    assert response.request.path == f"/jobs/{scored_job}"
    assert message in response.get_data(as_text=True)


def test_confirm_refuses_images_of_another_job(
    as_role: Callable[[Role], FlaskClient],
    api_settings: Settings,
    scored_job: int,
    photos_root: Path,
    no_csrf: None,
) -> None:
    make_photo_folder(photos_root / "other", count=2)
    other_job = score_folder(api_settings, "other")
    with session_scope(api_settings.db_url) as session:
        own = session.scalars(select(JobImage.image_id).where(JobImage.job_id == scored_job))
        foreign = session.scalars(select(JobImage.image_id).where(JobImage.job_id == other_job))
        own_id, foreign_ids = next(iter(own)), sorted(foreign)
    client = as_role(Role.REVIEWER)
    response = client.post(
        f"/jobs/{scored_job}/confirm",
        data={"image_ids": [own_id, *foreign_ids]},
        headers={"Referer": f"http://localhost/jobs/{scored_job}"},
        follow_redirects=True,
    )
    assert f"2 of the selected images are not in job {scored_job}" in response.get_data(
        as_text=True
    )
    with session_scope(api_settings.db_url) as session:
        assert session.scalars(select(Annotation)).all() == []  # not even the job's own image


# ---------------------------------------------------------------- in a real browser


@pytest.mark.browser
def test_job_page_in_headless_chromium(
    api_app: Flask, api_settings: Settings, active_model: int, photos_root: Path, tmp_path: Path
) -> None:
    """Log in through the form, watch live progress, select tiles, save a screenshot."""
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is not installed (apt-get install chromium)")
    if not api_settings.db_url.startswith("sqlite"):
        pytest.skip("the browser flow does not depend on the database; SQLite is enough")
    sync_api = pytest.importorskip("playwright.sync_api")

    colours = ["red", "green", "blue", "grey", (180, 120, 40), (40, 160, 150)]
    for i in range(16):
        folder = photos_root / "survey-2024" / f"site-{i % 3:02d}"
        write_photo(folder / f"IMG_{4100 + i}.jpg", colours[i % len(colours)], (320, 240), i)
    (photos_root / "survey-2024" / "site-00" / "IMG_4199.jpg").write_bytes(b"\xff\xd8 truncated")
    job_id = score_folder(api_settings, "survey-2024")
    make_user(api_settings, Role.REVIEWER, "maria")
    with session_scope(api_settings.db_url) as session:
        live = create_job(session, api_settings, "survey-2024")
        live.status, live.total, live.scored, live.scan_complete = JobStatus.SCORING, 40, 3, True
        live_id = live.id

    with serving(api_app) as base, sync_api.sync_playwright() as pw:
        browser = launch(pw)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        # The pages work under the Content-Security-Policy (no inline script or style).
        csp_errors = csp_violations(page)
        log_in(page, base, f"/jobs/{job_id}", "maria", PASSWORD)

        # Live progress: the counter moves without a reload.
        page.goto(f"{base}/jobs/{live_id}")
        page.evaluate("window.notReloaded = true")
        with session_scope(api_settings.db_url) as session:
            get_job(session, live_id).scored = 17
        sync_api.expect(page.locator("[data-field=scored]")).to_have_text("17", timeout=10_000)
        assert page.evaluate("window.notReloaded") is True

        page.goto(f"{base}/jobs/{job_id}")
        wait_until(
            page,
            "[...document.querySelectorAll('.sheet img')]"
            ".every(i => i.complete && i.naturalWidth > 0)",
        )
        width = page.evaluate("document.querySelector('.bar span').style.width")
        assert width == "100%", "jobs.js sets the bar's width (no style attribute)"
        assert page.locator(".sheet li").count() == 17
        boxes = page.locator("input[name=image_ids]")
        boxes.nth(0).check()
        boxes.nth(4).check()
        assert page.locator("[data-selected-count]").text_content() == "2"
        assert page.locator("[data-confirm-selected]").is_enabled()
        shot = screenshot_dir(tmp_path) / "job-page.png"
        shot.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(shot), full_page=True)
        browser.close()
        assert not csp_errors, csp_errors
    assert shot.stat().st_size > 10_000
