"""The order a finished job's review queue serves (HERPSCORE_REVIEW_ORDER)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from service import registry, review
from service.db import session_scope
from service.models import Decision, Image, Prediction, ReviewItem
from service.settings import Settings
from tests.integration.test_exports import score_folder
from tests.support.models import make_model_folder
from tests.support.photos import write_photo


def served_labels(settings: Settings) -> list[str]:
    served = []
    with session_scope(settings.db_url) as session:
        while (item := review.next_item(session, "rita")) is not None:
            served.append(session.get_one(Prediction, item.prediction_id).label)
            review.decide(session, item.id, "rita", Decision.LABEL, served[-1])
    return served


def score_muddy_survey(settings: Settings, photos_root: Path) -> None:
    """Four muddy reds (the model is unsure of them: the smallest margins) and a clear
    green and blue, scored as one job: by uncertainty alone, the four reds come first."""
    for k, rgb in enumerate([(120, 90, 90), (125, 95, 90), (130, 90, 95), (135, 95, 95)]):
        write_photo(photos_root / "survey" / f"red_{k}.png", rgb, seed=k)
    write_photo(photos_root / "survey" / "green.png", (20, 220, 20), seed=10)
    write_photo(photos_root / "survey" / "blue.png", (20, 20, 220), seed=11)
    assert len(score_folder(settings, str(photos_root / "survey"))) == 6


@pytest.mark.parametrize("order", ["confidence", "balanced", "coverage"])
def test_a_finished_job_serves_its_items_in_the_configured_order(
    db_url: str,
    make_settings: Callable[..., Settings],
    photos_root: Path,
    tmp_path: Path,
    order: str,
) -> None:
    settings = make_settings(db_url, review_threshold=1.0, review_order=order)
    with session_scope(settings.db_url) as session:
        folder = make_model_folder(tmp_path / "m", labels=["red", "green", "blue"])
        registry.add_model(session, settings, folder, activate=True)
    score_muddy_survey(settings, photos_root)

    served = served_labels(settings)
    if order == "confidence":
        assert served[:4] == ["red"] * 4
    else:  # turns across the predicted labels (coverage: two per label, then the rest)
        assert sorted(served[:3]) == ["blue", "green", "red"]
        assert served[3:] == ["red"] * 3


@pytest.mark.parametrize("taught", [False, True])
def test_adaptive_turns_to_balanced_once_every_predicted_label_has_ten_human_labels(
    db_url: str,
    make_settings: Callable[..., Settings],
    photos_root: Path,
    tmp_path: Path,
    taught: bool,
) -> None:
    settings = make_settings(db_url, review_threshold=1.0, review_order="adaptive")
    with session_scope(settings.db_url) as session:
        folder = make_model_folder(tmp_path / "m", labels=["red", "green", "blue"])
        registry.add_model(session, settings, folder, activate=True)
    if taught:  # ten human labels of each colour, from an earlier job
        colours = {"red": (200, 20, 20), "green": (20, 200, 20), "blue": (20, 20, 200)}
        for colour, rgb in colours.items():
            for k in range(10):
                write_photo(photos_root / "taught" / f"{colour}_{k}.png", rgb, seed=100 + k)
        assert len(score_folder(settings, str(photos_root / "taught"))) == 30
        with session_scope(settings.db_url) as session:
            for item in session.query(ReviewItem).all():
                colour = session.get_one(Image, item.image_id).path.rsplit("/", 1)[1]
                review.decide(session, item.id, "rita", Decision.LABEL, colour.split("_")[0])
    score_muddy_survey(settings, photos_root)

    served = served_labels(settings)
    if taught:  # balanced: turns across the predicted labels
        assert sorted(served[:3]) == ["blue", "green", "red"]
    else:  # untaught: the job's 30 % smallest margins (two muddy reds) first
        assert served[:2] == ["red", "red"]


def test_venom_risk_items_stay_first_and_skipped_items_last(
    db_url: str, make_settings: Callable[..., Settings], photos_root: Path, tmp_path: Path
) -> None:
    from service.review.order import rank_job_queue

    settings = make_settings(db_url, review_threshold=1.0, review_order="balanced")
    with session_scope(settings.db_url) as session:
        folder = make_model_folder(tmp_path / "m", labels=["red", "green", "blue"])
        registry.add_model(session, settings, folder, activate=True)
    for k in range(3):
        write_photo(photos_root / "survey" / f"red_{k}.png", (130 + k, 90, 90), seed=k)
        write_photo(photos_root / "survey" / f"green_{k}.png", (20, 200 + k, 20), seed=10 + k)
    assert len(score_folder(settings, str(photos_root / "survey"))) == 6
    with session_scope(settings.db_url) as session:
        items = sorted(session.query(ReviewItem).all(), key=lambda i: i.id)
        job_id = items[0].job_id
        assert job_id is not None
        items[-1].venom_risk, items[-1].priority = True, 1.2
        items[0].priority = -1.5  # skipped once
        session.flush()
        assert rank_job_queue(session, job_id, "balanced") == 5
        served = []
        while (item := review.next_item(session, "rita")) is not None:
            served.append(item.id)
            review.decide(session, item.id, "rita", Decision.LABEL, "red")
    assert served[0] == items[-1].id and served[-1] == items[0].id
