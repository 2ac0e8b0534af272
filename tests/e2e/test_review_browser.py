"""The review page in headless Chromium: log in, decide five photos from the keyboard alone."""

from __future__ import annotations

import math
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFilter
from sqlalchemy import select

from service import users
from service.db import session_scope
from service.jobs import create_job
from service.models import Annotation, Decision, Prediction, ReviewItem, ReviewStatus, Role
from service.registry import add_model
from service.scanning import run_scan
from service.scoring import score_chunk
from service.settings import Settings
from service.web import create_app
from tests.conftest import screenshot_dir
from tests.support.browser import csp_violations, wait_until
from tests.support.models import make_model_folder

CHROMIUM = Path("/usr/bin/chromium")
LABELS = ["Naja_philippinensis", "Trimeresurus_flavomaculatus", "Boiga_dendrophila"]
USERNAME, PASSWORD = "rita", "field-season-2025"

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason=f"no Chromium at {CHROMIUM}"),
]


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
    from werkzeug.serving import make_server

    from workers.tasks import run_model

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
    chunks: list[int] = []
    run_scan(settings, job_id, chunks.extend)
    for chunk_id in chunks:
        score_chunk(settings, chunk_id, run_model)

    app = create_app(settings)
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield Live(f"http://127.0.0.1:{server.server_port}", settings)
    finally:
        server.shutdown()
        thread.join(timeout=10)


@pytest.fixture()
def page(live_app: Live):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=str(CHROMIUM),
            args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
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
    attribute still names the item before it."""
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
    return _current_item(page)


def _topk(settings: Settings, item_id: int) -> list[str]:
    with session_scope(settings.db_url) as session:
        item = session.get(ReviewItem, item_id)
        return [t[0] for t in session.get(Prediction, item.prediction_id).topk]


def test_review_five_items_from_the_keyboard(live_app: Live, page, tmp_path: Path) -> None:
    page.goto(f"{live_app.url}/review")
    assert "/login" in page.url  # the queue needs a login
    page.fill("input[name=username]", USERNAME)
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"{live_app.url}/review")

    first = _current_item(page)
    wait_until(page, "document.getElementById('photo').naturalWidth > 0")
    wait_until(page, "document.querySelectorAll('#siblings img').length >= 5")
    assert page.locator("#topk li").count() == 3
    assert page.locator("#rel-path").inner_text().startswith("transect_03/IMG_41")
    assert "2025" in page.locator("#captured").inner_text()
    assert page.locator("#keyhelp").is_visible()
    shots = screenshot_dir(tmp_path)
    shots.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(shots / "review-queue.png"))

    # Zoom never posts anything; 0 resets.
    page.keyboard.press("+")
    assert "scale(1.25)" in page.get_attribute("#photo", "style")
    page.keyboard.press("0")
    assert "scale(1)" in page.get_attribute("#photo", "style")

    expected: list[tuple[int, Decision, str | None, bool]] = []
    second = _press_and_wait(page, ["Enter"], "/decision.json")  # confirm the top suggestion
    expected.append((first, Decision.LABEL, _topk(live_app.settings, first)[0], False))
    third = _press_and_wait(page, ["2"], "/decision.json")  # the second suggestion
    expected.append((second, Decision.LABEL, _topk(live_app.settings, second)[1], False))
    fourth = _press_and_wait(page, ["u"], "/decision.json")
    expected.append((third, Decision.UNKNOWN, None, False))
    fifth = _press_and_wait(page, ["x"], "/decision.json")
    expected.append((fourth, Decision.UNUSABLE, None, True))  # undone below

    # Back shows the decided item read-only; forward returns to the current one.
    page.keyboard.press("ArrowLeft")
    wait_until(page, f"document.getElementById('review').dataset.itemId == '{fourth}'")
    assert "not usable" in page.locator("#readonly").inner_text()
    page.keyboard.press("Enter")  # read-only: nothing is posted
    page.keyboard.press("ArrowRight")
    assert _current_item(page) == fifth and page.locator("#readonly").is_hidden()

    assert _press_and_wait(page, ["z"], "/undo.json") == fourth  # Z shows it again
    # The type-ahead: "/" opens it, a new label, Enter saves it.
    page.keyboard.press("/")
    page.keyboard.type("Naja samarensis")
    assert page.locator("#label-options li.new").inner_text().startswith("+ New label")
    page.screenshot(path=str(shots / "review-typeahead.png"))
    with page.expect_response(lambda r: "/decision.json" in r.url) as got:
        page.keyboard.press("Enter")
    assert got.value.status == 200
    expected.append((fourth, Decision.LABEL, "Naja samarensis", False))
    assert _current_item(page) == fifth

    # Typing letters opens the type-ahead over known labels (the new one included).
    page.keyboard.press("b")
    page.keyboard.type("oiga")
    assert page.locator("#label-options li[aria-selected=true]").inner_text() == (
        "Boiga dendrophila"
    )
    with page.expect_response(lambda r: "/decision.json" in r.url):
        page.keyboard.press("Enter")
    expected.append((fifth, Decision.LABEL, "Boiga_dendrophila", False))
    sixth = _current_item(page)
    assert sixth not in (first, second, third, fourth, fifth)

    with session_scope(live_app.settings.db_url) as session:
        notes = session.scalars(select(Annotation).order_by(Annotation.id)).all()
        assert [
            (n.review_item_id, n.decision, n.label, n.undone_at is not None) for n in notes
        ] == (expected)
        assert {n.reviewer for n in notes} == {USERNAME}
        statuses = dict(session.execute(select(ReviewItem.id, ReviewItem.status)).all())
        decided = {first, second, third, fourth, fifth}
        assert {i for i, s in statuses.items() if s == ReviewStatus.DONE} == decided
        held = session.get(ReviewItem, sixth)
        assert (held.status, held.claimed_by) == (ReviewStatus.PENDING, USERNAME)
