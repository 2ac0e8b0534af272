"""The review page in headless Chromium: keyboard decisions, label search, undo and changes."""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFilter
from sqlalchemy import select

from service import users
from service.db import session_scope
from service.field_models import Species
from service.jobs import create_job
from service.models import Annotation, Decision, Prediction, ReviewItem, ReviewStatus, Role
from service.registry import add_model
from service.settings import Settings
from service.web import create_app
from tests.conftest import screenshot_dir
from tests.support.browser import (
    csp_violations,
    launch,
    log_in,
    needs_chromium,
    serving,
    wait_until,
)
from tests.support.models import make_model_folder
from tests.support.scoring import scan_and_score

LABELS = ["Naja_philippinensis", "Trimeresurus_flavomaculatus", "Boiga_dendrophila"]
USERNAME, PASSWORD = "rita", "field-season-2025"

pytestmark = needs_chromium


def field_photo(path: Path, tint: tuple[int, int, int], seed: int, hour: int) -> None:
    """Leaf litter with a coiled, tinted "snake" under a light colour cast: pleasant to look
    at, and the mean colour steers the tiny test model."""
    rng = np.random.default_rng(seed)
    w, h = 960, 640
    yy, xx = np.mgrid[0:h, 0:w]
    light = 1.0 + 0.18 * np.sin(xx / 210 + seed) * np.cos(yy / 160 - seed)
    base = np.stack([np.full((h, w), 104.0), np.full((h, w), 88.0), np.full((h, w), 62.0)], -1)
    base = base * light[..., None] + rng.normal(0, 10, size=base.shape)
    img = Image.fromarray(np.clip(base, 0, 255).astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(img)
    for _ in range(140):  # fallen leaves
        x, y = int(rng.integers(0, w)), int(rng.integers(0, h))
        r = int(rng.integers(8, 26))
        shade = tuple(int(v) for v in rng.integers([95, 75, 35], [165, 135, 75]))
        angle = rng.uniform(0, math.pi)
        dx, dy = r * math.cos(angle), r * math.sin(angle)
        draw.polygon(
            [
                (x - dx, y - dy),
                (x - dy / 2, y + dx / 2),
                (x + dx, y + dy),
                (x + dy / 2, y - dx / 2),
            ],
            fill=shade,
        )
    img = img.filter(ImageFilter.GaussianBlur(0.8))
    draw = ImageDraw.Draw(img)
    cx, cy = w / 2 + rng.integers(-120, 120), h / 2 + rng.integers(-60, 60)
    points = [
        (cx + (170 - t * 0.5) * math.cos(t / 28 + seed), cy + (115 - t * 0.33) * math.sin(t / 28))
        for t in range(0, 320, 2)
    ]
    body = tuple(int(c) for c in tint)
    draw.line(points, fill=(28, 24, 18), width=38, joint="curve")
    draw.line(points, fill=body, width=30, joint="curve")
    for i in range(0, len(points) - 1, 6):  # bands
        draw.line(points[i : i + 2], fill=(30, 26, 20), width=30)
    cast = Image.new("RGB", img.size, body)
    img = Image.blend(img, cast, 0.22)
    exif = Image.Exif()
    exif[0x0132] = f"2025:05:14 {hour:02d}:{seed * 7 % 60:02d}:00"
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, quality=90, exif=exif)


@dataclass
class Live:
    url: str
    settings: Settings


@pytest.fixture()
def live_app(sqlite_url, make_settings, photos_root, tmp_path) -> Iterator[Live]:
    """A scored survey, every photo routed to review, a reviewer, and the real app on a port."""
    settings = make_settings(
        sqlite_url, review_threshold=0.99, secret_key="browser-test-" + "0123456789abcdef" * 2
    )
    tints = [(178, 62, 38), (72, 150, 58), (58, 82, 170), (190, 160, 70)]
    for i in range(8):
        field_photo(
            photos_root / "mindoro" / "transect_03" / f"IMG_{4100 + i}.jpg",
            tints[i % 4],
            seed=i,
            hour=6 + i,
        )
    model_dir = make_model_folder(tmp_path / "model", labels=LABELS, scale=5.0)
    with session_scope(settings.db_url) as session:
        add_model(session, settings, model_dir, name="herps-v3", activate=True)
        job_id = create_job(session, settings, "mindoro").id
        users.create_user(session, USERNAME, PASSWORD, Role.REVIEWER)
    scan_and_score(settings, job_id)

    app = create_app(settings)
    with serving(app) as base:
        yield Live(base, settings)


