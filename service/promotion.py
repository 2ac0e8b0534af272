"""The promotion gate: a candidate replaces the active model only if it is no worse.

Both models are scored on the same frozen, human-verified test set (see
`service.exports.frozen_test_set`) with the shared preprocessing; labels are matched by
name, so a class a model does not know simply gets recall 0. The candidate passes when
its macro-F1 is not lower and no class's recall drops by more than the margin.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session

from service import registry
from service.db import get_or_not_found
from service.errors import InvalidState
from service.exports import TestSet, frozen_test_set
from service.imaging import sha256_file
from service.models import ModelStatus, ModelVersion, TrainingRun, utcnow
from service.settings import Settings

log = logging.getLogger(__name__)

# (model folder, image paths) -> predicted label per path (None when the file failed).
Predictor = Callable[[Path, list[str]], Sequence[str | None]]
EPSILON = 1e-9


def classification_scores(truth: Sequence[str], predicted: Sequence[str | None]) -> dict[str, Any]:
    """Accuracy, macro-F1 and per-class precision/recall/F1 over the classes in `truth`."""
    if len(truth) != len(predicted):
        raise ValueError("truth and predictions differ in length")
    per_class: dict[str, dict[str, float]] = {}
    for label in sorted(set(truth)):
        tp = sum(1 for t, p in zip(truth, predicted, strict=True) if t == label and p == label)
        support = sum(1 for t in truth if t == label)
        claimed = sum(1 for p in predicted if p == label)
        precision = tp / claimed if claimed else 0.0
        recall = tp / support if support else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per_class[label] = {"precision": precision, "recall": recall, "f1": f1, "support": support}
    hits = sum(1 for t, p in zip(truth, predicted, strict=True) if t == p)
    return {
        "n": len(truth),
        "accuracy": hits / len(truth) if truth else 0.0,
        "macro_f1": sum(c["f1"] for c in per_class.values()) / len(per_class) if per_class else 0.0,
        "failed": sum(1 for p in predicted if p is None),
        "per_class": per_class,
    }


def decide_promotion(
    candidate_metrics: dict[str, Any], active_metrics: dict[str, Any] | None, margin: float
) -> tuple[bool, list[str]]:
    """Promote only if macro-F1 is not lower and no class's recall drops by more than margin."""
    if active_metrics is None:
        return True, ["no model is active: the candidate is the only one"]
    ok, reasons = True, []
    new_f1, old_f1 = candidate_metrics["macro_f1"], active_metrics["macro_f1"]
    if new_f1 + EPSILON < old_f1:
        ok = False
        reasons.append(f"macro-F1 {new_f1:.4f} is lower than the active model's {old_f1:.4f}")
    else:
        reasons.append(f"macro-F1 {new_f1:.4f} >= {old_f1:.4f}")
    new_pc, old_pc = candidate_metrics["per_class"], active_metrics["per_class"]
    drops = []
    for label in sorted(set(new_pc) | set(old_pc)):
        new_r = new_pc.get(label, {}).get("recall", 0.0)
        old_r = old_pc.get(label, {}).get("recall", 0.0)
        if old_r - new_r > margin + EPSILON:
            drops.append(f"{label} {old_r:.3f} -> {new_r:.3f}")
    if drops:
        ok = False
        reasons.append(f"recall drops by more than {margin:g}: " + "; ".join(drops))
    else:
        reasons.append(f"no class's recall drops by more than {margin:g}")
    return ok, reasons


def verify_test_set(test_set: TestSet) -> list[str]:
    """The test set's file paths, after checking every file still has its recorded sha256."""
    folder = Path(test_set.folder)
    paths = []
    for item in test_set.items:
        path = folder / item["path"]
        if not path.is_file() or sha256_file(path) != item["sha256"]:
            raise InvalidState(
                f"the frozen test set of export {test_set.export_id} changed on disk "
                f"({item['path']}); pin another export's test split",
            )
        paths.append(str(path))
    return paths


