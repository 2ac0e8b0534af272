"""The review queue's domain on both databases: exclusive claims, leases, decide, skip, undo."""

from __future__ import annotations

import threading
import uuid
from dataclasses import dataclass
from datetime import timedelta

import pytest
from sqlalchemy import func, select, update

from service import review
from service.db import session_scope
from service.errors import BadInput, InvalidState
from service.models import (
    Annotation,
    Decision,
    Image,
    JobImage,
    JobImageStatus,
    JobStatus,
    ModelStatus,
    ModelVersion,
    Prediction,
    ReviewItem,
    ReviewStatus,
    ScanJob,
    utcnow,
)
from tests.support.scoring import scan_and_score

LABELS = ["Naja_philippinensis", "Ptyas_carinata", "Boiga_dendrophila"]


@dataclass
class Seeded:
    model_id: int
    job_id: int
    image_ids: list[int]
    item_ids: list[int]  # highest priority first


def seed_queue(
    url: str,
    count: int = 30,
    folders: tuple[str, ...] = ("site_a", "site_b"),
    root: str = "/photos/survey",
    routed: int | None = None,
) -> Seeded:
    """A model, a done job and `count` scored images; the first `routed` are review items.

    Confidence grows with the index, so the items' priority (1 - confidence) falls with it.
    """
    routed = count if routed is None else routed
    with session_scope(url) as session:
        model = ModelVersion(
            name="seed-model",
            path=f"/registry/{uuid.uuid4().hex}",
            status=ModelStatus.CANDIDATE,
            num_classes=len(LABELS),
            class_map={str(i): label for i, label in enumerate(LABELS)},
            meta={"format": "herpscore-model/1"},
            files_sha256={},
        )
        session.add(model)
        session.flush()
        job = ScanJob(
            folder=root,
            extensions=["jpg"],
            model_version_id=model.id,
            threshold=0.9,
            status=JobStatus.DONE,
        )
        session.add(job)
        session.flush()
        image_ids, item_ids = [], []
        for i in range(count):
            rel_path = f"{folders[i % len(folders)]}/img_{i:03d}.jpg"
            image = Image(path=f"{root}/{rel_path}", captured_at=utcnow() - timedelta(hours=i))
            session.add(image)
            session.flush()
            session.add(
                JobImage(
                    job_id=job.id,
                    image_id=image.id,
                    rel_path=rel_path,
                    status=JobImageStatus.SCORED,
                )
            )
            confidence = round(0.2 + 0.02 * i, 4)
            top = i % len(LABELS)
            rest = (1.0 - confidence) / 2
            pred = Prediction(
                image_id=image.id,
                model_version_id=model.id,
                job_id=job.id,
                label=LABELS[top],
                label_index=top,
                confidence=confidence,
                topk=[
                    [LABELS[top], confidence],
                    [LABELS[(top + 1) % 3], rest],
                    [LABELS[(top + 2) % 3], rest],
                ],
            )
            session.add(pred)
            session.flush()
            image_ids.append(image.id)
            if i < routed:
                item = ReviewItem(
                    prediction_id=pred.id,
                    image_id=image.id,
                    job_id=job.id,
                    reason="low_confidence<0.9",
                    priority=1.0 - confidence,
                )
                session.add(item)
                session.flush()
                item_ids.append(item.id)
        return Seeded(model.id, job.id, image_ids, item_ids)


def _claim(url: str, reviewer: str, **kwargs) -> int | None:
    with session_scope(url) as session:
        item = review.next_item(session, reviewer, **kwargs)
        return item.id if item else None


def _decide(url: str, item_id: int, reviewer: str, decision: Decision, label=None) -> int:
    with session_scope(url) as session:
        return review.decide(session, item_id, reviewer, decision, label).id


def _expire_lease(url: str, item_id: int) -> None:
    with session_scope(url) as session:
        session.execute(
            update(ReviewItem)
            .where(ReviewItem.id == item_id)
            .values(lease_expires_at=utcnow() - timedelta(seconds=1))
        )


