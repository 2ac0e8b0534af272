"""Sites and the species table: read by viewers, edited by admins (JSON and CSV)."""

from __future__ import annotations

import io

from flask import Response, request
from flask.typing import ResponseReturnValue
from pydantic import Field

from service import sites, species
from service.errors import BadInput
from service.models import Role
from service.web.api import bp
from service.web.api.inputs import Body, parse_body
from service.web.auth import requires
from service.web.context import db_read, db_session

MAX_CSV_BYTES = 1024 * 1024


class SiteBody(Body):
    latitude: float | None = Field(default=None, ge=-90, le=90, allow_inf_nan=False)
    longitude: float | None = Field(default=None, ge=-180, le=180, allow_inf_nan=False)
    utc_offset: str | None = Field(default=None, max_length=10)
    clock_correction_seconds: int = Field(default=0, ge=-366 * 86400, le=366 * 86400)
    notes: str = Field(default="", max_length=2000)


class SpeciesBody(Body):
    scientific_name: str = Field(default="", max_length=200)
    genus: str = Field(default="", max_length=100)
    family: str = Field(default="", max_length=100)
    common_name: str = Field(default="", max_length=200)
    medically_significant: bool = False
    lookalike_group: str | None = Field(default=None, max_length=100)
    review_threshold: float | None = Field(default=None, ge=0, le=1, allow_inf_nan=False)


@bp.get("/sites")
@requires(Role.VIEWER)
def list_sites() -> ResponseReturnValue:
    with db_read() as session:
        items = [sites.site_to_dict(s) for s in sites.list_sites(session)]
    return {"items": items, "total": len(items)}


@bp.put("/sites/<name>")
@requires(Role.ADMIN)
def save_site(name: str) -> ResponseReturnValue:
    """Create or replace a site's place, UTC offset and clock correction."""
    body = parse_body(SiteBody)
    with db_session() as session:
        return sites.site_to_dict(sites.save_site(session, name, **body.model_dump()))


@bp.delete("/sites/<name>")
@requires(Role.ADMIN)
def delete_site(name: str) -> ResponseReturnValue:
    with db_session() as session:
        sites.delete_site(session, name)
    return "", 204


@bp.get("/species")
@requires(Role.VIEWER)
def list_species() -> ResponseReturnValue:
    with db_read() as session:
        items = [species.species_to_dict(s) for s in species.list_species(session)]
    return {"items": items, "total": len(items)}


@bp.put("/species/<label>")
@requires(Role.ADMIN)
def save_species(label: str) -> ResponseReturnValue:
    """Create or replace one species row."""
    body = parse_body(SpeciesBody)
    with db_session() as session:
        return species.species_to_dict(species.save_species(session, label, **body.model_dump()))


@bp.get("/species.csv")
@requires(Role.VIEWER)
def export_species() -> ResponseReturnValue:
    out = io.StringIO()
    with db_read() as session:
        species.export_csv(session, out)
    return Response(
        out.getvalue(),
        mimetype="text/csv",
        headers={"Content-Disposition": 'attachment; filename="species.csv"'},
    )


@bp.post("/species/import")
@requires(Role.ADMIN)
def import_species() -> ResponseReturnValue:
    """Create or update species from a CSV body (text/csv); all rows or none."""
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
