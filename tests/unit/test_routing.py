"""The review routing rule."""

from __future__ import annotations

import pytest

from service.routing import ReviewRules, SpeciesRule, describe_reasons, route_for_review

TOPK = [("Naja_samarensis", 0.5), ("Ptyas_carinata", 0.3)]


@pytest.mark.parametrize(
    ("confidence", "threshold", "routed"),
    [
        (0.59, 0.6, True),
        (0.6, 0.6, False),
        (0.99, 0.6, False),
        (0.0, 0.0, False),
        (0.999, 1.0, True),
    ],
)
def test_below_threshold_is_routed(confidence: float, threshold: float, routed: bool) -> None:
    routing = route_for_review("Ptyas_carinata", confidence, TOPK, ReviewRules(threshold))
    assert routing.needs_review == routed
    if routed:
        assert routing.reasons == (f"low_confidence<{threshold:g}",)


def test_risky_labels_are_always_routed() -> None:
    rules = ReviewRules(0.5, always_review=frozenset({"Naja_samarensis"}))
    assert route_for_review("Naja_samarensis", 0.99, TOPK, rules).reasons == ("risky_label",)
    assert not route_for_review("Ptyas_carinata", 0.99, TOPK, rules).needs_review
    # Every reason that holds is recorded.
    assert route_for_review("Naja_samarensis", 0.1, TOPK, rules).reasons == (
        "low_confidence<0.5",
        "risky_label",
    )


# ---------------------------------------------------------------- venom, look-alikes, rollup

SPECIES = {
    "nerodia-sipedon": SpeciesRule(genus="Nerodia"),
    "nerodia-fasciata": SpeciesRule(genus="Nerodia"),
    "agkistrodon-piscivorus": SpeciesRule(
        genus="Agkistrodon", venomous=True, lookalike_group="water-snakes"
    ),
    "Ptyas_carinata": SpeciesRule(genus="Ptyas", lookalike_group="cobra-like"),
    "Naja_philippinensis": SpeciesRule(genus="Naja", venomous=True, lookalike_group="cobra-like"),
    "Naja_samarensis": SpeciesRule(genus="Naja", venomous=True, threshold=0.95),
}


def _rules(**overrides: object) -> ReviewRules:
    args: dict[str, object] = {
        "threshold": 0.6, "species": SPECIES, "venom_alert": 0.05, "lookalike_margin": 0.3,
    }  # fmt: skip
    args.update(overrides)
    return ReviewRules(**args)  # type: ignore[arg-type]


def test_a_cottonmouth_second_at_0_078_is_routed_first() -> None:
    """The issue's case: a confident water snake with a cottonmouth in its top-k."""
    topk = [("nerodia-sipedon", 0.92), ("agkistrodon-piscivorus", 0.078)]
    routing = route_for_review("nerodia-sipedon", 0.92, topk, _rules())
    assert routing.reasons == ("venomous_in_top_k:agkistrodon-piscivorus@0.08",)
    assert routing.venom_risk and routing.priority > 1.0
    plain = route_for_review("nerodia-sipedon", 0.5, [("nerodia-sipedon", 0.5)], _rules())
    assert routing.priority > plain.priority  # venom risk outranks any uncertainty


def test_a_cobra_second_behind_a_confident_ptyas_is_routed_with_every_reason() -> None:
    topk = [("Ptyas_carinata", 0.70), ("Naja_philippinensis", 0.29)]
    routing = route_for_review("Ptyas_carinata", 0.70, topk, _rules())
    assert routing.reasons == ("venomous_in_top_k:Naja_philippinensis@0.29",)
    close = [("Ptyas_carinata", 0.62), ("Naja_philippinensis", 0.36)]
    assert route_for_review("Ptyas_carinata", 0.62, close, _rules()).reasons == (
        "venomous_in_top_k:Naja_philippinensis@0.36",
        "lookalike:cobra-like<0.3",
    )


@pytest.mark.parametrize(("p", "routed"), [(0.049, False), (0.05, True)])
def test_venom_alert_is_inclusive(p: float, routed: bool) -> None:
    topk = [("nerodia-sipedon", 0.95), ("agkistrodon-piscivorus", p)]
    assert route_for_review("nerodia-sipedon", 0.95, topk, _rules()).venom_risk is routed


def test_lookalikes_with_a_wide_margin_or_in_other_groups_are_not_routed() -> None:
    wide = [("Ptyas_carinata", 0.80), ("Naja_philippinensis", 0.04)]
    assert not route_for_review("Ptyas_carinata", 0.80, wide, _rules()).needs_review
    other = [("nerodia-sipedon", 0.65), ("nerodia-fasciata", 0.35)]  # no group
    assert not route_for_review("nerodia-sipedon", 0.65, other, _rules()).needs_review


def test_a_species_threshold_replaces_the_job_threshold() -> None:
    topk = [("Naja_samarensis", 0.9), ("Ptyas_carinata", 0.1)]
    routing = route_for_review("Naja_samarensis", 0.9, topk, _rules(venom_alert=1.0))
    assert routing.reasons == ("low_confidence<0.95",)


def test_genus_rollup_when_no_species_but_the_genus_is_sure() -> None:
    topk = [("nerodia-sipedon", 0.40), ("nerodia-fasciata", 0.35), ("Ptyas_carinata", 0.2)]
    routing = route_for_review("nerodia-sipedon", 0.40, topk, _rules())
    assert routing.rolled_up_label == "Nerodia" and routing.needs_review  # raw top-k is kept


def test_no_rollup_when_a_species_is_sure_or_no_genus_is() -> None:
    sure = [("nerodia-sipedon", 0.7), ("nerodia-fasciata", 0.3)]
    assert route_for_review("nerodia-sipedon", 0.7, sure, _rules()).rolled_up_label is None
    spread = [("nerodia-sipedon", 0.3), ("Ptyas_carinata", 0.3), ("nerodia-fasciata", 0.2)]
    assert route_for_review("nerodia-sipedon", 0.3, spread, _rules()).rolled_up_label is None
    unknown = [("mystery", 0.3), ("other", 0.3)]  # labels outside the species table
    assert route_for_review("mystery", 0.3, unknown, _rules()).rolled_up_label is None


def test_reasons_read_as_words() -> None:
    text = describe_reasons("low_confidence<0.6; venomous_in_top_k:Naja_philippinensis@0.29")
    assert text == "confidence below 60 %; VENOMOUS Naja philippinensis suggested at 29 %"
