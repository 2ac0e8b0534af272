"""Review routing: the one place that decides which predictions a human must look at."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field


@dataclass(frozen=True)
class ReviewRules:
    """What sends a prediction to review; extend here (per-species rules, look-alike pairs)."""

    threshold: float
    always_review: frozenset[str] = field(default_factory=frozenset)


def route_for_review(
    label: str, confidence: float, topk: Sequence[tuple[str, float]], rules: ReviewRules
) -> str | None:
    """Return why this prediction needs a human (a short reason), or None when it does not."""
    if confidence < rules.threshold:
        return f"low_confidence<{rules.threshold:g}"
    if label in rules.always_review:
        return "risky_label"
    return None