def score_model(
    model_dir: Path, test_set: TestSet, paths: list[str], predict: Predictor
) -> dict[str, Any]:
    """One model's scores on the frozen test set."""
    predicted = list(predict(model_dir, paths))
    return classification_scores([i["label"] for i in test_set.items], predicted)


@dataclass(frozen=True)
class EvaluationPlan:
    """What a promotion decision compares: read in a short transaction, scored outside it."""

    candidate_id: int
    candidate_path: str
    active_id: int | None
    active_path: str | None
    test_set: TestSet | None
    margin: float


def plan_evaluation(session: Session, settings: Settings, candidate_id: int) -> EvaluationPlan:
    """Look up the candidate, the active model and the frozen test set."""
    candidate = registry.get_model(session, candidate_id)
    active = registry.active_model(session)
    return EvaluationPlan(
        candidate.id,
        candidate.path,
        active.id if active else None,
        active.path if active else None,
        frozen_test_set(session, settings),
        settings.promotion_recall_margin,
    )


def evaluate(plan: EvaluationPlan, predict: Predictor) -> dict[str, Any]:
    """Score both models on the frozen test set and decide; touches no database."""
    record: dict[str, Any] = {
        "candidate_id": plan.candidate_id,
        "active_id": plan.active_id,
        "margin": plan.margin,
        "decided_at": utcnow().isoformat(timespec="seconds"),
        "promoted": False,
        "test_set": plan.test_set.summary() if plan.test_set else None,
        "candidate": None,
        "active": None,
    }
    if plan.active_id == plan.candidate_id:
        record.update(passed=False, reasons=["the candidate is already the active model"])
        return record
    if plan.test_set is None or not plan.test_set.items:
        passed = plan.active_id is None
        record.update(
            passed=passed,
            reasons=["no model is active" if passed else "there is no frozen test set yet: "
                     "export with a test split first (or pin one)"],
        )  # fmt: skip
        return record
    paths = verify_test_set(plan.test_set)
    record["candidate"] = score_model(Path(plan.candidate_path), plan.test_set, paths, predict)
    if plan.active_path is not None:
        record["active"] = score_model(Path(plan.active_path), plan.test_set, paths, predict)
    record["passed"], record["reasons"] = decide_promotion(
        record["candidate"], record["active"], plan.margin
    )
    return record


def apply_decision(
    session: Session, run: TrainingRun, record: dict[str, Any], auto: bool, actor: str
) -> dict[str, Any]:
    """Store the decision on the run and, if auto and it passed, activate the candidate."""
    if auto and record["passed"]:
        active = registry.active_model(session)
        if (active.id if active else None) != record["active_id"]:
            record["reasons"] = [
                *record["reasons"],
                "not promoted: the active model changed while the candidate was evaluated",
            ]
        else:
            registry.activate_model(
                session, record["candidate_id"], reason=f"promotion: run {run.id}", actor=actor
            )
            record["promoted"] = True
            record["promoted_by"] = actor
    run.promotion = record
    return record


def promote_run(session: Session, run_id: int, actor: str, force: bool = False) -> ModelVersion:
    """An admin promotes a run's candidate; refused if the gate failed, unless forced."""
    run = get_or_not_found(session, TrainingRun, run_id, "training run")
    if run.model_version_id is None:
        raise InvalidState(f"training run {run_id} has no candidate model")
    decision = run.promotion or {}
    if not decision.get("passed") and not force:
        raise InvalidState(
            f"training run {run_id}'s candidate did not pass the promotion gate",
            {"reasons": decision.get("reasons", [])},
        )
    model = registry.get_model(session, run.model_version_id)
    if model.status == ModelStatus.ACTIVE:
        return model
    registry.activate_model(
        session, model.id, reason=f"promotion: run {run.id}{' (forced)' if force else ''}",
        actor=actor,
    )  # fmt: skip
    run.promotion = {**decision, "promoted": True, "promoted_by": actor, "forced": force}
    return model
