"""Suspect labels: verified labels that a training run's out-of-sample predictions doubt.

After each training run (service/retraining.py), `record_run_suspects` reads the run's
`label_probs.json` (written by `python -m training fit --label-errors holdout|kfold`),
keeps the human-verified images of the run's export, ranks them with cleanlab
(service/label_issues.py) and stores the suspects, linked to the run, the image and the
human decision they question. Reviewers list them most suspect first and re-review one:
a new annotation through the review path (`review.annotate_image`), nothing overwritten.
A suspect is resolved once the image's current human decision is no longer the one it
questioned (re-reviewed here or anywhere else); undoing the re-review reopens it.
"""

from __future__ import annotations

import enum
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import Select, case, delete, func, select
from sqlalchemy.orm import Session

from service import review
from service.db import get_or_not_found
from service.decisions import current_annotations, current_decisions
from service.errors import BadInput, InvalidState
from service.exports import HUMAN, read_manifest
from service.label_issues import LABEL_PROBS_FILE, rank_suspects
from service.models import Annotation, Decision, Image, SuspectLabel, TrainingRun
from service.run_models import DatasetExport

log = logging.getLogger(__name__)


class SuspectStatus(enum.StrEnum):
    OPEN = "open"
    RESOLVED = "resolved"
    ALL = "all"


@dataclass(frozen=True)
class Ranked:
    """One suspect before it is stored."""

    image_id: int
    given_label: str
    given_probability: float
    predicted_label: str
    predicted_probability: float
    split: str
    method: str


# ---------------------------------------------------------------- computing


def rank_run_probs(probs_file: Path, manifest: list[dict[str, str]]) -> list[Ranked]:
    """The human-verified images of an export that cleanlab flags, most suspect first.

    Each method's rows (held-out predictions, K-fold probes) are ranked on their own (their
    probabilities come from different models), then merged by the given label's
    probability, lowest first.
    """
    data = json.loads(probs_file.read_text(encoding="utf-8"))
    classes: list[str] = list(data["classes"])
    by_path = {row["path"]: row for row in manifest}
    groups: dict[str, list[tuple[int, str, list[float], int]]] = {}
    for row in data["rows"]:
        entry = by_path.get(row["path"])
        if entry is None or entry.get("source") != HUMAN or entry["label"] not in classes:
            continue  # machine labels train but are not verified; unknown rows are skipped
        given = classes.index(entry["label"])
        groups.setdefault(row["method"], []).append(
            (int(entry["image_id"]), row["split"], row["probs"], given)
        )
    ranked: list[Ranked] = []
    for method, members in groups.items():
        labels = np.array([m[3] for m in members])
        probs = np.array([m[2] for m in members], dtype=np.float64)
        for s in rank_suspects(labels, probs):
            image_id, split, _, _ = members[s.index]
            ranked.append(
                Ranked(
                    image_id, classes[s.given], s.self_confidence, classes[s.predicted],
                    s.predicted_probability, split, method,
                )
            )  # fmt: skip
    ranked.sort(key=lambda r: (r.given_probability, -r.predicted_probability, r.image_id))
    return ranked


def record_run_suspects(session: Session, run_id: int, limit: int = 1000) -> int:
    """Rank a finished run's out-of-sample probabilities and store its suspects (replacing
    any stored for it before); returns how many. A run without `label_probs.json`
    (`--label-errors off`, or a fitter that writes none) stores none."""
    run = get_or_not_found(session, TrainingRun, run_id, "training run")
    probs_file = Path(run.run_dir or "") / LABEL_PROBS_FILE
    export = session.get(DatasetExport, run.export_id) if run.export_id else None
    session.execute(delete(SuspectLabel).where(SuspectLabel.run_id == run_id))
    if not run.run_dir or not probs_file.is_file() or export is None or not export.path:
        log.info("training run %d: no out-of-sample probabilities, no suspect labels", run_id)
        return 0
    ranked = rank_run_probs(probs_file, read_manifest(Path(export.path)))
    current = current_annotations(session, [r.image_id for r in ranked])
    kept = 0
    for r in ranked:
        decision = current.get(r.image_id)
        if decision is None or decision.decision != Decision.LABEL:
            continue  # the label was undone or changed since the export: nothing to doubt
        if decision.label != r.given_label:
            continue
        kept += 1
        session.add(
            SuspectLabel(
                run_id=run_id, image_id=r.image_id, annotation_id=decision.id, rank=kept,
                given_label=r.given_label, given_probability=r.given_probability,
                predicted_label=r.predicted_label, predicted_probability=r.predicted_probability,
                split=r.split, method=r.method,
            )
        )  # fmt: skip
        if kept >= limit:
            break
    session.flush()
    log.info("training run %d: %d suspect labels of %d flagged", run_id, kept, len(ranked))
    return kept


# ---------------------------------------------------------------- reading


def latest_run_with_suspects(session: Session) -> int | None:
    """The newest training run that stored suspects (the list's default)."""
    return session.scalar(select(func.max(SuspectLabel.run_id)))


def count_for_run(session: Session, run_id: int) -> int:
    """How many suspects a run stored (open or resolved)."""
    query = select(func.count()).where(SuspectLabel.run_id == run_id)
    return session.scalar(query) or 0


