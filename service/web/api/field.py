"""Sites and the species table: read by viewers, edited by admins (JSON and CSV)."""

from __future__ import annotations

import io

from flask import request
from flask.typing import ResponseReturnValue
from pydantic import Field

from service import sites, species
from service.errors import BadInput
from service.models import Role
from service.web.api import bp
from service.web.api.inputs import Body
from service.web.api.operations import Content, ItemList, Output, operation
from service.web.auth import requires
from service.web.context import db_read, db_session
from service.web.downloads import species_csv_response

MAX_CSV_BYTES = 1024 * 1024


class SiteBody(Body):
    """A site's place, clock and notes (a missing field is cleared)."""

    latitude: float | None = Field(default=None, ge=-90, le=90, allow_inf_nan=False)
    longitude: float | None = Field(default=None, ge=-180, le=180, allow_inf_nan=False)
    utc_offset: str | None = Field(default=None, max_length=10)
    """The cameras' UTC offset, e.g. `+08:00`; unset: times stay camera-local."""
    clock_correction_seconds: int = Field(default=0, ge=-366 * 86400, le=366 * 86400)
    """Added to every camera time of the site (a camera clock that ran wrong)."""
    notes: str = Field(default="", max_length=2000)


class SpeciesBody(Body):
    """One species row (a missing field is cleared)."""

    scientific_name: str = Field(default="", max_length=200)
    genus: str = Field(default="", max_length=100)
    family: str = Field(default="", max_length=100)
    common_name: str = Field(default="", max_length=200)
    medically_significant: bool = False
    """Venomous: any suggestion of it at or above HERPSCORE_VENOM_ALERT sends a photo to review."""
    lookalike_group: str | None = Field(default=None, max_length=100)
    """Species of one group that are easily confused (close calls go to review)."""
    review_threshold: float | None = Field(default=None, ge=0, le=1, allow_inf_nan=False)
    """This species' own review threshold; unset: the job's."""


class SiteOut(Output):
    """A survey site: where it is and how its cameras' clocks relate to UTC."""

    name: str
    latitude: float | None
    longitude: float | None
    utc_offset: str | None
    utc_offset_minutes: int | None
    clock_correction_seconds: int
    notes: str


class SiteList(ItemList[SiteOut]):
    """Every site."""


class SpeciesOut(Output):
    """One label's taxonomy, venom and look-alikes."""

    label: str
    scientific_name: str
    genus: str
    family: str
    common_name: str
    medically_significant: bool
    lookalike_group: str | None
    review_threshold: float | None


class SpeciesList(ItemList[SpeciesOut]):
    """The whole species table."""


class Imported(Output):
    """How many species rows were created or updated."""

    imported: int


CSV = Content("The species table as CSV (the columns of the import).", {"text/csv": str})


@bp.get("/sites")
@requires(Role.VIEWER)
@operation(SiteList)
def list_sites() -> ResponseReturnValue:
    """List survey sites."""
    with db_read() as session:
        items = [sites.site_to_dict(s) for s in sites.list_sites(session)]
    return {"items": items, "total": len(items)}


@bp.put("/sites/<name>")
@requires(Role.ADMIN)
@operation(SiteOut, body=SiteBody)
def save_site(name: str, body: SiteBody) -> ResponseReturnValue:
    """Create or replace a site.

    Its place, UTC offset and camera clock correction; results and exports use the
    corrected times, and the raw EXIF value is kept.
    """
    with db_session() as session:
        return sites.site_to_dict(sites.save_site(session, name, **body.model_dump()))


@bp.delete("/sites/<name>")
@requires(Role.ADMIN)
@operation({204: Content("Deleted.", {})})
def delete_site(name: str) -> ResponseReturnValue:
    """Delete a site (its photos keep their site name)."""
    with db_session() as session:
        sites.delete_site(session, name)
    return "", 204


@bp.get("/species")
@requires(Role.VIEWER)
@operation(SpeciesList)
def list_species() -> ResponseReturnValue:
    """List the species table."""
    with db_read() as session:
        items = [species.species_to_dict(s) for s in species.list_species(session)]
    return {"items": items, "total": len(items)}


@bp.put("/species/<label>")
@requires(Role.ADMIN)
@operation(SpeciesOut, body=SpeciesBody)
def save_species(label: str, body: SpeciesBody) -> ResponseReturnValue:
    """Create or replace one species row."""
    with db_session() as session:
        return species.species_to_dict(species.save_species(session, label, **body.model_dump()))


@bp.get("/species.csv")
@requires(Role.VIEWER)
@operation({200: CSV})
def export_species() -> ResponseReturnValue:
    """Download the species table as CSV."""
    return species_csv_response()


@bp.post("/species/import")
@requires(Role.ADMIN)
@operation(Imported, raw_body=CSV)
def import_species() -> ResponseReturnValue:
    """Import the species table.

    Create or update species from a CSV body (`text/csv`, a `label` column and any of the
    others); all rows or none.
    """
    request.max_content_length = MAX_CSV_BYTES
    if request.mimetype != "text/csv":
        raise BadInput("send the species table as text/csv")
    try:
        text = request.get_data(cache=False).decode("utf-8-sig")
    except UnicodeDecodeError:
        raise BadInput("the CSV is not UTF-8") from None
    with db_session() as session:
        count = species.import_csv(session, io.StringIO(text))
    return {"imported": count}
