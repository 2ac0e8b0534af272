"""The OpenAPI description of the field routes (sites, species) and the result filters."""

from __future__ import annotations

from typing import Any

from service.web.api.openapi import _json, _op, _query, _ref

_NAME = {"type": "string", "minLength": 1, "maxLength": 200}
_TEXT = {"type": "string"}
_NULLABLE_NUMBER = {"type": ["number", "null"]}


def _path_name(name: str, what: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "description": what, "schema": _NAME}


_SITE = _path_name("name", "The site's name (its folder).")
_LABEL = _path_name("label", "The model label.")
_CSV = {"description": "", "content": {"text/csv": {"schema": {"type": "string"}}}}

SCHEMAS: dict[str, Any] = {
    "Site": {
        "type": "object",
        "properties": {
            "name": _TEXT,
            "latitude": _NULLABLE_NUMBER,
            "longitude": _NULLABLE_NUMBER,
            "utc_offset": {"type": ["string", "null"], "examples": ["+08:00"]},
            "utc_offset_minutes": {"type": ["integer", "null"]},
            "clock_correction_seconds": {"type": "integer"},
            "notes": _TEXT,
        },
    },
    "SiteBody": {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "latitude": {"type": ["number", "null"], "minimum": -90, "maximum": 90},
            "longitude": {"type": ["number", "null"], "minimum": -180, "maximum": 180},
            "utc_offset": {"type": ["string", "null"], "examples": ["+08:00"]},
            "clock_correction_seconds": {"type": "integer"},
            "notes": _TEXT,
        },
    },
    "Species": {
        "type": "object",
        "properties": {
            "label": _TEXT,
            "scientific_name": _TEXT,
            "genus": _TEXT,
            "family": _TEXT,
            "common_name": _TEXT,
            "medically_significant": {"type": "boolean"},
            "lookalike_group": {"type": ["string", "null"]},
            "review_threshold": _NULLABLE_NUMBER,
        },
    },
    "SpeciesBody": {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "scientific_name": _TEXT,
            "genus": _TEXT,
            "family": _TEXT,
            "common_name": _TEXT,
            "medically_significant": {"type": "boolean"},
            "lookalike_group": {"type": ["string", "null"]},
            "review_threshold": {"type": ["number", "null"], "minimum": 0, "maximum": 1},
        },
    },
    "SiteList": {
        "type": "object",
        "properties": {"items": {"type": "array", "items": _ref("Site")}, "total": {}},
    },
    "SpeciesList": {
        "type": "object",
        "properties": {"items": {"type": "array", "items": _ref("Species")}, "total": {}},
    },
}

RESULT_ROW_FIELDS: dict[str, Any] = {
    "site": {"type": ["string", "null"]},
    "final_label": {"type": ["string", "null"]},
    "final_source": {"type": ["string", "null"], "enum": ["human", "rolled_up", "machine", None]},
    "human_decision": {"type": ["string", "null"], "enum": ["label", "unknown", "unusable", None]},
    "reviewed_by": {"type": ["string", "null"]},
    "reviewed_at": {"type": ["string", "null"], "format": "date-time"},
    "machine_label": {"type": ["string", "null"]},
    "machine_confidence": _NULLABLE_NUMBER,
    "venomous_in_top_k": {"type": "array", "items": _TEXT},
    "venom_risk": {"type": "boolean"},
    "captured_at": {
        "type": ["string", "null"],
        "description": "Camera time corrected by the site's clock correction, ISO 8601 with "
        "the UTC offset where known (EXIF OffsetTimeOriginal, else the site's), none where not.",
    },
    "captured_exif": {"type": ["string", "null"], "description": "The raw EXIF date-time."},
}

RESULT_FILTERS = [
    _query("final_label", {"type": "string", "minLength": 1}, "Only this final label."),
    _query("reviewed", {"type": "boolean"}, "With a current human decision (true) or not."),
    _query("site", {"type": "string", "minLength": 1}, "Only this site."),
]

PATHS: dict[str, Any] = {
    "/sites": {
        "get": _op("List sites", "viewer", {200: _json(_ref("SiteList"), "Every site.")}),
    },
    "/sites/{name}": {
        "put": _op(
            "Create or replace a site",
            "admin",
            {200: _json(_ref("Site"), "The saved site.")},
            (400, 413, 415),
            parameters=[_SITE],
            body="SiteBody",
        ),
        "delete": _op(
            "Delete a site", "admin", {204: {"description": "Deleted."}}, (404,), parameters=[_SITE]
        ),
    },
    "/species": {
        "get": _op(
            "The species table", "viewer", {200: _json(_ref("SpeciesList"), "Every species.")}
        ),
    },
    "/species/{label}": {
        "put": _op(
            "Create or replace one species",
            "admin",
            {200: _json(_ref("Species"), "The saved species.")},
            (400, 413, 415),
            parameters=[_LABEL],
            body="SpeciesBody",
        ),
    },
    "/species.csv": {
        "get": _op("The species table as CSV", "viewer", {200: {**_CSV, "description": "CSV."}}),
    },
    "/species/import": {
        "post": _op(
            "Import species from CSV",
            "admin",
            {200: _json({"type": "object"}, "How many rows were imported.")},
            (400, 413),
            description="A text/csv body with a `label` column and any of scientific_name, "
            "genus, family, common_name, medically_significant, lookalike_group, "
            "review_threshold. All rows or none.",
        ),
    },
}


def add_field_paths(spec: dict[str, Any]) -> None:
    """Add the field routes, schemas and result filters to a copy of the spec."""
    spec["paths"].update(PATHS)
    spec["components"]["schemas"].update(SCHEMAS)
    spec["components"]["schemas"]["ResultRow"]["properties"].update(RESULT_ROW_FIELDS)
    params = spec["paths"]["/jobs/{job_id}/predictions"]["get"]["parameters"]
    params[-2:-2] = RESULT_FILTERS
    export = spec["paths"]["/jobs/{job_id}/results.csv"]["get"]
    for param in export["parameters"]:
        if param["name"] == "format":
            param["schema"]["enum"] = ["csv", "json", "megadetector", "camtrap-dp"]
            param["description"] = (
                "Export format: CSV, a JSON array of ResultRow, MegaDetector batch output 1.4 "
                "(JSON), or a Camtrap DP 1.0.2 package (zip)."
            )
    export["responses"]["200"]["content"]["application/zip"] = {
        "schema": {"type": "string", "contentMediaType": "application/zip"}
    }
