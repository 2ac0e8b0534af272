"""The day-one starter model: ImageNet Lite0's reptiles and amphibians, plus `not a herp`."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from service.errors import BadInput
from service.imaging import sha256_file
from service.modelspec import MODEL_FORMAT, load_artifact
from service.settings import Settings
from training import export
from training.backbones import WeightsUnavailable, default_spec, imagenet_lite

log = logging.getLogger("training")

NOT_A_HERP = "not a herp"
BACKBONE = "efficientnet_lite0"

_REPTILIA, _AMPHIBIA = "Reptilia", "Amphibia"
_SQUAMATA, _TESTUDINES, _CROCODILIA = "Squamata", "Testudines", "Crocodilia"

# ImageNet-1k index -> (label, group, class, order, family, genus or None, species or None).
# Labels are ImageNet's common name plus the taxon it maps to; only as deep as the synset
# is one taxon (ImageNet's "vine snake" photos mix Oxybelis and Ahaetulla: family only).
# 51 (triceratops) is not a herp that anyone photographs: it joins `not a herp`.
IMAGENET_HERPS: dict[int, tuple[str, str, str, str, str, str | None, str | None]] = {
    25: ("fire salamander (Salamandra salamandra)", "salamander", _AMPHIBIA, "Caudata",
         "Salamandridae", "Salamandra", "Salamandra salamandra"),
    26: ("smooth newt (Lissotriton vulgaris)", "salamander", _AMPHIBIA, "Caudata",
         "Salamandridae", "Lissotriton", "Lissotriton vulgaris"),
    27: ("eft (Salamandridae)", "salamander", _AMPHIBIA, "Caudata", "Salamandridae", None, None),
    28: ("spotted salamander (Ambystoma maculatum)", "salamander", _AMPHIBIA, "Caudata",
         "Ambystomatidae", "Ambystoma", "Ambystoma maculatum"),
    29: ("axolotl (Ambystoma mexicanum)", "salamander", _AMPHIBIA, "Caudata",
         "Ambystomatidae", "Ambystoma", "Ambystoma mexicanum"),
    30: ("American bullfrog (Lithobates catesbeianus)", "frog", _AMPHIBIA, "Anura", "Ranidae",
         "Lithobates", "Lithobates catesbeianus"),
    31: ("tree frog (Hylidae)", "frog", _AMPHIBIA, "Anura", "Hylidae", None, None),
    32: ("tailed frog (Ascaphus truei)", "frog", _AMPHIBIA, "Anura", "Ascaphidae", "Ascaphus",
         "Ascaphus truei"),
    33: ("loggerhead turtle (Caretta caretta)", "turtle", _REPTILIA, _TESTUDINES, "Cheloniidae",
         "Caretta", "Caretta caretta"),
    34: ("leatherback turtle (Dermochelys coriacea)", "turtle", _REPTILIA, _TESTUDINES,
         "Dermochelyidae", "Dermochelys", "Dermochelys coriacea"),
    35: ("mud turtle (Kinosternidae)", "turtle", _REPTILIA, _TESTUDINES, "Kinosternidae",
         None, None),
    36: ("terrapin (Emydidae)", "turtle", _REPTILIA, _TESTUDINES, "Emydidae", None, None),
    37: ("box turtle (Terrapene)", "turtle", _REPTILIA, _TESTUDINES, "Emydidae", "Terrapene",
         None),
    38: ("banded gecko (Coleonyx)", "lizard", _REPTILIA, _SQUAMATA, "Eublepharidae", "Coleonyx",
         None),
    39: ("green iguana (Iguana iguana)", "lizard", _REPTILIA, _SQUAMATA, "Iguanidae", "Iguana",
         "Iguana iguana"),
    40: ("green anole (Anolis carolinensis)", "lizard", _REPTILIA, _SQUAMATA, "Dactyloidae",
         "Anolis", "Anolis carolinensis"),
    41: ("whiptail (Teiidae)", "lizard", _REPTILIA, _SQUAMATA, "Teiidae", None, None),
    42: ("agama (Agama)", "lizard", _REPTILIA, _SQUAMATA, "Agamidae", "Agama", None),
    43: ("frilled lizard (Chlamydosaurus kingii)", "lizard", _REPTILIA, _SQUAMATA, "Agamidae",
         "Chlamydosaurus", "Chlamydosaurus kingii"),
    44: ("alligator lizard (Anguidae)", "lizard", _REPTILIA, _SQUAMATA, "Anguidae", None, None),
    45: ("Gila monster (Heloderma suspectum)", "lizard", _REPTILIA, _SQUAMATA, "Helodermatidae",
         "Heloderma", "Heloderma suspectum"),
    46: ("green lizard (Lacerta viridis)", "lizard", _REPTILIA, _SQUAMATA, "Lacertidae",
         "Lacerta", "Lacerta viridis"),
    47: ("common chameleon (Chamaeleo chamaeleon)", "lizard", _REPTILIA, _SQUAMATA,
         "Chamaeleonidae", "Chamaeleo", "Chamaeleo chamaeleon"),
    48: ("Komodo dragon (Varanus komodoensis)", "lizard", _REPTILIA, _SQUAMATA, "Varanidae",
         "Varanus", "Varanus komodoensis"),
    49: ("Nile crocodile (Crocodylus niloticus)", "crocodilian", _REPTILIA, _CROCODILIA,
         "Crocodylidae", "Crocodylus", "Crocodylus niloticus"),
    50: ("American alligator (Alligator mississippiensis)", "crocodilian", _REPTILIA,
         _CROCODILIA, "Alligatoridae", "Alligator", "Alligator mississippiensis"),
    52: ("worm snake (Carphophis amoenus)", "snake", _REPTILIA, _SQUAMATA, "Colubridae",
         "Carphophis", "Carphophis amoenus"),
    53: ("ring-necked snake (Diadophis punctatus)", "snake", _REPTILIA, _SQUAMATA, "Colubridae",
         "Diadophis", "Diadophis punctatus"),
    54: ("hognose snake (Heterodon)", "snake", _REPTILIA, _SQUAMATA, "Colubridae", "Heterodon",
         None),
    55: ("green snake (Opheodrys)", "snake", _REPTILIA, _SQUAMATA, "Colubridae", "Opheodrys",
         None),
    56: ("kingsnake (Lampropeltis)", "snake", _REPTILIA, _SQUAMATA, "Colubridae", "Lampropeltis",
         None),
    57: ("garter snake (Thamnophis)", "snake", _REPTILIA, _SQUAMATA, "Colubridae", "Thamnophis",
         None),
    58: ("water snake (Nerodia)", "snake", _REPTILIA, _SQUAMATA, "Colubridae", "Nerodia", None),
    59: ("vine snake (Colubridae)", "snake", _REPTILIA, _SQUAMATA, "Colubridae", None, None),
    60: ("night snake (Hypsiglena torquata)", "snake", _REPTILIA, _SQUAMATA, "Colubridae",
         "Hypsiglena", "Hypsiglena torquata"),
    61: ("boa constrictor (Boa constrictor)", "snake", _REPTILIA, _SQUAMATA, "Boidae", "Boa",
         "Boa constrictor"),
    62: ("African rock python (Python sebae)", "snake", _REPTILIA, _SQUAMATA, "Pythonidae",
         "Python", "Python sebae"),
    63: ("Indian cobra (Naja naja)", "snake", _REPTILIA, _SQUAMATA, "Elapidae", "Naja",
         "Naja naja"),
    64: ("green mamba (Dendroaspis)", "snake", _REPTILIA, _SQUAMATA, "Elapidae", "Dendroaspis",
         None),
    65: ("sea snake (Hydrophiinae)", "snake", _REPTILIA, _SQUAMATA, "Elapidae", None, None),
    66: ("horned viper (Cerastes cerastes)", "snake", _REPTILIA, _SQUAMATA, "Viperidae",
         "Cerastes", "Cerastes cerastes"),
    67: ("eastern diamondback rattlesnake (Crotalus adamanteus)", "snake", _REPTILIA, _SQUAMATA,
         "Viperidae", "Crotalus", "Crotalus adamanteus"),
    68: ("sidewinder (Crotalus cerastes)", "snake", _REPTILIA, _SQUAMATA, "Viperidae",
         "Crotalus", "Crotalus cerastes"),
}  # fmt: skip


def labels() -> list[str]:
    """The starter's classes in output order: the herp classes, then `not a herp`."""
    return [entry[0] for entry in IMAGENET_HERPS.values()] + [NOT_A_HERP]