def _run_threads(target, count: int) -> list[BaseException]:
    errors: list[BaseException] = []
    barrier = threading.Barrier(count)

    def run(index: int) -> None:
        try:
            barrier.wait(timeout=30)
            target(index)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the main thread
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    return errors


# ------------------------------------------------------------------------------ concurrency


def test_concurrent_claims_never_share_an_item(db_url):
    seeded = seed_queue(db_url, count=30)
    claims: list[tuple[str, int | None]] = []
    lock = threading.Lock()

    def worker(index: int) -> None:
        for round_ in range(4):  # 8 x 4 = 32 claims for 30 items
            reviewer = f"reviewer-{index}-{round_}"
            got = _claim(db_url, reviewer)
            with lock:
                claims.append((reviewer, got))

    assert _run_threads(worker, 8) == []
    taken = [item_id for _, item_id in claims if item_id is not None]
    assert len(taken) == len(set(taken)), "an item was handed to two reviewers"
    assert sorted(taken) == sorted(seeded.item_ids)
    assert sum(1 for _, item_id in claims if item_id is None) == 2
    with session_scope(db_url) as session:
        holders = dict(session.execute(select(ReviewItem.id, ReviewItem.claimed_by)).all())
    for reviewer, item_id in claims:
        if item_id is not None:
            assert holders[item_id] == reviewer


def test_concurrent_reviewers_decide_every_item_exactly_once(db_url):
    seeded = seed_queue(db_url, count=30)
    decided: dict[str, list[int]] = {}

    def worker(index: int) -> None:
        reviewer = f"reviewer-{index}"
        mine = decided.setdefault(reviewer, [])
        while (item_id := _claim(db_url, reviewer)) is not None:
            _decide(db_url, item_id, reviewer, Decision.UNKNOWN)
            mine.append(item_id)

    assert _run_threads(worker, 8) == []
    everything = [item_id for ids in decided.values() for item_id in ids]
    assert sorted(everything) == sorted(seeded.item_ids)
    with session_scope(db_url) as session:
        per_item = dict(
            session.execute(
                select(Annotation.review_item_id, func.count()).group_by(Annotation.review_item_id)
            ).all()
        )
        statuses = set(session.scalars(select(ReviewItem.status)))
    assert per_item == {item_id: 1 for item_id in seeded.item_ids}
    assert statuses == {ReviewStatus.DONE}


# ------------------------------------------------------------------------------ claims, leases


def test_next_item_is_highest_priority_and_sticky(db_url):
    seeded = seed_queue(db_url, count=5)
    first = _claim(db_url, "ana")
    assert first == seeded.item_ids[0]
    assert _claim(db_url, "ana") == first  # a reload shows the same item
    assert _claim(db_url, "ben") == seeded.item_ids[1]
    with session_scope(db_url) as session:
        item = session.get(ReviewItem, first)
        assert item.claimed_by == "ana" and item.lease_expires_at > utcnow()


def test_next_item_filters_by_job_and_reports_empty(db_url):
    one = seed_queue(db_url, count=2)
    two = seed_queue(db_url, count=1)
    assert _claim(db_url, "ana", job_id=two.job_id) == two.item_ids[0]
    assert _claim(db_url, "ben", job_id=two.job_id) is None
    assert _claim(db_url, "ben", job_id=one.job_id) == one.item_ids[0]


def test_expired_lease_returns_item_to_the_queue(db_url):
    seeded = seed_queue(db_url, count=1)
    item_id = _claim(db_url, "ana")
    assert _claim(db_url, "ben") is None
    with pytest.raises(InvalidState, match="claimed by another reviewer"):
        _decide(db_url, item_id, "ben", Decision.UNKNOWN)
    _expire_lease(db_url, item_id)
    assert _claim(db_url, "ben") == seeded.item_ids[0]
    with pytest.raises(InvalidState):  # ana's claim is gone, ben holds a live one
        _decide(db_url, item_id, "ana", Decision.UNKNOWN)
    _decide(db_url, item_id, "ben", Decision.UNKNOWN)


