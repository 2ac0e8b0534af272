"""The order a finished job's review queue serves: turns across predicted labels."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from service import registry, review
from service.db import session_scope
from service.models import Decision, Prediction
from service.settings import Settings
from tests.integration.test_exports import score_folder
from tests.support.models import make_model_folder
from tests.support.photos import write_photo


def test_a_finished_job_serves_each_predicted_label_in_turn(
    db_url: str, make_settings: Callable[..., Settings], photos_root: Path, tmp_path: Path
) -> None:
    settings = make_settings(db_url, review_threshold=1.0)  # every prediction is routed
    with session_scope(settings.db_url) as session:
        folder = make_model_folder(tmp_path / "m", labels=["red", "green", "blue"])
        registry.add_model(session, settings, folder, activate=True)
    # Four muddy reds (the model is unsure of them) and a clear green and blue: by
    # uncertainty alone, the four reds would be served first.
    for k, rgb in enumerate([(120, 90, 90), (125, 95, 90), (130, 90, 95), (135, 95, 95)]):
        write_photo(photos_root / "survey" / f"red_{k}.png", rgb, seed=k)
    write_photo(photos_root / "survey" / "green.png", (20, 220, 20), seed=10)
    write_photo(photos_root / "survey" / "blue.png", (20, 20, 220), seed=11)
    assert len(score_folder(settings, str(photos_root / "survey"))) == 6

    served = []
    with session_scope(settings.db_url) as session:
        while (item := review.next_item(session, "rita")) is not None:
            served.append(session.get_one(Prediction, item.prediction_id).label)
            review.decide(session, item.id, "rita", Decision.LABEL, served[-1])
    assert served[0] == "red"  # the most uncertain prediction still comes first
    assert sorted(served[:3]) == ["blue", "green", "red"]
    assert served[3:] == ["red"] * 3
