"""Forms marked data-confirm (static/confirm.js) ask first: dismissed, nothing is posted."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from service import users
from service.db import session_scope
from service.models import Role
from service.registry import active_model, add_model
from service.web import create_app
from tests.support.browser import csp_violations, launch, log_in, needs_chromium, serving
from tests.support.models import make_model_folder

USERNAME, PASSWORD = "ada", "admin-field-season"
LABELS = ["Naja_philippinensis", "Boiga_dendrophila"]

pytestmark = needs_chromium


@pytest.fixture()
def admin_site(sqlite_url, make_settings, tmp_path) -> Iterator[tuple[str, str, list[int]]]:
    """Two model versions (the second active), an admin, the real app on a port."""
    settings = make_settings(sqlite_url, secret_key="confirm-test-" + "0123456789abcdef" * 2)
    with session_scope(settings.db_url) as session:
        ids = [
            add_model(
                session, settings, make_model_folder(tmp_path / name, labels=LABELS, seed=seed),
                name=name, activate=True,
            ).id
            for seed, name in enumerate(["herps-v1", "herps-v2"])
        ]  # fmt: skip
        users.create_user(session, USERNAME, PASSWORD, Role.ADMIN)
    with serving(create_app(settings)) as base:
        yield base, settings.db_url, ids


def _active(db_url: str) -> int | None:
    with session_scope(db_url) as session:
        model = active_model(session)
        return model.id if model else None


def test_activation_and_rollback_ask_first(admin_site) -> None:
    from playwright.sync_api import sync_playwright

    base, db_url, (first, second) = admin_site
    with sync_playwright() as pw:
        browser = launch(pw)
        page = browser.new_page()
        page.set_default_timeout(15_000)
        refused = csp_violations(page)
        log_in(page, base, "/models", USERNAME, PASSWORD)
        posted: list[str] = []
        page.on("request", lambda r: posted.append(r.url) if r.method == "POST" else None)
        asked: list[str] = []

        def answer(accept: bool):
            def handle(dialog) -> None:
                asked.append(dialog.message)
                dialog.accept() if accept else dialog.dismiss()

            return handle

        forms = [
            ("/models", "button:has-text('Activate')", f"/models/{first}/activate", first),
            ("/models", "button:has-text('Roll back')", "/training/rollback", second),
            ("/training", "button:has-text('Roll back')", "/training/rollback", None),
        ]
        for path, button, action, then_active in forms:
            page.goto(f"{base}{path}")
            before = _active(db_url)
            page.once("dialog", answer(False))
            page.click(button)
            page.wait_for_timeout(300)  # a POST would have started by now
            assert posted == [] and _active(db_url) == before, (path, button)
            assert len(asked) % 2 == 1 and "?" in asked[-1], asked  # the question was asked

            page.once("dialog", answer(True))
            with page.expect_navigation():
                page.click(button)
            assert [p.removeprefix(base) for p in posted] == [action]
            now = _active(db_url)
            assert now != before and then_active in (None, now), (path, button, now)
            posted.clear()
        assert len(asked) == 6
        browser.close()
    assert refused == []
