"""Stored queue counts equal a recount after any mix of writes; the queue reads stay flat."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from sqlalchemy import delete, event, select, update
from sqlalchemy.orm import Session

from service import review, review_queue
from service.bursts import BurstRules
from service.db import get_engine, insert_ignoring_conflicts, session_scope
from service.models import Decision, Prediction, ReviewItem, ScanJob, utcnow
from service.review.counters import NO_JOB, queue_counts, recounted, stored_counts
from tests.integration.test_review import _claim, _decide, _run_threads, seed_queue


def _assert_counters_match(url: str) -> None:
    with session_scope(url) as session:
        counted = recounted(session)
        assert stored_counts(session) == counted
        for job, (pending, done) in counted.items():
            if job != NO_JOB:
                stats = review.queue_stats(session, job_id=job)
                assert (stats["pending"], stats["done"]) == (pending, done)
        everything = review.queue_stats(session)
        assert everything["pending"] == sum(p for p, _ in counted.values())
        assert everything["done"] == sum(d for _, d in counted.values())


def test_counters_equal_a_recount_after_a_mixed_sequence(db_url: str) -> None:
    """Routing, claims, decisions, skips, undo, changes, bulk confirm, cascading deletes."""
    first = seed_queue(db_url, count=12, routed=8)
    second = seed_queue(db_url, count=10, routed=6, root="/photos/other")
    _assert_counters_match(db_url)

    # Decisions of every kind, a skip (no move), and a claim held ahead (no move).
    for decision in (Decision.LABEL, Decision.UNKNOWN, Decision.UNUSABLE, Decision.SKIP):
        item_id = _claim(db_url, "ana", job_id=first.job_id)
        assert item_id is not None
        _decide(db_url, item_id, "ana", decision, "Ptyas_carinata" if decision == "label" else None)
    with session_scope(db_url) as session:
        current = review.next_item(session, "ben", job_id=second.job_id)
        assert current is not None
        review_queue.claim_ahead(session, "ben", current, second.job_id)
        review.decide(session, current.id, "ben", Decision.LABEL, "Naja_philippinensis")
    _assert_counters_match(db_url)

    # Undo (the item reopens), undo again, and a changed decision (undo + decide).
    with session_scope(db_url) as session:
        assert review.undo_last(session, "ana") is not None
        assert review.undo_last(session, "ana") is not None
    _assert_counters_match(db_url)
    with session_scope(db_url) as session:
        latest = review.recent_annotations(session, "ben", 1)[0]
        review_queue.change_decision(session, latest.id, "ben", Decision.UNKNOWN)
    _assert_counters_match(db_url)

    # Bulk confirm across both jobs, routed and unrouted images alike.
    with session_scope(db_url) as session:
        ids = first.image_ids[:10] + second.image_ids[:3] + second.image_ids[-2:]
        assert review.confirm_many(session, ids, "cy") > 0
    _assert_counters_match(db_url)

    # Routing again (the scorer's idempotent insert: a duplicate changes nothing).
    with session_scope(db_url) as session:
        unrouted = session.scalars(
            select(Prediction).where(
                Prediction.job_id == second.job_id,
                Prediction.id.not_in(select(ReviewItem.prediction_id)),
            )
        ).all()
        rows = [
            {"prediction_id": p.id, "image_id": p.image_id, "job_id": p.job_id,
             "reason": "low_confidence", "priority": 0.5, "created_at": utcnow()}
            for p in unrouted
        ]  # fmt: skip
        insert_ignoring_conflicts(session, ReviewItem, rows + rows[:1], ["prediction_id"])
    _assert_counters_match(db_url)

    # A prediction deleted (its item cascades), then a whole job (its items lose their job).
    with session_scope(db_url) as session:
        victim = session.scalar(select(ReviewItem.prediction_id).limit(1))
        session.execute(delete(Prediction).where(Prediction.id == victim))
    _assert_counters_match(db_url)
    with session_scope(db_url) as session:
        session.execute(delete(ScanJob).where(ScanJob.id == first.job_id))
    with session_scope(db_url) as session:
        assert first.job_id not in stored_counts(session)
        assert NO_JOB in stored_counts(session)  # its items, now of no job
    _assert_counters_match(db_url)

    # A claim, a lease and a skip move nothing; an item moved to another job moves its count.
    with session_scope(db_url) as session:
        session.execute(
            update(ReviewItem)
            .where(ReviewItem.job_id.is_(None))
            .values(job_id=second.job_id, claimed_by="dee", lease_expires_at=utcnow())
        )
    _assert_counters_match(db_url)


def test_counters_stay_exact_under_concurrent_reviewers(db_url: str) -> None:
    """Eight reviewers claim, decide and undo at once; the counters equal a recount."""
    seeded = seed_queue(db_url, count=40)

    def worker(index: int) -> None:
        reviewer = f"reviewer-{index}"
        for round_ in range(8):
            item_id = _claim(db_url, reviewer, job_id=seeded.job_id)
            if item_id is None:
                return
            _decide(db_url, item_id, reviewer, Decision.LABEL, "Boiga_dendrophila")
            if round_ % 3 == 0:
                with session_scope(db_url) as session:
                    review.undo_last(session, reviewer)

    assert _run_threads(worker, 8) == []
    _assert_counters_match(db_url)
    with session_scope(db_url) as session:
        pending, done = queue_counts(session, seeded.job_id)
    assert pending + done == 40 and done > 0


# ------------------------------------------------------------------------------ flat reads

PENDING = 20_000  # far more than any read of the queue may touch
ROW_BUDGET = 200  # rows any plan node may produce or filter away, per statement


def _bulk_pending(url: str, seeded_job: int, model_id: int) -> None:
    """PENDING more images, predictions and pending review items in the job, by SQL."""
    engine = get_engine(url)
    with engine.begin() as conn:
        conn.exec_driver_sql(
            # A photo every 7 seconds at one site, each with a perceptual hash: bursts.
            "INSERT INTO images (path, sha256, captured_local, phash, created_at) "
            "SELECT '/bulk/' || i || '.jpg', md5(i::text), "
            "timestamp '2026-01-01' + i * interval '7 seconds', lpad(to_hex(i), 16, '0'), "
            f"now() FROM generate_series(1, {PENDING}) i"
        )
        conn.exec_driver_sql(
            "INSERT INTO job_images (job_id, image_id, rel_path, folder, site, status) "
            f"SELECT {seeded_job}, id, 'bulk/' || id || '.jpg', 'bulk', 'site_x', 'scored' "
            "FROM images WHERE path LIKE '/bulk/%%'"
        )
        conn.exec_driver_sql(
            "INSERT INTO predictions (image_id, model_version_id, job_id, label, label_index, "
            f"confidence, topk, created_at) SELECT id, {model_id}, {seeded_job}, "
            "'Ptyas_carinata', 1, 0.5, '[[\"Ptyas_carinata\", 0.5]]', now() FROM images "
            "WHERE path LIKE '/bulk/%%'"
        )
        conn.exec_driver_sql(
            "INSERT INTO review_items (prediction_id, image_id, job_id, reason, status, "
            "priority, venom_risk, created_at) SELECT p.id, p.image_id, p.job_id, 'low', "
            "'pending', 1 + random(), false, now() FROM predictions p "
            "JOIN images i ON i.id = p.image_id WHERE i.path LIKE '/bulk/%%'"
        )
        conn.exec_driver_sql("ANALYZE")


@contextmanager
def _statements(url: str) -> Iterator[list[tuple[str, Any]]]:
    seen: list[tuple[str, Any]] = []

    def record(_conn: Any, _cursor: Any, statement: str, params: Any, *_: Any) -> None:
        if statement.lstrip().upper().startswith(("SELECT", "WITH")):
            seen.append((statement, params))

    engine = get_engine(url)
    event.listen(engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", record)


def _rows_touched(plan: dict[str, Any]) -> Iterator[tuple[str, float]]:
    """(node type, rows it produced or filtered away over all its loops) for every node."""
    loops = plan.get("Actual Loops", 1)
    rows = plan.get("Actual Rows", 0) + plan.get("Rows Removed by Filter", 0)
    yield plan["Node Type"] + " " + plan.get("Relation Name", ""), rows * loops
    for child in plan.get("Plans", []):
        yield from _rows_touched(child)


def _queue_reads(session: Session, reviewer: str, job_id: int | None) -> None:
    """What review next and the review page read and claim for one reviewer."""
    item = review.next_item(session, reviewer, job_id=job_id)
    assert item is not None
    review_queue.claim_ahead(session, reviewer, item, job_id)
    review_queue.upcoming_images(session, reviewer, item.id, job_id)
    rules = BurstRules(window_seconds=3, max_distance=64)
    review.item_context(session, item, reviewer=reviewer, job_id=job_id, burst_rules=rules)
    review.queue_stats(session, reviewer, job_id)
    review.recent_annotations(session, reviewer, 12, job_id=job_id)


@pytest.mark.postgres
@pytest.mark.parametrize("scoped", [False, True], ids=["all jobs", "one job"])
def test_queue_reads_touch_a_bounded_number_of_rows(pg_url: str, scoped: bool) -> None:
    """Every statement of a claim, its page and the counts reads O(page) rows, not the
    pending set or the job: no sort of every pending item, no count over them, no read of
    a site's every photo for a burst (EXPLAIN ANALYZE)."""
    seeded = seed_queue(pg_url, count=10)
    _bulk_pending(pg_url, seeded.job_id, seeded.model_id)
    job_id = seeded.job_id if scoped else None
    with session_scope(pg_url) as session:  # a decision, so undo and recent have one
        first = review.next_item(session, "ana", job_id=job_id)
        assert first is not None
        review.decide(session, first.id, "ana", Decision.LABEL, "Ptyas_carinata")
    with _statements(pg_url) as seen, session_scope(pg_url) as session:
        _queue_reads(session, "ana", job_id)
    assert len(seen) > 10
    raw = get_engine(pg_url).raw_connection()
    try:
        cursor = raw.cursor()
        for statement, params in seen:
            cursor.execute("EXPLAIN (ANALYZE, FORMAT JSON) " + statement, params)
            plan = cursor.fetchone()[0]
            plan = json.loads(plan) if isinstance(plan, str) else plan
            heavy = [(node, n) for node, n in _rows_touched(plan[0]["Plan"]) if n > ROW_BUDGET]
            assert not heavy, f"{heavy} in {statement[:300]}"
        raw.rollback()
    finally:
        raw.close()


def test_a_bulk_claim_and_counts_in_one_transaction_see_their_own_writes(db_url: str) -> None:
    """The counters move inside the writer's transaction: it reads its own decision."""
    seeded = seed_queue(db_url, count=5)
    with session_scope(db_url) as session:
        before = queue_counts(session, seeded.job_id)
        item = review.next_item(session, "ana")
        assert item is not None
        review.decide(session, item.id, "ana", Decision.UNKNOWN)
        assert queue_counts(session, seeded.job_id) == (before[0] - 1, before[1] + 1)
        assert queue_counts(session) == (before[0] - 1, before[1] + 1)
