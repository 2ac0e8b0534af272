"""Stage 1 freezes the trunk and its batch-norm statistics; stage 2 changes only what it unfroze."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from training.backbones import Backbone
from training.stages import configure_stage, parse_unfreeze, set_train_mode

pytestmark = pytest.mark.torch


def _snapshot(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _train_steps(
    backbone: Backbone, stage: int, unfreeze: str, steps: int = 3, bn_stats: str = "update"
) -> None:
    configure_stage(backbone, stage, unfreeze)
    params = [p for p in backbone.model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-2)
    torch.manual_seed(0)
    for _ in range(steps):
        set_train_mode(backbone, stage, unfreeze, bn_stats)
        images, labels = torch.randn(4, 3, 32, 32) * 3 + 1, torch.randint(0, 3, (4,))
        loss = nn.functional.cross_entropy(backbone.model(images), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


def _changed(before: dict[str, torch.Tensor], after: dict[str, torch.Tensor]) -> set[str]:
    return {k for k in before if not torch.equal(before[k], after[k])}


def test_stage1_freezes_trunk_weights_and_batchnorm_statistics(tiny_backbone: Backbone) -> None:
    trunk = nn.ModuleList(tiny_backbone.units)
    trunk_before, head_before = _snapshot(trunk), _snapshot(tiny_backbone.head)
    _train_steps(tiny_backbone, stage=1, unfreeze="last-block")
    assert _changed(trunk_before, _snapshot(trunk)) == set()  # incl. running_mean/var
    assert _changed(head_before, _snapshot(tiny_backbone.head))


def test_stage1_keeps_frozen_batchnorm_in_eval_mode(tiny_backbone: Backbone) -> None:
    set_train_mode(tiny_backbone, 1)
    norms = [m for m in tiny_backbone.model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert norms and not any(m.training for m in norms)
    assert tiny_backbone.head.training


@pytest.mark.parametrize("rule,count", [("last-block", 1), ("last-k:2", 2)])
def test_stage2_changes_only_what_it_unfroze(
    tiny_backbone: Backbone, rule: str, count: int
) -> None:
    frozen = nn.ModuleList(tiny_backbone.units[:-count])
    unfrozen = nn.ModuleList(tiny_backbone.units[-count:])
    frozen_before, unfrozen_before = _snapshot(frozen), _snapshot(unfrozen)
    _train_steps(tiny_backbone, stage=2, unfreeze=rule)
    assert _changed(frozen_before, _snapshot(frozen)) == set()
    changed = _changed(unfrozen_before, _snapshot(unfrozen))
    assert any(k.endswith("running_mean") for k in changed)  # unfrozen BN does update
    assert any(k.endswith("weight") for k in changed)
    for index in range(count):  # every unfrozen unit moved, not just the last one
        unit = tiny_backbone.units[-1 - index]
        assert any(p.requires_grad for p in unit.parameters())


def test_stage2_with_frozen_bn_stats_trains_weights_but_keeps_running_statistics(
    tiny_backbone: Backbone,
) -> None:
    unfrozen = nn.ModuleList(tiny_backbone.units[-2:])
    before = _snapshot(unfrozen)
    _train_steps(tiny_backbone, stage=2, unfreeze="last-k:2", bn_stats="frozen")
    changed = _changed(before, _snapshot(unfrozen))
    assert not any("running_" in k or "num_batches" in k for k in changed)
    norms = [m for m in unfrozen.modules() if isinstance(m, nn.BatchNorm2d)]
    assert norms and not any(m.training for m in norms)
    bn_names = {f"{name}.weight" for name, m in unfrozen.named_modules() if m in norms}
    assert bn_names & changed  # their scale (and shift) still train
    assert changed - bn_names  # and so do the convolutions
    assert tiny_backbone.head.training


def test_bn_stats_must_be_update_or_frozen(tiny_backbone: Backbone) -> None:
    with pytest.raises(ValueError, match="bn_stats"):
        set_train_mode(tiny_backbone, 2, "last-block", "fixed")


def test_parse_unfreeze_rules() -> None:
    assert parse_unfreeze("last-block", 10) == 1
    assert parse_unfreeze("last-k:3", 10) == 3
    assert parse_unfreeze("last-k:30", 10) == 10
    assert parse_unfreeze("all", 10) == 10
    for bad in ("last-k:0", "last", "last-k:x"):
        with pytest.raises(ValueError, match="--unfreeze"):
            parse_unfreeze(bad, 10)
