"""`training fit`: scan data, two-stage fine-tune, evaluate, calibrate, export, publish."""

from __future__ import annotations

import argparse
import csv
import ctypes
import json
import logging
import math
import random
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel
from torch.utils.data import DataLoader
from tqdm import tqdm

from service.imaging import sha256_file
from service.modelspec import MODEL_FORMAT, load_artifact
from training import calibrate, evaluate, export, head
from training.backbones import BACKBONES, Backbone, build_backbone
from training.checkpoint import load_checkpoint, save_checkpoint
from training.data import (
    AUGMENTS,
    DataError,
    DatasetFolder,
    SafeImageFolder,
    class_weights,
    decode_for_training,
    eval_loader,
    eval_transform,
    scan_dataset,
    served_transform,
    train_transform,
)
from training.stages import configure_stage, count_trainable, parse_unfreeze, set_train_mode

log = logging.getLogger("training")

METRIC_FIELDS = [
    "stage",
    "epoch",
    "lr",
    "train_loss",
    "train_acc",
    "val_loss",
    "val_acc",
    "seconds",
]


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
    model.add_argument("--size", type=int, default=224, help="input side in pixels")
    model.add_argument("--resize", choices=["shorter_side", "squash"], default="shorter_side")
    model.add_argument("--dropout", type=float, default=0.2)
    optim = parser.add_argument_group("optimisation")
    optim.add_argument(
        "--stage1",
        choices=["epochs", "probe"],
        default="epochs",
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
    optim.add_argument("--lr-stage2", type=float, default=5e-4)
    optim.add_argument("--weight-decay", type=float, default=0.02)
    optim.add_argument("--label-smoothing", type=float, default=0.1)
    optim.add_argument("--warmup-epochs", type=float, default=1.0)
    optim.add_argument("--patience", type=int, default=3, help="epochs without val-loss gain")
    optim.add_argument(
        "--ema-decay",
        type=float,
        default=0.0,
        help="stage 2: validate and keep an exponential moving average of the weights "
        "(per step; 0 = off)",
    )
    optim.add_argument(
        "--bn-stats",
        choices=["update", "frozen"],
        default="update",
        help="stage 2: batch-norm running statistics of the unfrozen blocks: update them "
        "(train mode) or keep them frozen (their scale and shift still train); use frozen "
        "with --stage1 probe, whose head was fitted to the frozen statistics' features",
    )
    optim.add_argument("--batch-size", type=int, default=32)
    optim.add_argument("--min-scale", type=float, default=0.5, help="RandomResizedCrop area")
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
        default="jitter",
        help="after crop and flip: colour jitter, or TrivialAugmentWide (one random op)",
    )
    run = parser.add_argument_group("run")
    run.add_argument(
        "--refit",
        action="store_true",
        help="after the run, train again from scratch on train + val for the epochs it kept, "
        "with its temperature: more data for the final model, no held-out val left",
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


def main(args: argparse.Namespace) -> Path:
    """Run the whole pipeline; returns the model folder (OUT/model)."""
    if args.refit and args.stage1 == "probe":  # before any data is scanned
        raise DataError("--refit retrains stage 1 by epochs: use it with --stage1 epochs")
    run_dir = build_run_dir(args)
    with run_log(run_dir):
        seed_everything(args.seed)
        tune_malloc()
        device = build_device(args)
        data = scan_dataset(args.data, args.val_fraction, args.seed, args.min_per_class)
        backbone = build_backbone(
            args.backbone, len(data.classes), args.weights, args.size, args.resize, args.dropout
        )
        datasets = build_datasets(data, backbone, args.min_scale, args.jitter, args.augment)
        trainer = Trainer(args, backbone, datasets, device, run_dir)
        trainer.fit()
        report = evaluate_and_calibrate(backbone, datasets, data.classes, args.out)
        if args.refit:
            backbone, datasets, trainer, report = refit(
                args, data, device, run_dir, trainer, report
            )
        folder = export_model_folder(args, backbone, data, datasets, report, trainer.history)
        if args.publish:
            from training.publish import publish

            version = publish(folder, args.name or args.out.name, f"training:{run_dir}", report)
            log.info("published as candidate model version %d", version)
        log.info("model folder: %s", folder)
    return folder


def refit(
    args: argparse.Namespace,
    data: DatasetFolder,
    device: torch.device,
    run_dir: Path,
    selection: Trainer,
    selection_report: dict[str, Any],
) -> tuple[Backbone, dict[str, SafeImageFolder], Trainer, dict[str, Any]]:
    """Train a fresh model on train + val, stopping each stage where the selection run kept
    its weights (same schedule, same seed), and calibrate it with the selection run's
    temperature. Val has been trained on, so its metrics stay those of the selection run
    (metrics_selection.json keeps that run's whole report); test is measured afresh."""
    epochs = kept_epochs(selection.history, (1, 2))
    (args.out / "metrics_selection.json").write_text(json.dumps(selection_report, indent=2) + "\n")
    log.info("refit on train + val: epochs per stage %s (kept by the selection run)", epochs)
    seed_everything(args.seed)
    backbone = build_backbone(
        args.backbone, len(data.classes), args.weights, args.size, args.resize, args.dropout
    )
    merged = DatasetFolder(
        data.root,
        data.classes,
        {**data.splits, "train": data.splits["train"] + data.splits["val"]},
        data.val_source,
        data.provenance,
    )
    datasets = build_datasets(merged, backbone, args.min_scale, args.jitter, args.augment)
    refit_dir = run_dir / "refit"
    refit_dir.mkdir(exist_ok=True)
    resume = "auto" if args.resume and (refit_dir / "last.pth").is_file() else None
    trainer = Trainer(
        argparse.Namespace(**{**vars(args), "resume": resume}),
        backbone,
        datasets,
        device,
        refit_dir,
        stop_after=epochs,
    )
    trainer.fit()
    temperature = selection_report["calibration"]["temperature"]
    report = evaluate_and_calibrate(
        backbone, datasets, data.classes, args.out, temperature=temperature, splits=("test",)
    )
    report["val"] = selection_report["val"]
    report["refit"] = {
        "epochs": epochs,
        "train_images": len(datasets["train"]),
        "val": "trained on; its metrics and the temperature are the selection run's",
        "selection_test": selection_report.get("test", {}).get("top1"),
    }
    (args.out / "metrics.json").write_text(json.dumps(report, indent=2) + "\n")
    return backbone, datasets, trainer, report


def improves(val_loss: float, best: float) -> bool:
    """Early stopping's rule: a validation loss counts as a gain only by more than 1e-4."""
    return val_loss < best - 1e-4


def kept_epochs(history: list[dict[str, Any]], stages: tuple[int, ...]) -> dict[int, int]:
    """Per stage, how many epochs ran up to the one whose weights were kept (by `improves`,
    as in Trainer.run_stage; 0 for a stage that did not run)."""
    kept = {}
    for stage in stages:
        best, count = math.inf, 0
        for index, row in enumerate(r for r in history if r["stage"] == stage):
            if improves(row["val_loss"], best):
                best, count = row["val_loss"], index + 1
        kept[stage] = count
    return kept


def build_run_dir(args: argparse.Namespace) -> Path:
    """OUT/run with args.json (the seed is among the args)."""
    args.out = args.out.expanduser().resolve()
    run_dir = args.out / "run"
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "args.json").write_text(json.dumps(_jsonable(vars(args)), indent=2) + "\n")
    return run_dir