@pytest.fixture()
def page(live_app: Live):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = launch(pw)
        context = browser.new_context(viewport={"width": 1440, "height": 920})
        page = context.new_page()
        page.set_default_timeout(15_000)
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        refused = csp_violations(page)
        yield page
        browser.close()
        assert errors == [], f"JavaScript errors: {errors}"
        assert refused == [], f"refused by the Content-Security-Policy: {refused}"


def _current_item(page) -> int:
    """The item shown once the page is idle: while a post is in flight (aria-busy), the
    attribute may still name the item before it."""
    wait_until(
        page,
        "(r => !r.hasAttribute('aria-busy') && r.dataset.itemId > 0)"
        "(document.getElementById('review'))",
    )
    return int(page.get_attribute("#review", "data-item-id"))


def _press_and_wait(page, keys: list[str], endpoint: str) -> int:
    """Press keys; the last one posts to `endpoint`; returns the item shown afterwards."""
    for key in keys[:-1]:
        page.keyboard.press(key)
    with page.expect_response(lambda r: endpoint in r.url and r.request.method == "POST") as got:
        page.keyboard.press(keys[-1])
    assert got.value.status == 200, got.value.text()
    wait_until(page, "!document.getElementById('review').hasAttribute('aria-busy')")
    return _current_item(page)


def _topk(settings: Settings, item_id: int) -> list[str]:
    with session_scope(settings.db_url) as session:
        item = session.get(ReviewItem, item_id)
        return [t[0] for t in session.get(Prediction, item.prediction_id).topk]


def _login(page, live_app: Live, path: str = "/review") -> None:
    log_in(page, live_app.url, path, USERNAME, PASSWORD)


def _notes(settings: Settings) -> list[tuple[int | None, Decision, str | None, bool]]:
    with session_scope(settings.db_url) as session:
        notes = session.scalars(select(Annotation).order_by(Annotation.id)).all()
        return [(n.review_item_id, n.decision, n.label, n.undone_at is not None) for n in notes]


def _no_post_for(page, keys: str) -> None:
    """Type keys and check that none of them posted anything."""
    posted: list[str] = []
    page.on("request", lambda r: posted.append(r.url) if r.method == "POST" else None)
    page.keyboard.type(keys)
    page.wait_for_timeout(300)  # a stray POST would have started by now
    assert posted == []


def test_review_items_from_the_keyboard(live_app: Live, page, tmp_path: Path) -> None:
    _login(page, live_app)
    first = _current_item(page)
    wait_until(page, "document.getElementById('photo').naturalWidth > 0")
    assert "/display.jpg" in page.get_attribute("#photo", "src")  # not the original
    wait_until(page, "document.querySelectorAll('#siblings img').length >= 5")
    assert page.locator("#topk li").count() == 3
    assert page.locator("#rel-path").inner_text().startswith("transect_03/IMG_41")
    assert "2025" in page.locator("#captured").inner_text()
    assert page.locator("#reason").inner_text() == "confidence below 99 %"
    assert page.locator("#scope").inner_text() == "Reviewing all jobs"
    shots = screenshot_dir(tmp_path)
    shots.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(shots / "review-queue.png"))

    # Zoom never posts anything; zooming in loads the original; 0 resets.
    page.keyboard.press("+")
    assert "scale(1.25)" in page.get_attribute("#photo", "style")
    assert page.get_attribute("#photo", "src").endswith(f"/images/{_image_of(live_app, first)}")
    page.keyboard.press("0")
    assert "scale(1)" in page.get_attribute("#photo", "style")
    # Keys help lives in an overlay.
    page.keyboard.press("?")
    assert page.locator("#help").is_visible()
    page.keyboard.press("Escape")
    assert page.locator("#help").is_hidden()

    expected: list[tuple[int | None, Decision, str | None, bool]] = []
    second = _press_and_wait(page, ["Enter"], "/decision.json")  # confirm the top suggestion
    expected.append((first, Decision.LABEL, _topk(live_app.settings, first)[0], False))
    wait_until(page, "document.getElementById('toast').innerText.startsWith('Saved: ')")
    third = _press_and_wait(page, ["2"], "/decision.json")  # the second suggestion
    expected.append((second, Decision.LABEL, _topk(live_app.settings, second)[1], False))
    _no_post_for(page, "4")  # only three suggestions: 4 does nothing
    fourth = _press_and_wait(page, ["."], "/decision.json")
    expected.append((third, Decision.UNKNOWN, None, False))
    fifth = _press_and_wait(page, ["Delete"], "/decision.json")
    expected.append((fourth, Decision.UNUSABLE, None, False))
    sixth = _press_and_wait(page, [" "], "/decision.json")
    expected.append((fifth, Decision.SKIP, None, False))
    assert page.locator("#recent li").count() == 5
    assert _notes(live_app.settings) == expected
    assert sixth not in (first, second, third, fourth, fifth)


