"""Bursts end to end on both databases: hashes from scoring, grouping, one decision, one undo."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image as PILImage
from sqlalchemy import select, update

from service import review, review_queue
from service.bursts import BurstRules, burst_members, hash_distance, perceptual_hash
from service.db import session_scope
from service.errors import BadInput
from service.jobs import create_job
from service.models import Annotation, Decision, Image, JobImage, ReviewItem, ReviewStatus, utcnow
from service.registry import activate_model, add_model
from service.review_bursts import decide_burst
from tests.support.models import make_model_folder
from tests.support.scoring import scan_and_score

LABELS = ["Naja_philippinensis", "Ptyas_carinata", "Boiga_dendrophila"]
RULES = BurstRules(window_seconds=10, max_distance=10)


def _scene(kind: int, seed: int, size: tuple[int, int] = (96, 72)) -> PILImage.Image:
    """A smooth scene (what the hash sees: low frequencies) with per-shot sensor noise."""
    w, h = size
    coarse = np.random.default_rng(kind).uniform(30, 220, (6, 8)).astype(np.float32)
    base = np.asarray(PILImage.fromarray(coarse, "F").resize(size, PILImage.Resampling.BICUBIC))
    grey = np.clip(base + np.random.default_rng(seed).normal(0, 6, (h, w)), 0, 255)
    return PILImage.fromarray(np.stack([grey, grey * 0.8, grey * 0.6], -1).astype(np.uint8))


def _shot(path: Path, kind: int, seed: int, taken: str) -> None:
    exif = PILImage.Exif()
    exif.get_ifd(0x8769)[36867] = taken
    path.parent.mkdir(parents=True, exist_ok=True)
    _scene(kind, seed).save(path, exif=exif.tobytes(), quality=92)


def _job(settings: Any, tmp_path: Path, photos_root: Path) -> tuple[int, dict[str, int]]:
    """A scored job, every photo routed to review; returns the job and image ids by rel path."""
    folder = make_model_folder(tmp_path / "model", labels=LABELS, scale=1.0)
    with session_scope(settings.db_url) as session:
        activate_model(session, add_model(session, settings, folder).id)
    survey = photos_root / "survey"
    _shot(survey / "cam1" / "a.jpg", 1, 1, "2024:05:01 10:00:00")
    _shot(survey / "cam1" / "b.jpg", 1, 2, "2024:05:01 10:00:06")
    _shot(survey / "cam1" / "c.jpg", 1, 3, "2024:05:01 10:00:12")  # chained via b
    _shot(survey / "cam1" / "later.jpg", 1, 4, "2024:05:01 10:01:00")  # too late
    _shot(survey / "cam1" / "other.jpg", 2, 5, "2024:05:01 10:00:03")  # not alike
    _shot(survey / "cam2" / "a.jpg", 1, 6, "2024:05:01 10:00:01")  # another site
    with session_scope(settings.db_url) as session:
        job_id = create_job(session, settings, "survey", threshold=0.999).id
    scan_and_score(settings, job_id)
    with session_scope(settings.db_url) as session:
        rows = session.execute(
            select(JobImage.rel_path, JobImage.image_id).where(JobImage.job_id == job_id)
        ).all()
    return job_id, {path: image_id for path, image_id in rows}


def _item(url: str, image_id: int) -> int:
    with session_scope(url) as session:
        return session.scalars(select(ReviewItem.id).where(ReviewItem.image_id == image_id)).one()


def test_perceptual_hash_is_close_for_a_burst_and_far_for_another_scene() -> None:
    a, b, other = _scene(1, seed=1), _scene(1, seed=2), _scene(2, seed=1)
    assert len(perceptual_hash(a)) == 16
    assert hash_distance(perceptual_hash(a), perceptual_hash(b)) <= RULES.max_distance
    assert hash_distance(perceptual_hash(a), perceptual_hash(other)) > RULES.max_distance
    assert hash_distance("ffffffffffffffff", "0000000000000000") == 64


def test_scoring_stores_hashes_and_bursts_group_by_site_time_and_look(
    db_url, make_settings, photos_root, tmp_path
):
    settings = make_settings(db_url)
    job_id, ids = _job(settings, tmp_path, photos_root)
    with session_scope(db_url) as session:
        hashes = dict(session.execute(select(Image.id, Image.phash)).all())
        assert all(h is not None and len(h) == 16 for h in hashes.values())
        burst = [ids["cam1/a.jpg"], ids["cam1/b.jpg"], ids["cam1/c.jpg"]]
        for member in burst:
            assert burst_members(session, job_id, member, RULES) == burst
        for alone in ("cam1/later.jpg", "cam1/other.jpg", "cam2/a.jpg"):
            assert burst_members(session, job_id, ids[alone], RULES) == [ids[alone]]
        off = BurstRules(window_seconds=0, max_distance=10)
        assert burst_members(session, job_id, ids["cam1/a.jpg"], off) == [ids["cam1/a.jpg"]]
        # The window is between neighbours: with 5 s, b and c (6 s apart) are not linked.
        narrow = BurstRules(window_seconds=5, max_distance=10)
        assert burst_members(session, job_id, ids["cam1/c.jpg"], narrow) == [ids["cam1/c.jpg"]]
        # A photo without a capture time is never in a burst.
        session.execute(
            update(Image).where(Image.id == ids["cam1/b.jpg"]).values(captured_local=None)
        )
        assert burst_members(session, job_id, ids["cam1/a.jpg"], RULES) == [ids["cam1/a.jpg"]]


def test_one_burst_decision_annotates_each_photo_and_one_undo_undoes_them(
    db_url, make_settings, photos_root, tmp_path
):
    settings = make_settings(db_url)
    _, ids = _job(settings, tmp_path, photos_root)
    lead_item = _item(db_url, ids["cam1/a.jpg"])
    burst = [ids["cam1/a.jpg"], ids["cam1/b.jpg"], ids["cam1/c.jpg"]]
    with session_scope(db_url) as session:
        lead, count = decide_burst(
            session, lead_item, "ana", Decision.LABEL, "Ptyas_carinata", RULES
        )
        lead_id = lead.id
    assert count == 3
    with session_scope(db_url) as session:
        made = session.scalars(select(Annotation).order_by(Annotation.id)).all()
        assert sorted(a.image_id for a in made) == sorted(burst)
        assert {(a.label, a.reviewer, a.burst_lead_id) for a in made} == {
            ("Ptyas_carinata", "ana", lead_id)
        }
        assert all(a.review_item_id is not None for a in made)  # each its own item's
        statuses = dict(session.execute(select(ReviewItem.image_id, ReviewItem.status)).all())
        assert [statuses[i] for i in burst] == [ReviewStatus.DONE] * 3
        assert statuses[ids["cam1/other.jpg"]] == ReviewStatus.PENDING
        assert statuses[ids["cam1/later.jpg"]] == ReviewStatus.PENDING

    with session_scope(db_url) as session:
        undone = review.undo_last(session, "ana")
        assert undone is not None and undone.burst_lead_id == lead_id
    with session_scope(db_url) as session:
        made = session.scalars(select(Annotation)).all()
        assert all(a.undone_at is not None for a in made) and len(made) == 3
        statuses = dict(session.execute(select(ReviewItem.image_id, ReviewItem.status)).all())
        assert [statuses[i] for i in burst] == [ReviewStatus.PENDING] * 3
        assert review.undo_last(session, "ana") is None  # nothing left: one undo did it


def test_a_burst_decision_leaves_decided_and_held_photos_alone(
    db_url, make_settings, photos_root, tmp_path
):
    settings = make_settings(db_url)
    _, ids = _job(settings, tmp_path, photos_root)
    a, b, c = (_item(db_url, ids[f"cam1/{n}.jpg"]) for n in "abc")
    with session_scope(db_url) as session:
        review.decide(session, b, "ben", Decision.UNUSABLE)
        session.execute(
            update(ReviewItem)
            .where(ReviewItem.id == c)
            .values(claimed_by="cleo", lease_expires_at=utcnow() + timedelta(minutes=5))
        )
    with session_scope(db_url) as session, pytest.raises(BadInput):
        decide_burst(session, a, "ana", Decision.SKIP, None, RULES)
    with session_scope(db_url) as session:
        lead, count = decide_burst(session, a, "ana", Decision.UNKNOWN, None, RULES)
        assert count == 1 and lead.burst_lead_id is None
    with session_scope(db_url) as session:
        by_image = {
            x.image_id: x
            for x in session.scalars(select(Annotation).where(Annotation.undone_at.is_(None)))
        }
        assert by_image[ids["cam1/b.jpg"]].decision == Decision.UNUSABLE  # ben's stands
        assert ids["cam1/c.jpg"] not in by_image  # on cleo's screen
        assert session.get(ReviewItem, c).status == ReviewStatus.PENDING


def test_changing_one_photo_of_a_burst_leaves_the_others_decided(
    db_url, make_settings, photos_root, tmp_path
):
    settings = make_settings(db_url)
    _, ids = _job(settings, tmp_path, photos_root)
    with session_scope(db_url) as session:
        decide_burst(
            session, _item(db_url, ids["cam1/a.jpg"]), "ana", Decision.LABEL, "Ptyas_carinata",
            RULES,
        )  # fmt: skip
        member = session.scalars(
            select(Annotation.id).where(Annotation.image_id == ids["cam1/b.jpg"])
        ).one()
    with session_scope(db_url) as session:
        review_queue.change_decision(session, member, "ana", Decision.UNUSABLE)
    with session_scope(db_url) as session:
        live = {
            a.image_id: a.decision
            for a in session.scalars(select(Annotation).where(Annotation.undone_at.is_(None)))
        }
        assert live == {
            ids["cam1/a.jpg"]: Decision.LABEL,
            ids["cam1/b.jpg"]: Decision.UNUSABLE,
            ids["cam1/c.jpg"]: Decision.LABEL,
        }
