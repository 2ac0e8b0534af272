"""Stage 1 as a probe: features are the head's input, the fit is a real logistic regression."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from training import head
from training.backbones import Backbone
from training.data import scan_dataset
from training.fit import build_datasets, get_args_parser
from training.trainer import Trainer

pytestmark = pytest.mark.torch


def _blobs(n: int, classes: int, dim: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Gaussian blobs on a large, shifted scale: the fit must centre and scale to do well."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(classes, dim, generator=torch.Generator().manual_seed(99)) * 2
    y = torch.arange(n) % classes
    x = centres[y] + torch.randn(n, dim, generator=g)
    return x * 50 + 300, y


def test_extract_features_are_the_input_of_the_final_linear_layer(
    tiny_backbone: Backbone,
) -> None:
    images = torch.randn(5, 3, 32, 32)
    features = head.extract_features(
        tiny_backbone.model, tiny_backbone.head, [images[:2], images[2:]]
    )
    layer = head.final_linear(tiny_backbone.head)
    assert features.shape == (5, layer.in_features)
    tiny_backbone.model.eval()
    with torch.no_grad():
        expected = tiny_backbone.model(images)
    torch.testing.assert_close(
        features @ layer.weight.T + layer.bias, expected, rtol=1e-4, atol=1e-4
    )


def test_fit_head_learns_separable_classes_and_folds_the_scaling() -> None:
    train, val = _blobs(240, 4, 16, seed=1), _blobs(80, 4, 16, seed=2)
    fit = head.fit_head(train, val, num_classes=4)
    assert fit.val_acc >= 0.95 and fit.train_acc >= 0.95
    assert set(fit.tried) == set(head.L2_GRID) and fit.l2 in head.L2_GRID
    assert fit.val_loss == min(fit.tried.values())
    logits = val[0] @ fit.weight.T + fit.bias  # raw features, no scaler needed any more
    assert float((logits.argmax(1) == val[1]).float().mean()) == pytest.approx(fit.val_acc)


def test_stronger_l2_wins_when_the_labels_are_noise() -> None:
    x, _ = _blobs(200, 4, 32, seed=3)
    noise = torch.randint(0, 4, (200,), generator=torch.Generator().manual_seed(4))
    vx, _ = _blobs(100, 4, 32, seed=5)
    vnoise = torch.randint(0, 4, (100,), generator=torch.Generator().manual_seed(6))
    fit = head.fit_head((x, noise), (vx, vnoise), num_classes=4)
    assert fit.l2 >= 1e-2  # overfitting noise loses on validation loss


def test_the_l2_path_can_stop_once_the_val_loss_keeps_rising() -> None:
    x, _ = _blobs(200, 4, 32, seed=3)
    noise = torch.randint(0, 4, (200,), generator=torch.Generator().manual_seed(4))
    vx, _ = _blobs(100, 4, 32, seed=5)
    vnoise = torch.randint(0, 4, (100,), generator=torch.Generator().manual_seed(6))
    full = head.fit_head((x, noise), (vx, vnoise), num_classes=4)
    short = head.fit_head((x, noise), (vx, vnoise), num_classes=4, stop_after_rises=2)
    losses = list(short.tried.values())
    assert len(short.tried) < len(full.tried)  # noise: the loss rises as L2 weakens
    assert losses[-1] > losses[-2] > losses[-3]  # it stopped on the second rise in a row
    assert short.l2 == full.l2 and torch.equal(short.weight, full.weight)


def test_install_copies_into_the_final_linear_and_checks_the_shape(tiny_backbone: Backbone) -> None:
    layer = head.final_linear(tiny_backbone.head)
    fit = head.HeadFit(
        weight=torch.full_like(layer.weight, 0.5),
        bias=torch.full_like(layer.bias, -1.0),
        l2=1e-3,
        train_loss=0.0,
        train_acc=1.0,
        val_loss=0.0,
        val_acc=1.0,
        tried={},
    )
    head.install(tiny_backbone.head, fit)
    assert torch.equal(layer.weight, fit.weight) and torch.equal(layer.bias, fit.bias)
    fit.weight = torch.zeros(2, 2)
    with pytest.raises(ValueError, match="does not fit"):
        head.install(tiny_backbone.head, fit)
    with pytest.raises(ValueError, match=r"no nn\.Linear"):
        head.final_linear(nn.Sequential(nn.Dropout()))


def test_probe_stage_leaves_the_trunk_and_its_batchnorm_statistics_untouched(
    synthetic_data: Path, tmp_path: Path
) -> None:
    args = get_args_parser().parse_args(
        ["--data", str(synthetic_data), "--out", str(tmp_path), "--backbone",
         "mobilenet_v3_small", "--weights", "none", "--size", "32", "--epochs-stage2", "0",
         "--stage1", "probe"]
    )  # fmt: skip
    data = scan_dataset(args.data, min_train=2)
    from training.backbones import build_backbone

    backbone = build_backbone(args.backbone, len(data.classes), args.weights, args.size)
    trunk = nn.ModuleList(backbone.units)
    before = {k: v.clone() for k, v in trunk.state_dict().items()}
    head_before = {k: v.clone() for k, v in backbone.head.state_dict().items()}
    (tmp_path / "run").mkdir()
    trainer = Trainer(
        args, backbone, build_datasets(data, backbone), torch.device("cpu"), tmp_path / "run"
    )
    trainer.fit()
    after = trunk.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # incl. running_mean/var
    assert any(not torch.equal(v, head_before[k]) for k, v in backbone.head.state_dict().items())
    assert [(row["stage"], row["epoch"]) for row in trainer.history] == [(1, 0)]
