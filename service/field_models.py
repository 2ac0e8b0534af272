"""Typed models of what a survey team knows: its sites and its species table."""

from __future__ import annotations

from sqlalchemy import Float, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from service.models import Base, created, intpk, when


class Site(Base):
    """A survey site (a folder level under a job's folder): place, UTC offset, clock error."""

    __tablename__ = "sites"

    id: Mapped[intpk]
    name: Mapped[str] = mapped_column(String(200), nullable=False, unique=True)
    latitude: Mapped[float | None] = mapped_column(Float, nullable=True)
    longitude: Mapped[float | None] = mapped_column(Float, nullable=True)
    # Used when a photo's EXIF gives no offset of its own.
    utc_offset_minutes: Mapped[int | None] = mapped_column(Integer, nullable=True)
    # Added to every camera time of this site (a camera set 90 s slow needs +90).
    clock_correction_seconds: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    notes: Mapped[str] = mapped_column(Text, nullable=False, default="")
    created_at: Mapped[created]
    updated_at: Mapped[when]


class Species(Base):
    """One label of the species table: taxonomy, venom, look-alikes, its review threshold."""

    __tablename__ = "species"

    id: Mapped[intpk]
    label: Mapped[str] = mapped_column(String(200), nullable=False, unique=True)
    scientific_name: Mapped[str] = mapped_column(String(200), nullable=False, default="")
    genus: Mapped[str] = mapped_column(String(100), nullable=False, default="")
    family: Mapped[str] = mapped_column(String(100), nullable=False, default="")
    common_name: Mapped[str] = mapped_column(String(200), nullable=False, default="")
    medically_significant: Mapped[bool] = mapped_column(default=False, nullable=False)
    lookalike_group: Mapped[str | None] = mapped_column(String(100), nullable=True)
    review_threshold: Mapped[float | None] = mapped_column(Float, nullable=True)
    created_at: Mapped[created]
    updated_at: Mapped[when]
