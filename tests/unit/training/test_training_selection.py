"""Probe versus fine-tune: the run exports the one better on validation and records both."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from training import head
from training.data import scan_dataset
from training.fit import build_datasets, build_model, get_args_parser, main
from training.selection import FINE_TUNE, PROBE, better, choose, fit_baseline

pytestmark = pytest.mark.torch


def _argv(data: Path, out: Path, *more: str) -> list[str]:
    return [
        "--data", str(data), "--out", str(out),
        "--backbone", "mobilenet_v3_small", "--weights", "none", "--size", "32",
        "--epochs-stage1", "1", "--epochs-stage2", "1", "--batch-size", "8",
        "--min-per-class", "2", "--no-int8", "--parity-images", "4", *more,
    ]  # fmt: skip


def test_the_rule_is_validation_top1_then_nll_and_a_tie_keeps_the_fine_tune() -> None:
    assert better({"top1": 0.8, "nll": 0.9}, {"top1": 0.7, "nll": 0.1}) == FINE_TUNE
    assert better({"top1": 0.7, "nll": 0.9}, {"top1": 0.8, "nll": 1.5}) == PROBE
    assert better({"top1": 0.7, "nll": 0.5}, {"top1": 0.7, "nll": 0.4}) == PROBE
    assert better({"top1": 0.7, "nll": 0.4}, {"top1": 0.7, "nll": 0.4}) == FINE_TUNE


def test_a_fine_tune_worse_than_the_probe_is_replaced_by_the_probe(
    synthetic_data: Path, tmp_path: Path
) -> None:
    args = get_args_parser().parse_args(_argv(synthetic_data, tmp_path))
    data = scan_dataset(args.data, min_train=2)
    torch.manual_seed(0)
    backbone = build_model(args, data)
    datasets = build_datasets(data, backbone)
    fresh_head = {k: v.clone() for k, v in backbone.head.state_dict().items()}
    baseline, fit = fit_baseline(args, backbone, datasets, tmp_path, None)
    assert fit is not None and (tmp_path / "probe.pth").is_file()
    assert all(torch.equal(v, fresh_head[k]) for k, v in backbone.head.state_dict().items())
    # A "fine-tune" that learnt the classes backwards: the probe's layer, negated.
    layer = head.final_linear(backbone.head)
    with torch.no_grad():
        layer.weight.copy_(-fit.weight)
        layer.bias.copy_(-fit.bias)
    record = choose(backbone, baseline, datasets["val"], batch_size=8)
    assert record["published"] == PROBE
    assert record["val"][PROBE]["top1"] == pytest.approx(fit.val_acc)
    assert record["val"][PROBE]["top1"] > record["val"][FINE_TUNE]["top1"]
    for key, value in backbone.model.state_dict().items():
        assert torch.equal(value, baseline.state[key]), key  # the probe is what stays

    # A resumed run reads the probe back instead of fitting it again.
    args.resume = "auto"
    again, refitted = fit_baseline(args, backbone, datasets, tmp_path, None)
    assert refitted is None and again.l2 == baseline.l2


def test_fit_with_the_baseline_records_both_and_exports_the_chosen_one(
    synthetic_data: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    folder = main(get_args_parser().parse_args(_argv(synthetic_data, out, "--baseline", "probe")))
    metrics = json.loads((out / "metrics.json").read_text())
    metadata = json.loads((folder / "metadata.json").read_text())
    selection = metrics["selection"]
    assert selection["published"] in (PROBE, FINE_TUNE)
    assert set(selection["val"]) == {PROBE, FINE_TUNE}
    assert metadata["selection"] == selection
    # The exported model is the published one: its validation top-1 is the one recorded.
    published = selection["val"][selection["published"]]
    assert metrics["val"]["top1"] == pytest.approx(published["top1"])
    assert metrics["val"]["nll"] == pytest.approx(published["nll"], abs=1e-5)
