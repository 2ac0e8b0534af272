"""Label matching: one folded form for case, spaces, hyphens, underscores and accents."""

from __future__ import annotations

import pytest

from service.labels import canonical_label, label_key


@pytest.mark.parametrize(
    "typed",
    [
        "crotalus atrox",
        "Crotalus-Atrox",
        "crotalus_atrox",
        "  CROTALUS -_ atrox ",
        "crótalus átrox",
    ],
)
def test_spellings_of_one_label_share_a_key(typed: str) -> None:
    assert label_key(typed) == label_key("Crotalus_atrox") == "crotalus atrox"


def test_a_typed_label_takes_the_known_spelling_else_stays_as_typed() -> None:
    known = ["Crotalus_atrox", "Naja_philippinensis"]
    assert canonical_label("crotalus-ATROX", known) == "Crotalus_atrox"
    assert canonical_label("Naja samarensis", known) == "Naja samarensis"
    assert label_key("Naja samarensis") != label_key("Naja_philippinensis")


def test_a_typed_common_or_scientific_name_takes_its_label() -> None:
    known = ["Naja_philippinensis", "Philippine cobra", "Boiga_dendrophila"]
    names = {
        "Naja_philippinensis": ["Philippine Cobra", "Naja philippinensis"],
        "Boiga_dendrophila": ["Mangrove snake", ""],
    }
    assert canonical_label("mangrove-SNAKE", known, names) == "Boiga_dendrophila"
    assert canonical_label("naja philippinensis", known, names) == "Naja_philippinensis"
    # A label spelt so is the label, ahead of another label's common name.
    assert canonical_label("philippine_cobra", known, names) == "Philippine cobra"
    assert canonical_label("Naja samarensis", known, names) == "Naja samarensis"
    assert canonical_label("", known, names) == ""  # an empty name matches nothing
