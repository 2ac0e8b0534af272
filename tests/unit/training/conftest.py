"""Fixtures for the training tests: tiny generated image folders and a tiny backbone."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("torch")

from training.backbones import Backbone, build_backbone
from training.synthetic import make_synthetic_dataset


@pytest.fixture(scope="session")
def synthetic_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """3 classes x 10 images of 32 px in train/val/test."""
    return make_synthetic_dataset(
        tmp_path_factory.mktemp("synthetic"), classes=3, per_class=10, size=32, seed=1
    )


@pytest.fixture
def tiny_backbone() -> Backbone:
    """MobileNetV3-Small, random weights, 3 classes, 32 px input."""
    return build_backbone("mobilenet_v3_small", 3, weights="none", size=32)


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread() -> None:
    """Tiny tensors gain nothing from a second thread, and on a busy box OpenMP waits crawl."""
    import torch

    torch.set_num_threads(1)
