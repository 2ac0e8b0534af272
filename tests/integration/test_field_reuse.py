"""Byte-identical photos at other paths reuse the same model version's prediction."""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from typing import Any

from sqlalchemy import select

from service.db import session_scope
from service.jobs import create_job
from service.models import Image, ModelVersion, Prediction
from service.registry import activate_model, add_model
from tests.support.models import make_model_folder
from tests.support.photos import write_photo
from tests.support.scoring import scan_and_score
from workers.tasks import run_model


def test_a_copy_at_another_path_is_not_scored_again(db_url, make_settings, photos_root, tmp_path):
    settings = make_settings(db_url)
    with session_scope(settings.db_url) as session:
        activate_model(session, add_model(session, settings, make_model_folder(tmp_path / "m")).id)
    write_photo(photos_root / "first" / "a.jpg", "red")
    write_photo(photos_root / "second" / "changed.jpg", "green")
    shutil.copy(photos_root / "first" / "a.jpg", photos_root / "second" / "copy_of_a.jpg")
    scored: list[str] = []

    def counting(model: ModelVersion, paths: Sequence[str]) -> Any:
        scored.extend(paths)
        return run_model(model, paths)

    for folder in ("first", "second"):
        with session_scope(settings.db_url) as session:
            job_id = create_job(session, settings, folder).id
        scan_and_score(settings, job_id, counting)

    assert [p.rsplit("/", 1)[1] for p in scored] == ["a.jpg", "changed.jpg"]
    with session_scope(settings.db_url) as session:
        rows = session.execute(
            select(Image.path, Prediction.label, Prediction.topk).join(
                Prediction, Prediction.image_id == Image.id
            )
        ).all()
        by_name = {path.rsplit("/", 1)[1]: (label, topk) for path, label, topk in rows}
    assert by_name["copy_of_a.jpg"] == by_name["a.jpg"]  # its own row, the same answer