def _image_of(live_app: Live, item_id: int) -> int:
    with session_scope(live_app.settings.db_url) as session:
        return session.get(ReviewItem, item_id).image_id


def test_review_page_fits_a_laptop_screen(live_app: Live, page) -> None:
    page.set_viewport_size({"width": 1366, "height": 768})
    _login(page, live_app)
    _current_item(page)
    wait_until(page, "document.getElementById('photo').naturalWidth > 0")
    size = page.evaluate(
        "[document.documentElement.scrollHeight, innerHeight,"
        " document.documentElement.scrollWidth, innerWidth]"
    )
    assert size[0] <= size[1] and size[2] <= size[3], size  # no scrolling
    photo = page.locator("#viewer").bounding_box()
    assert photo["width"] >= 950 and photo["height"] >= 520, photo
    for name in page.locator("#topk .name").all():  # full names, all clickable
        box = name.bounding_box()
        assert box is not None and box["y"] + box["height"] <= 768


def test_search_folds_case_spaces_hyphens_and_accents(live_app: Live, page, tmp_path) -> None:
    _login(page, live_app)
    first = _current_item(page)
    page.keyboard.type("BOIGA-déndrophila")
    assert page.locator("#label-options li[aria-selected=true]").inner_text() == (
        "Boiga dendrophila"
    )
    assert page.locator("#new-label").is_hidden()  # an existing label matches: nothing new
    second = _press_and_wait(page, ["Enter"], "/decision.json")
    assert second != first

    # A word-prefix search finds the label too.
    page.keyboard.type("tri fla")
    assert page.locator("#label-options li[aria-selected=true]").inner_text() == (
        "Trimeresurus flavomaculatus"
    )
    page.keyboard.press("Escape")

    # No match: Enter saves nothing; creating the label is its own button.
    page.keyboard.type("Naja samarensis")
    assert page.locator("#label-options li").count() == 0
    assert page.locator("#new-label").inner_text() == "+ Create new label “Naja samarensis”"
    page.screenshot(path=str(screenshot_dir(tmp_path) / "review-typeahead.png"))
    _no_post_for(page, "\n")
    assert "No known label matches" in page.locator("#toast").inner_text()
    with page.expect_response(lambda r: "/decision.json" in r.url) as got:
        page.click("#new-label")
    assert got.value.status == 200
    assert [n[1:3] for n in _notes(live_app.settings)] == [
        (Decision.LABEL, "Boiga_dendrophila"),
        (Decision.LABEL, "Naja samarensis"),
    ]


def test_search_finds_a_label_by_its_common_or_scientific_name(
    live_app: Live, page, tmp_path: Path
) -> None:
    with session_scope(live_app.settings.db_url) as session:
        cobra = session.scalar(select(Species).where(Species.label == "Naja_philippinensis"))
        cobra.common_name = "Philippine Cobra"
    _login(page, live_app)
    first = _current_item(page)
    chosen = page.locator("#label-options li[aria-selected=true]")
    # By the common name, the scientific name, or with a typo: the label is offered, with its
    # common name beside it, and no new label is.
    for typed in ("philippine cobra", "NAJA_philippinensis", "phillipine-cobra"):
        page.keyboard.type(typed)
        assert chosen.get_attribute("title") == "Naja_philippinensis", typed
        assert chosen.locator(".common-name").inner_text() == "Philippine Cobra"
        assert page.locator("#new-label").is_hidden(), typed
        page.keyboard.press("Escape")
    page.keyboard.type("philippine cobra")
    screenshot_dir(tmp_path).mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(screenshot_dir(tmp_path) / "review-search-names.png"))
    assert _press_and_wait(page, ["Enter"], "/decision.json") != first
    assert [n[1:3] for n in _notes(live_app.settings)] == [(Decision.LABEL, "Naja_philippinensis")]


