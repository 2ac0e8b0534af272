"""The labelled image folder: scanning, leak and size checks, splits, datasets, class weights."""

from __future__ import annotations

import copy
import csv
import json
import logging
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from service.errors import BadInput
from service.imaging import (
    ImageError,
    InputSpec,
    is_image_name,
    load_rgb,
    open_checked,
    resize_and_crop,
    sha256_file,
    to_array,
    to_rgb,
    upright,
)
from service.settings import DEFAULT_EXTENSIONS

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
MAX_PIXELS = 120_000_000
MAX_BYTES = 256 * 1024 * 1024


class DataError(BadInput):
    """The dataset folder cannot be trained on as it is; the message says why."""

    code = "bad_dataset"


@dataclass(frozen=True)
class Sample:
    """One labelled file."""

    path: Path
    label: int
    sha256: str


@dataclass
class DatasetFolder:
    """A scanned dataset folder: class names in output order and the samples of each split."""

    root: Path
    classes: list[str]
    splits: dict[str, list[Sample]]
    val_source: str  # "folder" or "stratified split of train"
    provenance: dict[str, Any] = field(default_factory=dict)


def discover_classes(root: Path) -> list[str]:
    """Class names from the folder names under train/ (any characters), sorted."""
    train = root / "train"
    if not train.is_dir():
        raise DataError(f"{root} has no train/ folder (expected train/<label>/*, val/<label>/*)")
    classes = sorted(p.name for p in train.iterdir() if p.is_dir() and not p.name.startswith("."))
    if len(classes) < 2:
        raise DataError(f"{train} needs at least two class folders, found {len(classes)}")
    return classes


def scan_split(folder: Path, classes: list[str], extensions: Sequence[str]) -> list[Sample]:
    """All image files under folder/<class>/ with their label and sha256 (unreadable ones too)."""
    unknown = sorted(p.name for p in folder.iterdir() if p.is_dir() and p.name not in classes)
    if unknown:
        raise DataError(f"{folder} has class folders that train/ lacks: {unknown}")
    samples = []
    for label, name in enumerate(classes):
        class_dir = folder / name
        if not class_dir.is_dir():
            continue
        for path in sorted(class_dir.rglob("*")):
            if path.is_file() and is_image_name(path, list(extensions)):
                samples.append(Sample(path, label, sha256_file(path)))
    return samples


def check_leaks(splits: dict[str, list[Sample]]) -> None:
    """Refuse a dataset where the same file content (sha256) sits in more than one split."""
    where: dict[str, set[str]] = defaultdict(set)
    paths: dict[str, list[str]] = defaultdict(list)
    for split, samples in splits.items():
        for sample in samples:
            where[sample.sha256].add(split)
            paths[sample.sha256].append(str(sample.path))
    leaks = {digest: paths[digest] for digest, found in where.items() if len(found) > 1}
    if leaks:
        examples = "; ".join(" = ".join(p) for p in list(leaks.values())[:3])
        raise DataError(
            f"{len(leaks)} image(s) appear in more than one split (same sha256), which would "
            f"leak evaluation data into training: {examples}. Remove the duplicates and retry.",
            {"leaks": leaks},
        )


def check_class_counts(splits: dict[str, list[Sample]], classes: list[str], min_train: int) -> None:
    """Refuse when a class has fewer than `min_train` training images or no validation image."""
    train = Counter(s.label for s in splits["train"])
    val = Counter(s.label for s in splits["val"])
    short = {classes[i]: train[i] for i in range(len(classes)) if train[i] < min_train}
    if short:
        raise DataError(
            f"these classes have fewer than {min_train} usable training images: {short}; "
            "add images, merge or drop the classes, or lower --min-per-class",
            {"too_few": short},
        )
    no_val = [classes[i] for i in range(len(classes)) if val[i] == 0]
    if no_val:
        raise DataError(f"these classes have no validation image: {no_val}", {"no_val": no_val})


