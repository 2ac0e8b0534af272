"""The field pages: survey sites and the species table (viewers read, admins edit)."""

from __future__ import annotations

import io

from flask import flash, redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue

from service import sites, species
from service.errors import BadInput
from service.models import Role
from service.web.admin import bp, role_required
from service.web.context import db_read, db_session
from service.web.downloads import species_csv_response

MAX_CSV_BYTES = 1024 * 1024
_SITE_FIELDS = ("latitude", "longitude", "utc_offset", "clock_correction_seconds", "notes")
_SPECIES_FIELDS = (
    "scientific_name", "genus", "family", "common_name", "lookalike_group", "review_threshold",
)  # fmt: skip


@bp.get("/sites")
@role_required(Role.VIEWER)
def sites_page() -> ResponseReturnValue:
    with db_read() as session:
        rows = [sites.site_to_dict(s) for s in sites.list_sites(session)]
    return render_template("field/sites.html", sites=rows)


@bp.post("/sites")
@role_required(Role.ADMIN)
def save_site() -> ResponseReturnValue:
    """Create or update a site from the form (empty fields clear optional values)."""
    fields = {f: request.form.get(f, "").strip() for f in _SITE_FIELDS}
    with db_session() as session:
        site = sites.save_site(session, request.form.get("name", ""), **fields)
        flash(f"Site {site.name} saved.", "success")
    return redirect(url_for("admin.sites_page"), 303)


@bp.post("/sites/<name>/delete")
@role_required(Role.ADMIN)
def delete_site(name: str) -> ResponseReturnValue:
    with db_session() as session:
        sites.delete_site(session, name)
    flash(f"Site {name} deleted.", "success")
    return redirect(url_for("admin.sites_page"), 303)


@bp.get("/species")
@role_required(Role.VIEWER)
def species_page() -> ResponseReturnValue:
    with db_read() as session:
        rows = [species.species_to_dict(s) for s in species.list_species(session)]
    return render_template("field/species.html", species=rows)


@bp.post("/species")
@role_required(Role.ADMIN)
def save_species() -> ResponseReturnValue:
    fields: dict[str, object] = {f: request.form.get(f, "") for f in _SPECIES_FIELDS}
    fields["medically_significant"] = "medically_significant" in request.form
    with db_session() as session:
        saved = species.save_species(session, request.form.get("label", ""), **fields)
        flash(f"Species {saved.label} saved.", "success")
    return redirect(url_for("admin.species_page"), 303)


@bp.post("/species/import")
@role_required(Role.ADMIN)
def import_species() -> ResponseReturnValue:
    upload = request.files.get("file")
    if upload is None or not upload.filename:
        raise BadInput("choose a CSV file to import")
    data = upload.stream.read(MAX_CSV_BYTES + 1)
    if len(data) > MAX_CSV_BYTES:
        raise BadInput("the CSV is larger than 1 MiB")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise BadInput("the CSV is not UTF-8") from None
    with db_session() as session:
        count = species.import_csv(session, io.StringIO(text))
    flash(f"{count} species imported.", "success")
    return redirect(url_for("admin.species_page"), 303)


@bp.get("/species.csv")
@role_required(Role.VIEWER)
def export_species() -> ResponseReturnValue:
    return species_csv_response()
