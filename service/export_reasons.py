"""Why an export holds fewer images than the reviewer expected, in words for the exports page."""

from __future__ import annotations

from typing import Any

# The keys service.exports counts under "excluded", as a reader would say them.
EXCLUDED = {
    "human_unknown": "marked unknown species by a reviewer",
    "human_unusable": "marked not usable by a reviewer",
    "not_hashed": "never read completely by a scan",
    "conflicting_human_decisions": "reviewers disagreed on the photo",
    "conflicting_human_labels": "the same photo has different human labels",
    "conflicting_predictions": "the same photo has different machine labels",
    "machine_label_ruled_out": "a reviewer ruled the machine's label out",
    "duplicate_files": "duplicate files of one photo",
    "file_missing": "the file is gone from disk",
    "file_changed_since_scan": "the file changed since it was scanned",
    "machine_label_at_evaluation_site": "machine labels held out at a test-set site",
}


def left_out(counts: dict[str, Any] | None, options: dict[str, Any] | None) -> list[str]:
    """One sentence per reason photos were left out of a finished export."""
    if not counts:
        return []
    reasons: list[str] = []
    dropped = counts.get("dropped_classes") or {}
    if dropped:
        minimum = (options or {}).get("min_per_class", "the minimum")
        names = ", ".join(f"{label} ({n})" for label, n in dropped.items())
        reasons.append(f"Classes with fewer than {minimum} images were dropped: {names}.")
    unsafe = counts.get("unsafe_labels") or {}
    if unsafe:
        names = ", ".join(f"{label!r} ({n})" for label, n in unsafe.items())
        reasons.append(f"Labels that cannot name a folder were left out: {names}.")
    for key, n in (counts.get("excluded") or {}).items():
        reasons.append(
            f"{n} image{'s' if n != 1 else ''}: {EXCLUDED.get(key, key.replace('_', ' '))}."
        )
    if not reasons and not counts.get("total"):
        reasons.append("No photo had a verified label (or a machine label above the threshold).")
    return reasons
