"""Dataset scanning: unreadable files skipped, leaks and tiny classes refused, messy names kept."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from training.backbones import default_spec
from training.data import (
    DataError,
    SafeImageFolder,
    class_weights,
    decode_for_training,
    eval_loader,
    eval_transform,
    scan_dataset,
    train_transform,
)

pytestmark = pytest.mark.torch

MESSY = ["Philippine Cobra (Naja philippinensis)", "Keel-scaled Rat Snake (Ptyas carinata)"]


def _image(path: Path, seed: int, size: int = 40) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 255, (size, size + 8, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)


def _dataset(
    root: Path, per_class: dict[str, int], splits: tuple[str, ...] = ("train", "val")
) -> Path:
    seed = 0
    for split in splits:
        for label, count in per_class.items():
            for i in range(count if split == "train" else 2):
                seed += 1
                _image(root / split / label / f"{i}.png", seed)
    return root


def test_messy_class_names_are_kept_in_sorted_order(tmp_path: Path) -> None:
    data = scan_dataset(_dataset(tmp_path, dict.fromkeys(MESSY, 5)))
    assert data.classes == sorted(MESSY)
    assert data.val_source == "folder"
    assert {s.label for s in data.splits["val"]} == {0, 1}


def test_corrupt_and_truncated_images_are_skipped_with_a_reason(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root = _dataset(tmp_path, dict.fromkeys(MESSY, 5))
    folder = root / "train" / MESSY[0]
    (folder / "garbage.jpg").write_bytes(b"not an image at all")
    (folder / "empty.jpg").write_bytes(b"")
    good = (folder / "0.png").read_bytes()
    (folder / "truncated.png").write_bytes(good[: len(good) // 2])
    data = scan_dataset(root)
    spec = default_spec("mobilenet_v3_small", 32)
    with caplog.at_level("WARNING"):
        dataset = SafeImageFolder(
            data.splits["train"], data.classes, eval_loader(spec), eval_transform(spec)
        )
    assert len(dataset) == 10
    assert sorted(p.name for p, _ in dataset.skipped) == [
        "empty.jpg",
        "garbage.jpg",
        "truncated.png",
    ]
    assert {reason for _, reason in dataset.skipped} <= {"not_an_image", "empty_file", "corrupt"}
    assert "skipping" in caplog.text
    image, label = dataset[0]
    assert tuple(image.shape) == (3, 32, 32) and label in (0, 1)


def test_a_file_in_two_splits_is_refused_as_a_leak(tmp_path: Path) -> None:
    root = _dataset(tmp_path, dict.fromkeys(MESSY, 5))
    shutil.copy(root / "train" / MESSY[0] / "0.png", root / "val" / MESSY[0] / "copy.png")
    with pytest.raises(DataError, match="more than one split"):
        scan_dataset(root)


def test_a_class_with_too_few_images_is_refused(tmp_path: Path) -> None:
    root = _dataset(tmp_path, {MESSY[0]: 5, MESSY[1]: 2})
    with pytest.raises(DataError, match="fewer than 5"):
        scan_dataset(root, min_train=5)


def test_without_val_a_stratified_split_keeps_copies_together(tmp_path: Path) -> None:
    root = _dataset(tmp_path, dict.fromkeys(MESSY, 10), splits=("train",))
    for i in range(3):  # byte-identical copies inside train must not straddle train/val
        shutil.copy(root / "train" / MESSY[0] / "0.png", root / "train" / MESSY[0] / f"dup{i}.png")
    data = scan_dataset(root, val_fraction=0.2, seed=0)
    assert data.val_source.startswith("stratified")
    train, val = data.splits["train"], data.splits["val"]
    assert len(train) + len(val) == 23
    assert {s.label for s in val} == {0, 1}
    assert not {s.sha256 for s in train} & {s.sha256 for s in val}


def test_training_transform_uses_the_served_normalisation(tmp_path: Path) -> None:
    _image(tmp_path / "a.png", 1, size=100)
    spec = default_spec("efficientnet_lite0", 48)
    img = decode_for_training(tmp_path / "a.png", short_side=60)
    assert min(img.size) == 60
    for augment in ("jitter", "trivial"):
        tensor = train_transform(spec, augment=augment)(img)
        assert tuple(tensor.shape) == (3, 48, 48)
        assert float(tensor.min()) >= -1.0 - 1e-6 and float(tensor.max()) <= 1.0 + 1e-6
    with pytest.raises(ValueError, match="augment must be one of"):
        train_transform(spec, augment="autoaugment")


def test_class_weights_balance_rare_classes() -> None:
    weights = class_weights([0, 0, 0, 1], 2)
    assert weights.tolist() == pytest.approx([4 / 6, 2.0])
