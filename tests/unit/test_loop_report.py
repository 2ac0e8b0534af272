"""The loop report keeps runs made under the gate's old recall test only where they stand."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from benchmarks.loop_report import load_runs, recall_refusals, render_markdown, summarise

RECALL = "recall drops that block: a 1.000 -> 0.600: significant drop (lost 6, gained 0)"
F1_LOWER = "macro-F1 0.6000 is lower than the active model's 0.6100"
F1_OK = "macro-F1 0.7000 >= 0.6000"


def run(seed: int, strategy: str, gates: list[list[str]], **extra: Any) -> dict[str, Any]:
    rows = [{"round": 0, "labels": 70, "top1": 0.5, "macro_f1": 0.5, "promoted": None,
             "corrections": 0, "reviewed": 70, "seconds": 1.0}]  # fmt: skip
    for number, gate in enumerate(gates, start=1):
        rows.append({
            "round": number, "labels": 70 + 100 * number, "top1": 0.5 + number / 100,
            "macro_f1": 0.5, "promoted": not any("block" in g or "lower" in g for g in gate),
            "gate": gate, "corrections": 0, "reviewed": 100, "seconds": 1.0,
        })  # fmt: skip
    return {"seed": seed, "strategy": strategy, "rounds": rows, **extra}


def write(work: Path, name: str, content: dict[str, Any]) -> None:
    (work / "results").mkdir(parents=True, exist_ok=True)
    (work / "results" / f"{name}.json").write_text(json.dumps(content))


def test_a_run_refused_by_the_old_recall_test_is_superseded(tmp_path: Path) -> None:
    write(tmp_path, "seed1-queue-adaptive", run(1, "queue-adaptive", [[F1_OK, RECALL], [F1_OK]]))
    holm = run(1, "queue-adaptive", [[F1_OK], [F1_OK]], recall_correction="holm")
    write(tmp_path, "seed1-queue-adaptive-holm", holm)
    # refused by macro-F1 as well: the correction would not have changed the decision
    write(tmp_path, "seed1-random", run(1, "random", [[F1_LOWER, RECALL], [F1_OK]]))
    runs, refs, superseded = load_runs(tmp_path)
    assert refs == []
    assert [(r["seed"], r["strategy"], r["recall_correction"]) for r in runs] == [
        (1, "queue-adaptive", "holm"),
        (1, "random", "none"),
    ]
    assert [recall_refusals(r) for r in superseded] == [[1]]
    summary = summarise(runs, refs)
    assert summary["table"]["queue-adaptive"][1]["seeds"] == 1
    report = render_markdown(
        {"recipe": {}, "machine": "m", "summary": summary, "references": refs, "runs": runs,
         "superseded": superseded}
    )  # fmt: skip
    assert "## Superseded runs" in report
    assert "- seed 1 queue-adaptive: refused by the recall test at round(s) 1" in report
    assert "| queue-adaptive | active | +0.0 ± nan (0/1/0) | +0.0 ± nan (0/1/0) |" in report


def test_two_standing_runs_of_one_seed_and_strategy_are_an_error(tmp_path: Path) -> None:
    write(tmp_path, "seed2-random", run(2, "random", [[F1_OK]]))
    write(tmp_path, "seed2-random-again", run(2, "random", [[F1_OK]], recall_correction="holm"))
    with pytest.raises(ValueError, match="two runs of the same seed"):
        load_runs(tmp_path)
