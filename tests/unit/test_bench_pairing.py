"""benchmarks/train_ph_snakes.py: two runs are paired on the per-image hits they stored."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks import train_ph_snakes


def _results(folder: Path, stem: str, both: str, stage1: str | None = None) -> None:
    runs = {"both_stages": {"test_correct": both}}
    if stage1 is not None:
        runs["stage1"] = {"test_correct": stage1}
    (folder / f"{stem}.json").write_text(json.dumps(runs))


def test_stored_hits_pair_into_mcnemar_counts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(train_ph_snakes, "RESULTS", tmp_path)
    _results(tmp_path, "train_ph_snakes_a", "110010", stage1="000011")
    _results(tmp_path, "train_ph_snakes_b", "011011")

    paired = train_ph_snakes.pair_stored_runs("train_ph_snakes_a", "train_ph_snakes_b")

    assert (paired["both_right"], paired["only_first_right"]) == (2, 1)
    assert (paired["only_second_right"], paired["both_wrong"]) == (2, 1)
    assert paired["mcnemar_exact_p"] == pytest.approx(1.0)
    written = json.loads((tmp_path / "paired_a_vs_b.json").read_text())
    assert written["first_top1"] == pytest.approx(0.5)

    stage1 = train_ph_snakes.pair_stored_runs("train_ph_snakes_a:stage1", "train_ph_snakes_b")
    assert (stage1["only_first_right"], stage1["only_second_right"]) == (0, 2)
    assert (tmp_path / "paired_a-stage1_vs_b.json").is_file()


def test_a_run_without_stored_hits_cannot_be_paired(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(train_ph_snakes, "RESULTS", tmp_path)
    (tmp_path / "train_ph_snakes_old.json").write_text(json.dumps({"both_stages": {}}))
    _results(tmp_path, "train_ph_snakes_b", "01")
    with pytest.raises(SystemExit, match="no per-image hits"):
        train_ph_snakes.pair_stored_runs("train_ph_snakes_old", "train_ph_snakes_b")
