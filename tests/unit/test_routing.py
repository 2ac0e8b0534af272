"""The review routing rule."""

from __future__ import annotations

import pytest

from service.routing import ReviewRules, route_for_review

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
