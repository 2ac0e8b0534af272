"""Leak-free splits: every sha256 to train, val or test, grouped by site, the frozen test fixed."""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from dataclasses import dataclass, field

from service.exports.candidates import HUMAN, MACHINE, Candidate
from service.exports.options import SPLITS, ExportOptions


@dataclass
class SplitPlan:
    """Which split each sha256 goes to, how it was decided, and what was held out."""

    split_of: dict[str, str]
    mode: str
    held_out: list[str] = field(default_factory=list)  # machine labels at evaluation sites
    forced_test: int = 0


def plan_splits(
    candidates: list[Candidate],
    options: ExportOptions,
    forced_test: set[str] = frozenset(),  # type: ignore[assignment]
) -> SplitPlan:
    """Assign every sha256 a split: stratified by label, grouped by site, test fixed.

    Human-labelled images are split: by whole sites when there are at least two (and
    options.group_by_site), else image by image. Groups holding a frozen test image go to
    test. The other groups, largest first (ties in seeded random order), go to the split
    whose per-class targets they fill best (relative deficit). Machine-labelled images
    only train: at a site that went to val/test they are held out.
    """
    fractions = options.fractions()
    humans = [c for c in candidates if c.source == HUMAN]
    sites = {c.site for c in humans}
    grouped = options.group_by_site and len(sites) >= 2
    mode = "site-grouped" if grouped else "image-stratified"

    def group_key(c: Candidate) -> str:
        return f"site:{c.site}" if grouped else f"sha:{c.sha256}"

    groups: dict[str, list[Candidate]] = defaultdict(list)
    for c in humans:
        groups[group_key(c)].append(c)
    totals = Counter(c.label for c in humans)
    target = {s: {lab: fractions[s] * n for lab, n in totals.items()} for s in SPLITS}
    current: dict[str, Counter[str]] = {s: Counter() for s in SPLITS}
    split_of_group: dict[str, str] = {}
    forced = {k for k, members in groups.items() if any(c.sha256 in forced_test for c in members)}
    for key in sorted(forced):
        split_of_group[key] = "test"
        current["test"].update(c.label for c in groups[key])

    order = sorted(k for k in groups if k not in forced)
    random.Random(options.seed).shuffle(order)
    order.sort(key=lambda k: -len(groups[k]))  # stable: the shuffle breaks ties
    open_splits = [s for s in SPLITS if fractions[s] > 0]
    for key in order:
        counts = Counter(c.label for c in groups[key])

        def score(split: str, counts: Counter[str] = counts) -> float:
            return sum(
                n * (target[split][lab] - current[split][lab]) / target[split][lab]
                for lab, n in counts.items()
            )

        best = max(open_splits, key=score)  # max keeps the first of equals: train, val, test
        split_of_group[key] = best
        current[best].update(counts)

    plan = SplitPlan(
        {c.sha256: split_of_group[group_key(c)] for c in humans}, mode,
        forced_test=sum(len(groups[k]) for k in forced),
    )  # fmt: skip
    site_split = {c.site: plan.split_of[c.sha256] for c in humans} if grouped else {}
    for c in candidates:
        if c.source != MACHINE:
            continue
        if site_split.get(c.site, "train") == "train":
            plan.split_of[c.sha256] = "train"
        else:
            plan.held_out.append(c.sha256)
    return plan
