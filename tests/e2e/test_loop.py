"""The whole loop in one process: score -> review -> export -> retrain -> gate -> score better."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import func, select

from service import registry, retraining, review
from service.db import session_scope
from service.jobs import get_job
from service.models import Decision, Image, ModelStatus, Prediction, RunStatus
from service.promotion import decide_promotion, promote_run
from service.settings import Settings
from tests.integration.test_exports import make_survey, score_folder
from tests.support.models import make_model_folder

pytestmark = [pytest.mark.slow, pytest.mark.torch]

# The first model confuses green and blue photos: reviewers have something to correct.
FIRST_MODEL = ["red_snake", "blue_snake", "green_snake"]


def review_everything(settings: Settings) -> dict[str, int]:
    """A reviewer works the queue: the true label from the file name; one photo is unusable."""
    decided = {"label": 0, "unusable": 0}
    while True:
        with session_scope(settings.db_url) as session:
            item = review.next_item(session, "rita")
            if item is None:
                return decided
            name = Path(session.get_one(Image, item.image_id).path).name
            if decided["unusable"] == 0:
                review.decide(session, item.id, "rita", Decision.UNUSABLE)
                decided["unusable"] += 1
                continue
            review.decide(session, item.id, "rita", Decision.LABEL, f"{name.split('_')[0]}_snake")
            decided["label"] += 1


def test_the_loop(
    sqlite_url: str, make_settings: Callable[..., Settings], photos_root: Path, tmp_path: Path
) -> None:
    pytest.importorskip("torch")
    from workers.training_tasks import fit_model, label_predictor

    settings = make_settings(
        sqlite_url,
        review_threshold=1.0,  # every prediction goes to review
        retrain_min_new_labels=20,
        export_min_per_class=2,
        auto_promote=True,
        training_backbone="mobilenet_v3_small",
        training_weights="none",
        training_size=32,
        training_epochs_stage1=2,
        training_epochs_stage2=1,
        training_batch_size=16,
        training_min_per_class=1,
        training_int8=False,
        training_extra_args="--parity-images 4",
    )
    with session_scope(settings.db_url) as session:
        first = registry.add_model(
            session, settings, make_model_folder(tmp_path / "m0", labels=FIRST_MODEL), activate=True
        ).id

    # 1. Score a survey: 6 sites x 3 species x 3 photos.
    survey = str(make_survey(photos_root / "survey", sites=6, per_colour=3))
    images = score_folder(settings, survey)
    assert len(images) == 54

    # 2. Review: every item is decided (53 labels, 1 unusable).
    assert review_everything(settings) == {"label": 53, "unusable": 1}

    # 3-4. The scheduled check exports and trains; the run publishes a candidate.
    with session_scope(settings.db_url) as session:
        check = retraining.retrain_check(session, settings)
    assert check.started and check.new_labels == 53 and check.run_id
    run = retraining.run_training(settings, check.run_id, fit_model, label_predictor(settings))
    assert run is not None and run.status == RunStatus.DONE, run and run.error
    assert run.model_version_id and run.metrics

    # 5. The gate decided as its numbers say.
    decision = run.promotion
    assert decision and decision["test_set"]["n"] > 0 and decision["active_id"] == first
    expected, _ = decide_promotion(
        decision["candidate"],
        decision["active"],
        decision["margin"],
        changes=decision["recall_changes"],
        venomous=set(decision["venomous"]),
        alpha=decision["alpha"],
        correction=decision["correction"],
    )
    assert decision["passed"] is expected and decision["promoted"] is expected
    candidate = run.model_version_id
    with session_scope(settings.db_url) as session:
        active = registry.require_active_model(session)
        assert active.id == (candidate if expected else first)
        if not expected:  # the admin overrides the gate, so the rest of the loop runs
            promote_run(session, check.run_id, actor="admin", force=True)

    # 6. The next job uses the new active version; the first job keeps its own.
    second_images = score_folder(settings, survey)
    with session_scope(settings.db_url) as session:
        jobs = [get_job(session, n) for n in (1, 2)]
        assert [j.model_version_id for j in jobs] == [first, candidate]
        per_model = dict(
            session.execute(
                select(Prediction.model_version_id, func.count()).group_by(
                    Prediction.model_version_id
                )
            ).all()
        )
        assert per_model == {first: 54, candidate: len(second_images)}
        assert registry.get_model(session, first).status == ModelStatus.RETIRED
        # 7. And a rollback brings the first model back for the job after that.
        assert registry.rollback(session, actor="admin").id == first
