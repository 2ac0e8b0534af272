"""The promotion rule and the scores it reads, as pure functions."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from service.exports import test_set as frozen
from service.imaging import sha256_file
from service.promotion import (
    EvaluationPlan,
    classification_scores,
    decide_promotion,
    drop_p_value,
    evaluate,
    holm_levels,
    recall_changes,
)


def metrics(macro_f1: float, **recalls: float) -> dict[str, Any]:
    return {"macro_f1": macro_f1, "per_class": {k: {"recall": v} for k, v in recalls.items()}}


def test_better_candidate_is_promoted() -> None:
    ok, reasons = decide_promotion(metrics(0.9, a=0.9, b=0.9), metrics(0.8, a=0.8, b=0.8), 0.05)
    assert ok
    assert any("macro-F1" in r for r in reasons)


def test_equal_macro_f1_is_not_lower() -> None:
    assert decide_promotion(metrics(0.8, a=0.8), metrics(0.8, a=0.8), 0.05)[0]


def test_lower_macro_f1_is_refused() -> None:
    ok, reasons = decide_promotion(metrics(0.79, a=0.8), metrics(0.8, a=0.8), 0.05)
    assert not ok
    assert "lower" in reasons[0]


@pytest.mark.parametrize(("new_recall", "ok"), [(0.75, True), (0.74, False)])
def test_recall_drop_within_margin(new_recall: float, ok: bool) -> None:
    candidate = metrics(0.9, a=new_recall, b=1.0)
    active = metrics(0.85, a=0.8, b=0.7)
    passed, reasons = decide_promotion(candidate, active, 0.05)
    assert passed is ok
    if not ok:
        assert "a 0.800 -> 0.740" in reasons[-1]


def test_a_class_the_candidate_lacks_counts_as_recall_zero() -> None:
    ok, reasons = decide_promotion(metrics(0.95, a=1.0), metrics(0.9, a=0.9, b=0.5), 0.05)
    assert not ok and "b 0.500 -> 0.000" in reasons[-1]


def test_a_class_the_active_model_lacks_cannot_drop() -> None:
    assert decide_promotion(metrics(0.9, a=0.9, new=0.2), metrics(0.9, a=0.9), 0.0)[0]


def test_no_active_model_promotes() -> None:
    ok, reasons = decide_promotion(metrics(0.1, a=0.1), None, 0.05)
    assert ok and "no model is active" in reasons[0]


def test_classification_scores() -> None:
    truth = ["a", "a", "a", "b", "b", "c"]
    predicted = ["a", "a", "b", "b", None, "x"]
    scores = classification_scores(truth, predicted)
    assert scores["n"] == 6 and scores["failed"] == 1
    assert scores["accuracy"] == pytest.approx(3 / 6)
    a, b, c = (scores["per_class"][k] for k in "abc")
    assert (a["precision"], a["recall"]) == (1.0, pytest.approx(2 / 3))
    assert (b["precision"], b["recall"], b["support"]) == (0.5, 0.5, 2)
    assert c == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}
    assert "x" not in scores["per_class"]  # only the test set's classes are averaged
    assert scores["macro_f1"] == pytest.approx((0.8 + 0.5 + 0.0) / 3)


# ---------------------------------------------------------------- small test sets


def fifteen(correct: int) -> float:
    return correct / 15


def pair(lost: int, gained: int, support: int = 15) -> dict[str, int]:
    return {"lost": lost, "gained": gained, "support": support}


def test_a_one_photo_drop_in_a_fifteen_photo_class_does_not_block() -> None:
    # 14/15 -> 13/15 is a drop of 0.067 > 0.05: the margin-only rule refused this candidate.
    candidate = metrics(0.8, a=fifteen(13), b=fifteen(15))
    active = metrics(0.7, a=fifteen(14), b=fifteen(10))
    ok, reasons = decide_promotion(
        candidate, active, 0.05, changes={"a": pair(1, 0), "b": pair(0, 5)}
    )
    assert ok
    assert (
        "a 0.933 -> 0.867: not significant (lost 1, gained 0 of 15 photos, p=0.5" in (reasons[-1])
    )


def test_a_real_drop_in_a_fifteen_photo_class_still_blocks() -> None:
    candidate = metrics(0.8, a=fifteen(7), b=fifteen(15))
    active = metrics(0.7, a=fifteen(14), b=fifteen(10))
    ok, reasons = decide_promotion(
        candidate, active, 0.05, changes={"a": pair(7, 0), "b": pair(0, 5)}
    )
    assert not ok
    assert reasons[-1].startswith("recall drops that block: a 0.933 -> 0.467: significant")
    assert "p=0.00781" in reasons[-1]


def test_a_large_class_blocks_on_a_modest_significant_drop() -> None:
    candidate, active = metrics(0.9, a=0.80), metrics(0.8, a=0.90)
    ok, reasons = decide_promotion(candidate, active, 0.05, changes={"a": pair(12, 2, 100)})
    assert not ok and "lost 12, gained 2 of 100 photos" in reasons[-1]


def test_a_drop_within_the_margin_is_not_tested() -> None:
    candidate, active = metrics(0.9, a=0.96), metrics(0.8, a=1.0)
    ok, reasons = decide_promotion(candidate, active, 0.05, changes={"a": pair(4, 0, 100)})
    assert ok and reasons[-1] == "no class's recall drops by more than 0.05"


def test_a_medically_significant_class_blocks_on_any_drop_beyond_the_margin() -> None:
    candidate = metrics(0.8, Naja_philippinensis=fifteen(13), b=fifteen(15))
    active = metrics(0.7, Naja_philippinensis=fifteen(14), b=fifteen(10))
    changes = {"Naja_philippinensis": pair(1, 0), "b": pair(0, 5)}
    ok, reasons = decide_promotion(
        candidate, active, 0.05, changes=changes, venomous={"Naja_philippinensis"}
    )
    assert not ok
    assert "Naja_philippinensis 0.933 -> 0.867: medically significant" in reasons[-1]
    # ... but not on a drop within the margin
    small = metrics(0.8, Naja_philippinensis=0.96)
    assert decide_promotion(
        small, metrics(0.7, Naja_philippinensis=1.0), 0.05, venomous={"Naja_philippinensis"}
    )[0]


def test_every_drop_beyond_the_margin_is_recorded() -> None:
    candidate = metrics(0.8, a=fifteen(13), b=fifteen(6), c=fifteen(13))
    active = metrics(0.7, a=fifteen(14), b=fifteen(14), c=fifteen(14))
    changes = {"a": pair(1, 0), "b": pair(8, 0), "c": pair(2, 1)}
    ok, reasons = decide_promotion(candidate, active, 0.05, changes=changes)
    assert not ok
    blocking, tolerated = reasons[1:]
    assert "b 0.933 -> 0.400" in blocking and "a " not in blocking
    assert "a 0.933 -> 0.867" in tolerated and "c 0.933 -> 0.867" in tolerated


def test_alpha_sets_what_counts_as_significant() -> None:
    # 4 lost, none gained: p = 1/16, significant at 0.1 but not at 0.05.
    candidate, active = metrics(0.8, a=fifteen(10)), metrics(0.7, a=fifteen(14))
    changes = {"a": pair(4, 0)}
    assert decide_promotion(candidate, active, 0.05, changes=changes)[0]
    assert not decide_promotion(candidate, active, 0.05, changes=changes, alpha=0.1)[0]


@pytest.mark.parametrize(
    ("lost", "gained", "p"),
    [(0, 0, 1.0), (0, 3, 1.0), (1, 0, 0.5), (4, 0, 1 / 16), (5, 0, 1 / 32), (3, 1, 5 / 16)],
)
def test_drop_p_value_is_the_exact_sign_test(lost: int, gained: int, p: float) -> None:
    assert drop_p_value(lost, gained) == pytest.approx(p)


def test_recall_changes_counts_each_class_s_discordant_photos() -> None:
    truth = ["a", "a", "a", "b", "b"]
    active = ["a", "a", "b", "b", "a"]
    candidate = ["a", "b", "a", "a", None]
    assert recall_changes(truth, active, candidate) == {
        "a": {"lost": 1, "gained": 1, "support": 3},
        "b": {"lost": 1, "gained": 0, "support": 2},
    }
    with pytest.raises(ValueError):
        recall_changes(truth, active, candidate[:-1])


def test_evaluate_tests_the_paired_predictions_and_records_them(tmp_path: Path) -> None:
    items = []
    for i, label in enumerate(["a"] * 15 + ["b"] * 15):
        path = tmp_path / f"{i}.jpg"
        path.write_bytes(f"photo {i}".encode())
        items.append({"path": path.name, "sha256": sha256_file(path), "label": label})
    test_set = frozen.TestSet(1, str(tmp_path), items, True, "2026-12-06T00:00:00")
    truth = [i["label"] for i in items]
    active = [*truth[:29], "a"]  # b: 14/15
    candidate = ["b", *truth[1:]]  # a: 14/15 (one photo lost), b: 15/15
    answers = {"active": active, "candidate": candidate}

    def predict(model_dir: Path, paths: list[str]) -> list[str | None]:
        assert paths == [str(tmp_path / i["path"]) for i in items]
        return list(answers[model_dir.name])

    plan = EvaluationPlan(2, "candidate", 1, "active", test_set, 0.05, 0.05, frozenset())
    record = evaluate(plan, predict)
    assert record["passed"] is True and record["alpha"] == 0.05
    assert record["correction"] == "holm"
    assert record["recall_changes"]["a"] == {"lost": 1, "gained": 0, "support": 15}
    assert "a 1.000 -> 0.933: not significant" in record["reasons"][-1]
    venomous = EvaluationPlan(2, "candidate", 1, "active", test_set, 0.05, 0.05, frozenset("a"))
    record = evaluate(venomous, predict)
    assert record["passed"] is False and record["venomous"] == ["a"]


# ---------------------------------------------------------------- many classes


def test_holm_levels_step_down_and_stop_at_the_first_acceptance() -> None:
    levels = holm_levels({"a": 0.01, "b": 0.03, "c": 0.001, "d": 0.04}, 0.05)
    # sorted: c 0.001 < 0.05/4, a 0.01 < 0.05/3, b 0.03 >= 0.05/2: b is not rejected, and
    # so neither is d, though 0.04 < 0.05 (its own level)
    assert levels == {
        "c": pytest.approx(0.0125),
        "a": pytest.approx(0.05 / 3),
        "b": 0.0,
        "d": 0.0,
    }
    assert holm_levels({}, 0.05) == {}


def fourteen_classes(lost: int) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """A 14-class test set of 15 photos a class where the candidate is better overall but
    loses `lost` photos of class s00 and gains none there (the loop simulation's refusals)."""
    labels = [f"s{i:02d}" for i in range(14)]
    active = metrics(0.55, **{k: fifteen(15 if k == "s00" else 8) for k in labels})
    candidate = metrics(0.70, **{k: fifteen(15 - lost if k == "s00" else 11) for k in labels})
    changes = {k: pair(lost, 0) if k == "s00" else pair(0, 3) for k in labels}
    return candidate, active, changes


def test_one_class_s_chance_drop_among_fourteen_does_not_block_a_better_model() -> None:
    # lost 6, gained 0: p = 1/64 = 0.0156, below 0.05 on its own, not below 0.05 / 14.
    candidate, active, changes = fourteen_classes(6)
    ok, reasons = decide_promotion(candidate, active, 0.05, changes=changes)
    assert ok
    assert "s00 1.000 -> 0.600: not significant" in reasons[-1]
    assert "Holm over 14 classes at 0.05" in reasons[-1]
    # Each class on its own at alpha: the drop blocks, as the gate did before.
    ok, reasons = decide_promotion(candidate, active, 0.05, changes=changes, correction="none")
    assert not ok and "significant drop (lost 6, gained 0 of 15 photos" in reasons[-1]


def test_a_drop_significant_for_the_family_still_blocks() -> None:
    # lost 9, gained 0: p = 1/512 = 0.00195 < 0.05 / 14 = 0.00357.
    candidate, active, changes = fourteen_classes(9)
    ok, reasons = decide_promotion(candidate, active, 0.05, changes=changes)
    assert not ok
    assert "s00 1.000 -> 0.400: significant drop" in reasons[-1]
    assert "< 0.00357, Holm over 14 classes" in reasons[-1]


def test_medically_significant_classes_stay_outside_the_family() -> None:
    candidate, active, changes = fourteen_classes(2)
    ok, reasons = decide_promotion(candidate, active, 0.05, changes=changes, venomous={"s00"})
    assert not ok and "s00 1.000 -> 0.867: medically significant" in reasons[-1]


def test_an_unknown_correction_is_refused() -> None:
    candidate, active, changes = fourteen_classes(6)
    with pytest.raises(ValueError, match="correction"):
        decide_promotion(candidate, active, 0.05, changes=changes, correction="bonferroni")