def test_anyone_may_decide_an_item_whose_lease_expired(db_url):
    seed_queue(db_url, count=1)
    item_id = _claim(db_url, "ana")
    _expire_lease(db_url, item_id)
    _decide(db_url, item_id, "ben", Decision.UNUSABLE)
    with session_scope(db_url) as session:
        item = session.get(ReviewItem, item_id)
        assert (item.status, item.claimed_by) == (ReviewStatus.DONE, "ben")


# ------------------------------------------------------------------------------ decisions


def test_label_decision_records_what_the_machine_said(db_url):
    seeded = seed_queue(db_url, count=2)
    item_id = _claim(db_url, "ana")
    _decide(db_url, item_id, "ana", Decision.LABEL, "  Trimeresurus flavomaculatus ")
    with session_scope(db_url) as session:
        note = session.scalar(select(Annotation))
        item = session.get(ReviewItem, item_id)
        pred = session.get(Prediction, item.prediction_id)
        assert note.label == "Trimeresurus flavomaculatus"  # new label, trimmed
        assert (note.reviewer, note.decision, note.image_id) == (
            "ana",
            Decision.LABEL,
            seeded.image_ids[0],
        )
        assert (note.machine_label, note.machine_confidence, note.model_version_id) == (
            pred.label,
            pred.confidence,
            seeded.model_id,
        )
        assert note.review_item_id == item_id and note.undone_at is None
        assert item.status == ReviewStatus.DONE and item.decided_at is not None
        assert review.current_label(session, seeded.image_ids[0]).id == note.id
        assert "Trimeresurus flavomaculatus" in review.known_labels(session, seeded.model_id)
    assert _claim(db_url, "ana") == seeded.item_ids[1]


@pytest.mark.parametrize(
    ("decision", "label"),
    [
        (Decision.LABEL, None),
        (Decision.LABEL, "   "),
        (Decision.LABEL, "x" * 201),
        (Decision.LABEL, "Naja\nnaja"),
        (Decision.UNKNOWN, "Naja"),
    ],
)
def test_bad_labels_are_refused(sqlite_url, decision, label):
    seed_queue(sqlite_url, count=1)
    item_id = _claim(sqlite_url, "ana")
    with pytest.raises(BadInput):
        _decide(sqlite_url, item_id, "ana", decision, label)


def test_a_decided_item_cannot_be_decided_again(db_url):
    seed_queue(db_url, count=1)
    item_id = _claim(db_url, "ana")
    _decide(db_url, item_id, "ana", Decision.UNKNOWN)
    with pytest.raises(InvalidState):
        _decide(db_url, item_id, "ana", Decision.UNUSABLE)


def test_skip_releases_the_item_and_lowers_it(db_url):
    seeded = seed_queue(db_url, count=3)
    first = _claim(db_url, "ana")
    _decide(db_url, first, "ana", Decision.SKIP)
    with session_scope(db_url) as session:
        item = session.get(ReviewItem, first)
        assert item.status == ReviewStatus.PENDING
        assert item.claimed_by is None and item.lease_expires_at is None
        assert item.priority < 0  # below every item never skipped
        note = session.scalar(select(Annotation))
        assert (note.decision, note.label) == (Decision.SKIP, None)
        assert review.current_label(session, seeded.image_ids[0]) is None
    assert _claim(db_url, "ana") == seeded.item_ids[1]
    assert _claim(db_url, "ben") == seeded.item_ids[2]
    assert _claim(db_url, "cy") == first  # skipped items come back, last


# ------------------------------------------------------------------------------ undo


