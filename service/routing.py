"""Review routing: the one place that decides which predictions a human must look at, and
the genus rollup of a prediction no species is sure enough of."""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

# A venom-risk item outranks every other (priorities of the rest lie in [0, 1]).
VENOM_PRIORITY = 1.0


@dataclass(frozen=True)
class SpeciesRule:
    """What routing knows of one label from the species table."""

    genus: str = ""
    venomous: bool = False
    lookalike_group: str | None = None
    threshold: float | None = None


@dataclass(frozen=True)
class ReviewRules:
    """What sends a prediction to review: the job threshold, the species table, settings."""

    threshold: float
    always_review: frozenset[str] = field(default_factory=frozenset)
    species: Mapping[str, SpeciesRule] = field(default_factory=dict)
    venom_alert: float = 0.05
    lookalike_margin: float = 0.0

    def threshold_of(self, label: str) -> float:
        rule = self.species.get(label)
        return rule.threshold if rule and rule.threshold is not None else self.threshold


@dataclass(frozen=True)
class Routing:
    """Every reason that held (empty: no review), and what the queue and results need."""

    reasons: tuple[str, ...] = ()
    venom_risk: bool = False
    rolled_up_label: str | None = None
    priority: float = 0.0

    @property
    def needs_review(self) -> bool:
        return bool(self.reasons)

    @property
    def reason(self) -> str:
        """The reasons as one short text (the review item's `reason` column)."""
        return "; ".join(self.reasons)[:200]


def route_for_review(
    label: str, confidence: float, topk: Sequence[tuple[str, float]], rules: ReviewRules
) -> Routing:
    """Why this prediction needs a human (every reason that holds), and its genus rollup.

    - top-1 below its species threshold, else the job's;
    - a medically significant species anywhere in the top-k at or above `venom_alert`;
    - top-1 and top-2 in one look-alike group closer than `lookalike_margin`;
    - the top-1 is a label always sent to review (HERPSCORE_REVIEW_LABELS).
    """
    reasons: list[str] = []
    threshold = rules.threshold_of(label)
    below = confidence < threshold
    if below:
        reasons.append(f"low_confidence<{threshold:g}")
    venomous = [
        (other, p)
        for other, p in topk
        if p >= rules.venom_alert and (rule := rules.species.get(other)) and rule.venomous
    ]
    if venomous:
        reasons += [f"venomous_in_top_k:{other}@{p:.2f}" for other, p in venomous]
    if len(topk) >= 2:
        (first, p1), (second, p2) = topk[0], topk[1]
        g1, g2 = rules.species.get(first), rules.species.get(second)
        group = g1.lookalike_group if g1 else None
        if group and g2 and g2.lookalike_group == group and p1 - p2 < rules.lookalike_margin:
            reasons.append(f"lookalike:{group}<{rules.lookalike_margin:g}")
    if label in rules.always_review:
        reasons.append("risky_label")
    rolled_up = _rollup(topk, rules) if below else None
    uncertainty = min(max(1.0 - confidence, 0.0), 1.0)
    return Routing(
        tuple(reasons),
        bool(venomous),
        rolled_up,
        uncertainty + (VENOM_PRIORITY if venomous else 0.0),
    )


def _rollup(topk: Sequence[tuple[str, float]], rules: ReviewRules) -> str | None:
    """The genus whose summed top-k probability reaches the job threshold, when no species
    reaches its own threshold (iNaturalist's and SpeciesNet's rule); None otherwise."""
    if any(p >= rules.threshold_of(label) for label, p in topk):
        return None
    sums: dict[str, float] = defaultdict(float)
    for label, p in topk:
        rule = rules.species.get(label)
        if rule and rule.genus:
            sums[rule.genus] += p
    if not sums:
        return None
    genus, total = max(sums.items(), key=lambda kv: kv[1])
    return genus if total >= rules.threshold else None


def _percent(value: str) -> str:
    """A stored probability in the unit the review page shows confidences in."""
    try:
        return f"{float(value) * 100:g} %"
    except ValueError:
        return value


def describe_reasons(reason: str) -> str:
    """The routing reasons (`; `-joined, as stored) in words."""
    words = []
    for part in filter(None, (p.strip() for p in reason.split(";"))):
        if part.startswith("low_confidence<"):
            words.append(f"confidence below {_percent(part.split('<', 1)[1])}")
        elif part == "risky_label":
            words.append("this species is always reviewed")
        elif part.startswith("venomous_in_top_k:"):
            label, _, p = part.split(":", 1)[1].rpartition("@")
            words.append(f"VENOMOUS {label.replace('_', ' ')} suggested at {_percent(p)}")
        elif part.startswith("lookalike:"):
            group, _, margin = part.split(":", 1)[1].rpartition("<")
            words.append(f"look-alikes ({group}) closer than {_percent(margin)}")
        else:
            words.append(part.replace("_", " "))
    return "; ".join(words)


# ---------------------------------------------------------------- the order of a job's queue

QUEUE_ORDERS = ("confidence", "margin", "balanced", "stratified", "mixed", "coverage", "adaptive")
# `coverage`: how many smallest-margin items of every predicted label come before the rest.
COVERAGE_DEPTH = 2
# `adaptive`: while a predicted label has fewer human labels than this, the job's queue
# serves a random sample of its least certain share first; then `balanced`.
ADAPTIVE_TAUGHT = 10
ADAPTIVE_SHARE_PERCENT = 30


