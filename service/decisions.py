"""An image's current human decision and its final label (human > rolled-up genus > machine).

This is the one place that answers "what did a human last decide about this image": results,
exports, review, promotion and scoring all ask it.
"""

from __future__ import annotations

import enum
import functools
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import BindParameter, ColumnElement, Select, and_, bindparam, case, func, select
from sqlalchemy.orm import Session
from sqlalchemy.sql.selectable import Subquery

from service.db import in_values
from service.models import Annotation, Decision, Prediction

# Decisions that settle what an image shows; a skip settles nothing and erases nothing.
SETTLING = (Decision.LABEL, Decision.UNKNOWN, Decision.UNUSABLE)


class FinalSource(enum.StrEnum):
    HUMAN = "human"
    ROLLED_UP = "rolled_up"
    MACHINE = "machine"


def current_decisions(
    image_ids: Sequence[int] | Select[Any] | BindParameter[Any] | None = None,
) -> Select[Any]:
    """Each image's current human decision: its latest annotation not undone and not a skip.

    Columns: annotation_id, image_id, decision, label, reviewer, created_at. Every reader of
    human decisions builds on this select (as a subquery, or through the helpers below).
    `image_ids` (a list, a select of ids, or an expanding bound parameter) limits the
    ranking to those images.
    """
    live = and_(Annotation.undone_at.is_(None), Annotation.decision.in_(SETTLING))
    if image_ids is not None:
        ids = image_ids if isinstance(image_ids, Select | BindParameter) else list(image_ids)
        live = and_(live, Annotation.image_id.in_(ids))
    ranked = (
        select(
            Annotation.id.label("annotation_id"),
            Annotation.image_id,
            Annotation.decision,
            Annotation.label,
            Annotation.reviewer,
            Annotation.created_at,
            func.row_number()
            .over(
                partition_by=Annotation.image_id,
                order_by=(Annotation.created_at.desc(), Annotation.id.desc()),
            )
            .label("rank"),
        )
        .where(live)
        .subquery()
    )
    return select(
        ranked.c.annotation_id, ranked.c.image_id, ranked.c.decision, ranked.c.label,
        ranked.c.reviewer, ranked.c.created_at,
    ).where(ranked.c.rank == 1)  # fmt: skip


def current_annotations(session: Session, image_ids: Sequence[int]) -> dict[int, Annotation]:
    """The current human decision of each of these images that has one, as Annotation rows."""
    if not image_ids:
        return {}
    rows = session.scalars(_current_annotations_statement(), {"image_ids": list(image_ids)})
    return {a.image_id: a for a in rows}


@functools.cache
def _current_annotations_statement() -> Select[Any]:
    """current_annotations' statement, built once (the review page runs it per answer)."""
    decided = current_decisions(bindparam("image_ids", expanding=True)).subquery()
    return select(Annotation).join(decided, decided.c.annotation_id == Annotation.id)


def current_annotation(session: Session, image_id: int) -> Annotation | None:
    """One image's current human decision, or None."""
    return current_annotations(session, [image_id]).get(image_id)


def decided_images(session: Session, image_ids: Sequence[int]) -> set[int]:
    """Which of these images have a current human decision (which no machine may override)."""
    if not image_ids:
        return set()
    # Any live settling annotation means a current decision: no ranking needed.
    return set(
        session.scalars(
            select(Annotation.image_id)
            .where(
                in_values(session, Annotation.image_id, image_ids),
                Annotation.undone_at.is_(None),
                Annotation.decision.in_(SETTLING),
            )
            .distinct()
        )
    )


def human_label_counts(session: Session) -> dict[str, int]:
    """How many images each label has as their current human decision (what an export
    teaches the model)."""
    current = current_decisions().subquery()
    rows = session.execute(
        select(current.c.label, func.count())
        .where(current.c.decision == Decision.LABEL, current.c.label.is_not(None))
        .group_by(current.c.label)
    ).all()
    return {label: count for label, count in rows}


@dataclass(frozen=True)
class FinalLabel:
    """What a result row reports as the image's label, and where it came from."""

    label: str | None
    source: FinalSource | None
    decision: str | None = None  # the human decision (label, unknown, unusable) if any
    reviewed_by: str | None = None
    reviewed_at: datetime | None = None


def final_label(
    decision: Decision | str | None,
    human_label: str | None,
    reviewer: str | None,
    decided_at: datetime | None,
    machine_label: str | None,
    rolled_up_label: str | None,
) -> FinalLabel:
    """Human decision first (its label; none for unknown/unusable), then genus rollup, then
    the machine's top-1. Mirrors `final_label_sql`."""
    if decision is not None:
        value = Decision(decision)
        return FinalLabel(
            human_label if value is Decision.LABEL else None,
            FinalSource.HUMAN,
            value.value,
            reviewer,
            decided_at,
        )
    if rolled_up_label is not None:
        return FinalLabel(rolled_up_label, FinalSource.ROLLED_UP)
    if machine_label is not None:
        return FinalLabel(machine_label, FinalSource.MACHINE)
    return FinalLabel(None, None)


def final_label_sql(
    decided: Subquery, prediction: type[Prediction] = Prediction
) -> ColumnElement[Any]:
    """The final label as a SQL expression over a `current_decisions()` subquery joined
    by image and a prediction; mirrors `final_label` (for filtering in the database)."""
    return case(
        (decided.c.image_id.is_not(None), decided.c.label),
        else_=func.coalesce(prediction.rolled_up_label, prediction.label),
    )
