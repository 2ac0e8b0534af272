"""The loop simulation's report: every run's rounds -> results JSON, a Markdown table, a PNG."""

from __future__ import annotations

import argparse
import json
import platform
from collections import defaultdict
from pathlib import Path
from statistics import mean, stdev
from typing import Any

from service.promotion import RECALL_BLOCKS

# The target: the queue reaches this share of the all-labels accuracy ...
TARGET_SHARE = 0.95
# ... with at most this share of the labels.
LABEL_BUDGET = 0.40
# Queue runs are named after the order the queue served (HERPSCORE_REVIEW_ORDER).
ORDER = (
    "queue-confidence",
    "random",
    "queue-mixed",
    "queue-stratified",
    "queue-balanced",
    "queue-margin",
    "queue-coverage",
    "queue-adaptive",
    "margin",
    "entropy",
    "balanced",
)
COLOURS = {
    "queue-confidence": "tab:blue",
    "random": "tab:orange",
    "queue-mixed": "tab:red",
    "queue-stratified": "tab:olive",
    "queue-balanced": "tab:brown",
    "queue-margin": "tab:purple",
    "queue-coverage": "tab:green",
    "queue-adaptive": "black",
}
OTHER_COLOURS = ("tab:pink", "tab:cyan", "tab:gray")


