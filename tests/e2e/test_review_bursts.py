"""The review page in headless Chromium: a burst shown as one strip, decided with one key."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image
from sqlalchemy import select

from service import users
from service.db import session_scope
from service.jobs import create_job
from service.models import Annotation, JobImage, ReviewItem, ReviewStatus, Role
from service.registry import add_model
from service.web import create_app
from tests.e2e.test_review_browser import (
    LABELS,
    PASSWORD,
    USERNAME,
    Live,
    _current_item,
    _login,
    _press_and_wait,
    field_photo,
    page,  # noqa: F401  (the browser fixture, used by name)
)
from tests.support.browser import needs_chromium, serving, wait_until
from tests.support.models import make_model_folder
from tests.support.scoring import scan_and_score

pytestmark = needs_chromium


def _burst_shot(path: Path, seed: int, second: int) -> None:
    """One scene (same seed) shot again a few seconds later: only the capture time differs."""
    field_photo(path, (72, 150, 58), seed=seed, hour=6)
    with Image.open(path) as img:
        img.load()
        exif = img.getexif()
        exif[0x0132] = f"2025:05:14 06:{seed * 7 % 60:02d}:{second:02d}"
        img.save(path, quality=90, exif=exif)


@pytest.fixture()
def live_app(sqlite_url, make_settings, photos_root, tmp_path) -> Iterator[Live]:
    """A burst of three photos and two other photos at one site, all routed to review."""
    settings = make_settings(
        sqlite_url, review_threshold=0.99, secret_key="browser-test-" + "0123456789abcdef" * 2
    )
    site = photos_root / "mindoro" / "transect_03"
    for i, second in enumerate((0, 4, 8)):
        _burst_shot(site / f"IMG_{4200 + i}.jpg", seed=3, second=second)
    field_photo(site / "IMG_4300.jpg", (178, 62, 38), seed=1, hour=9)
    field_photo(site / "IMG_4301.jpg", (58, 82, 170), seed=2, hour=11)
    model_dir = make_model_folder(tmp_path / "model", labels=LABELS, scale=5.0)
    with session_scope(settings.db_url) as session:
        add_model(session, settings, model_dir, name="herps-v3", activate=True)
        job_id = create_job(session, settings, "mindoro").id
        users.create_user(session, USERNAME, PASSWORD, Role.REVIEWER)
    scan_and_score(settings, job_id)
    with session_scope(settings.db_url) as session:
        # The burst first in the queue, so the page opens on it.
        burst_items = (
            select(ReviewItem)
            .join(JobImage, JobImage.image_id == ReviewItem.image_id)
            .where(JobImage.rel_path.like("%IMG_42%"))
        )
        for item in session.scalars(burst_items):
            item.priority = 5.0 + item.id
    app = create_app(settings)
    with serving(app) as base:
        yield Live(base, settings)


def _annotations(live: Live) -> list[tuple[str, str | None, bool, int | None]]:
    with session_scope(live.settings.db_url) as session:
        rows = session.execute(
            select(
                JobImage.rel_path, Annotation.label, Annotation.undone_at, Annotation.burst_lead_id
            )
            .join(JobImage, JobImage.image_id == Annotation.image_id)
            .order_by(JobImage.rel_path)
        ).all()
        return [(path, label, undone is not None, lead) for path, label, undone, lead in rows]


def _pending_burst(live: Live) -> int:
    with session_scope(live.settings.db_url) as session:
        return len(
            session.scalars(
                select(ReviewItem.id)
                .join(JobImage, JobImage.image_id == ReviewItem.image_id)
                .where(
                    JobImage.rel_path.like("%IMG_42%"), ReviewItem.status == ReviewStatus.PENDING
                )
            ).all()
        )


def test_a_burst_is_shown_and_decided_with_one_key_and_undone_with_one(
    live_app: Live,
    page,  # noqa: F811
) -> None:
    _login(page, live_app)
    _current_item(page)
    wait_until(page, "document.querySelectorAll('#siblings img').length === 3")
    assert page.locator("#siblings-title").inner_text().startswith("Burst: 3 photos")
    assert page.locator("[data-command=burst]").is_visible()
    top = page.locator("#topk li").first.get_attribute("title")

    _press_and_wait(page, ["*"], "/decision.json")
    notes = _annotations(live_app)
    assert [(p.split("/")[-1], label, undone) for p, label, undone, _ in notes] == [
        (f"IMG_{4200 + i}.jpg", top, False) for i in range(3)
    ]
    assert len({lead for *_, lead in notes}) == 1 and notes[0][3] is not None
    assert _pending_burst(live_app) == 0
    assert "3 photos of the burst" in page.locator("#toast").inner_text()
    # What comes next is not a photo of the burst: its strip is the folder again.
    assert page.locator("#siblings-title").inner_text() == "Same folder"

    _press_and_wait(page, ["Backspace"], "/undo.json")
    assert all(undone for _, _, undone, _ in _annotations(live_app))
    assert _pending_burst(live_app) == 3
    assert "whole burst" in page.locator("#toast").inner_text()
