"""The default recipe of `python -m training fit`, chosen on two photo sets
(docs/experiments/recipes.md): a change to it must be a measured one."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

from training.backbones import fit_size, native_size
from training.fit import build_model
from training.options import get_args_parser


def test_the_defaults_are_the_recipe_chosen_on_two_sets() -> None:
    args = get_args_parser().parse_args(["--data", "d", "--out", "o"])
    chosen = {
        "backbone": "efficientnet_lite0",
        "size": None,  # fit_size: 288 for Lite0
        "resize": "shorter_side",  # not compared: every recipe squashed
        "stage1": "probe",
        "epochs_stage2": 10,
        "unfreeze": "last-k:3",
        "lr_stage2": 3e-4,
        "weight_decay": 0.02,
        "bn_stats": "frozen",
        "ema_decay": 0.99,
        "augment": "trivial",
        "min_scale": 0.25,
        "mix": 0.0,
        "patience": 3,
    }
    assert {key: getattr(args, key) for key in chosen} == chosen


def test_without_size_lite0_trains_at_288_and_the_others_at_their_native_size() -> None:
    assert fit_size("efficientnet_lite0") == 288
    assert native_size("efficientnet_lite0") == 224  # the starter and the cost table keep it
    assert fit_size("efficientnet_lite1") == 240 and fit_size("efficientnet_lite2") == 260
    assert fit_size("mobilenet_v3_small") == 224


def test_build_model_uses_the_fit_size_only_when_no_size_is_given(tmp_path: Path) -> None:
    data = SimpleNamespace(classes=["a", "b", "c"])
    argv = ["--data", str(tmp_path), "--out", str(tmp_path), "--weights", "none"]
    unset = get_args_parser().parse_args(argv)
    given = get_args_parser().parse_args([*argv, "--size", "32"])
    assert build_model(unset, data).spec.size == 288  # type: ignore[arg-type]
    assert build_model(given, data).spec.size == 32  # type: ignore[arg-type]
    other = get_args_parser().parse_args([*argv, "--backbone", "mobilenet_v3_small"])
    assert build_model(other, data).spec.size == 224  # type: ignore[arg-type]