@contextmanager
def run_log(run_dir: Path) -> Iterator[None]:
    """Copy log records to OUT/run/train.log (appended on resume) for the duration of a run."""
    handler = logging.FileHandler(run_dir / "train.log", encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    previous = root.level
    root.addHandler(handler)
    if previous > logging.INFO or previous == logging.NOTSET:
        root.setLevel(logging.INFO)
    log.info("run folder %s", run_dir)
    try:
        yield
    except Exception:
        log.exception("training failed")
        raise
    finally:
        root.removeHandler(handler)
        root.setLevel(previous)
        handler.close()


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def tune_malloc() -> None:
    """Keep glibc from mapping and unmapping big activation buffers on every step (2-3x on CPU)."""
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return
    m_trim_threshold, m_mmap_max = -1, -4
    libc.mallopt(m_mmap_max, 0)
    libc.mallopt(m_trim_threshold, 1 << 30)


def build_device(args: argparse.Namespace) -> torch.device:
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(args.device)


def build_datasets(
    data: DatasetFolder,
    backbone: Backbone,
    min_scale: float = 0.35,
    jitter: float = 0.2,
    augment: str = "jitter",
) -> dict[str, SafeImageFolder]:
    """Augmented train set; val/test (and INT8 calibration) through the served preprocessing."""
    spec = backbone.spec
    short_side = round(spec.size * 1.25)
    datasets = {
        "train": SafeImageFolder(
            data.splits["train"],
            data.classes,
            lambda path: decode_for_training(path, short_side),
            train_transform(spec, min_scale, jitter, augment),
            name="train",
        )
    }
    for split in ("val", "test"):
        if split in data.splits:
            datasets[split] = SafeImageFolder(
                data.splits[split],
                data.classes,
                eval_loader(spec),
                eval_transform(spec),
                name=split,
            )
    return datasets


@dataclass
class StageState:
    """Where a stage is: resumable progress and early-stopping bookkeeping."""

    stage: int
    next_epoch: int = 0
    best_loss: float = math.inf
    best_model: dict[str, torch.Tensor] | None = None
    bad_epochs: int = 0
    finished: bool = False


class Trainer:
    """Runs stage 1 then stage 2 with checkpoints after every epoch."""

    def __init__(
        self,
        args: argparse.Namespace,
        backbone: Backbone,
        datasets: dict[str, SafeImageFolder],
        device: torch.device,
        run_dir: Path,
        stop_after: dict[int, int] | None = None,
    ) -> None:
        """stop_after: epochs per stage for a refit, which neither validates nor stops early
        (the schedule stays that of the full stage, as in the run that chose the epochs)."""
        self.args, self.backbone, self.datasets = args, backbone, datasets
        self.device, self.run_dir = device, run_dir
        self.stop_after = stop_after
        self.model = backbone.model.to(device)
        self.cuda = device.type == "cuda"
        if self.cuda:
            self.model = self.model.to(memory_format=torch.channels_last)
        weights = None
        if args.class_weights == "balanced":
            weights = class_weights(datasets["train"].targets, len(datasets["train"].classes))
        self.criterion = nn.CrossEntropyLoss(
            weight=None if weights is None else weights.to(device),
            label_smoothing=args.label_smoothing,
        )
        self.micro_batch = args.batch_size
        self.history: list[dict[str, Any]] = []

    def fit(self) -> None:
        resume = self._resume_state()
        for stage, epochs, lr in (
            (1, self.args.epochs_stage1, self.args.lr_stage1),
            (2, self.args.epochs_stage2, self.args.lr_stage2),
        ):
            if resume is not None and resume["stage"] > stage:
                continue
            stage_resume = resume if resume and resume["stage"] == stage else None
            resume = None
            if stage == 1 and self.args.stage1 == "probe":
                if stage_resume is None or not stage_resume["finished"]:
                    self.run_probe_stage()
                continue
            self.run_stage(stage, epochs, lr, stage_resume)

    def run_probe_stage(self) -> None:
        """Stage 1 in one pass: frozen features once, the head's linear layer fitted by L-BFGS
        with the L2 strength that gives the lowest validation loss (training/head.py)."""
        configure_stage(self.backbone, 1, self.args.unfreeze)
        started = time.monotonic()
        views = {
            "train": self.datasets["train"].with_transform(served_transform(self.backbone.spec)),
            "val": self.datasets["val"],
        }
        features = {}
        for name, dataset in views.items():
            loader = DataLoader(
                dataset, batch_size=self.args.batch_size, num_workers=self.args.workers
            )
            bar = tqdm(loader, desc=f"stage 1 features ({name})", leave=False, dynamic_ncols=True)
            features[name] = (
                head.extract_features(self.model, self.backbone.head, (x for x, _ in bar)),
                torch.tensor(dataset.targets),
            )
        weight = self.criterion.weight
        fit = head.fit_head(
            features["train"],
            features["val"],
            len(self.datasets["train"].classes),
            None if weight is None else weight.cpu(),
            self.args.label_smoothing,
        )
        head.install(self.backbone.head, fit)
        log.info(
            "stage 1 (probe): L2 %g chosen by val loss %s; train loss %.4f acc %.3f | "
            "val loss %.4f acc %.3f",
            fit.l2,
            {k: round(v, 4) for k, v in fit.tried.items()},
            fit.train_loss,
            fit.train_acc,
            fit.val_loss,
            fit.val_acc,
        )
        self._record(
            {
                "stage": 1,
                "epoch": 0,
                "lr": fit.l2,
                "train_loss": fit.train_loss,
                "train_acc": fit.train_acc,
                "val_loss": fit.val_loss,
                "val_acc": fit.val_acc,
                "seconds": round(time.monotonic() - started, 1),
            }
        )
        state = self.model.state_dict()
        save_checkpoint(
            {
                "model": state,
                "optimizer": None,
                "lr_scheduler": None,
                "epoch": 0,
                "stage": 1,
                "args": vars(self.args),
                "metric": fit.val_loss,
                "best_model": state,
                "bad_epochs": 0,
                "finished": True,
                "history": self.history,
            },
            self.run_dir / "last.pth",
        )

    def _resume_state(self) -> dict[str, Any] | None:
        if self.args.resume is None:
            return None
        path = self.run_dir / "last.pth" if self.args.resume == "auto" else Path(self.args.resume)
        state = load_checkpoint(path)
        self.model.load_state_dict(state["model"])
        self.history = list(state.get("history", []))
        log.info("resuming from %s: stage %d after epoch %d", path, state["stage"], state["epoch"])
        return state

    def run_stage(self, stage: int, epochs: int, lr: float, resume: dict[str, Any] | None) -> None:
        configure_stage(self.backbone, stage, self.args.unfreeze)
        params = [p for p in self.model.parameters() if p.requires_grad]
        log.info(
            "stage %d: %d epochs, lr %g, %d trainable parameters",
            stage,
            epochs,
            lr,
            count_trainable(self.model),
        )
        optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=self.args.weight_decay)
        loader = self._train_loader(stage, 0)
        scheduler = build_scheduler(optimizer, epochs, len(loader), self.args.warmup_epochs)
        scaler = torch.amp.GradScaler("cuda", enabled=self.cuda)
        state = StageState(stage)
        ema = self._ema(stage)
        if resume is not None:
            if ema is not None and resume.get("ema") is not None:
                ema.load_state_dict(resume["ema"])
            if resume["optimizer"] is not None:  # None: a stage 1 fitted as a probe
                optimizer.load_state_dict(resume["optimizer"])
                scheduler.load_state_dict(resume["lr_scheduler"])
            state = StageState(
                stage,
                resume["epoch"] + 1,
                resume["metric"],
                resume["best_model"],
                resume["bad_epochs"],
                resume["finished"],
            )
        last = epochs if self.stop_after is None else min(epochs, self.stop_after[stage])
        for epoch in range(state.next_epoch, last):
            if state.finished:
                break
            started = time.monotonic()
            train_loss, train_acc = self.train_one_epoch(
                stage, epoch, optimizer, scheduler, scaler, ema
            )
            judged = self.model if ema is None else ema.module
            if self.stop_after is None:
                val_loss, val_acc = self.validate(judged)
                improved = improves(val_loss, state.best_loss)
            else:  # a refit: val is in the training set; keep the last epoch's weights
                val_loss, val_acc, improved = math.nan, math.nan, True
            if improved:
                state.best_loss, state.bad_epochs = val_loss, 0
                state.best_model = {k: v.detach().clone() for k, v in judged.state_dict().items()}
            else:
                state.bad_epochs += 1
            state.finished = state.bad_epochs >= self.args.patience
            row = {
                "stage": stage,
                "epoch": epoch,
                "lr": optimizer.param_groups[0]["lr"],
                "train_loss": train_loss,
                "train_acc": train_acc,
                "val_loss": val_loss,
                "val_acc": val_acc,
                "seconds": round(time.monotonic() - started, 1),
            }
            self._record(row)
            log.info(
                "stage %d epoch %d: train loss %.4f acc %.3f | val loss %.4f acc %.3f%s",
                stage,
                epoch,
                train_loss,
                train_acc,
                val_loss,
                val_acc,
                "" if improved else f" (no gain {state.bad_epochs}/{self.args.patience})",
            )
            save_checkpoint(
                {
                    "model": self.model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "lr_scheduler": scheduler.state_dict(),
                    "epoch": epoch,
                    "stage": stage,
                    "args": vars(self.args),
                    "metric": state.best_loss,
                    "best_model": state.best_model,
                    "bad_epochs": state.bad_epochs,
                    "finished": state.finished,
                    "history": self.history,
                    "ema": None if ema is None else ema.state_dict(),
                },
                self.run_dir / "last.pth",
            )
            if state.finished:
                log.info("stage %d: early stop after epoch %d", stage, epoch)
        if state.best_model is not None:
            self.model.load_state_dict(state.best_model)
            if self.stop_after is None:
                log.info("stage %d: kept the weights with val loss %.4f", stage, state.best_loss)
            else:
                log.info("stage %d: kept the weights after epoch %d (refit)", stage, last - 1)

    def _ema(self, stage: int) -> AveragedModel | None:
        """Stage 2's moving average of the weights (batch-norm statistics included), if asked."""
        if stage != 2 or not self.args.ema_decay:
            return None
        return AveragedModel(
            self.model, multi_avg_fn=ema_update(self.args.ema_decay), use_buffers=True
        )

    def _mixer(self) -> Any:
        """MixUp or CutMix, one picked at random per batch (torchvision.transforms.v2)."""
        from torchvision.transforms import v2

        classes = len(self.datasets["train"].classes)
        return v2.RandomChoice(
            [
                v2.MixUp(alpha=self.args.mix, num_classes=classes),
                v2.CutMix(alpha=self.args.mix, num_classes=classes),
            ]
        )

    def _train_loader(self, stage: int, epoch: int) -> DataLoader[tuple[torch.Tensor, int]]:
        # One generator per (seed, stage, epoch): a resumed run sees the same order as a fresh one.
        generator = torch.Generator().manual_seed(self.args.seed * 1000 + stage * 100 + epoch)
        return DataLoader(
            self.datasets["train"],
            batch_size=self.args.batch_size,
            shuffle=True,
            drop_last=len(self.datasets["train"]) > self.args.batch_size,
            num_workers=self.args.workers,
            generator=generator,
            pin_memory=self.cuda,
        )

    def train_one_epoch(
        self,
        stage: int,
        epoch: int,
        optimizer: torch.optim.Optimizer,
        scheduler: torch.optim.lr_scheduler.LRScheduler,
        scaler: torch.amp.GradScaler,
        ema: AveragedModel | None = None,
    ) -> tuple[float, float]:
        torch.manual_seed(self.args.seed * 1000 + stage * 100 + epoch)  # augmentation, dropout
        set_train_mode(self.backbone, stage, self.args.unfreeze, self.args.bn_stats)
        total_loss, correct, seen = 0.0, 0, 0
        bar = tqdm(
            self._train_loader(stage, epoch),
            desc=f"stage {stage} epoch {epoch}",
            leave=False,
            dynamic_ncols=True,
        )
        for images, targets in bar:
            images, targets = images.to(self.device), targets.to(self.device)
            soft = None
            if stage == 2 and self.args.mix:
                images, soft = self._mixer()(images, targets)
            if self.cuda:
                images = images.contiguous(memory_format=torch.channels_last)
            loss, hits = self._step(images, targets, optimizer, scaler, soft)
            scheduler.step()
            if ema is not None:
                ema.update_parameters(self.model)
            total_loss += loss * len(targets)
            correct += hits
            seen += len(targets)
            bar.set_postfix(loss=f"{total_loss / seen:.3f}", acc=f"{correct / seen:.3f}")
        return total_loss / max(seen, 1), correct / max(seen, 1)

    def _step(
        self,
        images: torch.Tensor,
        targets: torch.Tensor,
        optimizer: torch.optim.Optimizer,
        scaler: torch.amp.GradScaler,
        soft: torch.Tensor | None = None,
    ) -> tuple[float, int]:
        """One optimiser step; on out-of-memory, retry with half the micro-batch (accumulating).

        `soft` holds mixed label distributions (MixUp/CutMix) to train on; accuracy is
        counted against the images' own labels."""
        wanted = targets if soft is None else soft
        while True:
            optimizer.zero_grad(set_to_none=True)
            try:
                loss_sum, hits = 0.0, 0
                for chunk_x, chunk_y, chunk_w in zip(
                    images.split(self.micro_batch),
                    targets.split(self.micro_batch),
                    wanted.split(self.micro_batch),
                    strict=True,
                ):
                    with self._autocast():
                        logits = self.model(chunk_x)
                        loss = self.criterion(logits, chunk_w) * len(chunk_y) / len(targets)
                    scaler.scale(loss).backward()
                    loss_sum += float(loss.detach())
                    hits += int((logits.argmax(1) == chunk_y).sum())
                break
            except (torch.OutOfMemoryError, RuntimeError) as exc:
                if not _is_oom(exc) or self.micro_batch == 1:
                    raise
                self.micro_batch = max(1, self.micro_batch // 2)
                if self.cuda:
                    torch.cuda.empty_cache()
                log.warning("out of memory: micro-batch now %d (accumulating)", self.micro_batch)
        scaler.step(optimizer)
        scaler.update()
        return loss_sum, hits

    def _autocast(self) -> Any:
        return torch.autocast("cuda", dtype=torch.float16) if self.cuda else nullcontext()

    @torch.no_grad()
    def validate(self, model: nn.Module | None = None) -> tuple[float, float]:
        """Unweighted cross-entropy and accuracy on the validation set (served preprocessing)."""
        model = self.model if model is None else model
        model.eval()
        logits, labels = evaluate.predict(model, self.datasets["val"], self.args.batch_size)
        return float(-evaluate.log_softmax(logits)[np.arange(len(labels)), labels].mean()), float(
            (logits.argmax(1) == labels).mean()
        )

    def _record(self, row: dict[str, Any]) -> None:
        self.history.append(row)
        path = self.run_dir / "metrics.csv"
        with path.open("w", newline="", encoding="utf-8") as fh:
            writer = csv.DictWriter(fh, fieldnames=METRIC_FIELDS)
            writer.writeheader()
            writer.writerows(self.history)


def ema_update(decay: float) -> Any:
    """AveragedModel's multi_avg_fn for a bias-corrected exponential moving average.

    The n-th sample gets weight (1 - d) / (1 - d^(n+1)) rather than a fixed 1 - d: the first
    iterates then average evenly instead of the average sitting on the first one for
    ~1/(1-d) steps, so a short run (the demo's few dozen steps) gets a real average, and a
    long one the usual EMA.
    """
    if not 0.0 < decay < 1.0:
        raise ValueError(f"EMA decay must be in (0, 1), not {decay}")

    @torch.no_grad()
    def update(averaged: list[torch.Tensor], current: list[torch.Tensor], count: Any) -> None:
        weight = (1.0 - decay) / (1.0 - decay ** (float(count) + 1.0))
        if torch.is_floating_point(averaged[0]):
            torch._foreach_lerp_(averaged, current, weight)
        else:  # integer buffers such as num_batches_tracked
            for mine, theirs in zip(averaged, current, strict=True):
                mine.copy_(theirs)

    return update


def build_scheduler(
    optimizer: torch.optim.Optimizer, epochs: int, steps_per_epoch: int, warmup_epochs: float
) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up then cosine decay to zero, stepped once per optimiser step."""
    total = max(1, epochs * steps_per_epoch)
    warmup = min(total - 1, round(warmup_epochs * steps_per_epoch))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def _is_oom(exc: BaseException) -> bool:
    text = str(exc).lower()
    return (
        isinstance(exc, torch.OutOfMemoryError)
        or "out of memory" in text
        or ("can't allocate memory" in text)
    )


def evaluate_and_calibrate(
    backbone: Backbone,
    datasets: dict[str, SafeImageFolder],
    classes: list[str],
    out: Path,
    temperature: float | None = None,
    splits: tuple[str, ...] = ("val", "test"),
) -> dict[str, Any]:
    """metrics.json: val/test metrics, confusion PNGs, temperature, ECE and reliability PNG.

    The temperature is fitted on val unless given (a refit reuses its selection run's)."""
    model = backbone.model.cpu().eval()
    logits: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    report: dict[str, Any] = {}
    for split in splits:
        if split not in datasets:
            continue
        logits[split] = evaluate.predict(model, datasets[split])
        report[split] = evaluate.classification_metrics(
            *logits[split], classes, datasets[split].paths
        )
        evaluate.plot_confusion(
            report[split]["confusion_matrix"],
            classes,
            out / f"confusion_{split}.png",
            f"{split}: top-1 {report[split]['top1']:.1%}",
        )
    fitted_on = "val" if temperature is None else "val, by the selection run"
    if temperature is None:
        temperature = calibrate.fit_temperature(*logits["val"])
    calibration: dict[str, Any] = {"temperature": temperature, "fitted_on": fitted_on}
    for split, (split_logits, labels) in logits.items():
        ece_before, bins_before = calibrate.reliability(calibrate.softmax(split_logits), labels)
        ece_after, bins_after = calibrate.reliability(
            calibrate.softmax(split_logits, temperature), labels
        )
        calibration[split] = {
            "ece_before": ece_before,
            "ece_after": ece_after,
            "nll_before": calibrate.nll(split_logits, labels),
            "nll_after": calibrate.nll(split_logits, labels, temperature),
        }
        if split == "val":
            calibrate.plot_reliability(
                bins_before,
                bins_after,
                out / "reliability_val.png",
                f"val ECE {ece_before:.3f} -> {ece_after:.3f} (T = {temperature:.2f})",
            )
    report["calibration"] = calibration
    log.info("temperature %.3f; %s", temperature, calibration)
    (out / "metrics.json").write_text(json.dumps(report, indent=2) + "\n")
    return report


def export_model_folder(
    args: argparse.Namespace,
    backbone: Backbone,
    data: DatasetFolder,
    datasets: dict[str, SafeImageFolder],
    report: dict[str, Any],
    history: list[dict[str, Any]],
) -> Path:
    """Write OUT/model (ONNX, optional INT8, class_map.json, metadata.json) and validate it."""
    folder = args.out / "model"
    folder.mkdir(parents=True, exist_ok=True)
    for stale in ("model.int8.onnx", "metadata.json"):
        (folder / stale).unlink(missing_ok=True)
    model, spec = backbone.model.cpu().eval(), backbone.spec
    export.export_onnx(model, spec.size, folder / "model.onnx")
    val_inputs = _stack(datasets["val"], len(datasets["val"]))
    val_labels = np.asarray(datasets["val"].targets)
    parity = export.check_parity(folder / "model.onnx", model, val_inputs[: args.parity_images])
    log.info("ONNX parity: %s", parity)
    int8: dict[str, Any] = {"requested": bool(args.int8)}
    if args.int8 and args.refit:  # checked on images it was trained on, the rule would pass
        int8 |= {"kept": False, "reason": "not built: a refit leaves no held-out images"}
    elif args.int8:
        int8.update(build_int8(args, folder, data, backbone, val_inputs, val_labels))
    class_map = {str(i): name for i, name in enumerate(data.classes)}
    (folder / "class_map.json").write_text(json.dumps(class_map, indent=2, ensure_ascii=False))
    files = ["model.onnx", "model.int8.onnx", "class_map.json"]
    metadata = {
        "format": MODEL_FORMAT,
        "name": args.name or args.out.name,
        "input": spec.to_dict(),
        "temperature": report["calibration"]["temperature"],
        "backbone": backbone.name,
        "weights": backbone.weights,
        "num_classes": len(data.classes),
        "training": {
            "data": data.provenance,
            "val_source": data.val_source,
            "images": {k: len(v) for k, v in datasets.items()},
            "skipped": {k: [[str(p), r] for p, r in v.skipped] for k, v in datasets.items()},
            "seed": args.seed,
            "epochs_run": {s: sum(1 for h in history if h["stage"] == s) for s in (1, 2)},
            "args": _jsonable(vars(args)),
        },
        "metrics": summarise(report),
        "refit": report.get("refit"),
        "parity": parity,
        "int8": int8,
        "files_sha256": {n: sha256_file(folder / n) for n in files if (folder / n).is_file()},
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    (folder / "metadata.json").write_text(json.dumps(metadata, indent=2, ensure_ascii=False))
    load_artifact(folder)
    return folder


def build_int8(
    args: argparse.Namespace,
    folder: Path,
    data: DatasetFolder,
    backbone: Backbone,
    val_inputs: np.ndarray,
    val_labels: np.ndarray,
) -> dict[str, Any]:
    """Quantise on training images; keep model.int8.onnx only if it passes the accuracy rule."""
    rng = np.random.default_rng(args.seed)
    train = data.splits["train"]
    chosen = sorted(rng.choice(len(train), min(args.calibration_images, len(train)), replace=False))
    calibration_set = SafeImageFolder(
        [train[i] for i in chosen],
        data.classes,
        eval_loader(backbone.spec),
        eval_transform(backbone.spec),
        name="int8 calibration",
    )
    int8_path = folder / "model.int8.onnx"
    export.quantize_int8(
        folder / "model.onnx", int8_path, _stack(calibration_set, len(calibration_set))
    )
    decision = export.int8_decision(
        export.ort_logits(folder / "model.onnx", val_inputs),
        export.ort_logits(int8_path, val_inputs),
        val_labels,
    )
    decision["calibration_images"] = len(calibration_set)
    decision["size_bytes"] = {
        "fp32": (folder / "model.onnx").stat().st_size,
        "int8": int8_path.stat().st_size,
    }
    if not decision["kept"]:
        int8_path.unlink()
    log.info("INT8: %s", decision)
    return decision


def summarise(report: dict[str, Any]) -> dict[str, Any]:
    """The headline numbers for metadata.json and the registry."""
    summary: dict[str, Any] = {}
    for split in ("val", "test"):
        if split in report:
            r = report[split]
            summary[split] = {
                "n": r["n"],
                "top1": r["top1"],
                "top3": r["top3"],
                "macro_f1": r["macro"]["f1"],
                "weighted_f1": r["weighted"]["f1"],
            }
            if split in report["calibration"]:
                summary[split]["ece_before"] = report["calibration"][split]["ece_before"]
                summary[split]["ece_after"] = report["calibration"][split]["ece_after"]
    summary["temperature"] = report["calibration"]["temperature"]
    return summary


def _stack(dataset: SafeImageFolder, limit: int) -> np.ndarray:
    return np.stack([dataset[i][0].numpy() for i in range(min(limit, len(dataset)))])


def _jsonable(values: dict[str, Any]) -> dict[str, Any]:
    return {k: str(v) if isinstance(v, Path) else v for k, v in values.items()}
