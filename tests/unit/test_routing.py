"""The review routing rule."""

from __future__ import annotations

import pytest

from service.routing import ReviewRules, balanced_priorities, review_priority, route_for_review

TOPK = [("Naja_samarensis", 0.5), ("Ptyas_carinata", 0.3)]


@pytest.mark.parametrize(
    ("confidence", "threshold", "routed"),
    [
        (0.59, 0.6, True),
        (0.6, 0.6, False),
        (0.99, 0.6, False),
        (0.0, 0.0, False),
        (0.999, 1.0, True),
    ],
)
def test_below_threshold_is_routed(confidence: float, threshold: float, routed: bool) -> None:
    reason = route_for_review("Ptyas_carinata", confidence, TOPK, ReviewRules(threshold))
    assert (reason is not None) == routed
    if routed:
        assert reason == f"low_confidence<{threshold:g}"


def test_risky_labels_are_always_routed() -> None:
    rules = ReviewRules(0.5, always_review=frozenset({"Naja_samarensis"}))
    assert route_for_review("Naja_samarensis", 0.99, TOPK, rules) == "risky_label"
    assert route_for_review("Ptyas_carinata", 0.99, TOPK, rules) is None
    # Low confidence is reported first: it is the more specific reason to look.
    assert route_for_review("Naja_samarensis", 0.1, TOPK, rules) == "low_confidence<0.5"


def test_priority_is_one_minus_the_top_two_margin() -> None:
    assert review_priority(0.5, TOPK) == pytest.approx(0.8)
    assert review_priority(0.9, [("Naja_samarensis", 0.9)]) == pytest.approx(0.1)
    assert review_priority(1.0, [("a", 1.0), ("b", 0.0)]) == 0.0


def test_balanced_priorities_take_turns_across_predicted_labels() -> None:
    # Three uncertain cobras before any python: priority alone would serve them first.
    items = [
        (1, "cobra", 0.9),
        (2, "cobra", 0.8),
        (3, "cobra", 0.7),
        (4, "python", 0.3),
        (5, "python", 0.2),
        (6, "viper", 0.5),
    ]
    new = balanced_priorities(items)
    served = sorted(new, key=lambda item_id: (-new[item_id], item_id))
    assert served == [1, 6, 4, 2, 5, 3]
    assert all(0.0 < p <= 1.0 for p in new.values())
    assert balanced_priorities([]) == {}
