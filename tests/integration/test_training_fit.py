"""The whole `training fit` on synthetic data: a valid model folder, published as a candidate."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("torch")

from service.db import dispose_engines, session_scope
from service.migrate import upgrade
from service.models import ModelStatus, ModelVersion
from service.modelspec import load_artifact
from service.settings import get_settings
from training.__main__ import main as cli
from training.synthetic import make_synthetic_dataset

pytestmark = [pytest.mark.torch, pytest.mark.slow]


def test_fit_end_to_end_produces_a_valid_published_model(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = make_synthetic_dataset(tmp_path / "data", classes=3, per_class=15, size=64, seed=2)
    monkeypatch.setenv("HERPSCORE_DATA_DIR", str(tmp_path / "state"))
    settings = get_settings()
    settings.ensure_dirs()
    upgrade(settings.db_url)
    out = tmp_path / "run"
    argv = [
        "fit",
        "--data",
        str(data),
        "--out",
        str(out),
        "--size",
        "64",
        "--epochs-stage1",
        "1",
        "--epochs-stage2",
        "1",
        "--batch-size",
        "9",
        "--min-per-class",
        "5",
        "--threads",
        "1",
        "--int8",
        "--publish",
        "--name",
        "synthetic",
    ]
    try:
        assert cli(argv) == 0
        artifact = load_artifact(out / "model")
        assert artifact.labels[0].startswith("synthetic species 0")
        meta = artifact.metadata
        assert meta["backbone"] == "efficientnet_lite0" and meta["input"]["size"] == 64
        assert meta["int8"]["requested"] and "kept" in meta["int8"]
        assert (out / "model" / "model.int8.onnx").is_file() == meta["int8"]["kept"]
        assert meta["parity"]["top1_agreement"] == 1.0
        assert set(meta["files_sha256"]) >= {"model.onnx", "class_map.json"}
        metrics = json.loads((out / "metrics.json").read_text())
        assert {"val", "test", "calibration"} <= set(metrics)
        assert {"top1", "top3", "macro", "weighted", "per_class", "hardest"} <= set(metrics["test"])
        for png in ("confusion_val.png", "confusion_test.png", "reliability_val.png"):
            assert (out / png).stat().st_size > 1000
        assert (out / "run" / "metrics.csv").read_text().count("\n") == 3  # header + 2 epochs
        with session_scope(settings.db_url) as session:
            (version,) = session.query(ModelVersion).all()
            assert version.status == ModelStatus.CANDIDATE and version.name == "synthetic"
            assert version.num_classes == 3 and version.metrics is not None
    finally:
        dispose_engines()


def test_fit_refuses_a_leaking_dataset_with_a_message(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    data = make_synthetic_dataset(tmp_path / "data", classes=2, per_class=10, size=32)
    leaked = next((data / "train").rglob("*.jpg"))
    (data / "test" / leaked.parent.name / "leak.jpg").write_bytes(leaked.read_bytes())
    assert cli(["fit", "--data", str(data), "--out", str(tmp_path / "run")]) == 2
    assert "more than one split" in caplog.text
