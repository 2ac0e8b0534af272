"""The loop simulation end to end at toy scale: generated photos, a tiny model, two rounds."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks import loop_sim
from service.settings import Settings
from tests.support.photos import write_photo

# Four workers' lives and seven fits: minutes on a shared machine, so a longer guard.
pytestmark = [pytest.mark.slow, pytest.mark.torch, pytest.mark.timeout(1800)]

# Messy folder names, as in the real set: the label is the binomial in brackets.
SPECIES = {
    "red": "Red  Racer (rubrus  RUBRUS)",
    "green": "Green Racer (Viridis viridis)",
    "blue": "Blue Racer (Caeruleus caeruleus)",
}
# The benchmark's recipe (a probe, no stage 2) on an untrained tiny backbone.
TINY_RECIPE = {
    "training_backbone": "mobilenet_v3_small",
    "training_weights": "none",
    "training_size": 32,
    "training_batch_size": 16,
    "training_extra_args": "--stage1 probe --threads 1 --parity-images 4",
}


def make_data(root: Path, per_split: dict[str, int]) -> Path:
    """data/<split>/<species folder>/ of noisy one-colour photos, with one test duplicate."""
    n = 0
    for split, count in per_split.items():
        for colour, folder in SPECIES.items():
            for k in range(count):
                n += 1
                write_photo(root / split / folder / f"{colour}_{k}.jpg", colour, seed=n)
    # A pool photo that is byte-identical to a test photo: it must leave the pool.
    test_photo = root / "test" / SPECIES["red"] / "red_0.jpg"
    (root / "train" / SPECIES["red"] / "copy_of_test.jpg").write_bytes(test_photo.read_bytes())
    return root


def test_species_label_reads_messy_folder_names() -> None:
    assert loop_sim.species_label("Philippine Cobra (Naja philippinensis)") == (
        "Naja_philippinensis"
    )
    assert loop_sim.species_label(" Red  Racer (rubrus  RUBRUS) ") == "Rubrus_rubrus"
    assert loop_sim.species_label("no brackets here") == "No_brackets_here"


def test_two_rounds_of_each_strategy(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    data = make_data(tmp_path / "data", {"train": 8, "val": 2, "test": 3})
    work = tmp_path / "work"
    common = [
        "--data", str(data), "--work", str(work), "--rounds", "2", "--per-round", "4",
        "--seed-per-class", "2", "--timeout", "600", "--recipe", json.dumps(TINY_RECIPE),
    ]  # fmt: skip

    summary = loop_sim.main(["prepare", *common])
    assert summary["pool"] == 3 * 10 and summary["test"] == 3 * 3
    assert summary["dropped"]["in_test"] == 1

    for strategy in loop_sim.STRATEGIES:
        result = loop_sim.main(["run", "--strategy", strategy, *common])
        rounds = result["rounds"]
        assert [r["round"] for r in rounds] == [0, 1, 2]
        # Round 0 spends the seed labels, every round after it `--per-round` more.
        assert [r["labels"] for r in rounds] == [6, 10, 14]
        for row in rounds[1:]:
            assert isinstance(row["promoted"], bool) and row["gate"]
            assert row["export_splits"]["train"] > 0 and 0.0 <= row["top1"] <= 1.0
            # The recorded score is the active model's: the candidate's only if promoted.
            if row["promoted"]:
                assert row["top1"] == row["candidate"]["top1"]

    loop_sim.main(["reference", *common])
    results, plot = tmp_path / "results", tmp_path / "loop.png"
    summary = loop_sim.main(["report", *common, "--results", str(results), "--plot", str(plot)])
    queue = f"queue-{Settings().review_order}"  # queue runs are named after their order
    assert set(summary["table"]) == {queue, "random"}
    assert summary["checks"]["label_budget"] == int(0.4 * 30)
    assert f"{queue}_beats_random_every_round_active" in summary["checks"]
    assert f"{queue}_beats_random_every_round_candidate" in summary["checks"]
    assert f"{queue}_reaches_95_percent" in summary["checks"]
    assert plot.stat().st_size > 0 and (results / "loop_sim.md").is_file()
    saved = json.loads((results / "loop_sim.json").read_text())
    assert len(saved["runs"]) == 2 and saved["references"][0]["labels"] == 30
