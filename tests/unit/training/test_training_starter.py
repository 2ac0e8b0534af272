"""The starter model's classes, taxonomy and grouping of ImageNet's 1000 outputs."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from training.starter import IMAGENET_HERPS, NOT_A_HERP, GroupHerps, labels, taxonomy

pytestmark = pytest.mark.torch


class Fixed(nn.Module):
    """A stand-in for the ImageNet model: returns the logits it was given."""

    def __init__(self, logits: torch.Tensor) -> None:
        super().__init__()
        self.logits = logits

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.logits.expand(len(images), -1)


def test_classes_are_imagenet_herps_plus_not_a_herp_with_their_taxonomy() -> None:
    names = labels()
    assert len(names) == len(IMAGENET_HERPS) + 1 == 44 and names[-1] == NOT_A_HERP
    assert len(set(names)) == len(names)
    assert 51 not in IMAGENET_HERPS  # triceratops
    table = taxonomy()
    assert table["Indian cobra (Naja naja)"] == {
        "group": "snake", "imagenet_index": 63, "class": "Reptilia", "order": "Squamata",
        "family": "Elapidae", "genus": "Naja", "species": "Naja naja",
    }  # fmt: skip
    assert "genus" not in table["sea snake (Hydrophiinae)"]
    assert table[NOT_A_HERP] == {"group": NOT_A_HERP}
    groups = {entry["group"] for entry in table.values()}
    assert groups == {"snake", "lizard", "turtle", "crocodilian", "frog", "salamander", NOT_A_HERP}
    assert sum(entry["group"] == "snake" for entry in table.values()) == 17


def test_not_a_herp_scores_as_the_best_other_class_or_as_the_summed_rest() -> None:
    logits = torch.randn(1, 1000, generator=torch.Generator().manual_seed(0)) * 3
    probs = torch.softmax(logits, 1)[0]
    herps = list(IMAGENET_HERPS)
    rest = [i for i in range(1000) if i not in IMAGENET_HERPS]
    images = torch.zeros(2, 3, 8, 8)

    summed = torch.softmax(GroupHerps(Fixed(logits), not_a_herp="sum")(images), 1)[0]
    torch.testing.assert_close(summed[:-1], probs[herps])  # exactly ImageNet's probabilities
    torch.testing.assert_close(summed[-1], probs[rest].sum())

    best = torch.softmax(GroupHerps(Fixed(logits))(images), 1)[0]
    kept = torch.cat([probs[herps], probs[rest].max().reshape(1)])
    torch.testing.assert_close(best, kept / kept.sum())
    top = int(logits.argmax())
    assert int(best.argmax()) == (herps.index(top) if top in IMAGENET_HERPS else len(herps))


def test_test_time_flip_averages_the_probabilities_of_the_mirrored_image() -> None:
    class LeftBright(nn.Module):
        def forward(self, images: torch.Tensor) -> torch.Tensor:
            out = torch.zeros(len(images), 1000)
            out[:, 63] = images[:, 0, 0, 0] * 10  # the cobra when the top-left pixel is bright
            return out

    image = torch.zeros(1, 3, 4, 4)
    image[0, :, 0, 0] = 1.0
    plain = torch.softmax(GroupHerps(LeftBright(), not_a_herp="sum")(image), 1)[0]
    flipped = torch.softmax(GroupHerps(LeftBright(), flip=True, not_a_herp="sum")(image), 1)[0]
    cobra = list(IMAGENET_HERPS).index(63)
    uniform = 1 / 1000
    expected = (plain[cobra] + uniform) / 2
    torch.testing.assert_close(flipped[cobra], expected)