def test_undo_walks_back_one_decision_at_a_time(db_url):
    seeded = seed_queue(db_url, count=4)
    a, b, c = seeded.item_ids[:3]
    for item_id, decision in ((a, Decision.UNKNOWN), (b, Decision.UNUSABLE), (c, Decision.SKIP)):
        assert _claim(db_url, "ana") == item_id
        _decide(db_url, item_id, "ana", decision)
    current = _claim(db_url, "ana")  # ana now looks at the next item
    assert current == seeded.item_ids[3]

    with session_scope(db_url) as session:
        undone = review.undo_last(session, "ana")
        assert (undone.review_item_id, undone.decision) == (c, Decision.SKIP)
        assert undone.undone_at is not None
        item = session.get(ReviewItem, c)
        assert item.claimed_by == "ana" and item.priority > 0  # the skip's penalty is gone
    assert _claim(db_url, "ana") == c  # Z shows the undone item again

    with session_scope(db_url) as session:
        assert review.undo_last(session, "ana").review_item_id == b
        item = session.get(ReviewItem, b)
        assert (item.status, item.claimed_by, item.decided_at) == (
            ReviewStatus.PENDING,
            "ana",
            None,
        )
        assert review.current_label(session, seeded.image_ids[1]) is None
    assert _claim(db_url, "ana") == b
    _decide(db_url, b, "ana", Decision.LABEL, "Ptyas_carinata")
    assert _claim(db_url, "ana") == c  # then back where the undo started
    _decide(db_url, c, "ana", Decision.UNKNOWN)
    assert _claim(db_url, "ana") == current

    with session_scope(db_url) as session:
        notes = session.scalars(select(Annotation).order_by(Annotation.id)).all()
        assert [(n.review_item_id, n.decision, n.undone_at is not None) for n in notes] == [
            (a, Decision.UNKNOWN, False),
            (b, Decision.UNUSABLE, True),
            (c, Decision.SKIP, True),
            (b, Decision.LABEL, False),
            (c, Decision.UNKNOWN, False),
        ]
        assert review.current_label(session, seeded.image_ids[1]).label == "Ptyas_carinata"


def test_undoing_a_skip_leaves_another_reviewers_claim_alone(db_url):
    seed_queue(db_url, count=1)
    item_id = _claim(db_url, "ana")
    _decide(db_url, item_id, "ana", Decision.SKIP)
    assert _claim(db_url, "ben") == item_id
    with session_scope(db_url) as session:
        assert review.undo_last(session, "ana").decision == Decision.SKIP
        item = session.get(ReviewItem, item_id)
        assert (item.claimed_by, item.priority < 0) == ("ben", True)


def test_undo_with_nothing_to_undo(db_url):
    seed_queue(db_url, count=1)
    with session_scope(db_url) as session:
        assert review.undo_last(session, "ana") is None
    item_id = _claim(db_url, "ana")
    _decide(db_url, item_id, "ana", Decision.UNKNOWN)
    with session_scope(db_url) as session:
        assert review.undo_last(session, "ben") is None  # only your own decisions
        assert review.undo_last(session, "ana") is not None
        assert review.undo_last(session, "ana") is None


# ------------------------------------------------------------------------------ bulk confirm


def test_confirm_many(db_url):
    seeded = seed_queue(db_url, count=6, routed=3)
    labelled, pending, unrouted = seeded.image_ids[0], seeded.image_ids[1], seeded.image_ids[4]
    item_id = _claim(db_url, "ana")
    _decide(db_url, item_id, "ana", Decision.LABEL, "Boiga_dendrophila")
    with session_scope(db_url) as session:
        no_prediction = Image(path="/photos/survey/unscored.jpg")
        session.add(no_prediction)
        session.flush()
        ids = [labelled, pending, unrouted, pending, no_prediction.id]
        assert review.confirm_many(session, ids, "ben") == 2
    with session_scope(db_url) as session:
        assert review.current_label(session, labelled).label == "Boiga_dendrophila"
        for image_id in (pending, unrouted):
            note = review.current_label(session, image_id)
            pred = session.scalar(select(Prediction).where(Prediction.image_id == image_id))
            assert (note.reviewer, note.decision, note.label) == ("ben", Decision.LABEL, pred.label)
            assert note.machine_confidence == pred.confidence
        item = session.scalar(select(ReviewItem).where(ReviewItem.image_id == pending))
        assert item.status == ReviewStatus.DONE
        assert session.scalar(select(func.count()).select_from(Annotation)) == 3
        assert review.confirm_many(session, [pending, unrouted], "ben") == 0


# ------------------------------------------------------------------------------ page context


