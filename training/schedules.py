"""Learning-rate schedule (warm-up then cosine) and the weights' exponential moving average."""

from __future__ import annotations

import math
from typing import Any

import torch


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
