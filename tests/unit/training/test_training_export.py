"""ONNX export: the contract's names and dynamic batch, and parity with torch."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from training.backbones import Backbone
from training.export import ExportError, check_parity, export_onnx, int8_decision, ort_session

pytestmark = pytest.mark.torch


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Backbone]:
    from training.backbones import build_backbone

    torch.manual_seed(0)
    backbone = build_backbone("mobilenet_v3_small", 3, weights="none", size=32)
    path = tmp_path_factory.mktemp("onnx") / "model.onnx"
    export_onnx(backbone.model, 32, path)
    return path, backbone


def test_exported_onnx_has_the_contract_io_and_a_dynamic_batch(
    exported: tuple[Path, Backbone],
) -> None:
    path, _ = exported
    session = ort_session(path)
    (inp,), (out,) = session.get_inputs(), session.get_outputs()
    assert inp.name == "input" and out.name == "logits"
    assert not isinstance(inp.shape[0], int) and inp.shape[1:] == [3, 32, 32]
    for batch in (1, 5):
        logits = session.run(None, {"input": np.zeros((batch, 3, 32, 32), np.float32)})[0]
        assert logits.shape == (batch, 3)


def test_onnx_runtime_matches_torch(exported: tuple[Path, Backbone]) -> None:
    path, backbone = exported
    inputs = np.random.default_rng(0).normal(0, 1, (6, 3, 32, 32)).astype(np.float32)
    report = check_parity(path, backbone.model, inputs)
    assert report["top1_agreement"] == 1.0 and report["max_abs_diff"] < 1e-3


def test_parity_check_fails_when_the_models_differ(exported: tuple[Path, Backbone]) -> None:
    path, backbone = exported
    other = torch.nn.Sequential(backbone.model, torch.nn.Linear(3, 3))
    inputs = np.random.default_rng(1).normal(0, 1, (4, 3, 32, 32)).astype(np.float32)
    with pytest.raises(ExportError, match="disagree"):
        check_parity(path, other, inputs)


def test_int8_is_kept_only_when_it_agrees_and_keeps_accuracy() -> None:
    labels = np.arange(100) % 2
    fp32 = np.stack([1.0 - labels, labels.astype(float)], axis=1)
    same = int8_decision(fp32, fp32.copy(), labels)
    assert same["kept"] and same["top1_agreement"] == 1.0
    flipped = fp32.copy()
    flipped[:2] = flipped[:2, ::-1]  # 2 % disagreement, 2 points of accuracy lost
    worse = int8_decision(fp32, flipped, labels)
    assert not worse["kept"] and worse["top1_agreement"] == pytest.approx(0.98)
