"""The suspect-label list re-reviews with one key (static/suspects.js), under the CSP."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import select

from service import suspects, users
from service.db import session_scope
from service.models import Annotation, Role
from service.web import create_app
from tests.support.browser import (
    csp_violations,
    launch,
    log_in,
    needs_chromium,
    serving,
    wait_until,
)
from tests.support.suspects import run_with_label_errors

USERNAME, PASSWORD = "rita", "reviewer-field-season"

pytestmark = needs_chromium


@pytest.fixture()
def site(sqlite_url, make_settings, photos_root) -> Iterator[tuple[str, str]]:
    """A training run that left suspect labels, a reviewer, the real app on a port."""
    settings = make_settings(
        sqlite_url, export_min_per_class=2, secret_key="suspects-test-" + "0123456789abcdef" * 2
    )
    run_with_label_errors(settings, photos_root)
    with session_scope(settings.db_url) as session:
        users.create_user(session, USERNAME, PASSWORD, Role.REVIEWER)
    with serving(create_app(settings)) as base:
        yield base, settings.db_url


def labels_of(db_url: str, image_id: int) -> list[tuple[str | None, bool]]:
    """The image's annotations, oldest first: (label, undone)."""
    with session_scope(db_url) as session:
        return [
            (a.label, a.undone_at is not None)
            for a in session.scalars(
                select(Annotation).where(Annotation.image_id == image_id).order_by(Annotation.id)
            )
        ]


def test_one_key_rereviews_a_suspect(site) -> None:
    from playwright.sync_api import sync_playwright

    base, db_url = site
    with session_scope(db_url) as session:
        listed, total, _ = suspects.list_suspects(session)
    assert total >= 2
    first, second = listed[:2]
    before = labels_of(db_url, first["image_id"])
    with sync_playwright() as pw:
        browser = launch(pw)
        page = browser.new_page()
        page.set_default_timeout(15_000)
        refused = csp_violations(page)
        log_in(page, base, "/suspects", USERNAME, PASSWORD)
        assert page.locator("nav a[href='/suspects']").count() == 1
        row = f"tr[data-suspect-id='{first['id']}']"
        wait_until(page, f"document.querySelector(\"{row}\").classList.contains('selected')")

        page.keyboard.press("m")  # the model's label is right
        wait_until(page, f"document.querySelector(\"{row}\").dataset.status === 'resolved'")
        assert "resolved: red_snake" in page.locator(row).inner_text()
        after = labels_of(db_url, first["image_id"])
        assert after == [*before, ("red_snake", False)]  # a new annotation; nothing changed

        # The selection moved on to the next open suspect: `c` keeps its human label.
        row2 = f"tr[data-suspect-id='{second['id']}']"
        wait_until(page, f"document.querySelector(\"{row2}\").classList.contains('selected')")
        page.keyboard.press("c")
        wait_until(page, f"document.querySelector(\"{row2}\").dataset.status === 'resolved'")
        assert labels_of(db_url, second["image_id"])[-1] == ("green_snake", False)

        page.goto(f"{base}/suspects")  # the open list no longer holds them
        assert page.locator(row).count() == 0 and page.locator(row2).count() == 0
        page.goto(f"{base}/suspects?status=resolved")
        assert page.locator(row).count() == 1 and page.locator(row2).count() == 1
        assert refused == []
        browser.close()