def stratified_split(
    samples: list[Sample], fraction: float, seed: int
) -> tuple[list[Sample], list[Sample]]:
    """Split train into train/val per class; copies of one file stay on the same side."""
    from sklearn.model_selection import train_test_split

    groups: dict[str, list[Sample]] = defaultdict(list)
    for sample in samples:
        groups[sample.sha256].append(sample)
    digests = sorted(groups)
    labels = [groups[d][0].label for d in digests]
    counts = Counter(labels)
    if min(counts.values()) < 2:
        raise DataError("a class has fewer than 2 distinct images, too few to split off a val set")
    n_val = max(len(counts), round(fraction * len(digests)))
    train_d, val_d = train_test_split(
        digests, test_size=n_val, stratify=labels, random_state=seed, shuffle=True
    )
    return [s for d in train_d for s in groups[d]], [s for d in val_d for s in groups[d]]


def scan_dataset(
    root: Path,
    val_fraction: float = 0.15,
    seed: int = 0,
    min_train: int = 5,
    extensions: Sequence[str] = DEFAULT_EXTENSIONS,
) -> DatasetFolder:
    """Scan train/val/test, split val off train if needed, and refuse leaks and tiny classes."""
    root = root.expanduser().resolve()
    classes = _class_order(root, discover_classes(root))
    splits = {"train": scan_split(root / "train", classes, extensions)}
    val_source = "folder"
    if (root / "val").is_dir():
        splits["val"] = scan_split(root / "val", classes, extensions)
    else:
        splits["train"], splits["val"] = stratified_split(splits["train"], val_fraction, seed)
        val_source = f"stratified {val_fraction:.0%} of train (seed {seed})"
    if (root / "test").is_dir():
        splits["test"] = scan_split(root / "test", classes, extensions)
    check_leaks(splits)
    check_class_counts(splits, classes, min_train)
    return DatasetFolder(root, classes, splits, val_source, _provenance(root))


def _class_order(root: Path, folders: list[str]) -> list[str]:
    """An exported class_map.json fixes the output order; otherwise sorted folder names."""
    path = root / "class_map.json"
    if not path.is_file():
        return folders
    raw = json.loads(path.read_text(encoding="utf-8"))
    labels = [raw[k] for k in sorted(raw, key=int)] if isinstance(raw, dict) else []
    if sorted(labels) != folders:
        raise DataError(f"{path} lists {sorted(labels)} but train/ holds {folders}")
    return labels


def _provenance(root: Path) -> dict[str, Any]:
    """What identifies the training data: folder, export id and manifest hash when present."""
    info: dict[str, Any] = {"path": str(root), "export_id": root.name}
    manifest = root / "manifest.csv"
    if manifest.is_file():
        info["manifest_sha256"] = sha256_file(manifest)
        with manifest.open(newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
        info["manifest_rows"] = len(rows)
        if rows and rows[0].get("export_id"):
            info["export_id"] = rows[0]["export_id"]
    return info


def decode_for_training(path: Path, short_side: int) -> Image.Image:
    """Decode an RGB image whose shorter side is at most `short_side` (room for random crops)."""
    handle = open_checked(path, MAX_PIXELS, MAX_BYTES)
    try:
        if handle.format == "JPEG":
            handle.draft("RGB", (short_side, short_side))
        handle.load()
        rgb = to_rgb(upright(handle))
        if rgb is handle:
            rgb = rgb.copy()  # the handle closes below
    except ImageError:
        raise
    except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError) as exc:
        raise ImageError("corrupt", f"cannot decode image data: {exc}") from None
    finally:
        handle.close()
    scale = short_side / min(rgb.size)
    if scale < 1:
        size = (max(1, round(rgb.width * scale)), max(1, round(rgb.height * scale)))
        rgb = rgb.resize(size, Image.Resampling.BILINEAR)
    return rgb


