"""One table of the recipes on ph-snakes and on ph-snakes downscaled to 128 px wide.

    .venv/bin/python benchmarks/recipes_table.py  -> benchmarks/results/recipes_two_sets.{json,md}

It only reads the results files that `train_ph_snakes.py` wrote (see ROWS); a run that has
no file yet is listed as not run. Issue 17 §3: the defaults should be the recipe that wins
on both sets.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"

A = "(A) old defaults: 224, stage 1 by epochs (6), stage 2 10 epochs, last-k:3, lr 5e-4, BN update"
B = "(B) best ph-snakes recipe: 288, stage 1 probe, BN frozen, lr 3e-4, EMA 0.99"
C224 = "(C) linear probe on frozen Lite0 features, 224"
C288 = "(C) linear probe on frozen Lite0 features, 288"
D = "(D) B with stronger augmentation: TrivialAugmentWide, --min-scale 0.25 (the defaults now)"
L1 = "(B) with EfficientNet-Lite1 at 240 (its native size)"
L2 = "(B) with EfficientNet-Lite2 at 260 (its native size)"
L1P = "(C) linear probe on frozen Lite1 features, 240 (L1's stage 1)"
L2P = "(C) linear probe on frozen Lite2 features, 260 (L2's stage 1)"

# (set, recipe, results file stem, which model in it)
ROWS: list[tuple[str, str, str, str]] = [
    ("ph-snakes", A, "train_ph_snakes_longer-stage2", "both_stages"),
    ("ph-snakes", A + ", seed 1", "train_ph_snakes_seed1", "both_stages"),
    ("ph-snakes", B, "train_ph_snakes_lpft288_frozenbn_lr3e-4", "both_stages"),
    ("ph-snakes", B + ", seed 1", "train_ph_snakes_lpft288_frozenbn_lr3e-4_seed1", "both_stages"),
    ("ph-snakes", B + ", seed 2", "train_ph_snakes_lpft288_frozenbn_lr3e-4_seed2", "both_stages"),
    ("ph-snakes", C224, "train_ph_snakes_longer-stage2", "linear_probe"),
    ("ph-snakes", C288, "train_ph_snakes_probe288", "probe_only"),
    ("ph-snakes", C288 + " (B's stage 1)", "train_ph_snakes_lpft288_frozenbn_lr3e-4", "stage1"),
    ("ph-snakes", L1, "train_ph_snakes_lite1_240_lpft_frozenbn_lr3e-4", "both_stages"),
    ("ph-snakes", L1P, "train_ph_snakes_lite1_240_lpft_frozenbn_lr3e-4", "stage1"),
    ("ph-snakes", L2, "train_ph_snakes_lite2_260_lpft_frozenbn_lr3e-4", "both_stages"),
    ("ph-snakes", L2P, "train_ph_snakes_lite2_260_lpft_frozenbn_lr3e-4", "stage1"),
    ("128 px wide", A, "train_ph_snakes_w128_default", "both_stages"),
    ("128 px wide", B, "train_ph_snakes_w128_best", "both_stages"),
    ("128 px wide", C224, "train_ph_snakes_probe224_w128", "probe_only"),
    ("128 px wide", C288, "train_ph_snakes_probe288_w128", "probe_only"),
    ("128 px wide", C288 + " (B's stage 1)", "train_ph_snakes_w128_best", "stage1"),
    ("128 px wide", D, "train_ph_snakes_w128_best_trivial_minscale0.25", "both_stages"),
    (
        "128 px wide",
        D + ", seed 1",
        "train_ph_snakes_w128_best_trivial_minscale0.25_seed1",
        "both_stages",
    ),
    (
        "128 px wide",
        C288 + " (D's stage 1)",
        "train_ph_snakes_w128_best_trivial_minscale0.25",
        "stage1",
    ),
    ("ph-snakes", D, "train_ph_snakes_lpft288_frozenbn_lr3e-4_trivial_minscale0.25", "both_stages"),
    (
        "ph-snakes",
        A + ", run again for its per-image hits",
        "train_ph_snakes_default_hits",
        "both_stages",
    ),
    (
        "128 px wide",
        A + ", run again for its per-image hits",
        "train_ph_snakes_w128_default_hits",
        "both_stages",
    ),
]
# Paired on the same 206 test images (McNemar exact test on the images only one got right):
# (label, first, second), each a results file stem, optionally STEM:stage1. Written by
# `train_ph_snakes.py --pair FIRST SECOND` into results/paired_FIRST_vs_SECOND.json.
PAIRS: list[tuple[str, str, str]] = [
    ("ph-snakes: (A) against (D)", "train_ph_snakes_default_hits",
     "train_ph_snakes_lpft288_frozenbn_lr3e-4_trivial_minscale0.25"),
    ("128 px wide: (A) against (D)", "train_ph_snakes_w128_default_hits",
     "train_ph_snakes_w128_best_trivial_minscale0.25"),
    ("ph-snakes: (D)'s stage 1 (probe at 288) against (D)",
     "train_ph_snakes_lpft288_frozenbn_lr3e-4_trivial_minscale0.25:stage1",
     "train_ph_snakes_lpft288_frozenbn_lr3e-4_trivial_minscale0.25"),
    ("128 px wide: (D)'s stage 1 (probe at 288) against (D)",
     "train_ph_snakes_w128_best_trivial_minscale0.25:stage1",
     "train_ph_snakes_w128_best_trivial_minscale0.25"),
    ("128 px wide: (A) against (D) seed 1", "train_ph_snakes_w128_default_hits",
     "train_ph_snakes_w128_best_trivial_minscale0.25_seed1"),
    ("128 px wide: (D) seed 0 against (D) seed 1",
     "train_ph_snakes_w128_best_trivial_minscale0.25",
     "train_ph_snakes_w128_best_trivial_minscale0.25_seed1"),
]  # fmt: skip


def row(set_name: str, recipe: str, stem: str, part: str) -> dict[str, Any]:
    path = RESULTS / f"{stem}.json"
    out: dict[str, Any] = {"set": set_name, "recipe": recipe, "file": f"{stem}.json"}
    if not path.is_file():
        return out | {"status": "not run"}
    results = json.loads(path.read_text())
    model = results if part == "probe_only" else results.get(part)
    if model is None:
        return out | {"status": "not in file"}
    out |= {
        "status": "measured",
        "test_top1": model["test_top1"],
        "test_macro_f1": model["test_macro_f1"],
        "val_top1": model.get("val_top1"),
    }
    for key in ("train_acc_last", "val_acc_last"):
        if key in model:
            out[key] = model[key]
    if "seconds" in model:
        out["minutes"] = round(model["seconds"] / 60, 1)
    if "load_average_at_end" in results:  # runs made after it was recorded
        out["load_average_at_end"] = results["load_average_at_end"]
    return out


def paired_file(first: str, second: str, results: Path = RESULTS) -> Path:
    """Where `train_ph_snakes.py --pair FIRST SECOND` writes its comparison."""
    label = "_vs_".join(
        n.replace(":", "-").removeprefix("train_ph_snakes_") for n in (first, second)
    )
    return results / f"paired_{label}.json"


def main() -> list[dict[str, Any]]:
    rows = [row(*r) for r in ROWS]
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "recipes_two_sets.json").write_text(json.dumps(rows, indent=2) + "\n")
    pct = lambda v: "-" if v is None else f"{v:.1%}"  # noqa: E731
    lines = [
        "# Recipes on two sets: ph-snakes and ph-snakes downscaled to 128 px wide",
        "",
        "Fixed split (1006 train, 177 val, 206 test; the same photos in both sets). "
        "Written by `benchmarks/recipes_table.py` from the files named.",
        "",
        "| set | recipe | test top-1 | test macro-F1 | val top-1 | last epoch: train acc "
        "(augmented) / val acc | minutes (load average 1/5/15 at the end) | file |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if r["status"] != "measured":
            lines.append(f"| {r['set']} | {r['recipe']} | {r['status']} | | | | | {r['file']} |")
            continue
        gap = (
            f"{r['train_acc_last']:.1%} / {r['val_acc_last']:.1%}" if "train_acc_last" in r else "-"
        )
        minutes = str(r.get("minutes", "-"))
        if "load_average_at_end" in r:
            minutes += " (" + "/".join(f"{v:.1f}" for v in r["load_average_at_end"]) + ")"
        lines.append(
            f"| {r['set']} | {r['recipe']} | {pct(r['test_top1'])} | {r['test_macro_f1']:.3f} "
            f"| {pct(r['val_top1'])} | {gap} | {minutes} | {r['file']} |"
        )
    lines += [
        "",
        "Paired on the same test images (McNemar exact test on the images only one of the two "
        "got right; `train_ph_snakes.py --pair`):",
        "",
        "| comparison | first top-1 | second top-1 | only first right | only second right "
        "| McNemar p | file |",
        "|---|---|---|---|---|---|---|",
    ]
    for label, first, second in PAIRS:
        path = paired_file(first, second)
        if not path.is_file():
            lines.append(f"| {label} | not run | | | | | {path.name} |")
            continue
        q = json.loads(path.read_text())
        lines.append(
            f"| {label} | {pct(q['first_top1'])} | {pct(q['second_top1'])} "
            f"| {q['only_first_right']} | {q['only_second_right']} "
            f"| {q['mcnemar_exact_p']:.3g} | {path.name} |"
        )
    (RESULTS / "recipes_two_sets.md").write_text("\n".join(lines) + "\n")
    return rows


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