def test_typing_a_name_never_fires_a_command(live_app: Live, page) -> None:
    _login(page, live_app)
    first = _current_item(page)
    # s, u, x, z, l were commands once: "sto" for Storeria skipped the photo.
    _no_post_for(page, "suxzl sto")
    assert page.input_value("#label-input") == "suxzl sto"
    assert _current_item(page) == first
    page.keyboard.press("Escape")
    _no_post_for(page, "storeria")
    assert page.input_value("#label-input") == "storeria"
    assert _notes(live_app.settings) == []


def test_undo_acts_on_the_photo_shown(live_app: Live, page) -> None:
    _login(page, live_app)
    first = _current_item(page)
    second = _press_and_wait(page, ["1"], "/decision.json")
    third = _press_and_wait(page, ["1"], "/decision.json")
    _press_and_wait(page, ["."], "/decision.json")
    page.keyboard.press("ArrowLeft")
    page.keyboard.press("ArrowLeft")
    wait_until(page, f"document.getElementById('review').dataset.itemId == '{second}'")
    assert "You chose" in page.locator("#readonly").inner_text()
    assert _press_and_wait(page, ["Backspace"], "/undo.json") == second
    assert "You had chosen" in page.locator("#readonly").inner_text()
    assert page.locator("#toast").inner_text().startswith("Undone: ")
    notes = _notes(live_app.settings)
    assert [(n[0], n[3]) for n in notes] == [
        (first, False),
        (second, True),  # the photo on screen, not the latest decision
        (third, False),
    ]


def test_a_recent_decision_is_changed_by_a_new_annotation(live_app: Live, page) -> None:
    _login(page, live_app)
    first = _current_item(page)
    second = _press_and_wait(page, ["1"], "/decision.json")
    _press_and_wait(page, ["1"], "/decision.json")
    page.locator("#recent button").nth(1).click()  # the oldest: the first photo
    wait_until(page, f"document.getElementById('review').dataset.itemId == '{first}'")
    with page.expect_response(lambda r: "/change.json" in r.url) as got:
        page.keyboard.press(".")
    assert got.value.status == 200
    # The toast follows the answer's handling, a moment after the response itself.
    wait_until(
        page,
        "document.getElementById('toast').innerText.startsWith('Changed to unknown species')",
    )
    top = _topk(live_app.settings, first)[0]
    notes = _notes(live_app.settings)
    assert notes[0] == (first, Decision.LABEL, top, True)  # kept, marked undone
    assert notes[-1] == (first, Decision.UNKNOWN, None, False)
    assert (second, False) in [(n[0], n[3]) for n in notes]
    with session_scope(live_app.settings.db_url) as session:
        assert session.get(ReviewItem, first).status == ReviewStatus.DONE


def test_a_running_jobs_thumbnails_appear_as_it_is_scored(live_app: Live, page) -> None:

    settings = live_app.settings
    with session_scope(settings.db_url) as session:
        job_id = create_job(session, settings, "mindoro").id
    _login(page, live_app, f"/jobs/{job_id}")
    assert "images appear here as they are scored" in page.locator("#sheet").inner_text()
    assert page.locator("a", has_text="Review this job").count() == 1
    scan_and_score(settings, job_id)
    wait_until(page, "document.querySelectorAll('#sheet .tile img').length === 8")
    heights = {round(box["height"]) for box in _boxes(page, "#sheet .tile")}
    assert len(heights) == 1  # uniform tiles


def _boxes(page, selector: str) -> list[dict]:
    return [el.bounding_box() for el in page.locator(selector).all()]


def test_quick_keys_decide_the_photos_shown_in_order(live_app: Live, page) -> None:
    _login(page, live_app)
    first = _current_item(page)
    wait_until(page, "!document.getElementById('review').hasAttribute('aria-busy')")
    # Two keys without waiting for an answer: the held items are shown at once, one per key.
    page.keyboard.press("Delete")
    second = _current_item(page)
    page.keyboard.press(".")
    third = _current_item(page)
    assert len({first, second, third}) == 3
    wait_until(page, "!document.getElementById('review').hasAttribute('aria-busy')")
    assert _current_item(page) == third
    assert _notes(live_app.settings) == [
        (first, Decision.UNUSABLE, None, False),
        (second, Decision.UNKNOWN, None, False),
    ]
