"""The dataset card: what an export holds, how it was split, what was left out (JSON and README)."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict
from datetime import datetime
from typing import Any

from service.exports.options import SPLITS, ExportOptions
from service.exports.splits import SplitPlan
from service.models import utcnow


def build_card(
    export_id: int,
    options: ExportOptions,
    rows: list[dict[str, Any]],
    plan: SplitPlan,
    excluded: Counter[str],
    dropped: dict[str, int],
    unsafe: dict[str, int],
    snapshot_at: datetime,
    linked: int,
    manifest_sha256: str,
) -> dict[str, Any]:
    """The dataset card: what is in the export, how it was split, what was left out."""
    classes: dict[str, dict[str, int]] = {}
    for r in rows:
        per = classes.setdefault(r["label"], {s: 0 for s in (*SPLITS, "total")})
        per[r["split"]] += 1
        per["total"] += 1
    sites: dict[str, list[str]] = {
        s: sorted({r["site"] for r in rows if r["split"] == s}) for s in SPLITS
    }
    warnings = [
        f"class {lab!r} has no {split} image"
        for lab, per in sorted(classes.items())
        for split in SPLITS
        if per[split] == 0 and options.fractions()[split] > 0
    ]
    return {
        "format": "herpscore-dataset/1",
        "export_id": export_id,
        "created_at": utcnow().isoformat(timespec="seconds"),
        "snapshot_at": snapshot_at.isoformat(),
        "options": asdict(options),
        "split_mode": plan.mode,
        "split_rule": (
            "whole sites (top-level folder within the job) per split, greedy per class"
            if plan.mode == "site-grouped"
            else "image by image, stratified by label (fewer than two sites)"
        ),
        "total": len(rows),
        "splits": {s: sum(1 for r in rows if r["split"] == s) for s in SPLITS},
        "classes": dict(sorted(classes.items())),
        "sources": dict(Counter(r["source"] for r in rows)),
        "sites": sites,
        "frozen_test_images": plan.forced_test,
        "dropped_classes": dict(sorted(dropped.items())),
        "unsafe_labels": unsafe,
        "excluded": {k: v for k, v in sorted(excluded.items()) if v},
        "files": {"hard_links": linked, "copies": len(rows) - linked},
        "manifest_sha256": manifest_sha256,
        "warnings": warnings,
    }


def render_card(card: dict[str, Any]) -> str:
    """README.md: the card for humans."""
    lines = [
        f"# Dataset export {card['export_id']}",
        "",
        f"Labels as of {card['snapshot_at']}; written {card['created_at']}.",
        f"Split: {card['split_mode']} ({card['split_rule']}).",
        f"Options: `{json.dumps(card['options'])}`.",
        "",
        "| class | train | val | test | total |",
        "|---|---:|---:|---:|---:|",
    ]
    for label, per in card["classes"].items():
        lines.append(
            f"| {label} | {per['train']} | {per['val']} | {per['test']} | {per['total']} |"
        )
    s = card["splits"]
    lines += [
        f"| **all** | {s['train']} | {s['val']} | {s['test']} | {card['total']} |",
        "",
        f"Sources: {card['sources']}. Sites per split: "
        + ", ".join(f"{k} {len(v)}" for k, v in card["sites"].items())
        + ".",
    ]
    if card["dropped_classes"]:
        lines.append(
            f"Dropped classes (fewer than {card['options']['min_per_class']} images): "
            + ", ".join(f"{k} ({v})" for k, v in card["dropped_classes"].items())
        )
    if card["excluded"]:
        lines.append("Left out: " + ", ".join(f"{k} {v}" for k, v in card["excluded"].items()))
    lines += [f"Warning: {w}" for w in card["warnings"]]
    lines.append("")
    return "\n".join(lines)
