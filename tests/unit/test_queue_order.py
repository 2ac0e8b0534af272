"""The orders a finished job's review queue can serve (service.routing.queue_order)."""

from __future__ import annotations

import pytest

from service.routing import QUEUE_ORDERS, QueueCandidate, order_priorities, queue_order

# Three uncertain cobras before any python: uncertainty alone would serve them first.
ITEMS = [
    QueueCandidate(1, "cobra", [0.40, 0.35]),  # margin 0.05
    QueueCandidate(2, "cobra", [0.45, 0.30]),  # 0.15
    QueueCandidate(3, "cobra", [0.50, 0.25]),  # 0.25
    QueueCandidate(4, "python", [0.60, 0.10]),  # 0.50
    QueueCandidate(5, "python", [0.55, 0.40]),  # 0.15
    QueueCandidate(6, "viper", [0.90, 0.05]),  # 0.85
]


def test_confidence_serves_the_lowest_top1_first() -> None:
    assert queue_order(ITEMS, "confidence") == [1, 2, 3, 5, 4, 6]


def test_margin_serves_the_smallest_margin_first() -> None:
    assert queue_order(ITEMS, "margin") == [1, 2, 5, 3, 4, 6]


def test_balanced_takes_turns_across_predicted_labels() -> None:
    # Turn 1: each label's smallest margin (cobra 1, python 5, viper 6), by margin; turn 2 ...
    assert queue_order(ITEMS, "balanced") == [1, 5, 6, 2, 4, 3]


def test_stratified_takes_turns_with_random_items_and_is_seeded() -> None:
    many = [QueueCandidate(k, "ab"[k % 2], [0.5 + k / 100, 0.3]) for k in range(40)]
    first = queue_order(many, "stratified", seed=3)
    assert sorted(first) == list(range(40))
    assert queue_order(many, "stratified", seed=3) == first
    assert queue_order(many, "stratified", seed=4) != first
    # every turn holds one item of each label
    assert all({first[i] % 2, first[i + 1] % 2} == {0, 1} for i in range(0, 40, 2))
    assert first != queue_order(many, "balanced")


def test_mixed_alternates_the_smallest_margin_and_a_random_item_within_a_label() -> None:
    one_label = [QueueCandidate(k, "cobra", [0.3 + k / 100, 0.3]) for k in range(20)]
    served = queue_order(one_label, "mixed", seed=1)
    assert sorted(served) == list(range(20))
    assert served[0] == 0  # the smallest margin first
    # a random pick, then the smallest margin left
    assert served[2] == min(set(range(20)) - {served[0], served[1]})
    assert served != queue_order(one_label, "margin")


def test_every_order_keeps_every_item() -> None:
    for order in QUEUE_ORDERS:
        assert sorted(queue_order(ITEMS, order)) == [1, 2, 3, 4, 5, 6]
    assert queue_order([], "mixed") == []
    with pytest.raises(ValueError, match="unknown queue order"):
        queue_order(ITEMS, "loudest")


def test_order_priorities_serve_the_order_by_priority_descending() -> None:
    priorities = order_priorities([5, 3, 9])
    assert sorted(priorities, key=lambda k: -priorities[k]) == [5, 3, 9]
    assert all(0.0 < p <= 1.0 for p in priorities.values())


def test_coverage_serves_each_labels_smallest_margins_then_the_rest_at_random() -> None:
    # Three labels of 10 items; item k's margin grows with k within its label.
    many = [QueueCandidate(k, "abc"[k % 3], [0.5 + k / 100, 0.45]) for k in range(30)]
    served = queue_order(many, "coverage", seed=7)
    assert sorted(served) == list(range(30))
    # Turn 1: each label's smallest margin (0, 1, 2), turn 2: the next ones (3, 4, 5).
    assert served[:6] == [0, 1, 2, 3, 4, 5]
    rest = served[6:]
    assert rest != sorted(rest)  # random, not by margin or id
    assert queue_order(many, "coverage", seed=7) == served
    assert queue_order(many, "coverage", seed=8)[6:] != rest
    assert served != queue_order(many, "balanced")


def test_coverage_with_fewer_items_than_its_depth_keeps_them_all() -> None:
    assert queue_order(ITEMS, "coverage")[:5] == [1, 5, 6, 2, 4]


# Three labels of 10 items; item k's margin (0.05 + k / 100) grows with k.
GRADED = [QueueCandidate(k, "abc"[k % 3], [0.5 + k / 100, 0.45]) for k in range(30)]


def test_adaptive_serves_a_random_sample_of_the_least_certain_while_a_label_is_untaught() -> None:
    served = queue_order(GRADED, "adaptive", seed=7, taught={"a": 12, "b": 30, "c": 9})
    assert sorted(served) == list(range(30))
    # The job's 30 % smallest margins (and ties at the cut) first, in random order ...
    head, rest = served[:10], served[10:]
    assert sorted(head) == list(range(10)) and head != sorted(head)
    # ... then the rest at random, not by margin or in turns across labels.
    assert sorted(rest) == list(range(10, 30)) and rest != sorted(rest)
    assert queue_order(GRADED, "adaptive", seed=7, taught={"c": 9}) == served
    assert queue_order(GRADED, "adaptive", seed=8) != served  # nothing taught yet


def test_adaptive_turns_to_balanced_once_every_predicted_label_is_taught() -> None:
    taught = {"a": 10, "b": 11, "c": 40, "unseen": 0}  # a label nobody predicted does not count
    assert queue_order(GRADED, "adaptive", seed=7, taught=taught) == queue_order(GRADED, "balanced")
    assert queue_order(ITEMS, "adaptive", taught={"cobra": 10, "python": 10, "viper": 10}) == [
        1, 5, 6, 2, 4, 3
    ]  # fmt: skip
