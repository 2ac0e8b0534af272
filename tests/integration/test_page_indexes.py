"""Migration 0013: the indexes a big job's label-filtered and deep pages read."""

from __future__ import annotations

from alembic import command
from sqlalchemy import create_engine, inspect

from service.migrate import alembic_config, check, upgrade

LABEL_INDEX = ["model_version_id", "label", "image_id"]
PATH_INDEX = ["job_id", "rel_path", "id", "image_id"]


def _indexes(url: str) -> dict[str, list[str | None]]:
    engine = create_engine(url)
    try:
        found = inspect(engine)
        return {
            str(index["name"]): list(index["column_names"])
            for table in ("predictions", "job_images")
            for index in found.get_indexes(table)
        }
    finally:
        engine.dispose()


def test_0013_indexes_label_pages_and_covers_the_path_walk(db_url: str) -> None:
    check(db_url)  # the models declare what the migrations made
    indexes = _indexes(db_url)
    assert indexes["ix_predictions_version_label"] == LABEL_INDEX
    assert indexes["ix_job_images_job_path"] == PATH_INDEX
    assert "ix_predictions_model_version_id" not in indexes  # the new index's first column

    command.downgrade(alembic_config(db_url), "0012")
    indexes = _indexes(db_url)
    assert "ix_predictions_version_label" not in indexes
    assert indexes["ix_predictions_model_version_id"] == ["model_version_id"]
    assert indexes["ix_job_images_job_path"] == ["job_id", "rel_path", "id"]

    upgrade(db_url)
    check(db_url)
    assert _indexes(db_url)["ix_predictions_version_label"] == LABEL_INDEX
