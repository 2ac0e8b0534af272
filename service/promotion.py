"""The promotion gate: a candidate replaces the active model only if it is no worse.

Both models are scored on the same frozen, human-verified test set (see
`service.exports.frozen_test_set`) with the shared preprocessing; labels are matched by
name, so a class a model does not know simply gets recall 0. The candidate passes when
its macro-F1 is not lower and no class's recall drop blocks it:

- a medically significant species (the species table's flag) blocks on any recall drop
  larger than the margin;
- any other class blocks when its recall drops by more than the margin *and* the drop is
  significant for the class's photos: an exact one-sided sign test (McNemar's) on the
  class's photos the two models disagree on. With 15 photos a class, one photo is 0.067
  of recall, so the margin alone would refuse a better model over noise. The classes are
  tested together at level alpha (Holm's step-down correction, by default): one test per
  class at alpha would refuse an equally good candidate more often the more species the
  test set holds.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session

from service import registry, species
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
CORRECTIONS = ("holm", "none")
# How a refusal for recall drops starts among the decision's reasons (reports look for it).
RECALL_BLOCKS = "recall drops that block"


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


def recall_changes(
    truth: Sequence[str], active: Sequence[str | None], candidate: Sequence[str | None]
) -> dict[str, dict[str, int]]:
    """Per class of the test set: its photos the candidate gets wrong and the active model
    right (`lost`), the reverse (`gained`), and how many photos it has (`support`)."""
    if not len(truth) == len(active) == len(candidate):
        raise ValueError("truth and predictions differ in length")
    changes: dict[str, dict[str, int]] = {
        label: {"lost": 0, "gained": 0, "support": 0} for label in sorted(set(truth))
    }
    for label, old, new in zip(truth, active, candidate, strict=True):
        row = changes[label]
        row["support"] += 1
        row["lost"] += int(old == label and new != label)
        row["gained"] += int(old != label and new == label)
    return changes


def drop_p_value(lost: int, gained: int) -> float:
    """How likely a drop at least this large is if the models are equally good on the class:
    the exact one-sided sign test on the discordant photos, P(X >= lost), X ~ Bin(n, 1/2)."""
    n = lost + gained
    if lost <= 0:
        return 1.0
    return sum(math.comb(n, k) for k in range(lost, n + 1)) / 2**n


def holm_levels(p_values: Mapping[str, float], alpha: float) -> dict[str, float]:
    """Each class's significance level under Holm's step-down procedure (family-wise error
    at most alpha over all the classes): the k-th smallest p-value of m is compared with
    alpha / (m - k + 1), and once one is not below its level, no later one is rejected
    (its level is then 0)."""
    levels: dict[str, float] = {}
    m, rejecting = len(p_values), True
    for k, (label, p) in enumerate(sorted(p_values.items(), key=lambda kv: (kv[1], kv[0]))):
        level = alpha / (m - k)
        rejecting = rejecting and p < level
        levels[label] = level if rejecting else 0.0
    return levels


def _recall_rule(
    label: str,
    old_r: float,
    new_r: float,
    margin: float,
    counts: Mapping[str, int] | None,
    venomous: bool,
    level: float,
    family: str,
) -> tuple[bool, str]:
    """Whether a class's recall drop beyond the margin blocks, and why (in words); `level`
    is the class's significance level, `family` says how it was set."""
    drop = f"{label} {old_r:.3f} -> {new_r:.3f}"
    if venomous:
        return True, f"{drop}: medically significant, drops by more than {margin:g}"
    if counts is None:
        return True, f"{drop}: drops by more than {margin:g} (no paired predictions to test)"
    lost, gained, support = counts["lost"], counts["gained"], counts["support"]
    p = drop_p_value(lost, gained)
    paired = f"lost {lost}, gained {gained} of {support} photos, p={p:.3g}"
    if level > 0 and p < level:
        return True, f"{drop}: significant drop ({paired} < {level:.3g}{family})"
    return False, f"{drop}: not significant ({paired}{family}), tolerated"