class SafeImageFolder(Dataset[tuple[torch.Tensor, int]]):
    """ImageFolder over a list of samples that drops unreadable files with a logged reason.

    Every file is decoded once up front (so a bad file is found before training, not in the
    middle of an epoch); with `cache` the decoded images stay in memory for later epochs.
    """

    def __init__(
        self,
        samples: list[Sample],
        classes: list[str],
        loader: Callable[[Path], Image.Image],
        transform: Callable[[Image.Image], torch.Tensor],
        cache: bool = True,
        name: str = "",
    ) -> None:
        self.classes = classes
        self.class_to_idx = {c: i for i, c in enumerate(classes)}
        self.loader, self.transform = loader, transform
        self.samples: list[Sample] = []
        self.skipped: list[tuple[Path, str]] = []
        self._cache: list[Image.Image] = []
        for sample in samples:
            try:
                img = loader(sample.path)
            except ImageError as exc:
                log.warning("skipping %s (%s): %s", sample.path, exc.reason, exc.message)
                self.skipped.append((sample.path, exc.reason))
                continue
            self.samples.append(sample)
            if cache:
                self._cache.append(img)
        self.cached = cache
        log.info("%s: %d images, %d skipped", name or "dataset", len(self), len(self.skipped))

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        img = self._cache[index] if self.cached else self.loader(self.samples[index].path)
        return self.transform(img), self.samples[index].label

    def with_transform(self, transform: Callable[[Image.Image], torch.Tensor]) -> SafeImageFolder:
        """The same images (and cache) under another transform, without decoding again."""
        view = copy.copy(self)
        view.transform = transform
        return view

    @property
    def targets(self) -> list[int]:
        return [s.label for s in self.samples]

    @property
    def paths(self) -> list[Path]:
        return [s.path for s in self.samples]


def eval_loader(spec: InputSpec) -> Callable[[Path], Image.Image]:
    """The served decoding: service.imaging.load_rgb with the model's InputSpec."""
    return lambda path: load_rgb(path, spec, MAX_PIXELS, MAX_BYTES)


def eval_transform(spec: InputSpec) -> Callable[[Image.Image], torch.Tensor]:
    """The served normalisation: service.imaging.to_array with the model's InputSpec."""
    return lambda img: torch.from_numpy(to_array(img, spec))


def served_transform(spec: InputSpec) -> Callable[[Image.Image], torch.Tensor]:
    """Deterministic: the model's resize rule and normalisation on an already decoded image
    (stage 1 computes training-set features this way from the training cache)."""
    return lambda img: torch.from_numpy(to_array(resize_and_crop(img, spec), spec))


AUGMENTS = ("jitter", "trivial")


def train_transform(
    spec: InputSpec, min_scale: float = 0.35, jitter: float = 0.2, augment: str = "jitter"
) -> Callable[[Image.Image], torch.Tensor]:
    """Random crop and flip, then colour jitter (`jitter`) or one random operation of
    TrivialAugmentWide (`trivial`: rotation, shear, colour, contrast, ...), then the same
    normalisation as serving."""
    from torchvision import transforms

    if augment not in AUGMENTS:
        raise ValueError(f"augment must be one of {AUGMENTS}, not {augment!r}")
    extra = (
        transforms.ColorJitter(jitter, jitter, jitter)
        if augment == "jitter"
        else transforms.TrivialAugmentWide()
    )
    augment_image = transforms.Compose(
        [
            transforms.RandomResizedCrop(spec.size, scale=(min_scale, 1.0)),
            transforms.RandomHorizontalFlip(),
            extra,
        ]
    )
    return lambda img: torch.from_numpy(to_array(augment_image(img), spec))


def class_weights(targets: Sequence[int], num_classes: int) -> torch.Tensor:
    """'Balanced' weights n / (k * count_c), so rare classes weigh as much as common ones."""
    counts = np.bincount(np.asarray(targets, dtype=np.int64), minlength=num_classes)
    weights = len(targets) / (num_classes * np.maximum(counts, 1))
    return torch.tensor(weights, dtype=torch.float32)
