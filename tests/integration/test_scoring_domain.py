"""The scoring spine without Celery: scan, score chunks, store, route, finish (both databases)."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import func, select

from service.db import session_scope
from service.errors import Forbidden
from service.jobs import cancel_job, create_job, get_job, job_to_dict
from service.models import (
    Chunk,
    JobImage,
    JobImageStatus,
    JobStatus,
    Prediction,
    ReviewItem,
)
from service.registry import activate_model, add_model
from service.results import ResultFilters, iter_results, query_results
from service.scanning import run_scan
from service.scoring import score_chunk
from tests.support.models import make_model_folder
from tests.support.photos import make_photo_folder, write_photo
from tests.support.scoring import scan_and_score
from workers.tasks import run_model


def _setup(settings, tmp_path: Path, name: str = "m1", seed: int = 0) -> int:
    folder = make_model_folder(
        tmp_path / name, labels=["red_snake", "green_snake", "blue_snake"], seed=seed
    )
    with session_scope(settings.db_url) as session:
        model = add_model(session, settings, folder)
        activate_model(session, model.id)
        return model.id


def _run_job(settings, folder: str, **kwargs) -> int:
    with session_scope(settings.db_url) as session:
        job_id = create_job(session, settings, folder, **kwargs).id
    scan_and_score(settings, job_id)
    return job_id


def test_job_scores_every_readable_image(db_url, make_settings, photos_root, tmp_path):
    settings = make_settings(db_url, chunk_size=5, review_threshold=0.9)
    model_id = _setup(settings, tmp_path)
    make_photo_folder(photos_root / "survey", count=12)
    (photos_root / "survey" / "broken.jpg").write_bytes(b"not really a jpeg")
    job_id = _run_job(settings, "survey")

    with session_scope(settings.db_url) as session:
        job = get_job(session, job_id)
        assert job.status == JobStatus.DONE
        assert (job.total, job.scored, job.failed) == (13, 12, 1)
        assert job.model_version_id == model_id
        preds = session.scalar(select(func.count()).select_from(Prediction))
        assert preds == 12
        rows, total = query_results(session, job_id, ResultFilters(), limit=100)
        assert total == 13
        by_name = {Path(r["rel_path"]).name: r for r in rows}
        assert by_name["broken.jpg"]["failure_reason"] == "not_an_image"
        for name, row in by_name.items():
            if name != "broken.jpg":
                assert row["label"] == name.split("_")[0] + "_snake"
        assert session.scalar(select(func.count()).select_from(Chunk)) == 3
        progress = job_to_dict(job)["progress"]
        assert progress["pending"] == 0 and progress["fraction_done"] == 1.0


def test_low_confidence_goes_to_review(db_url, make_settings, photos_root, tmp_path):
    settings = make_settings(db_url, review_threshold=0.99)
    _setup(settings, tmp_path)
    write_photo(photos_root / "a" / "grey.jpg", "grey")  # all channels equal: uncertain
    write_photo(photos_root / "a" / "red.jpg", "red")
    job_id = _run_job(settings, "a", threshold=0.7)
    with session_scope(settings.db_url) as session:
        job = get_job(session, job_id)
        assert job.routed == 1
        rows, total = query_results(session, job_id, ResultFilters(needs_review=True))
        assert total == 1 and rows[0]["rel_path"] == "grey.jpg"
        assert rows[0]["review_reason"].startswith("low_confidence")
        assert session.scalar(select(func.count()).select_from(ReviewItem)) == 1


def test_redelivered_chunk_adds_nothing_twice(db_url, make_settings, photos_root, tmp_path):
    settings = make_settings(db_url, chunk_size=4, review_threshold=1.0)
    _setup(settings, tmp_path)
    make_photo_folder(photos_root / "s", count=8)
    with session_scope(settings.db_url) as session:
        job_id = create_job(session, settings, "s").id
    chunks: list[int] = []
    run_scan(settings, job_id, chunks.extend)
    for chunk_id in chunks + chunks:  # every message delivered twice
        score_chunk(settings, chunk_id, run_model)
    # A crash after the scan committed: the scan runs again and adds nothing.
    run_scan(settings, job_id, chunks.extend)
    with session_scope(settings.db_url) as session:
        job = get_job(session, job_id)
        assert (job.status, job.total, job.scored, job.routed) == (JobStatus.DONE, 8, 8, 8)
        assert session.scalar(select(func.count()).select_from(Prediction)) == 8
        assert session.scalar(select(func.count()).select_from(ReviewItem)) == 8
        assert session.scalar(select(func.count()).select_from(JobImage)) == 8


def test_rescoring_with_another_model_keeps_old_predictions(
    db_url, make_settings, photos_root, tmp_path
):
    settings = make_settings(db_url)
    first = _setup(settings, tmp_path, "m1", seed=0)
    make_photo_folder(photos_root / "s", count=6)
    job1 = _run_job(settings, "s")
    second = _setup(settings, tmp_path, "m2", seed=1)
    job2 = _run_job(settings, "s")
    with session_scope(settings.db_url) as session:
        assert get_job(session, job1).model_version_id == first
        assert get_job(session, job2).model_version_id == second
        counts = dict(
            session.execute(
                select(Prediction.model_version_id, func.count()).group_by(
                    Prediction.model_version_id
                )
            ).all()
        )
        assert counts == {first: 6, second: 6}
        assert len(list(iter_results(session, job1))) == 6


def test_rescoring_with_the_same_model_reuses_the_stored_predictions(
    db_url, make_settings, photos_root, tmp_path
):
    settings = make_settings(db_url, chunk_size=4, review_threshold=1.0)
    _setup(settings, tmp_path)
    make_photo_folder(photos_root / "s", count=6)
    job1 = _run_job(settings, "s")
    with session_scope(settings.db_url) as session:
        before = dict(session.execute(select(Prediction.image_id, Prediction.id)).all())
    job2 = _run_job(settings, "s")  # the upsert keeps the earlier rows: read back, not added
    with session_scope(settings.db_url) as session:
        after = dict(session.execute(select(Prediction.image_id, Prediction.id)).all())
        assert after == before and len(after) == 6
        second = get_job(session, job2)
        assert (second.status, second.scored, second.failed) == (JobStatus.DONE, 6, 0)
        first_rows = {r["path"]: r["confidence"] for r in iter_results(session, job1)}
        second_rows = {r["path"]: r["confidence"] for r in iter_results(session, job2)}
        assert second_rows == first_rows and len(first_rows) == 6
        # Each prediction has one review item, made by the job that first stored it.
        assert session.scalar(select(func.count()).select_from(ReviewItem)) == 6


def test_cancel_stops_remaining_chunks(db_url, make_settings, photos_root, tmp_path):
    settings = make_settings(db_url, chunk_size=2)
    _setup(settings, tmp_path)
    make_photo_folder(photos_root / "s", count=6)
    with session_scope(settings.db_url) as session:
        job_id = create_job(session, settings, "s").id
    chunks: list[int] = []
    run_scan(settings, job_id, chunks.extend)
    score_chunk(settings, chunks[0], run_model)
    with session_scope(settings.db_url) as session:
        cancel_job(session, job_id)
    for chunk_id in chunks[1:]:
        assert score_chunk(settings, chunk_id, run_model).skipped
    with session_scope(settings.db_url) as session:
        job = get_job(session, job_id)
        assert job.status == JobStatus.CANCELLED and job.scored == 2
        pending = session.scalar(
            select(func.count())
            .select_from(JobImage)
            .where(JobImage.job_id == job_id, JobImage.status == JobImageStatus.PENDING)
        )
        assert pending == 4


@pytest.mark.parametrize("folder", ["../", "/etc", "s/../../"])
def test_folder_outside_roots_is_refused(sqlite_url, make_settings, photos_root, tmp_path, folder):
    settings = make_settings(sqlite_url)
    _setup(settings, tmp_path)
    (photos_root / "s").mkdir()
    with session_scope(settings.db_url) as session, pytest.raises(Forbidden):
        create_job(session, settings, folder)


def test_symlinked_folder_outside_roots_is_refused(
    sqlite_url, make_settings, photos_root, tmp_path
):
    settings = make_settings(sqlite_url)
    _setup(settings, tmp_path)
    outside = tmp_path / "outside"
    make_photo_folder(outside, count=2)
    (photos_root / "link").symlink_to(outside, target_is_directory=True)
    with session_scope(settings.db_url) as session, pytest.raises(Forbidden):
        create_job(session, settings, "link")


def test_a_job_folder_swapped_for_a_symlink_after_creation_fails_the_scan(
    sqlite_url, make_settings, photos_root, tmp_path
):
    settings = make_settings(sqlite_url)
    _setup(settings, tmp_path)
    make_photo_folder(photos_root / "survey", count=2)
    with session_scope(settings.db_url) as session:
        job_id = create_job(session, settings, "survey").id
    outside = tmp_path / "outside"
    make_photo_folder(outside, count=2)
    (photos_root / "survey").rename(photos_root / "moved")
    (photos_root / "survey").symlink_to(outside, target_is_directory=True)
    chunks: list[int] = []
    run_scan(settings, job_id, chunks.extend)
    with session_scope(settings.db_url) as session:
        job = get_job(session, job_id)
        assert job.status == JobStatus.FAILED and "symlink" in (job.error or "")
        assert session.scalar(select(func.count()).select_from(JobImage)) == 0
    assert chunks == []


def test_hostile_files_fail_alone_and_the_job_completes(
    db_url, make_settings, photos_root, tmp_path
):
    from tests.support.hostile import EXPECTED, make_hostile_folder

    settings = make_settings(db_url, max_image_pixels=100_000_000, chunk_size=4)
    _setup(settings, tmp_path)
    make_hostile_folder(photos_root / "hostile", tmp_path / "outside")
    job_id = _run_job(settings, "hostile")
    with session_scope(settings.db_url) as session:
        job = get_job(session, job_id)
        assert job.status == JobStatus.DONE
        rows = {r["rel_path"]: r for r in iter_results(session, job_id)}
    assert set(rows) == set(EXPECTED)
    for name, expected in EXPECTED.items():
        row = rows[name]
        if expected.startswith("scored:"):
            assert row["status"] == "scored", (name, row["failure_reason"], row["failure_detail"])
            colour = expected.split(":")[1]
            if colour != "any":
                assert row["label"] == f"{colour}_snake", name
        else:
            assert row["status"] == "failed", name
            assert row["failure_reason"] == expected, (name, row["failure_detail"])
    assert job.total == len(EXPECTED)
    assert job.scored + job.failed == job.total


class WorkerDied(Exception):
    """Stands for a kill -9 between committing chunks and sending their messages."""


def test_a_redelivered_scan_sends_chunks_whose_messages_were_lost(
    db_url, make_settings, photos_root, tmp_path
):
    settings = make_settings(db_url, chunk_size=2)
    _setup(settings, tmp_path)
    make_photo_folder(photos_root / "s", count=10)
    with session_scope(settings.db_url) as session:
        job_id = create_job(session, settings, "s").id

    def dies(chunk_ids: list[int]) -> None:
        raise WorkerDied

    with pytest.raises(WorkerDied):
        run_scan(settings, job_id, dies)  # the first batch committed, its message never sent
    sent: list[int] = []
    run_scan(settings, job_id, sent.extend)  # the broker redelivers the scan
    with session_scope(settings.db_url) as session:
        all_chunks = set(session.scalars(select(Chunk.id).where(Chunk.job_id == job_id)))
    assert set(sent) == all_chunks and len(all_chunks) == 5

    again: list[int] = []
    run_scan(settings, job_id, again.extend)  # redelivered after the scan had finished
    assert set(again) == all_chunks  # nothing scored yet: every chunk is sent again
    for chunk_id in sent + again:
        score_chunk(settings, chunk_id, run_model)
    with session_scope(settings.db_url) as session:
        job = get_job(session, job_id)
        assert (job.status, job.total, job.scored) == (JobStatus.DONE, 10, 10)
        assert session.scalar(select(func.count()).select_from(Prediction)) == 10


def test_the_scan_writes_each_job_image_once_in_its_chunk(
    db_url, make_settings, photos_root, tmp_path
):
    """Readable files are inserted with their chunk (no UPDATE of the rows afterwards),
    unreadable ones failed and in no chunk, and every chunk holds as many as it says."""
    from sqlalchemy import event

    from service.db import get_engine

    settings = make_settings(db_url, chunk_size=8)
    _setup(settings, tmp_path)
    folder = make_photo_folder(photos_root / "s", count=45)
    (folder / "broken.jpg").write_bytes(b"not a jpeg")
    with session_scope(settings.db_url) as session:
        job_id = create_job(session, settings, "s").id
    statements: list[str] = []

    def record(conn, cursor, statement, *args):
        statements.append(" ".join(statement.split()).lower())

    engine = get_engine(settings.db_url)
    event.listen(engine, "before_cursor_execute", record)
    try:
        chunks: list[int] = []
        run_scan(settings, job_id, chunks.extend)
    finally:
        event.remove(engine, "before_cursor_execute", record)
    assert any(s.startswith("insert into job_images") for s in statements)
    assert not [s for s in statements if s.startswith("update job_images")]
    with session_scope(settings.db_url) as session:
        job = get_job(session, job_id)
        assert (job.total, job.failed, job.chunks_total) == (46, 1, len(chunks))
        rows = session.execute(select(JobImage.chunk_id, JobImage.status)).all()
        assert sorted(s.value for c, s in rows if c is None) == ["failed"]
        assert all(s == JobImageStatus.PENDING for c, s in rows if c is not None)
        held = session.execute(
            select(Chunk.id, Chunk.seq, Chunk.size).where(Chunk.job_id == job_id)
        ).all()
        assert sorted(c.id for c in held) == sorted(chunks)
        assert sorted(c.seq for c in held) == list(range(1, len(chunks) + 1))
        per_chunk = {c: sum(1 for r in rows if r[0] == c) for c in chunks}
        assert per_chunk == {c.id: c.size for c in held}
        assert sum(per_chunk.values()) == 45


@pytest.mark.parametrize(
    "values", [[], ["/p/a.jpg"], ["/p/a b (1).jpg", "/p/é,{x}\"'.jpg", "/p/a.jpg"]]
)
def test_in_values_matches_in_on_both_databases(db_url, values):
    from service.db import in_values, insert_ignoring_conflicts
    from service.models import Image

    paths = ["/p/a.jpg", "/p/a b (1).jpg", "/p/é,{x}\"'.jpg", "/p/other.jpg"]
    with session_scope(db_url) as session:
        insert_ignoring_conflicts(
            session, Image, [{"path": p, "sha256": None} for p in paths], ["path", "sha256"]
        )
        found = session.scalars(select(Image.path).where(in_values(session, Image.path, values)))
        assert sorted(found) == sorted(values)


@pytest.mark.parametrize("model_size", [224, 32])
def test_scoring_writes_the_thumbnail_of_every_scored_photo(
    db_url, make_settings, photos_root, tmp_path, monkeypatch, model_size
):
    from service import thumbnails
    from service.models import Image

    settings = make_settings(db_url, review_threshold=0.0)
    folder = make_model_folder(tmp_path / "m", size=model_size)
    with session_scope(settings.db_url) as session:
        activate_model(session, add_model(session, settings, folder).id)
    make_photo_folder(photos_root / "survey", count=4, size=(640, 480))
    write_photo(photos_root / "survey" / "tiny.jpg", size=(40, 30))
    (photos_root / "survey" / "broken.jpg").write_bytes(b"not really a jpeg")
    renders: list[str] = []
    real_render = thumbnails.ensure_thumbnail
    monkeypatch.setattr(
        thumbnails,
        "ensure_thumbnail",
        lambda s, source, *a, **k: renders.append(source.name) or real_render(s, source, *a, **k),
    )

    _run_job(settings, "survey")

    with session_scope(settings.db_url) as session:
        images = session.execute(select(Image.path, Image.sha256)).all()
    made = {
        Path(path).name
        for path, sha256 in images
        if thumbnails.thumbnail_file(settings, sha256).is_file()
    }
    assert made == {Path(path).name for path, _ in images} - {"broken.jpg"}
    # A 224 px model decodes at 256 px or more: its decode gives the thumbnail, and only the
    # photo smaller than a thumbnail is read again. A 32 px model decodes too small for one.
    expected = {"tiny.jpg"} if model_size == 224 else made
    assert set(renders) == expected


def test_thumbnails_can_be_left_to_the_maintenance_queue(
    db_url, make_settings, photos_root, tmp_path
):
    settings = make_settings(db_url, thumbnails_when_scoring=False)
    _setup(settings, tmp_path)
    make_photo_folder(photos_root / "survey", count=3)
    _run_job(settings, "survey")
    assert not list(settings.thumbnails_path.rglob("*-256.jpg"))


def test_a_chunks_log_lines_carry_its_job(sqlite_url, make_settings, photos_root, tmp_path):
    import io
    import json
    import logging

    from service.logs import JsonFormatter, work_context

    settings = make_settings(sqlite_url, chunk_size=64)
    _setup(settings, tmp_path)
    make_photo_folder(photos_root / "survey", count=2)
    with session_scope(settings.db_url) as session:
        job_id = create_job(session, settings, "survey").id
    chunks: list[int] = []
    run_scan(settings, job_id, chunks.extend)
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    log = logging.getLogger("herpscore.test.chunk")
    log.addHandler(handler)
    log.setLevel(logging.INFO)

    def logged(model, paths):  # a line written in the middle of the chunk's work
        log.info("scoring %d files", len(paths))
        return run_model(model, paths)

    try:
        with work_context(chunk_id=chunks[0]):  # all the scoring task knows at first
            score_chunk(settings, chunks[0], logged)
        log.info("the next task")
    finally:
        log.removeHandler(handler)
    during, after = (json.loads(line) for line in stream.getvalue().splitlines())
    assert (during["job_id"], during["chunk_id"]) == (job_id, chunks[0])
    assert "job_id" not in after and "chunk_id" not in after
