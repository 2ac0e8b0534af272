"""Migration 0007 on existing data: local capture times stop being labelled UTC; sites fill."""

from __future__ import annotations

from datetime import datetime

from alembic import command
from sqlalchemy import create_engine, text

from service.migrate import alembic_config, upgrade


def test_0007_moves_capture_times_to_local_and_fills_sites(db_url: str) -> None:
    command.downgrade(alembic_config(db_url), "0006")  # the fixture migrated to head
    engine = create_engine(db_url)
    with engine.begin() as conn:
        conn.execute(text(
            "INSERT INTO model_versions (id, name, path, status, num_classes, class_map, "
            "metadata_json, files_sha256, source, created_at) VALUES (1, 'm', '/m', 'active', 1, "
            "'{}', '{}', '{}', '', :now)"
        ), {"now": datetime(2024, 1, 1)})  # fmt: skip
        conn.execute(text(
            "INSERT INTO scan_jobs (id, folder, recursive, extensions, model_version_id, "
            "threshold, status, total, scored, failed, routed, chunks_total, scan_complete, "
            "created_by, created_at) VALUES (1, '/data/survey', true, '[]', 1, 0.6, 'done', "
            "2, 2, 0, 0, 0, true, '', :now)"
        ), {"now": datetime(2024, 1, 1)})  # fmt: skip
        for image_id, rel in ((1, "quezon/a.jpg"), (2, "b.jpg")):
            conn.execute(text(
                "INSERT INTO images (id, path, captured_at, created_at) "
                "VALUES (:id, :path, :at, :now)"
            ), {"id": image_id, "path": f"/data/survey/{rel}", "now": datetime(2024, 1, 1),
                "at": datetime(2024, 5, 1, 21, 30) if image_id == 1 else None})  # fmt: skip
            conn.execute(text(
                "INSERT INTO job_images (job_id, image_id, rel_path, status) "
                "VALUES (1, :id, :rel, 'scored')"
            ), {"id": image_id, "rel": rel})  # fmt: skip
    engine.dispose()
    upgrade(db_url)
    engine = create_engine(db_url)
    with engine.connect() as conn:
        image = conn.execute(
            text("SELECT captured_at, captured_local FROM images WHERE id = 1")
        ).one()
        sites = dict(conn.execute(text("SELECT image_id, site FROM job_images")).all())
    engine.dispose()
    assert image.captured_at is None  # it was never known to be UTC
    local = image.captured_local
    if isinstance(local, str):  # SQLite hands back text
        local = datetime.fromisoformat(local)
    assert local == datetime(2024, 5, 1, 21, 30)
    assert sites == {1: "quezon", 2: "survey"}
