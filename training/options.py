"""Command-line options of `python -m training fit`, in argument groups."""

from __future__ import annotations

import argparse
from pathlib import Path

from training.backbones import BACKBONES
from training.data import AUGMENTS
from training.stages import parse_unfreeze


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    """All options of `python -m training fit`, in groups."""
    parser = argparse.ArgumentParser(
        prog="python -m training fit",
        description="Two-stage fine-tuning of an image classifier into a herpscore model folder.",
        add_help=add_help,
    )
    data = parser.add_argument_group("data")
    data.add_argument("--data", type=Path, required=True, help="folder with train/ [val/] [test/]")
    data.add_argument(
        "--out", type=Path, required=True, help="run folder; the model goes in OUT/model"
    )
    data.add_argument("--val-fraction", type=float, default=0.15, help="val split without val/")
    data.add_argument("--min-per-class", type=int, default=5, help="fewest training images")
    data.add_argument("--class-weights", choices=["balanced", "none"], default="balanced")
    model = parser.add_argument_group("model")
    model.add_argument("--backbone", choices=BACKBONES, default="efficientnet_lite0")
    model.add_argument("--weights", default="default", help="'default', 'none' or a file PATH")
    model.add_argument(
        "--size",
        type=int,
        default=None,
        help="input side in pixels (default: 288 for efficientnet_lite0, the default recipe's; "
        "the native size for the others: 240 for efficientnet_lite1, 260 for "
        "efficientnet_lite2, 224 for the rest)",
    )
    model.add_argument(
        "--resize",
        choices=["shorter_side", "squash"],
        default="shorter_side",
        help="scale the shorter side and crop the centre, or squash the whole photo to a "
        "square (as every recipe in docs/experiments/recipes.md was measured)",
    )
    model.add_argument("--dropout", type=float, default=0.2)
    optim = parser.add_argument_group("optimisation")
    optim.add_argument(
        "--stage1",
        choices=["epochs", "probe"],
        default="probe",
        help="how the head learns on the frozen trunk: epochs = AdamW on augmented images; "
        "probe = fitted once by L-BFGS on cached features (faster and a better stage-1 "
        "model; give stage 2 --bn-stats frozen, or its batch norm undoes the fit)",
    )
    optim.add_argument(
        "--epochs-stage1", type=int, default=6, help="head only, trunk frozen (--stage1 epochs)"
    )
    optim.add_argument("--epochs-stage2", type=int, default=10, help="last block(s) unfrozen")
    optim.add_argument(
        "--unfreeze", type=unfreeze_rule, default="last-k:3", help="last-block | last-k:K | all"
    )
    optim.add_argument("--lr-stage1", type=float, default=3e-3)
    optim.add_argument("--lr-stage2", type=float, default=3e-4)
    optim.add_argument("--weight-decay", type=float, default=0.02)
    optim.add_argument("--label-smoothing", type=float, default=0.1)
    optim.add_argument("--warmup-epochs", type=float, default=1.0)
    optim.add_argument("--patience", type=int, default=3, help="epochs without val-loss gain")
    optim.add_argument(
        "--ema-decay",
        type=float,
        default=0.99,
        help="stage 2: validate and keep an exponential moving average of the weights "
        "(per step; 0 = off)",
    )
    optim.add_argument(
        "--bn-stats",
        choices=["update", "frozen"],
        default="frozen",
        help="stage 2: batch-norm running statistics of the unfrozen blocks: update them "
        "(train mode) or keep them frozen (their scale and shift still train); use frozen "
        "with --stage1 probe, whose head was fitted to the frozen statistics' features",
    )
    optim.add_argument("--batch-size", type=int, default=32)
    optim.add_argument("--min-scale", type=float, default=0.25, help="RandomResizedCrop area")
    optim.add_argument(
        "--mix",
        type=float,
        default=0.0,
        metavar="ALPHA",
        help="stage 2: MixUp or CutMix (one at random per batch) with Beta(ALPHA, ALPHA); 0 = off",
    )
    optim.add_argument("--jitter", type=float, default=0.2, help="colour jitter strength")
    optim.add_argument(
        "--augment",
        choices=AUGMENTS,
        default="trivial",
        help="after crop and flip: colour jitter, or TrivialAugmentWide (one random op)",
    )
    run = parser.add_argument_group("run")
    run.add_argument(
        "--refit",
        action="store_true",
        help="after the run, train again from scratch on train + val for the epochs it kept, "
        "with its temperature: more data for the final model, no held-out val left",
    )
    run.add_argument(
        "--label-errors",
        choices=["holdout", "kfold", "off"],
        default="holdout",
        help="write OUT/label_probs.json, out-of-sample probabilities for the suspect-label "
        "list: holdout = the val/test predictions; kfold = also every training image by "
        "K-fold probes on the pretrained features (one more pass over train and val)",
    )
    run.add_argument("--seed", type=int, default=0)
    run.add_argument("--device", default="auto", help="auto | cpu | cuda")
    run.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    run.add_argument("--workers", type=int, default=0, help="DataLoader worker processes")
    run.add_argument(
        "--resume",
        nargs="?",
        const="auto",
        default=None,
        metavar="CHECKPOINT",
        help="continue from CHECKPOINT (default OUT/run/last.pth)",
    )
    out = parser.add_argument_group("export and publish")
    out.add_argument(
        "--baseline",
        choices=["none", "probe"],
        default="none",
        help="probe: also fit a linear probe on the frozen pretrained trunk (seconds) and "
        "export whichever of it and the fine-tune is better on validation, recording both",
    )
    out.add_argument("--int8", action=argparse.BooleanOptionalAction, default=True)
    out.add_argument("--parity-images", type=int, default=32)
    out.add_argument("--calibration-images", type=int, default=128, help="for INT8")
    out.add_argument("--name", default=None, help="model name (default: OUT folder name)")
    out.add_argument("--publish", action="store_true", help="register as a candidate version")
    return parser


def unfreeze_rule(value: str) -> str:
    """argparse type: refuse a bad --unfreeze before any training time is spent."""
    try:
        parse_unfreeze(value, 1)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return value