@dataclass(frozen=True)
class QueueCandidate:
    """A routed item as the queue's order sees it: its predicted label and top-k probabilities
    (highest first)."""

    key: int
    label: str
    probs: Sequence[float]

    @property
    def margin(self) -> float:
        """Top-1 minus top-2 probability: small when the model hesitates between two labels."""
        second = self.probs[1] if len(self.probs) > 1 else 0.0
        return (self.probs[0] if self.probs else 0.0) - second


def queue_order(
    candidates: Sequence[QueueCandidate],
    order: str,
    seed: int = 0,
    taught: Mapping[str, int] | None = None,
) -> list[int]:
    """The keys of one job's items in the order the queue should serve them.

    - confidence: lowest top-1 probability first;
    - margin: smallest top-1 / top-2 margin first;
    - balanced: turns across the predicted labels, each label's smallest margin first;
    - stratified: turns across the predicted labels, each label's items in random order;
    - mixed: turns across the predicted labels; within a label, its smallest-margin item
      and a random one alternate.
    - coverage: turns across the predicted labels for each label's COVERAGE_DEPTH
      smallest-margin items, then every other item in random order.
    - adaptive: while some predicted label has fewer than ADAPTIVE_TAUGHT human labels
      (`taught`: label -> current human labels), the job's ADAPTIVE_SHARE_PERCENT %
      smallest margins in random order, then the rest in random order; once every
      predicted label has that many, `balanced`.

    The random draws are seeded (a job serves the same order every time).
    """
    if order not in QUEUE_ORDERS:
        raise ValueError(f"unknown queue order {order!r}; choose one of {', '.join(QUEUE_ORDERS)}")
    if order == "adaptive":
        # A model taught a few photos per label gains more from a random sample of its
        # doubts than from its hardest items; once taught, each label's hardest help most.
        counts = taught or {}
        if any(counts.get(c.label, 0) < ADAPTIVE_TAUGHT for c in candidates):
            return _least_certain_sample(candidates, random.Random(seed))
        order = "balanced"
    if order == "confidence":
        return [
            c.key for c in sorted(candidates, key=lambda c: (c.probs[0] if c.probs else 0.0, c.key))
        ]
    by_margin = sorted(candidates, key=lambda c: (c.margin, c.key))
    if order == "margin":
        return [c.key for c in by_margin]
    rng = random.Random(seed)
    by_label: dict[str, list[int]] = defaultdict(list)
    for c in by_margin:
        by_label[c.label].append(c.key)
    if order == "coverage":
        # Every predicted label's hardest few first, then a random sample of the pool:
        # uncertainty alone spends a weak model's first labels on a few confused labels.
        head = _in_turns(
            [by_label[label][:COVERAGE_DEPTH] for label in sorted(by_label)], candidates
        )
        rest = sorted(set(c.key for c in candidates) - set(head))
        rng.shuffle(rest)
        return head + rest
    turns: list[list[int]] = []
    for label in sorted(by_label):
        keys = by_label[label]
        if order == "stratified":
            keys = sorted(keys)
            rng.shuffle(keys)
        elif order == "mixed":
            keys = _alternate(keys, rng)
        turns.append(keys)
    return _in_turns(turns, candidates)


def _least_certain_sample(candidates: Sequence[QueueCandidate], rng: random.Random) -> list[int]:
    """The ADAPTIVE_SHARE_PERCENT % smallest margins in random order, then the rest."""
    if not candidates:
        return []
    margins = sorted(c.margin for c in candidates)
    cut = margins[len(margins) * ADAPTIVE_SHARE_PERCENT // 100]
    low = sorted(c.key for c in candidates if c.margin <= cut)
    rest = sorted(c.key for c in candidates if c.margin > cut)
    rng.shuffle(low)
    rng.shuffle(rest)
    return low + rest


def _in_turns(turns: list[list[int]], candidates: Sequence[QueueCandidate]) -> list[int]:
    """Every label's first item, then every label's second, ...; within a turn, by margin."""
    served: list[int] = []
    margin_of = {c.key: c.margin for c in candidates}
    # Longest first, and a label leaves once it has served all its items: with 200 labels
    # and one of them holding 17k items, looking at every label at every depth cost 3M steps.
    left = sorted(turns, key=len, reverse=True)
    for rank in range(len(left[0]) if left else 0):
        while len(left[-1]) <= rank:
            left.pop()
        layer = [keys[rank] for keys in left]
        served += sorted(layer, key=lambda key: (margin_of[key], key))
    return served


def _alternate(by_margin: list[int], rng: random.Random) -> list[int]:
    """The smallest-margin item, a random one of the rest, the next smallest margin, ...

    The random picks walk one shuffled copy and skip what is already served: the next
    unserved item of a random permutation is a uniform pick of the unserved ones, in linear
    time (popping random positions from a shrinking list was quadratic: a second at 100k).
    """
    shuffled = list(by_margin)
    rng.shuffle(shuffled)
    smallest, randoms = iter(by_margin), iter(shuffled)
    served: set[int] = set()
    out: list[int] = []
    while len(out) < len(by_margin):
        source = randoms if len(out) % 2 else smallest
        key = next(k for k in source if k not in served)
        served.add(key)
        out.append(key)
    return out


def order_priorities(keys: Sequence[int]) -> dict[int, float]:
    """Priorities in (0, 1] that make `ORDER BY priority DESC` serve `keys` in this order."""
    n = len(keys)
    return {key: 1.0 - position / n for position, key in enumerate(keys)}
