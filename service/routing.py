"""Review routing: the one place that decides which predictions a human must look at."""

from __future__ import annotations

from collections import defaultdict
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


def review_priority(confidence: float, topk: Sequence[tuple[str, float]]) -> float:
    """How urgent a routed prediction is, in [0, 1]: 1 minus its top-1 / top-2 margin."""
    second = float(topk[1][1]) if len(topk) > 1 else 0.0
    return min(1.0, max(0.0, 1.0 - (confidence - second)))


def balanced_priorities(items: Sequence[tuple[int, str, float]]) -> dict[int, float]:
    """New priorities in (0, 1] for one job's items (id, predicted label, priority).

    The queue then serves every predicted label's most urgent item, then every label's
    second, and so on (by priority within a round): in the loop simulation
    (docs/experiments/loop.md) a queue that follows priority alone spends a round's
    labels on the few classes the model confuses most and learns less than random picks.
    """
    by_label: dict[str, list[tuple[float, int]]] = defaultdict(list)
    for item_id, label, priority in items:
        by_label[label].append((priority, item_id))
    keyed: list[tuple[float, int]] = []
    for group in by_label.values():
        group.sort(key=lambda pair: (-pair[0], pair[1]))
        for rank, (priority, item_id) in enumerate(group):
            # rank first; within a rank, the higher old priority first (0.999 keeps ranks apart)
            keyed.append((rank + 0.999 * (1.0 - min(1.0, max(0.0, priority))), item_id))
    rounds = max((len(group) for group in by_label.values()), default=1)
    return {item_id: 1.0 - key / rounds for key, item_id in keyed}
