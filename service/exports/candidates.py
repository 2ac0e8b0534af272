"""What is labelled: human decisions and confident predictions as candidates, deduplicated."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from service import sites
from service.decisions import current_decisions
from service.exports.options import ExportOptions
from service.models import Decision, Image, JobImage, Prediction, ScanJob

HUMAN, MACHINE = "human", "prediction"


@dataclass(frozen=True)
class Candidate:
    """One labelled image that may go into the export."""

    image_id: int
    path: str
    sha256: str
    label: str
    source: str  # HUMAN or MACHINE
    annotator: str  # the reviewer, or "model:<version id>"
    time: str
    site: str
    rel_path: str
    confidence: float | None = None


def _first_sighting() -> Any:
    """Per image, the job image row that first saw it (its rel_path gives the site)."""
    return (
        select(JobImage.image_id, func.min(JobImage.id).label("job_image_id"))
        .group_by(JobImage.image_id)
        .subquery()
    )


def site_of(rel_path: str, job_folder: str) -> str:
    """The top-level folder of rel_path; the job folder's name for photos at its top level."""
    return sites.site_of(rel_path, job_folder)


def collect_candidates(
    session: Session, options: ExportOptions
) -> tuple[list[Candidate], Counter[str], set[str]]:
    """Human labels, plus confident predictions when asked; what was left out and why.

    Returns (candidates, exclusion counts, sha256 of content a human ruled out).
    """
    decided = current_decisions().subquery()
    first = _first_sighting()
    rows = session.execute(
        select(
            decided.c.image_id, decided.c.decision, decided.c.label, decided.c.reviewer,
            decided.c.created_at, Image.path, Image.sha256, JobImage.rel_path, ScanJob.folder,
        )
        .join(Image, Image.id == decided.c.image_id)
        .outerjoin(first, first.c.image_id == decided.c.image_id)
        .outerjoin(JobImage, JobImage.id == first.c.job_image_id)
        .outerjoin(ScanJob, ScanJob.id == JobImage.job_id)
    ).all()  # fmt: skip
    excluded: Counter[str] = Counter()
    candidates: list[Candidate] = []
    ruled_out: set[str] = set()
    human_ids: set[int] = set()
    for image_id, decision, label, reviewer, at, path, sha, rel_path, folder in rows:
        human_ids.add(image_id)
        if decision != Decision.LABEL or not label:
            excluded[f"human_{Decision(decision).value}"] += 1
            if sha:
                ruled_out.add(sha)
            continue
        if not sha:
            excluded["not_hashed"] += 1
            continue
        candidates.append(
            _candidate(image_id, path, sha, label, HUMAN, reviewer, at, rel_path, folder)
        )
    if options.include_confident is not None:
        candidates += _confident_predictions(session, options.include_confident, human_ids)
    return candidates, excluded, ruled_out


def _confident_predictions(
    session: Session, threshold: float, human_ids: set[int]
) -> list[Candidate]:
    """Each image's newest prediction, when at least `threshold` sure and no human decided."""
    newest = (
        select(Prediction.image_id, func.max(Prediction.id).label("prediction_id"))
        .group_by(Prediction.image_id)
        .subquery()
    )
    first = _first_sighting()
    rows = session.execute(
        select(
            Prediction.image_id, Prediction.label, Prediction.model_version_id,
            Prediction.confidence, Prediction.created_at, Image.path, Image.sha256,
            JobImage.rel_path, ScanJob.folder,
        )
        .join(newest, newest.c.prediction_id == Prediction.id)
        .join(Image, Image.id == Prediction.image_id)
        .outerjoin(first, first.c.image_id == Prediction.image_id)
        .outerjoin(JobImage, JobImage.id == first.c.job_image_id)
        .outerjoin(ScanJob, ScanJob.id == JobImage.job_id)
        .where(Prediction.confidence >= threshold)
    ).all()  # fmt: skip
    out = []
    for image_id, label, model_id, confidence, at, path, sha, rel_path, folder in rows:
        if image_id in human_ids or not sha:
            continue
        who = f"model:{model_id}"
        out.append(
            _candidate(image_id, path, sha, label, MACHINE, who, at, rel_path, folder, confidence)
        )
    return out


def _candidate(
    image_id: int,
    path: str,
    sha: str,
    label: str,
    source: str,
    annotator: str,
    at: datetime | None,
    rel_path: str | None,
    job_folder: str | None,
    confidence: float | None = None,
) -> Candidate:
    rel = rel_path or Path(path).name
    site = site_of(rel, job_folder or str(Path(path).parent))
    conf = None if confidence is None else float(confidence)
    return Candidate(image_id, path, sha, label, source, annotator, _iso(at), site, rel, conf)


def deduplicate(
    candidates: Iterable[Candidate], ruled_out: set[str]
) -> tuple[list[Candidate], Counter[str]]:
    """One candidate per sha256: humans beat machines; disagreeing humans drop the content."""
    by_sha: dict[str, list[Candidate]] = defaultdict(list)
    for c in candidates:
        by_sha[c.sha256].append(c)
    kept: list[Candidate] = []
    excluded: Counter[str] = Counter()
    for sha, group in sorted(by_sha.items()):
        humans = [c for c in group if c.source == HUMAN]
        chosen = humans or [c for c in group if c.source == MACHINE]
        if sha in ruled_out:
            # A copy of this content was marked unknown/unusable by a reviewer.
            excluded["conflicting_human_decisions" if humans else "machine_label_ruled_out"] += len(
                chosen
            )
            continue
        if len({c.label for c in chosen}) > 1:
            excluded["conflicting_human_labels" if humans else "conflicting_predictions"] += len(
                chosen
            )
            continue
        kept.append(min(chosen, key=lambda c: c.image_id))
        excluded["duplicate_files"] += len(group) - 1
    return kept, excluded


def is_safe_label(label: str) -> bool:
    """A label must be usable as one folder name (training reads classes from folders)."""
    return (
        bool(label.strip())
        and label == label.strip()
        and not label.startswith(".")
        and not any(ch in label for ch in "/\\\x00")
        and len(label.encode()) <= 200
    )


def _iso(value: datetime | None) -> str:
    return value.isoformat(timespec="seconds") if value else ""
