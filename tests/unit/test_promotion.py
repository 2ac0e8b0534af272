"""The promotion rule and the scores it reads, as pure functions."""

from __future__ import annotations

from typing import Any

import pytest

from service.promotion import classification_scores, decide_promotion


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