def _class_levels(
    changes: Mapping[str, Mapping[str, int]] | None,
    venomous: frozenset[str] | set[str],
    alpha: float,
    correction: str,
) -> tuple[dict[str, float], str]:
    """The significance level of each class's recall test, and the words for how it was set."""
    if correction not in CORRECTIONS:
        raise ValueError(f"correction must be one of {CORRECTIONS}, not {correction!r}")
    tested = {
        label: drop_p_value(row["lost"], row["gained"])
        for label, row in (changes or {}).items()
        if label not in venomous and row.get("support", 0) > 0
    }
    if correction == "none" or len(tested) <= 1:
        return {label: alpha for label in tested}, ", each class on its own"
    return holm_levels(tested, alpha), f", Holm over {len(tested)} classes at {alpha:g}"


def decide_promotion(
    candidate_metrics: dict[str, Any],
    active_metrics: dict[str, Any] | None,
    margin: float,
    *,
    changes: Mapping[str, Mapping[str, int]] | None = None,
    venomous: frozenset[str] | set[str] = frozenset(),
    alpha: float = 0.05,
    correction: str = "holm",
) -> tuple[bool, list[str]]:
    """Promote only if macro-F1 is not lower and no class's recall drop blocks (see the
    module's docstring); every class whose recall drops by more than the margin gets a
    reason, blocking or not. `changes` comes from `recall_changes`; without it every drop
    beyond the margin blocks. `correction`: `holm` tests the classes as one family at
    level alpha, `none` each class at alpha."""
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
    levels, family = _class_levels(changes, venomous, alpha, correction)
    blocking: list[str] = []
    tolerated: list[str] = []
    for label in sorted(set(new_pc) | set(old_pc)):
        new_r = new_pc.get(label, {}).get("recall", 0.0)
        old_r = old_pc.get(label, {}).get("recall", 0.0)
        if old_r - new_r <= margin + EPSILON:
            continue
        counts = changes.get(label) if changes is not None else None
        level = levels.get(label, alpha)
        blocks, why = _recall_rule(
            label, old_r, new_r, margin, counts, label in venomous, level, family
        )
        (blocking if blocks else tolerated).append(why)
    if blocking:
        ok = False
        reasons.append(f"{RECALL_BLOCKS}: " + "; ".join(blocking))
    if tolerated:
        reasons.append("recall drops within noise: " + "; ".join(tolerated))
    if not blocking and not tolerated:
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


def score_model(model_dir: Path, paths: list[str], predict: Predictor) -> list[str | None]:
    """One model's predicted label for each test photo."""
    return list(predict(model_dir, paths))


@dataclass(frozen=True)
class EvaluationPlan:
    """What a promotion decision compares: read in a short transaction, scored outside it."""

    candidate_id: int
    candidate_path: str
    active_id: int | None
    active_path: str | None
    test_set: TestSet | None
    margin: float
    alpha: float = 0.05
    venomous: frozenset[str] = frozenset()
    correction: str = "holm"


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
        settings.promotion_recall_alpha,
        species.venomous_labels(session),
        settings.promotion_recall_correction,
    )


def evaluate(plan: EvaluationPlan, predict: Predictor) -> dict[str, Any]:
    """Score both models on the frozen test set and decide; touches no database."""
    record: dict[str, Any] = {
        "candidate_id": plan.candidate_id,
        "active_id": plan.active_id,
        "margin": plan.margin,
        "alpha": plan.alpha,
        "correction": plan.correction,
        "venomous": sorted(plan.venomous),
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
    truth = [i["label"] for i in plan.test_set.items]
    candidate = score_model(Path(plan.candidate_path), paths, predict)
    record["candidate"] = classification_scores(truth, candidate)
    changes = None
    if plan.active_path is not None:
        active = score_model(Path(plan.active_path), paths, predict)
        record["active"] = classification_scores(truth, active)
        changes = record["recall_changes"] = recall_changes(truth, active, candidate)
    record["passed"], record["reasons"] = decide_promotion(
        record["candidate"],
        record["active"],
        plan.margin,
        changes=changes,
        venomous=plan.venomous,
        alpha=plan.alpha,
        correction=plan.correction,
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