def list_suspects(
    session: Session,
    run_id: int | None = None,
    status: SuspectStatus = SuspectStatus.OPEN,
    limit: int = 100,
    offset: int = 0,
) -> tuple[list[dict[str, Any]], int, int | None]:
    """One page of a run's suspects (default: the newest run's), most suspect first, and
    the count of them all and the run listed."""
    if run_id is None:
        run_id = latest_run_with_suspects(session)
        if run_id is None:
            return [], 0, None
    else:
        get_or_not_found(session, TrainingRun, run_id, "training run")
    query = _suspects_query(run_id, status)
    total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    rows = session.execute(query.order_by(SuspectLabel.rank).limit(limit).offset(offset)).all()
    return [_row_to_dict(row) for row in rows], total, run_id


def get_suspect(session: Session, suspect_id: int) -> dict[str, Any]:
    suspect = get_or_not_found(session, SuspectLabel, suspect_id, "suspect label")
    row = session.execute(
        _suspects_query(suspect.run_id, SuspectStatus.ALL).where(SuspectLabel.id == suspect_id)
    ).one()
    return _row_to_dict(row)


def _suspects_query(run_id: int, status: SuspectStatus) -> Select[Any]:
    in_run = select(SuspectLabel.image_id).where(SuspectLabel.run_id == run_id)
    now = current_decisions(in_run).subquery()
    questioned = Annotation
    resolved = case((now.c.annotation_id == SuspectLabel.annotation_id, False), else_=True).label(
        "resolved"
    )
    query = (
        select(
            SuspectLabel,
            Image.path,
            questioned.reviewer,
            questioned.created_at,
            now.c.annotation_id,
            now.c.decision,
            now.c.label,
            now.c.reviewer,
            now.c.created_at,
            resolved,
        )
        .join(Image, Image.id == SuspectLabel.image_id)
        .join(questioned, questioned.id == SuspectLabel.annotation_id)
        .outerjoin(now, now.c.image_id == SuspectLabel.image_id)
        .where(SuspectLabel.run_id == run_id)
    )
    is_open = now.c.annotation_id == SuspectLabel.annotation_id
    if status == SuspectStatus.OPEN:
        query = query.where(is_open)
    elif status == SuspectStatus.RESOLVED:
        query = query.where(~is_open | now.c.annotation_id.is_(None))
    return query


def _row_to_dict(row: Any) -> dict[str, Any]:
    s: SuspectLabel = row[0]
    path, by, at, now_id, now_decision, now_label, now_reviewer, now_at, resolved = row[1:]
    current = None
    if now_id is not None:
        current = {
            "annotation_id": now_id,
            "decision": Decision(now_decision).value,
            "label": now_label,
            "reviewer": now_reviewer,
            "created_at": now_at.isoformat(),
        }
    return {
        "id": s.id,
        "run_id": s.run_id,
        "rank": s.rank,
        "image_id": s.image_id,
        "path": path,
        "name": Path(path).name,
        "given_label": s.given_label,
        "given_probability": s.given_probability,
        "predicted_label": s.predicted_label,
        "predicted_probability": s.predicted_probability,
        "split": s.split,
        "method": s.method,
        "annotation_id": s.annotation_id,
        "labelled_by": by,
        "labelled_at": at.isoformat(),
        "status": (SuspectStatus.RESOLVED if resolved else SuspectStatus.OPEN).value,
        "current": current,
        "created_at": s.created_at.isoformat(),
    }


# ---------------------------------------------------------------- re-reviewing


class Verdict(enum.StrEnum):
    """What a re-review says: keep the human label, take the model's, or another answer."""

    CONFIRM = "confirm"
    MODEL = "model"
    LABEL = "label"
    UNKNOWN = "unknown"
    UNUSABLE = "unusable"


def rereview(
    session: Session,
    suspect_id: int,
    reviewer: str,
    verdict: Verdict | str,
    label: str | None = None,
) -> tuple[Annotation, dict[str, Any]]:
    """Re-review a suspect: a new annotation on its image (review.annotate_image); returns it
    and the suspect as it now stands (resolved). 409 if it is resolved already."""
    verdict = Verdict(verdict)
    suspect = get_or_not_found(session, SuspectLabel, suspect_id, "suspect label")
    current = current_annotations(session, [suspect.image_id]).get(suspect.image_id)
    if current is None or current.id != suspect.annotation_id:
        raise InvalidState(
            f"suspect label {suspect_id} was already re-reviewed",
            {"current_annotation_id": current.id if current else None},
        )
    decision, text = _decision_of(verdict, suspect, label)
    annotation = review.annotate_image(session, suspect.image_id, reviewer, decision, text)
    return annotation, get_suspect(session, suspect_id)


def _decision_of(
    verdict: Verdict, suspect: SuspectLabel, label: str | None
) -> tuple[Decision, str | None]:
    given = label is not None and label.strip() != ""
    if verdict != Verdict.LABEL and given:
        raise BadInput(f"a label is only given with the verdict 'label', not {verdict.value!r}")
    if verdict == Verdict.CONFIRM:
        return Decision.LABEL, suspect.given_label
    if verdict == Verdict.MODEL:
        return Decision.LABEL, suspect.predicted_label
    if verdict == Verdict.LABEL:
        return Decision.LABEL, label
    return Decision(verdict.value), None
