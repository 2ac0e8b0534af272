"""Stage 1 as a linear probe: frozen features computed once, the new head fitted to them.

With the trunk frozen, every epoch of ordinary stage-1 training recomputes the same
features. Computing them once and fitting the head's final linear layer by L-BFGS (an
L2-regularised multinomial logistic regression, the strength chosen on validation loss)
reaches the optimum that epochs of SGD only approach, in a fraction of the time. Stage 2
then starts from a head that already fits the features ("LP-FT", Kumar et al., ICLR 2022):
the unfrozen blocks are not pushed around by the gradients of a random head.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader
from tqdm import tqdm

from training.backbones import Backbone
from training.data import SafeImageFolder, served_transform

log = logging.getLogger("training")

# L2 strengths tried, per mean-sample loss; from strong to weak so each warm-starts the next.
L2_GRID = (1e-1, 3e-2, 1e-2, 3e-3, 1e-3, 3e-4, 1e-4)


@dataclass
class HeadFit:
    """The fitted layer (in raw feature space) and what choosing it measured."""

    weight: torch.Tensor  # (classes, features)
    bias: torch.Tensor  # (classes,)
    l2: float
    train_loss: float
    train_acc: float
    val_loss: float
    val_acc: float
    tried: dict[float, float]  # l2 -> validation loss


def final_linear(head: nn.Module) -> nn.Linear:
    """The head's last nn.Linear: the layer stage 1 fits (dropout before it is a no-op here)."""
    linears = [m for m in head.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ValueError("the head has no nn.Linear layer to fit")
    return linears[-1]


@torch.no_grad()
def extract_features(
    model: nn.Module, head: nn.Module, batches: Iterable[torch.Tensor]
) -> torch.Tensor:
    """The inputs of the head's final linear layer for every image, in order (eval mode)."""
    captured: list[torch.Tensor] = []
    hook = final_linear(head).register_forward_hook(
        lambda _m, inputs, _out: captured.append(inputs[0].detach().float().cpu())
    )
    model.eval()
    device = next(model.parameters()).device
    try:
        for images in batches:
            model(images.to(device))
    finally:
        hook.remove()
    return torch.cat(captured)


def fit_head(
    train: tuple[torch.Tensor, torch.Tensor],
    val: tuple[torch.Tensor, torch.Tensor],
    num_classes: int,
    class_weights: torch.Tensor | None = None,
    label_smoothing: float = 0.0,
    grid: Iterable[float] = L2_GRID,
    max_iter: int = 300,
    stop_after_rises: int | None = None,
) -> HeadFit:
    """Fit softmax(x W^T + b) on centred, scaled features for each L2 strength in `grid`;
    keep the one with the lowest (unweighted) validation NLL, as early stopping would.
    stop_after_rises: leave the rest of the grid once the val loss has risen on that many
    strengths in a row (the same choice when the loss along the grid has one minimum)."""
    x, y = train[0].double(), train[1].long()
    vx, vy = val[0].double(), val[1].long()
    # Centred per feature but scaled by one number: per-feature scaling would fold into
    # huge weights on near-constant features, which explode once stage 2 moves the trunk.
    mean = x.mean(0)
    std = (x - mean).pow(2).mean().sqrt().clamp_min(1e-6)
    xs, vxs = (x - mean) / std, (vx - mean) / std
    weights = None if class_weights is None else class_weights.double()
    w = torch.zeros(num_classes, x.shape[1], dtype=torch.float64, requires_grad=True)
    b = torch.zeros(num_classes, dtype=torch.float64, requires_grad=True)
    best: tuple[float, float, torch.Tensor, torch.Tensor] | None = None
    tried: dict[float, float] = {}
    rising = 0
    for l2 in grid:

        def objective(l2: float = l2) -> torch.Tensor:
            logits = xs @ w.T + b
            loss = F.cross_entropy(logits, y, weight=weights, label_smoothing=label_smoothing)
            return loss + 0.5 * l2 * w.pow(2).sum()

        _minimise([w, b], objective, max_iter)
        with torch.no_grad():
            val_loss = float(F.cross_entropy(vxs @ w.T + b, vy))
        rising = rising + 1 if tried and val_loss > list(tried.values())[-1] else 0
        tried[l2] = val_loss
        if math.isfinite(val_loss) and (best is None or val_loss < best[0]):
            best = (val_loss, l2, w.detach().clone(), b.detach().clone())
        if stop_after_rises is not None and rising >= stop_after_rises:
            break
    if best is None:
        raise ValueError("the head fit diverged for every L2 strength")
    val_loss, l2, w_std, b_std = best
    # Fold the scaling into the layer: (x - mean) / std @ W^T + b = x @ W'^T + b'.
    weight = w_std / std
    bias = b_std - weight @ mean
    with torch.no_grad():
        train_logits, val_logits = x @ weight.T + bias, vx @ weight.T + bias
    return HeadFit(
        weight=weight.float(),
        bias=bias.float(),
        l2=l2,
        train_loss=float(F.cross_entropy(train_logits, y)),
        train_acc=float((train_logits.argmax(1) == y).double().mean()),
        val_loss=val_loss,
        val_acc=float((val_logits.argmax(1) == vy).double().mean()),
        tried=tried,
    )


def _minimise(
    params: list[torch.Tensor], objective: Callable[[], torch.Tensor], max_iter: int
) -> None:
    """Full-batch L-BFGS with a strong-Wolfe line search, from the parameters' current values."""
    optimizer = torch.optim.LBFGS(params, lr=1.0, max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = objective()
        loss.backward()
        return loss

    optimizer.step(closure)


@torch.no_grad()
def install(head: nn.Module, fit: HeadFit) -> None:
    """Copy a fitted layer into the head's final linear layer."""
    layer = final_linear(head)
    if tuple(layer.weight.shape) != tuple(fit.weight.shape):
        raise ValueError(
            f"fitted head {tuple(fit.weight.shape)} does not fit {tuple(layer.weight.shape)}"
        )
    layer.weight.copy_(fit.weight.to(layer.weight))
    if layer.bias is not None:
        layer.bias.copy_(fit.bias.to(layer.bias))


def fit_probe(
    backbone: Backbone,
    datasets: Mapping[str, SafeImageFolder],
    batch_size: int,
    workers: int = 0,
    class_weights: torch.Tensor | None = None,
    label_smoothing: float = 0.0,
    grid: Iterable[float] = L2_GRID,
) -> HeadFit:
    """The head's linear layer fitted on the model's current (frozen) features of train,
    seen through the served preprocessing as val is; nothing is installed yet. A refit
    passes the one L2 strength its selection run chose (val is then part of train)."""
    views = {
        "train": datasets["train"].with_transform(served_transform(backbone.spec)),
        "val": datasets["val"],
    }
    features = {}
    for name, dataset in views.items():
        loader = DataLoader(dataset, batch_size=batch_size, num_workers=workers)
        bar = tqdm(loader, desc=f"probe features ({name})", leave=False, dynamic_ncols=True)
        features[name] = (
            extract_features(backbone.model, backbone.head, (x for x, _ in bar)),
            torch.tensor(dataset.targets),
        )
    fit = fit_head(
        features["train"],
        features["val"],
        len(datasets["train"].classes),
        class_weights,
        label_smoothing,
        grid,
    )
    log.info(
        "probe: L2 %g chosen by val loss %s; train loss %.4f acc %.3f | val loss %.4f acc %.3f",
        fit.l2,
        {k: round(v, 4) for k, v in fit.tried.items()},
        fit.train_loss,
        fit.train_acc,
        fit.val_loss,
        fit.val_acc,
    )
    return fit
