"""The species table: parsing model labels, CSV import/export, edits, and what routing needs."""

from __future__ import annotations

import csv
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, TextIO

from sqlalchemy import select
from sqlalchemy.orm import Session

from service.errors import BadInput, NotFound
from service.field_models import Species
from service.models import utcnow
from service.routing import ReviewRules, SpeciesRule

CSV_FIELDS = [
    "label",
    "scientific_name",
    "genus",
    "family",
    "common_name",
    "medically_significant",
    "lookalike_group",
    "review_threshold",
]
_TRUE = {"1", "true", "yes", "y", "x"}
_FALSE = {"", "0", "false", "no", "n"}
_PAREN = re.compile(r"^\s*(?P<common>.*?)\s*\((?P<sci>[^()]+)\)\s*$")
MAX_ROWS = 100_000


@dataclass(frozen=True)
class ParsedLabel:
    scientific_name: str
    genus: str
    common_name: str


def parse_label(label: str) -> ParsedLabel:
    """`Naja_philippinensis`, `naja-philippinensis`, `Philippine Cobra (Naja philippinensis)`
    -> scientific name `Naja philippinensis`, genus `Naja`, common name when given."""
    common = ""
    text = label.strip()
    match = _PAREN.match(text)
    if match:
        common, text = match["common"], match["sci"]
    words = [w for w in re.split(r"[\s_\-]+", text) if w]
    if not words or not all(w.isalpha() for w in words) or len(words) > 3:
        return ParsedLabel("", "", common)  # not a binomial: leave the taxonomy empty
    genus = words[0].capitalize()
    if len(words) == 1:
        return ParsedLabel(genus, genus, common)
    return ParsedLabel(" ".join([genus, *(w.lower() for w in words[1:])]), genus, common)


def add_labels(session: Session, labels: Iterable[str]) -> int:
    """Add a row for each label not in the table yet (parsed; not venomous until an admin
    says so). Returns how many were added. Existing rows are never touched."""
    wanted = list(dict.fromkeys(labels))
    known = set(session.scalars(select(Species.label).where(Species.label.in_(wanted))))
    added = 0
    for label in wanted:
        if label in known or not label.strip():
            continue
        parsed = parse_label(label)
        session.add(
            Species(
                label=label[:200],
                scientific_name=parsed.scientific_name,
                genus=parsed.genus,
                family="",
                common_name=parsed.common_name,
                medically_significant=False,
            )
        )
        added += 1
    session.flush()
    return added


def list_species(session: Session) -> list[Species]:
    return list(session.scalars(select(Species).order_by(Species.label)))


def get_species(session: Session, label: str) -> Species:
    species = session.scalar(select(Species).where(Species.label == label))
    if species is None:
        raise NotFound(f"no species with label {label!r}")
    return species


def _flag(value: Any, field: str) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value if value is not None else "").strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise BadInput(f"{field} must be yes or no", {"field": field, "value": str(value)[:50]})


def _threshold(value: Any) -> float | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise BadInput("review_threshold must be a number in [0, 1]") from None
    if not math.isfinite(number) or not 0.0 <= number <= 1.0:
        raise BadInput("review_threshold must be a number in [0, 1]")
    return number


def _text(value: Any, field: str, limit: int) -> str:
    text = str(value if value is not None else "").strip()
    if len(text) > limit or "\x00" in text:
        raise BadInput(f"{field} is longer than {limit} characters", {"field": field})
    return text


def save_species(session: Session, label: str, **fields: Any) -> Species:
    """Create or update one species; only the fields given change; every value is checked."""
    label = _text(label, "label", 200)
    if not label:
        raise BadInput("a species needs a label", {"field": "label"})
    unknown = set(fields) - set(CSV_FIELDS)
    if unknown:
        raise BadInput(f"unknown species fields: {', '.join(sorted(unknown))}")
    species = session.scalar(select(Species).where(Species.label == label))
    if species is None:
        parsed = parse_label(label)
        species = Species(
            label=label, scientific_name=parsed.scientific_name, genus=parsed.genus,
            family="", common_name=parsed.common_name, medically_significant=False,
        )  # fmt: skip
        session.add(species)
    for name in ("scientific_name", "common_name"):
        if name in fields:
            setattr(species, name, _text(fields[name], name, 200))
    for name in ("genus", "family"):
        if name in fields:
            setattr(species, name, _text(fields[name], name, 100))
    if "medically_significant" in fields:
        species.medically_significant = _flag(
            fields["medically_significant"], "medically_significant"
        )
    if "lookalike_group" in fields:
        species.lookalike_group = _text(fields["lookalike_group"], "lookalike_group", 100) or None
    if "review_threshold" in fields:
        species.review_threshold = _threshold(fields["review_threshold"])
    species.updated_at = utcnow()
    session.flush()
    return species


def import_csv(session: Session, stream: TextIO) -> int:
    """Create or update species from a CSV with a `label` column and any of CSV_FIELDS.

    All or nothing: a bad row raises BadInput naming its line, and the caller rolls back.
    """
    try:
        return _import_rows(session, csv.DictReader(stream))
    except csv.Error as exc:  # malformed CSV (a stray line break inside a field, ...)
        raise BadInput(f"the species CSV cannot be read: {exc}") from None


def _import_rows(session: Session, reader: csv.DictReader[str]) -> int:
    if not reader.fieldnames or "label" not in reader.fieldnames:
        raise BadInput("the species CSV needs a header row with a 'label' column")
    unknown = set(reader.fieldnames) - set(CSV_FIELDS)
    if unknown:
        raise BadInput(f"unknown species CSV columns: {', '.join(sorted(unknown))}")
    count = 0
    for line, row in enumerate(reader, start=2):
        if count >= MAX_ROWS:
            raise BadInput(f"the species CSV has more than {MAX_ROWS} rows")
        try:
            fields = {k: v for k, v in row.items() if k != "label" and k is not None}
            save_species(session, row.get("label") or "", **fields)
        except BadInput as exc:
            raise BadInput(f"line {line}: {exc.message}", exc.details) from None
        count += 1
    return count


def export_csv(session: Session, out: TextIO) -> None:
    """The whole table as CSV (the same columns `import_csv` reads)."""
    writer = csv.writer(out)
    writer.writerow(CSV_FIELDS)
    for s in list_species(session):
        row = species_to_dict(s)
        row["medically_significant"] = "yes" if s.medically_significant else "no"
        writer.writerow(["" if row[f] is None else row[f] for f in CSV_FIELDS])


def species_to_dict(species: Species) -> dict[str, Any]:
    return {f: getattr(species, f) for f in CSV_FIELDS}


def venomous_labels(session: Session) -> frozenset[str]:
    """Labels marked medically significant."""
    return frozenset(
        session.scalars(select(Species.label).where(Species.medically_significant.is_(True)))
    )


def routing_rules(
    session: Session, threshold: float, always_review: Iterable[str], venom_alert: float,
    lookalike_margin: float,
) -> ReviewRules:  # fmt: skip
    """The review rules of a job: its threshold, the settings and the whole species table."""
    return ReviewRules(
        threshold=threshold,
        always_review=frozenset(always_review),
        # Columns, not ORM objects: every chunk reads the whole table, and loading it as
        # entities cost the scoring worker several times more CPU.
        species={
            label: SpeciesRule(genus, venomous, group, review_threshold)
            for label, genus, venomous, group, review_threshold in session.execute(
                select(
                    Species.label,
                    Species.genus,
                    Species.medically_significant,
                    Species.lookalike_group,
                    Species.review_threshold,
                )
            )
        },
        venom_alert=venom_alert,
        lookalike_margin=lookalike_margin,
    )
