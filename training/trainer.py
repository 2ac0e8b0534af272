"""The two-stage trainer: epochs, early stopping, EMA, out-of-memory retries, checkpoints."""

from __future__ import annotations

import argparse
import csv
import logging
import math
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel
from torch.utils.data import DataLoader
from tqdm import tqdm

from training import evaluate, head
from training.backbones import Backbone
from training.checkpoint import load_checkpoint, save_checkpoint
from training.data import SafeImageFolder, class_weights
from training.schedules import build_scheduler, ema_update
from training.stages import configure_stage, count_trainable, set_train_mode

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


def improves(val_loss: float, best: float) -> bool:
    """Early stopping's rule: a validation loss counts as a gain only by more than 1e-4."""
    return val_loss < best - 1e-4


def probe_l2(history: list[dict[str, Any]]) -> float | None:
    """The L2 strength a stage 1 `probe` chose (its history row's `lr`), None without one."""
    rows = [r for r in history if r["stage"] == 1 and r["epoch"] == 0]
    return float(rows[0]["lr"]) if rows else None


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
        self.probe_fit: head.HeadFit | None = None  # stage 1 `probe` uses it if already fitted
        # A refit's stage 1 `probe`: the L2 strength its selection run chose on val.
        self.probe_l2: float | None = None

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
        fit = self.probe_fit or head.fit_probe(
            self.backbone,
            self.datasets,
            self.args.batch_size,
            self.args.workers,
            self.class_weights(),
            self.args.label_smoothing,
            head.L2_GRID if self.probe_l2 is None else (self.probe_l2,),
        )
        head.install(self.backbone.head, fit)
        refit = self.probe_l2 is not None  # val is in train: its loss measures nothing
        self._record(
            {
                "stage": 1,
                "epoch": 0,
                "lr": fit.l2,
                "train_loss": fit.train_loss,
                "train_acc": fit.train_acc,
                "val_loss": math.nan if refit else fit.val_loss,
                "val_acc": math.nan if refit else fit.val_acc,
                "seconds": round(time.monotonic() - started, 1),
            }
        )
        state = self.model.state_dict()
        self._checkpoint(
            model=state, optimizer=None, lr_scheduler=None, epoch=0, stage=1,
            metric=fit.val_loss, best_model=state, bad_epochs=0, finished=True,
        )  # fmt: skip

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
            self._checkpoint(
                model=self.model.state_dict(),
                optimizer=optimizer.state_dict(),
                lr_scheduler=scheduler.state_dict(),
                epoch=epoch,
                stage=stage,
                metric=state.best_loss,
                best_model=state.best_model,
                bad_epochs=state.bad_epochs,
                finished=state.finished,
                ema=None if ema is None else ema.state_dict(),
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

    def class_weights(self) -> torch.Tensor | None:
        """The loss's class weights on the CPU (None: unweighted)."""
        weight = self.criterion.weight
        return None if weight is None else weight.cpu()

    def _checkpoint(self, **state: Any) -> None:
        """OUT/run/last.pth: the given state plus the args and the metrics history."""
        save_checkpoint(
            {**state, "args": vars(self.args), "history": self.history}, self.run_dir / "last.pth"
        )

    def _record(self, row: dict[str, Any]) -> None:
        self.history.append(row)
        path = self.run_dir / "metrics.csv"
        with path.open("w", newline="", encoding="utf-8") as fh:
            writer = csv.DictWriter(fh, fieldnames=METRIC_FIELDS)
            writer.writeheader()
            writer.writerows(self.history)


def _is_oom(exc: BaseException) -> bool:
    text = str(exc).lower()
    return (
        isinstance(exc, torch.OutOfMemoryError)
        or "out of memory" in text
        or ("can't allocate memory" in text)
    )