def test_item_context(db_url):
    seeded = seed_queue(db_url, count=20)
    item_id = _claim(db_url, "ana")
    _decide(db_url, item_id, "ana", Decision.LABEL, "Ophiophagus hannah")
    item_id = _claim(db_url, "ana")
    with session_scope(db_url) as session:
        item = session.get(ReviewItem, item_id)
        ctx = review.item_context(
            session, item, image_url=lambda i: f"/img/{i}", thumbnail_url=lambda i: f"/t/{i}"
        )
    assert ctx["id"] == item_id and ctx["reason_text"] == "confidence below 90 %"
    assert ctx["image"]["rel_path"] == "site_b/img_001.jpg"
    assert ctx["image"]["url"] == f"/img/{seeded.image_ids[1]}"
    assert ctx["image"]["captured_at"] is not None
    assert [t["rank"] for t in ctx["prediction"]["topk"]] == [1, 2, 3]
    assert ctx["prediction"]["topk"][0]["label"] == "Ptyas_carinata"
    siblings = ctx["siblings"]
    assert all(s["rel_path"].startswith("site_b/") for s in siblings)
    assert [s["current"] for s in siblings].count(True) == 1
    assert len(siblings) == 1 + review.SIBLINGS_EACH_SIDE  # the first of its folder
    assert siblings[1]["thumbnail_url"] == f"/t/{seeded.image_ids[3]}"
    assert ctx["labels"] == sorted([*LABELS, "Ophiophagus hannah"], key=str.casefold)
    assert ctx["stats"]["pending"] == 19 and ctx["stats"]["done"] == 1


def test_siblings_of_an_image_at_the_root_stay_at_the_root(sqlite_url):
    seed_queue(sqlite_url, count=6, folders=("", "Site_A"))
    with session_scope(sqlite_url) as session:
        session.execute(
            update(JobImage).values(
                rel_path=func.ltrim(JobImage.rel_path, "/"), folder=func.ltrim(JobImage.folder, "/")
            )
        )
    item_id = _claim(sqlite_url, "ana")
    with session_scope(sqlite_url) as session:
        ctx = review.item_context(session, session.get(ReviewItem, item_id))
    assert [s["rel_path"] for s in ctx["siblings"]] == [
        "img_000.jpg",
        "img_002.jpg",
        "img_004.jpg",
    ]


# ------------------------------------------------------------------------------ re-scoring


def test_rescoring_never_requeues_a_human_decision(db_url, make_settings, photos_root, tmp_path):
    from service.jobs import create_job
    from service.registry import activate_model, add_model
    from tests.support.models import make_model_folder
    from tests.support.photos import write_photo

    settings = make_settings(db_url, review_threshold=1.0)  # every prediction is routed

    def run_job(model_name: str, seed: int) -> int:
        folder = make_model_folder(
            tmp_path / model_name, labels=["red", "green", "blue"], seed=seed
        )
        with session_scope(settings.db_url) as session:
            activate_model(session, add_model(session, settings, folder).id)
            job_id = create_job(session, settings, "s").id
        scan_and_score(settings, job_id)
        return job_id

    for i, colour in enumerate(["red", "green", "blue"]):
        write_photo(photos_root / "s" / f"{i}_{colour}.jpg", colour, seed=i)
    first_job = run_job("m1", 0)
    with session_scope(db_url) as session:
        items = session.scalars(select(ReviewItem).order_by(ReviewItem.id)).all()
        assert len(items) == 3
    labelled, unusable = items[0], items[1]
    _decide(db_url, labelled.id, "ana", Decision.LABEL, "Naja samarensis")
    _decide(db_url, unusable.id, "ana", Decision.UNUSABLE)
    with session_scope(db_url) as session:
        before = session.scalars(select(Annotation).order_by(Annotation.id)).all()

    second_job = run_job("m2", 1)
    with session_scope(db_url) as session:
        new_items = session.scalars(select(ReviewItem).where(ReviewItem.job_id == second_job)).all()
        assert [i.image_id for i in new_items] == [items[2].image_id]  # only the undecided one
        assert session.get(ScanJob, second_job).routed == 1
        assert session.get(ScanJob, first_job).routed == 3
        after = session.scalars(select(Annotation).order_by(Annotation.id)).all()
        assert [review.annotation_to_dict(a) for a in after] == [
            review.annotation_to_dict(a) for a in before
        ]
        assert review.current_label(session, labelled.image_id).label == "Naja samarensis"
