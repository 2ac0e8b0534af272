"""Labels found by their species-table names: the item answer carries them, typed names map."""

from __future__ import annotations

from sqlalchemy import select

from service import review
from service.db import session_scope
from service.field_models import Species
from service.models import Annotation, Decision, ReviewItem
from service.review_queue import decide_known
from service.species import add_labels
from tests.integration.test_review import LABELS, _claim, seed_queue


def test_the_item_answer_names_its_labels_and_a_typed_name_saves_the_label(sqlite_url):
    seed_queue(sqlite_url, count=3)
    with session_scope(sqlite_url) as session:
        add_labels(session, LABELS)
        cobra = session.scalar(select(Species).where(Species.label == "Naja_philippinensis"))
        assert cobra is not None
        cobra.common_name = "Philippine Cobra"
    item_id = _claim(sqlite_url, "ana")
    with session_scope(sqlite_url) as session:
        ctx = review.item_context(session, session.get(ReviewItem, item_id))
        assert ctx["label_names"]["Naja_philippinensis"] == {
            "common_name": "Philippine Cobra",
            "scientific_name": "Naja philippinensis",
        }
        assert ctx["label_names"]["Ptyas_carinata"]["common_name"] == ""
        assert set(ctx["label_names"]) == set(LABELS)

        decide_known(session, item_id, "ana", Decision.LABEL, "philippine-COBRA")
        note = session.scalar(select(Annotation))
        assert note is not None and note.label == "Naja_philippinensis"
