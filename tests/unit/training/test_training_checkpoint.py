"""Checkpoints are written atomically and a resumed run continues at the right epoch."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from training.backbones import build_backbone
from training.checkpoint import load_checkpoint, save_checkpoint
from training.data import scan_dataset
from training.fit import build_datasets, get_args_parser
from training.trainer import Trainer

pytestmark = pytest.mark.torch


def test_save_checkpoint_is_atomic_and_round_trips(tmp_path: Path) -> None:
    path = tmp_path / "run" / "last.pth"
    save_checkpoint({"model": {"w": torch.ones(2)}, "epoch": 3}, path)
    save_checkpoint({"model": {"w": torch.zeros(2)}, "epoch": 4}, path)
    state = load_checkpoint(path)
    assert state["epoch"] == 4 and torch.equal(state["model"]["w"], torch.zeros(2))
    assert [p.name for p in path.parent.iterdir()] == ["last.pth"]  # no temporary left over


def _trainer(
    data_dir: Path, out: Path, epochs1: int, resume: bool, stage1: str = "epochs", epochs2: int = 0
) -> Trainer:
    argv = [
        "--data",
        str(data_dir),
        "--out",
        str(out),
        "--backbone",
        "mobilenet_v3_small",
        "--weights",
        "none",
        "--size",
        "32",
        "--stage1",
        stage1,
        "--epochs-stage1",
        str(epochs1),
        "--epochs-stage2",
        str(epochs2),
        "--batch-size",
        "8",
        "--patience",
        "99",
    ]
    args = get_args_parser().parse_args(argv + (["--resume"] if resume else []))
    data = scan_dataset(args.data, min_train=2)
    backbone = build_backbone(args.backbone, len(data.classes), args.weights, args.size)
    (out / "run").mkdir(parents=True, exist_ok=True)
    return Trainer(args, backbone, build_datasets(data, backbone), torch.device("cpu"), out / "run")


def test_resume_continues_after_the_last_finished_epoch(
    synthetic_data: Path, tmp_path: Path
) -> None:
    first = _trainer(synthetic_data, tmp_path, epochs1=1, resume=False)
    first.fit()
    assert load_checkpoint(tmp_path / "run" / "last.pth")["epoch"] == 0
    resumed = _trainer(synthetic_data, tmp_path, epochs1=3, resume=True)
    resumed.fit()
    assert [(row["stage"], row["epoch"]) for row in resumed.history] == [(1, 0), (1, 1), (1, 2)]
    assert resumed.history[0] == first.history[0]  # epoch 0 was not run again
    state = load_checkpoint(tmp_path / "run" / "last.pth")
    assert (state["stage"], state["epoch"]) == (1, 2)
    lines = (tmp_path / "run" / "metrics.csv").read_text().splitlines()
    assert lines[0].startswith("stage,epoch") and len(lines) == 4


def test_resume_after_a_probe_stage_goes_straight_to_stage2(
    synthetic_data: Path, tmp_path: Path
) -> None:
    first = _trainer(synthetic_data, tmp_path, epochs1=0, resume=False, stage1="probe")
    first.fit()
    state = load_checkpoint(tmp_path / "run" / "last.pth")
    assert (state["stage"], state["finished"], state["optimizer"]) == (1, True, None)
    head_after_probe = first.backbone.head.state_dict()
    resumed = _trainer(synthetic_data, tmp_path, epochs1=0, resume=True, stage1="probe", epochs2=1)
    resumed.fit()
    assert [(row["stage"], row["epoch"]) for row in resumed.history] == [(1, 0), (2, 0)]
    assert resumed.history[0] == first.history[0]  # the probe was not fitted again
    state = load_checkpoint(tmp_path / "run" / "last.pth")
    assert (state["stage"], state["epoch"]) == (2, 0)
    assert any(
        not torch.equal(v, head_after_probe[k])
        for k, v in resumed.backbone.head.state_dict().items()
    )  # stage 2 trained the head further


def test_stage2_with_ema_keeps_the_averaged_weights(synthetic_data: Path, tmp_path: Path) -> None:
    trainer = _trainer(synthetic_data, tmp_path, epochs1=0, resume=False, stage1="probe", epochs2=1)
    trainer.args.ema_decay = 0.5
    trainer.fit()
    state = load_checkpoint(tmp_path / "run" / "last.pth")
    assert state["ema"] is not None
    averaged = {k.removeprefix("module."): v for k, v in state["ema"].items()}
    kept = trainer.model.state_dict()
    raw = state["model"]  # the optimiser's own last weights
    head_weight = next(
        k for k in kept if k.endswith("weight") and kept[k].dim() == 2 and "classifier" in k
    )
    assert torch.equal(kept[head_weight], averaged[head_weight])
    assert not torch.equal(kept[head_weight], raw[head_weight])


def test_stage2_with_mixing_trains_on_mixed_label_distributions(
    synthetic_data: Path, tmp_path: Path
) -> None:
    trainer = _trainer(synthetic_data, tmp_path, epochs1=1, resume=False, epochs2=1)
    trainer.args.mix = 0.4
    images, labels = torch.rand(6, 3, 32, 32), torch.tensor([0, 1, 2, 0, 1, 2])
    mixed, soft = trainer._mixer()(images, labels)
    assert mixed.shape == images.shape and soft.shape == (6, 3)
    torch.testing.assert_close(soft.sum(1), torch.ones(6))
    assert not torch.equal(mixed, images)
    trainer.fit()
    row = trainer.history[-1]
    assert row["stage"] == 2 and math.isfinite(row["train_loss"]) and 0 <= row["train_acc"] <= 1


def test_ema_update_is_a_bias_corrected_average() -> None:
    from training.schedules import ema_update

    update = ema_update(0.9)
    averaged = [torch.tensor([1.0])]  # AveragedModel copies the first sample itself
    update(averaged, [torch.tensor([3.0])], torch.tensor(1))
    # two samples with weights 0.9 and 1: (0.9 * 1 + 3) / 1.9
    torch.testing.assert_close(averaged[0], torch.tensor([(0.9 * 1 + 3) / 1.9]))
    for n in range(2, 400):
        update(averaged, [torch.tensor([5.0])], torch.tensor(n))
    torch.testing.assert_close(averaged[0], torch.tensor([5.0]))  # a long run forgets the start
    counts = [torch.tensor([3])]
    update(counts, [torch.tensor([7])], torch.tensor(1))
    assert counts[0].item() == 7


def test_kept_epochs_counts_up_to_the_kept_epoch_with_the_same_improvement_rule() -> None:
    from training.trainer import kept_epochs

    history = [
        {"stage": 1, "val_loss": 1.0},
        {"stage": 1, "val_loss": 0.8},
        {"stage": 1, "val_loss": 0.9},
        {"stage": 2, "val_loss": 0.7},
        {"stage": 2, "val_loss": 0.69995},  # within 1e-4: not an improvement, not kept
        {"stage": 2, "val_loss": 0.5},
        {"stage": 2, "val_loss": 0.6},
    ]
    assert kept_epochs(history, (1, 2)) == {1: 2, 2: 3}
    assert kept_epochs(history[:3], (1, 2)) == {1: 2, 2: 0}


def test_refit_trains_on_train_plus_val_for_the_kept_epochs_with_the_first_temperature(
    synthetic_data: Path, tmp_path: Path
) -> None:
    import json

    from training.fit import main

    argv = [
        "--data", str(synthetic_data), "--out", str(tmp_path / "out"),
        "--backbone", "mobilenet_v3_small", "--weights", "none", "--size", "32",
        "--stage1", "epochs", "--epochs-stage1", "2", "--epochs-stage2", "1",
        "--batch-size", "8", "--patience", "99", "--min-per-class", "2", "--refit",
    ]  # fmt: skip
    folder = main(get_args_parser().parse_args(argv))
    out = tmp_path / "out"
    selection = json.loads((out / "metrics_selection.json").read_text())
    metrics = json.loads((out / "metrics.json").read_text())
    metadata = json.loads((folder / "metadata.json").read_text())
    kept = metrics["refit"]["epochs"]
    assert 1 <= kept["1"] <= 2 and kept["2"] <= 1
    assert metrics["refit"]["train_images"] == 3 * (6 + 2)  # per class: train 6 + val 2
    assert metadata["temperature"] == selection["calibration"]["temperature"]
    assert metrics["calibration"]["fitted_on"] == "val, by the selection run"
    assert metrics["val"] == selection["val"] and metrics["test"]["n"] == selection["test"]["n"]
    rows = (out / "run" / "refit" / "metrics.csv").read_text().splitlines()[1:]
    stages = [int(r.split(",")[0]) for r in rows]
    assert stages == [1] * kept["1"] + [2] * kept["2"]
    assert all(r.split(",")[5] == "nan" for r in rows)  # no validation during a refit
    assert metadata["training"]["epochs_run"] == {"1": kept["1"], "2": kept["2"]}
    # INT8's rule needs held-out images, and a refit has trained on all of them.
    assert metadata["int8"]["kept"] is False and "refit" in metadata["int8"]["reason"]
    assert not (folder / "model.int8.onnx").exists()


def test_refit_of_a_probe_fits_train_plus_val_with_the_l2_the_selection_chose(
    synthetic_data: Path, tmp_path: Path
) -> None:
    import json

    from training.fit import main

    argv = [
        "--data", str(synthetic_data), "--out", str(tmp_path / "out"),
        "--backbone", "mobilenet_v3_small", "--weights", "none", "--size", "32",
        "--stage1", "probe", "--epochs-stage2", "0", "--batch-size", "8",
        "--min-per-class", "2", "--refit", "--no-int8",
    ]  # fmt: skip
    folder = main(get_args_parser().parse_args(argv))
    out = tmp_path / "out"
    metrics = json.loads((out / "metrics.json").read_text())
    selection = json.loads((out / "metrics_selection.json").read_text())
    assert metrics["refit"]["train_images"] == 3 * (6 + 2)  # per class: train 6 + val 2
    assert metrics["refit"]["epochs"] == {"1": 1, "2": 0}
    chosen = (out / "run" / "metrics.csv").read_text().splitlines()[1].split(",")
    refitted = (out / "run" / "refit" / "metrics.csv").read_text().splitlines()[1:]
    assert len(refitted) == 1
    row = refitted[0].split(",")
    assert row[:2] == ["1", "0"] and float(row[2]) == float(chosen[2])  # the same L2
    assert row[5] == "nan"  # val was fitted on: no val loss to report
    assert (
        json.loads((folder / "metadata.json").read_text())["temperature"]
        == (selection["calibration"]["temperature"])
    )