def load_runs(
    work: Path,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
    """(loop runs, reference runs, superseded runs) found in work/results.

    A run made under the gate's old per-class recall test (`recall_correction` none, or
    absent: runs from before the setting) stands for the product's gate (holm) only if no
    round was refused by that test: the correction can only turn a recall refusal into a
    promotion, so every other decision would have been the same. The others are superseded:
    kept in the JSON, left out of the means, and rerun with the product's gate."""
    folder = work / "results"
    found = [json.loads(p.read_text()) for p in sorted(folder.glob("seed*.json"))]
    for run in found:  # runs made before queue runs were named after their order
        if run["strategy"] == "queue":
            run["strategy"] = f"queue-{run.setdefault('review_order', 'confidence')}"
        run.setdefault("recall_correction", "none")
    refs = [json.loads(p.read_text()) for p in sorted(folder.glob("reference-seed*.json"))]
    runs = [r for r in found if stands_for_holm(r)]
    superseded = [r for r in found if not stands_for_holm(r)]
    keys = [(r["seed"], r["strategy"]) for r in runs]
    if len(keys) != len(set(keys)):
        raise ValueError(f"two runs of the same seed and strategy in {folder}: {sorted(keys)}")
    return runs, refs, superseded


def recall_refusals(run: dict[str, Any]) -> list[int]:
    """The rounds whose candidate the gate refused for a recall drop alone (macro-F1 passed)."""

    def alone(reasons: list[str]) -> bool:
        by_recall = any(r.startswith(RECALL_BLOCKS) for r in reasons)
        return by_recall and not any(r.startswith("macro-F1") and "lower" in r for r in reasons)

    return [row["round"] for row in run["rounds"] if alone([str(g) for g in row.get("gate") or []])]


def stands_for_holm(run: dict[str, Any]) -> bool:
    return run.get("recall_correction", "none") == "holm" or not recall_refusals(run)


def summarise(runs: list[dict[str, Any]], refs: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean top-1 / macro-F1 per strategy and round, and the issue's two checks."""
    by: dict[str, dict[int, list[dict[str, Any]]]] = defaultdict(lambda: defaultdict(list))
    for run in runs:
        for row in run["rounds"]:
            by[run["strategy"]][row["round"]].append(row)
    table: dict[str, list[dict[str, Any]]] = {}
    for strategy, rounds in sorted(by.items()):
        table[strategy] = [
            {
                "round": r,
                "labels": round(mean(x["labels"] for x in rows)),
                "top1": round(mean(x["top1"] for x in rows), 4),
                "macro_f1": round(mean(x["macro_f1"] for x in rows), 4),
                # what the round's labels bought, whatever the gate then decided
                "candidate_top1": round(mean(_candidate(x)["top1"] for x in rows), 4),
                "candidate_macro_f1": round(mean(_candidate(x)["macro_f1"] for x in rows), 4),
                "seeds": len(rows),
            }
            for r, rows in sorted(rounds.items())
        ]
    checks: dict[str, Any] = {}
    # Compared on the seeds both ran: a mean over other seeds is another test.
    seeds_of = {(run["strategy"], run["seed"]): run["rounds"] for run in runs}
    for strategy in [s for s in table if s != "random"]:
        paired = sorted(
            seed for name, seed in seeds_of if name == strategy and ("random", seed) in seeds_of
        )
        if not paired:
            continue
        checks[f"{strategy}_seeds_compared_with_random"] = paired
        checks[f"{strategy}_minus_random"] = paired_differences(seeds_of, strategy, paired)
        for key, name in (("top1", "active"), ("candidate_top1", "candidate")):
            checks[f"{strategy}_beats_random_every_round_{name}"] = all(
                _paired_mean(seeds_of, strategy, paired, r, key)
                > _paired_mean(seeds_of, "random", paired, r, key)
                for r in range(1, min(len(seeds_of[(strategy, s)]) for s in paired))
            )
    if refs:
        ref_top1 = mean(r["top1"] for r in refs)
        budget = LABEL_BUDGET * refs[0]["labels"]
        checks.update(reference_top1=round(ref_top1, 4), label_budget=int(budget))
        for strategy, rows in table.items():
            best = max((row["top1"] for row in rows if row["labels"] <= budget), default=0.0)
            checks[f"{strategy}_best_top1_within_budget"] = best
            checks[f"{strategy}_share_of_reference"] = round(best / ref_top1, 4)
            checks[f"{strategy}_reaches_95_percent"] = best >= TARGET_SHARE * ref_top1
    return {"table": table, "checks": checks}


def paired_differences(
    seeds_of: dict[tuple[str, int], list[dict[str, Any]]], strategy: str, seeds: list[int]
) -> dict[str, list[str]]:
    """Per round from 1: the mean over seeds of (strategy - random) in top-1 points, its
    standard error, and on how many seeds the strategy was ahead / level / behind."""
    out: dict[str, list[str]] = {}
    rounds = min(len(seeds_of[(name, s)]) for name in (strategy, "random") for s in seeds)
    for key, name in (("top1", "active"), ("candidate_top1", "candidate")):
        cells = []
        for r in range(1, rounds):
            diffs = [
                100
                * (_top1(seeds_of[(strategy, s)][r], key) - _top1(seeds_of[("random", s)][r], key))
                for s in seeds
            ]
            se = stdev(diffs) / len(diffs) ** 0.5 if len(diffs) > 1 else float("nan")
            ahead = sum(d > 1e-9 for d in diffs)
            behind = sum(d < -1e-9 for d in diffs)
            level = len(diffs) - ahead - behind
            cells.append(f"{mean(diffs):+.1f} ± {se:.1f} ({ahead}/{level}/{behind})")
        out[name] = cells
    return out


def _top1(row: dict[str, Any], key: str) -> float:
    return float(row["top1"] if key == "top1" else _candidate(row)["top1"])


def _paired_mean(
    seeds_of: dict[tuple[str, int], list[dict[str, Any]]],
    strategy: str,
    seeds: list[int],
    round_: int,
    key: str,
) -> float:
    """Mean over these seeds of one round's active (top1) or candidate top-1."""
    rows = [seeds_of[(strategy, seed)][round_] for seed in seeds]
    return mean(r["top1"] if key == "top1" else _candidate(r)["top1"] for r in rows)


def _candidate(row: dict[str, Any]) -> dict[str, float]:
    """The round's trained model's scores (round 0: the seed model, which is active)."""
    return dict(row.get("candidate") or {"top1": row["top1"], "macro_f1": row["macro_f1"]})


def _cell(row: dict[str, Any] | None, key: str) -> str:
    return "-" if row is None else f"{row[key]:.3f}"


def render_markdown(result: dict[str, Any]) -> str:
    table = result["summary"]["table"]
    strategies = [s for s in ORDER if s in table] + sorted(set(table) - set(ORDER))
    by_round = {s: {row["round"]: row for row in table[s]} for s in strategies}
    rounds = sorted({r for rows in by_round.values() for r in rows})
    lines = [
        "# Loop simulation on ph-snakes: the review queue's order against random",
        "",
        "Made by `benchmarks/loop_sim.py`; the story is in "
        "[docs/experiments/loop.md](../../docs/experiments/loop.md).",
        "",
        f"Recipe (settings): `{json.dumps(result['recipe'])}`",
        "",
        "## Mean over seeds: test top-1 / macro-F1 of the active model after the gate",
        "",
        "In brackets: how many seeds.",
        "",
        "`queue-<order>` is the review queue itself serving its items in that order "
        "(HERPSCORE_REVIEW_ORDER: `confidence`, lowest top-1 first; `margin`; `balanced`, "
        "turns across the predicted labels, each label's smallest margin first; "
        "`stratified`, turns with random items; `mixed`, turns alternating the smallest "
        "margin and a random item; `coverage`, each label's two smallest margins in turns, "
        "then the rest at random; `adaptive`, a random sample of the job's 30 % smallest "
        "margins first while a predicted label has fewer than 10 human labels, then "
        "`balanced`); `random` draws items at random; `margin`, `entropy` "
        "and `balanced` without `queue-` are orders picked by item id outside the queue.",
        "",
        "| round | labels | " + " | ".join(f"{s} (seeds)" for s in strategies) + " |",
        "|---|---|" + "---|" * len(strategies),
    ]
    for r in rounds:
        rows = [by_round[s].get(r) for s in strategies]
        labels = next(row["labels"] for row in rows if row is not None)
        cells = [
            "-"
            if row is None
            else f"{_cell(row, 'top1')} / {_cell(row, 'macro_f1')} ({row['seeds']})"
            for row in rows
        ]
        lines.append(f"| {r} | {labels} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "## Mean over seeds: test top-1 of each round's candidate (what the labels bought)",
        "",
        "| round | labels | " + " | ".join(strategies) + " |",
        "|---|---|" + "---|" * len(strategies),
    ]
    for r in rounds:
        rows = [by_round[s].get(r) for s in strategies]
        labels = next(row["labels"] for row in rows if row is not None)
        cells = ["-" if row is None else _cell(row, "candidate_top1") for row in rows]
        lines.append(f"| {r} | {labels} | " + " | ".join(cells) + " |")
    lines += ["", "## Reference: the same recipe on every pool label", ""]
    for ref in result["references"]:
        lines.append(
            f"- seed {ref['seed']}: {ref['labels']} labels, top-1 {ref['top1']:.3f}, "
            f"macro-F1 {ref['macro_f1']:.3f}"
        )
    lines += ["", "## Checks (every order against random)", ""]
    lines += [
        f"- {k}: {v}"
        for k, v in result["summary"]["checks"].items()
        if not k.endswith("_minus_random")
    ]
    differences = {
        k.removesuffix("_minus_random"): v
        for k, v in result["summary"]["checks"].items()
        if k.endswith("_minus_random")
    }
    if differences:
        lines += [
            "",
            "## Each order minus random, on the seeds both ran",
            "",
            "Top-1 points: mean ± standard error (seeds ahead / level / behind), rounds 1 on.",
            "",
            "| order | model | " + " | ".join(f"round {r}" for r in rounds[1:]) + " |",
            "|---|---|" + "---|" * len(rounds[1:]),
        ]
        for name, both in differences.items():
            for model, cells in both.items():
                lines.append(f"| {name} | {model} | " + " | ".join(cells) + " |")
    lines += ["", "## Every run", ""]
    lines += [
        "| seed | strategy | round | labels | top-1 | macro-F1 | candidate top-1 | promoted "
        "| corrections | seconds |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for run in result["runs"]:
        for row in run["rounds"]:
            cand = row.get("candidate", {}).get("top1")
            lines.append(
                f"| {run['seed']} | {run['strategy']} | {row['round']} | {row['labels']} | "
                f"{row['top1']:.3f} | {row['macro_f1']:.3f} | "
                f"{'-' if cand is None else f'{cand:.3f}'} | {row['promoted']} | "
                f"{row['corrections']}/{row['reviewed']} | {row['seconds']} |"
            )
    if result.get("superseded"):
        lines += [
            "",
            "## Superseded runs",
            "",
            "Made under the gate's old per-class recall test (each class at alpha, no "
            "correction for the number of classes), which refused these rounds' candidates; "
            "under the product's gate (Holm's correction) the run would have gone otherwise, "
            "so it was rerun and is left out of the means above:",
            "",
        ]
        lines += [
            f"- seed {run['seed']} {run['strategy']}: refused by the recall test at round(s) "
            f"{', '.join(map(str, recall_refusals(run)))}; active top-1 "
            + " / ".join(f"{row['top1']:.3f}" for row in run["rounds"])
            for run in result["superseded"]
        ]
    lines += [
        "",
        "`corrections`: items where the oracle's label differed from the model's top-1.",
        "",
        f"Machine: {result['machine']} (2 cores shared with other work).",
        "",
    ]
    return "\n".join(lines)


def plot(result: dict[str, Any], target: Path) -> None:
    """Test top-1 against labels spent: each run thin, the mean of the seeds thick."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [s for s in ORDER if s in result["summary"]["table"]]
    names += sorted(set(result["summary"]["table"]) - set(names))
    spare = iter(OTHER_COLOURS * len(names))
    colours = {s: COLOURS.get(s) or next(spare) for s in names}
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    for run in result["runs"]:
        xs = [row["labels"] for row in run["rounds"]]
        ys = [100 * row["top1"] for row in run["rounds"]]
        ax.plot(xs, ys, color=colours[run["strategy"]], alpha=0.35, linewidth=1)
    for strategy, rows in result["summary"]["table"].items():
        xs = [row["labels"] for row in rows]
        ys = [100 * row["top1"] for row in rows]
        label = f"{strategy} (active; mean of {max(r['seeds'] for r in rows)} seeds)"
        ax.plot(xs, ys, color=colours[strategy], marker="o", linewidth=2.2, label=label)
        ys = [100 * row["candidate_top1"] for row in rows]
        ax.plot(xs, ys, color=colours[strategy], linestyle="--", linewidth=1.2)
    checks = result["summary"]["checks"]
    if "reference_top1" in checks:
        ref = 100 * checks["reference_top1"]
        ax.set_ylim(top=ref + 2)
        ax.axhline(
            ref, color="black", linewidth=1, label=f"all {result['references'][0]['labels']} labels"
        )
        ax.axhline(
            TARGET_SHARE * ref, color="black", linestyle="--", linewidth=1, label="95 % of that"
        )
        ax.axvline(
            checks["label_budget"],
            color="grey",
            linestyle=":",
            linewidth=1,
            label="40 % of the labels",
        )
    ax.set_xlabel("labels spent (round 0: 5 per species)")
    ax.set_ylabel("test top-1 of the active model (%)")
    ax.set_title("ph-snakes: label orders (solid: active model; dashed: candidate)", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    target.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(target)
    plt.close(fig)


def write_report(
    work: Path, results: Path, plot_path: Path, recipe: dict[str, Any], args: argparse.Namespace
) -> dict[str, Any]:
    """Gather the runs in work/results into results/loop_sim.{json,md} and the PNG."""
    runs, refs, superseded = load_runs(work)
    result: dict[str, Any] = {
        "recipe": recipe,
        "machine": f"{platform.machine()}, {platform.python_version()}",
        "summary": summarise(runs, refs),
        "references": refs,
        "runs": runs,
        "superseded": superseded,
    }
    results.mkdir(parents=True, exist_ok=True)
    (results / "loop_sim.json").write_text(json.dumps(result, indent=1) + "\n")
    (results / "loop_sim.md").write_text(render_markdown(result))
    if runs:
        plot(result, plot_path)
    return dict(result["summary"])
