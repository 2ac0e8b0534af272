"""What each stage trains: freezing, unfreezing the last block(s) and train/eval modes."""

from __future__ import annotations

import re

from torch import nn

from training.backbones import Backbone


def parse_unfreeze(rule: str, num_units: int) -> int:
    """'last-block' | 'last-k:K' | 'all' -> how many trunk units stage 2 unfreezes."""
    if rule == "all":
        return num_units
    if rule == "last-block":
        return 1
    match = re.fullmatch(r"last-k:(\d+)", rule)
    if not match or int(match.group(1)) < 1:
        raise ValueError(f"--unfreeze must be last-block, last-k:K (K >= 1) or all, not {rule!r}")
    return min(int(match.group(1)), num_units)


def trainable_modules(backbone: Backbone, stage: int, unfreeze: str) -> list[nn.Module]:
    """The modules whose parameters train in `stage`: the head, plus the unfrozen units."""
    if stage == 1:
        return [backbone.head]
    count = parse_unfreeze(unfreeze, len(backbone.units))
    return [*backbone.units[len(backbone.units) - count :], backbone.head]


def configure_stage(backbone: Backbone, stage: int, unfreeze: str = "last-block") -> None:
    """Set requires_grad for `stage`: everything off, then on for its trainable modules."""
    backbone.model.requires_grad_(False)
    for module in trainable_modules(backbone, stage, unfreeze):
        module.requires_grad_(True)


def set_train_mode(
    backbone: Backbone, stage: int, unfreeze: str = "last-block", bn_stats: str = "update"
) -> None:
    """Train mode only where parameters train: frozen batch-norm keeps its running statistics.

    bn_stats="frozen" keeps every batch-norm layer in eval mode, the unfrozen ones too: they
    normalise with their running statistics and leave them unchanged, while their scale
    and shift still train. A head fitted on the frozen trunk's features (stage 1) then
    sees the same features when stage 2 starts. In train mode, batch statistics and the
    running statistics' updates shift those features at once, before any weight moves.
    """
    if bn_stats not in ("update", "frozen"):
        raise ValueError(f"bn_stats must be 'update' or 'frozen', not {bn_stats!r}")
    backbone.model.eval()
    for module in trainable_modules(backbone, stage, unfreeze):
        module.train()
        if bn_stats == "frozen":
            for norm in module.modules():
                if isinstance(norm, nn.modules.batchnorm._BatchNorm):
                    norm.eval()


def count_trainable(model: nn.Module) -> int:
    """Number of parameters that receive gradients."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
