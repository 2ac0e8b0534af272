"""The review queue: claiming items under a lease, recording decisions, undo, bulk confirm."""

from service.review.annotations import (
    MAX_LABEL_LENGTH,
    SETTLING,
    SKIP_PENALTY,
    annotation_to_dict,
    confirm_many,
    current_label,
    decide,
    get_annotation,
    images_with_human_decision,
    normalise_label,
    recent_annotations,
    undo_last,
)
from service.review.claims import (
    CLAIM_ATTEMPTS,
    DEFAULT_LEASE_SECONDS,
    claimable,
    get_item,
    next_item,
)
from service.review.page import (
    SIBLINGS_EACH_SIDE,
    ImageUrl,
    describe_reason,
    item_context,
    known_labels,
    label_names,
    queue_stats,
)

__all__ = [
    "CLAIM_ATTEMPTS",
    "DEFAULT_LEASE_SECONDS",
    "MAX_LABEL_LENGTH",
    "SETTLING",
    "SIBLINGS_EACH_SIDE",
    "SKIP_PENALTY",
    "ImageUrl",
    "annotation_to_dict",
    "claimable",
    "confirm_many",
    "current_label",
    "decide",
    "describe_reason",
    "get_annotation",
    "get_item",
    "images_with_human_decision",
    "item_context",
    "known_labels",
    "label_names",
    "next_item",
    "normalise_label",
    "queue_stats",
    "recent_annotations",
    "undo_last",
]