def taxonomy() -> dict[str, dict[str, Any]]:
    """Per label: group, class, order, family, genus and species where ImageNet's maps to one."""
    table: dict[str, dict[str, Any]] = {}
    for index, (label, group, klass, order, family, genus, species) in IMAGENET_HERPS.items():
        ranks = {"class": klass, "order": order, "family": family, "genus": genus}
        table[label] = {
            "group": group,
            "imagenet_index": index,
            **{rank: name for rank, name in ranks.items() if name},
            **({"species": species} if species else {}),
        }
    table[NOT_A_HERP] = {"group": NOT_A_HERP}
    return table


NOT_A_HERP_RULES = ("best", "sum")


class GroupHerps(nn.Module):
    """1000 ImageNet logits -> log-probabilities of the herp classes and of `not a herp`.

    `not a herp` scores as ImageNet's best non-herp class ("best"), so the top class is a
    herp exactly when ImageNet's is; "sum" gives it the whole remaining mass, which on
    ph-snakes outweighed every snake class on 38 of the 168 photos ImageNet called a snake
    (docs/training.md). With `flip`, probabilities are averaged with the mirrored image's."""

    herps: torch.Tensor
    rest: torch.Tensor

    def __init__(self, model: nn.Module, flip: bool = False, not_a_herp: str = "best") -> None:
        super().__init__()
        if not_a_herp not in NOT_A_HERP_RULES:
            raise ValueError(f"not_a_herp must be one of {NOT_A_HERP_RULES}, not {not_a_herp!r}")
        self.model, self.flip, self.sum_rest = model, flip, not_a_herp == "sum"
        herps = torch.tensor(list(IMAGENET_HERPS))
        rest = torch.tensor([i for i in range(1000) if i not in IMAGENET_HERPS])
        self.register_buffer("herps", herps, persistent=False)
        self.register_buffer("rest", rest, persistent=False)

    def _grouped(self, images: torch.Tensor) -> torch.Tensor:
        logp = torch.log_softmax(self.model(images), dim=1)
        rest = logp.index_select(1, self.rest)
        if self.sum_rest:
            other = torch.logsumexp(rest, dim=1, keepdim=True)
        else:
            other = rest.max(dim=1, keepdim=True).values
        return torch.cat([logp.index_select(1, self.herps), other], dim=1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        grouped = self._grouped(images)
        if not self.flip:
            return grouped
        mirrored = self._grouped(torch.flip(images, dims=[3]))
        return torch.logaddexp(grouped, mirrored) - float(np.log(2.0))


def build_starter_model(
    weights: str = "default", flip: bool = False, not_a_herp: str = "best"
) -> tuple[nn.Module, str]:
    """ImageNet EfficientNet-Lite0 (offline weights) under the grouping; returns its source."""
    model, source = imagenet_lite(BACKBONE, weights)
    return GroupHerps(model, flip, not_a_herp).eval(), source


def build_starter(
    out: Path,
    weights: str = "default",
    size: int = 224,
    flip: bool = False,
    not_a_herp: str = "best",
) -> Path:
    """Write the starter model folder to `out` (ONNX checked against torch) and validate it."""
    out.mkdir(parents=True, exist_ok=True)
    for stale in ("model.int8.onnx", "metadata.json"):
        (out / stale).unlink(missing_ok=True)
    model, source = build_starter_model(weights, flip, not_a_herp)
    export.export_onnx(model, size, out / "model.onnx")
    spec = default_spec(BACKBONE, size)
    inputs = np.random.default_rng(0).normal(0, 1, (4, 3, size, size)).astype(np.float32)
    parity = export.check_parity(out / "model.onnx", model, inputs)
    names = labels()
    class_map = {str(i): name for i, name in enumerate(names)}
    (out / "class_map.json").write_text(json.dumps(class_map, indent=2, ensure_ascii=False))
    metadata = {
        "format": MODEL_FORMAT,
        "name": "starter-imagenet-herps",
        "starter": True,
        "description": "ImageNet EfficientNet-Lite0, not trained on your photos: its "
        "reptile and amphibian classes and 'not a herp'; replace it with your first retrain",
        "input": spec.to_dict(),
        "temperature": 1.0,
        "backbone": BACKBONE,
        "weights": source,
        "num_classes": len(names),
        "test_time_flip": flip,
        "not_a_herp": not_a_herp,
        "taxonomy": taxonomy(),
        "parity": parity,
        "files_sha256": {n: sha256_file(out / n) for n in ("model.onnx", "class_map.json")},
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    (out / "metadata.json").write_text(json.dumps(metadata, indent=2, ensure_ascii=False))
    load_artifact(out)
    log.info("starter model folder: %s (%d classes)", out, len(names))
    return out


def add_starter(
    settings: Settings, out: Path | None = None, activate: bool = False, flip: bool = False
) -> tuple[int, str]:
    """Build the starter folder (default DATA_DIR/starter) and register it; (id, summary)."""
    from service.db import session_scope
    from service.registry import add_model

    try:
        folder = build_starter(out or settings.data_path / "starter", flip=flip)
    except WeightsUnavailable as exc:
        raise BadInput(str(exc)) from None
    with session_scope(settings.db_url) as session:
        model = add_model(
            session, settings, folder, name="starter", activate=activate, source="starter"
        )
        state = "active" if activate else model.status.value
        summary = (
            f"starter model version {model.id}: {model.num_classes} classes (ImageNet's "
            f"reptiles and amphibians + '{NOT_A_HERP}'), {state}, stored at {model.path}"
        )
        return model.id, summary
