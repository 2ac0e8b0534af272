"""The hand-written OpenAPI 3.1 description of /api/v1; a test keeps it equal to the URL map."""

from __future__ import annotations

import copy
from typing import Any

JSON = "application/json"

DESCRIPTION = """\
herpscore scores folders of field photos with an ONNX species classifier and keeps every
prediction. Every route needs an API key, sent as `X-API-Key: <key>` (or
`Authorization: Bearer <key>`), except `GET /health` and `GET /openapi.json`, which are
public (the second is this document).

Roles: admin > reviewer > viewer; a role may do everything a lower role may.

| Route | Least role |
|---|---|
| GET /health, GET /openapi.json | public |
| GET /jobs, /jobs/{id}, /jobs/{id}/predictions, /jobs/{id}/results.csv | viewer |
| GET /models, /models/{id} | viewer |
| GET /review/stats | viewer |
| POST /jobs, POST /jobs/{id}/cancel | reviewer |
| GET /review/next, POST /review/items/{id}/decision, POST /review/undo | reviewer |
| GET /exports, /exports/{id}, /exports/test-set, /training/runs, /training/runs/{id} | viewer |
| POST /models/{id}/activate, POST /models/rollback | admin |
| POST /exports, POST /exports/{id}/pin-test-set | admin |
| POST /training/retrain, POST /training/runs/{id}/promote | admin |
| GET /keys, POST /keys, POST /keys/{id}/revoke | admin |

Each operation also states its role in `x-required-role`. A missing or invalid key gives
401, a key whose role is too low 403. Every error, whatever the status, has the body
`{"error": code, "message": text, "details"?: any}`.
"""


_INT32 = 2**31 - 1  # ids, offsets and seeds are 32-bit integers in the database


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {JSON: {"schema": schema}}}


_ERRORS = {
    400: "Invalid input: body, query parameter or folder (`details` lists the fields).",
    401: "Missing, invalid or revoked API key.",
    403: "The key's role is too low, or the folder is outside the allowed roots.",
    404: "No such resource.",
    409: "The resource is in a state that does not allow this.",
    413: "The body is larger than 1 MiB.",
    415: "The body is not `application/json`.",
}


def _op(
    summary: str,
    role: str | None,
    ok: dict[int, dict[str, Any]],
    errors: tuple[int, ...] = (),
    *,
    parameters: list[dict[str, Any]] | None = None,
    body: str | None = None,
    description: str = "",
) -> dict[str, Any]:
    responses: dict[str, Any] = {str(code): resp for code, resp in ok.items()}
    codes = set(errors) | ({401, 403} if role else set())
    for code in sorted(codes):
        responses[str(code)] = _json(_ref("Error"), _ERRORS[code])
    responses["500"] = _json(_ref("Error"), "Unexpected server error (logged, no details).")
    responses.setdefault("503", _json(_ref("Error"), "The database is unavailable or busy."))
    op: dict[str, Any] = {
        "summary": summary,
        "description": description or summary,
        "x-required-role": role or "public",
        "responses": responses,
    }
    if role is None:
        op["security"] = []
    if parameters:
        op["parameters"] = parameters
    if body:
        op["requestBody"] = {"required": True, "content": {JSON: {"schema": _ref(body)}}}
    return op


def _path_id(name: str, what: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "path",
        "required": True,
        "description": f"The {what} id.",
        "schema": {"type": "integer", "minimum": 1, "maximum": _INT32},
    }


def _query(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "schema": schema,
        "description": description,
    }


_PAGE_PARAMS = [
    _query(
        "limit", {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100}, "Page size."
    ),
    _query(
        "offset",
        {"type": "integer", "minimum": 0, "maximum": _INT32, "default": 0},
        "Rows to skip.",
    ),
]
_CONFIDENCE = {"type": "number", "minimum": 0, "maximum": 1}
_JOB_ID = _path_id("job_id", "job")
_MODEL_ID = _path_id("model_id", "model version")
_KEY_ID = _path_id("key_id", "API key")
_REVIEW_JOB = _query(
    "job_id",
    {"type": "integer", "minimum": 1, "maximum": _INT32},
    "Only the review items of this job.",
)


def _page_of(item: str) -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["items", "total", "limit", "offset"],
        "properties": {
            "items": {"type": "array", "items": _ref(item)},
            "total": {"type": "integer", "description": "Rows matching, over all pages."},
            "limit": {"type": "integer"},
            "offset": {"type": "integer"},
        },
    }


def _list_of(item: str) -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["items", "total"],
        "properties": {
            "items": {"type": "array", "items": _ref(item)},
            "total": {"type": "integer"},
        },
    }


_NULLABLE_TIME = {"type": ["string", "null"], "format": "date-time"}

SCHEMAS: dict[str, Any] = {
    "Error": {
        "type": "object",
        "required": ["error", "message"],
        "properties": {
            "error": {"type": "string", "description": "Machine-readable code, e.g. not_found."},
            "message": {"type": "string", "description": "What went wrong, for humans."},
            "details": {"description": "Extra data, e.g. the invalid fields."},
        },
    },
    "Health": {
        "type": "object",
        "properties": {
            "status": {"type": "string", "enum": ["ok", "error"]},
            "database": {"type": "string", "enum": ["ok", "unavailable"]},
        },
    },
    "JobCreate": {
        "type": "object",
        "required": ["folder"],
        "additionalProperties": False,
        "properties": {
            "folder": {
                "type": "string",
                "minLength": 1,
                "description": "A folder under an allowed root (absolute, or relative to the "
                "first root); symlinks and `..` are resolved before the check.",
            },
            "model_id": {
                "type": "integer",
                "minimum": 1,
                "description": "Model version to pin; default: the active one.",
            },
            "threshold": {
                **_CONFIDENCE,
                "description": "Predictions below this go to review; default from settings.",
            },
            "recursive": {"type": "boolean", "default": True},
            "extensions": {
                "type": "array",
                "items": {"type": "string", "minLength": 1},
                "minItems": 1,
                "description": "File extensions to score; default from settings.",
            },
        },
    },
    "JobProgress": {
        "type": "object",
        "properties": {
            "total": {"type": "integer"},
            "scored": {"type": "integer"},
            "failed": {"type": "integer"},
            "routed_to_review": {"type": "integer"},
            "pending": {"type": "integer"},
            "scan_complete": {"type": "boolean"},
            "fraction_done": {"type": "number"},
            "images_per_second": {"type": "number"},
            "elapsed_seconds": {"type": "number"},
            "eta_seconds": {"type": ["number", "null"]},
        },
    },
    "Job": {
        "type": "object",
        "properties": {
            "id": {"type": "integer"},
            "folder": {"type": "string"},
            "recursive": {"type": "boolean"},
            "extensions": {"type": "array", "items": {"type": "string"}},
            "status": {
                "type": "string",
                "enum": ["queued", "scanning", "scoring", "done", "failed", "cancelled"],
            },
            "error": {"type": ["string", "null"]},
            "model_version_id": {"type": "integer"},
            "threshold": {"type": "number"},
            "created_by": {"type": "string", "description": "Name of the key that created it."},
            "created_at": {"type": "string", "format": "date-time"},
            "started_at": _NULLABLE_TIME,
            "finished_at": _NULLABLE_TIME,
            "progress": _ref("JobProgress"),
        },
    },
    "JobPage": _page_of("Job"),
    "ResultRow": {
        "type": "object",
        "properties": {
            "image_id": {"type": "integer"},
            "rel_path": {"type": "string"},
            "path": {"type": "string"},
            "sha256": {"type": ["string", "null"]},
            "status": {"type": "string", "enum": ["pending", "scored", "failed"]},
            "failure_reason": {"type": ["string", "null"]},
            "failure_detail": {"type": ["string", "null"]},
            "label": {"type": ["string", "null"]},
            "confidence": {"type": ["number", "null"]},
            "top_k": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {"label": {"type": "string"}, "confidence": {"type": "number"}},
                },
            },
            "needs_review": {"type": "boolean"},
            "review_reason": {"type": ["string", "null"]},
            "model_version_id": {"type": "integer"},
            "captured_at": _NULLABLE_TIME,
            "gps_lat": {"type": ["number", "null"]},
            "gps_lon": {"type": ["number", "null"]},
        },
    },
    "ResultPage": _page_of("ResultRow"),
    "Model": {
        "type": "object",
        "properties": {
            "id": {"type": "integer"},
            "name": {"type": "string"},
            "status": {"type": "string", "enum": ["candidate", "active", "retired"]},
            "num_classes": {"type": "integer"},
            "labels": {"type": "array", "items": {"type": "string"}},
            "input": {"type": ["object", "null"], "description": "Preprocessing contract."},
            "temperature": {"type": ["number", "null"]},
            "metrics": {"type": ["object", "null"]},
            "source": {"type": "string"},
            "files_sha256": {"type": "object", "additionalProperties": {"type": "string"}},
            "created_at": {"type": "string", "format": "date-time"},
            "activated_at": _NULLABLE_TIME,
        },
    },
    "ModelList": _list_of("Model"),
    "KeyCreate": {
        "type": "object",
        "required": ["name", "role"],
        "additionalProperties": False,
        "properties": {
            "name": {"type": "string", "minLength": 1, "maxLength": 200},
            "role": {"type": "string", "enum": ["viewer", "reviewer", "admin"]},
        },
    },
    "ApiKey": {
        "type": "object",
        "properties": {
            "id": {"type": "integer"},
            "name": {"type": "string"},
            "prefix": {"type": "string", "description": "Public part that identifies the key."},
            "role": {"type": "string", "enum": ["viewer", "reviewer", "admin"]},
            "created_at": {"type": "string", "format": "date-time"},
            "last_used_at": {**_NULLABLE_TIME, "description": "Updated at most once a minute."},
            "revoked_at": _NULLABLE_TIME,
        },
    },
    "ApiKeyCreated": {
        "allOf": [
            _ref("ApiKey"),
            {
                "type": "object",
                "required": ["key"],
                "properties": {
                    "key": {"type": "string", "description": "The secret key, shown only once."}
                },
            },
        ]
    },
    "ApiKeyList": _list_of("ApiKey"),
    "ReviewDecision": {
        "type": "object",
        "required": ["decision"],
        "additionalProperties": False,
        "properties": {
            "decision": {
                "type": "string",
                "enum": ["label", "unknown", "unusable", "skip"],
                "description": "`label`: the species is `label`; `unknown`: a usable photo "
                "whose species cannot be told; `unusable`: not a usable photo; `skip`: no "
                "decision, the item goes back to the queue below the unskipped ones.",
            },
            "label": {
                "type": ["string", "null"],
                "description": "Required with `label`, refused otherwise. Free text (a known "
                "label or a new one), trimmed, 1-200 characters.",
            },
        },
    },
    "ReviewStats": {
        "type": "object",
        "properties": {
            "pending": {"type": "integer", "description": "Items not decided yet."},
            "available": {"type": "integer", "description": "Pending items nobody holds."},
            "claimed": {"type": "integer", "description": "Pending items under a live lease."},
            "done": {"type": "integer"},
            "reviewer": {"type": "string", "description": "The caller (the key's name)."},
            "decided_by_you_24h": {"type": "integer"},
        },
    },
    "Annotation": {
        "type": "object",
        "properties": {
            "id": {"type": "integer"},
            "image_id": {"type": "integer"},
            "review_item_id": {"type": ["integer", "null"]},
            "reviewer": {"type": "string"},
            "decision": {"type": "string", "enum": ["label", "unknown", "unusable", "skip"]},
            "label": {"type": ["string", "null"]},
            "machine_label": {"type": ["string", "null"]},
            "machine_confidence": {"type": ["number", "null"]},
            "model_version_id": {"type": ["integer", "null"]},
            "created_at": {"type": "string", "format": "date-time"},
            "undone_at": _NULLABLE_TIME,
        },
    },
    "ReviewItem": {
        "type": "object",
        "description": "A claimed item with what a reviewer needs to decide it.",
        "properties": {
            "id": {"type": "integer"},
            "status": {"type": "string", "enum": ["pending", "done"]},
            "reason": {
                "type": "string",
                "description": "Why it was routed, e.g. `low_confidence<0.6` or `risky_label`.",
            },
            "reason_text": {"type": "string"},
            "priority": {"type": "number"},
            "job_id": {"type": ["integer", "null"]},
            "claimed_by": {"type": ["string", "null"]},
            "lease_expires_at": _NULLABLE_TIME,
            "decided_at": _NULLABLE_TIME,
            "image": {
                "type": "object",
                "properties": {
                    "id": {"type": "integer"},
                    "path": {"type": "string"},
                    "rel_path": {"type": "string"},
                    "captured_at": _NULLABLE_TIME,
                    "width": {"type": ["integer", "null"]},
                    "height": {"type": ["integer", "null"]},
                    "url": {"type": ["string", "null"], "description": "null in the API."},
                },
            },
            "prediction": {
                "type": "object",
                "properties": {
                    "label": {"type": "string"},
                    "confidence": {"type": "number"},
                    "model_version_id": {"type": "integer"},
                    "model_name": {"type": ["string", "null"]},
                    "topk": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "properties": {
                                "rank": {"type": "integer"},
                                "label": {"type": "string"},
                                "confidence": {
                                    "type": "number",
                                    "description": "Calibrated probability.",
                                },
                            },
                        },
                    },
                },
            },
            "human": {
                "oneOf": [_ref("Annotation"), {"type": "null"}],
                "description": "The image's current human decision, if any.",
            },
            "siblings": {
                "type": "array",
                "description": "Images of the same job in the same folder, around this one.",
                "items": {"type": "object"},
            },
            "labels": {
                "type": "array",
                "items": {"type": "string"},
                "description": "The model's classes plus every label reviewers have used.",
            },
            "stats": _ref("ReviewStats"),
        },
    },
    "ReviewNext": {
        "type": "object",
        "required": ["item", "stats"],
        "properties": {
            "item": {"oneOf": [_ref("ReviewItem"), {"type": "null"}]},
            "stats": _ref("ReviewStats"),
        },
    },
    "ReviewDecided": {
        "type": "object",
        "required": ["annotation"],
        "properties": {"annotation": _ref("Annotation")},
    },
    "ReviewUndone": {
        "type": "object",
        "required": ["annotation", "item"],
        "properties": {
            "annotation": {"oneOf": [_ref("Annotation"), {"type": "null"}]},
            "item": {"oneOf": [_ref("ReviewItem"), {"type": "null"}]},
        },
    },
}

_EXPORT_ID = _path_id("export_id", "dataset export")
_RUN_ID = _path_id("run_id", "training run")
_NULLABLE_OBJECT = {"type": ["object", "null"]}
_FRACTION = {"type": "number", "minimum": 0, "maximum": 0.5}

SCHEMAS.update(
    {
        "ExportCreate": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "include_confident": {
                    "type": ["number", "null"],
                    "exclusiveMinimum": 0,
                    "maximum": 1,
                    "description": "Also export predictions at least this confident "
                    "(they only ever go to train); default: human labels only.",
                },
                "min_per_class": {
                    "type": ["integer", "null"],
                    "minimum": 1,
                    "description": "Classes with fewer images are dropped (listed in the card).",
                },
                "val_fraction": {**_FRACTION, "type": ["number", "null"]},
                "test_fraction": {**_FRACTION, "type": ["number", "null"]},
                "seed": {"type": "integer", "minimum": 0, "maximum": _INT32, "default": 0},
                "group_by_site": {
                    "type": "boolean",
                    "default": True,
                    "description": "Keep each site (top-level folder) in one split.",
                },
            },
        },
        "Export": {
            "type": "object",
            "properties": {
                "id": {"type": "integer"},
                "status": {"type": "string", "enum": ["queued", "running", "done", "failed"]},
                "folder": {"type": ["string", "null"], "description": "`<id>-<timestamp>`."},
                "options": {"type": "object"},
                "counts": {
                    **_NULLABLE_OBJECT,
                    "description": "total, splits, classes (per split), sources, split_mode.",
                },
                "error": {"type": ["string", "null"]},
                "created_by": {"type": "string"},
                "created_at": {"type": "string", "format": "date-time"},
                "finished_at": _NULLABLE_TIME,
            },
        },
        "ExportPage": _page_of("Export"),
        "TestSet": {
            "type": "object",
            "properties": {
                "test_set": {
                    **_NULLABLE_OBJECT,
                    "description": "export_id, n, labels, sha256_digest, pinned, frozen_at.",
                }
            },
        },
        "TrainingRun": {
            "type": "object",
            "properties": {
                "id": {"type": "integer"},
                "status": {"type": "string", "enum": ["queued", "running", "done", "failed"]},
                "trigger": {"type": "string"},
                "export_id": {"type": ["integer", "null"]},
                "model_version_id": {"type": ["integer", "null"]},
                "params": {"type": "object"},
                "metrics": {
                    **_NULLABLE_OBJECT,
                    "description": "Headline numbers in lists; metrics.json in full by id.",
                },
                "promotion": {
                    **_NULLABLE_OBJECT,
                    "description": "The gate: passed, promoted, reasons, both models' scores.",
                },
                "error": {"type": ["string", "null"]},
                "created_at": {"type": "string", "format": "date-time"},
                "started_at": _NULLABLE_TIME,
                "finished_at": _NULLABLE_TIME,
            },
        },
        "TrainingRunPage": _page_of("TrainingRun"),
        "Force": {
            "type": "object",
            "additionalProperties": False,
            "properties": {"force": {"type": "boolean", "default": False}},
        },
        "RetrainResult": {
            "type": "object",
            "properties": {
                "started": {"type": "boolean"},
                "reason": {"type": "string"},
                "new_labels": {"type": "integer"},
                "needed": {"type": "integer"},
                "run_id": {"type": ["integer", "null"]},
                "export_id": {"type": ["integer", "null"]},
            },
        },
    }
)

_TRAINING_PATHS: dict[str, Any] = {
    "/exports": {
        "get": _op(
            "List dataset exports, newest first",
            "viewer",
            {200: _json(_ref("ExportPage"), "One page of exports.")},
            (400,),
            parameters=_PAGE_PARAMS,
        ),
        "post": _op(
            "Export verified labels into a new training-set folder",
            "admin",
            {202: _json(_ref("Export"), "The queued export.")},
            (400, 413, 415),
            body="ExportCreate",
            description="Queue an immutable, versioned export: deduplicated by sha256, split "
            "by whole sites, unknown/unusable never exported. Omitted options come from the "
            "settings.",
        ),
    },
    "/exports/{export_id}": {
        "get": _op(
            "A dataset export with its counts",
            "viewer",
            {200: _json(_ref("Export"), "The export.")},
            (404,),
            parameters=[_EXPORT_ID],
        )
    },
    "/exports/test-set": {
        "get": _op(
            "The frozen test set promotions are judged on",
            "viewer",
            {200: _json(_ref("TestSet"), "The test set, or null before any export has one.")},
        )
    },
    "/exports/{export_id}/pin-test-set": {
        "post": _op(
            "Pin this export's test split as the frozen test set",
            "admin",
            {200: _json(_ref("TestSet"), "The new frozen test set.")},
            (404, 409),
            parameters=[_EXPORT_ID],
            description="409 if the export is not finished or has no test split.",
        )
    },
    "/training/runs": {
        "get": _op(
            "List training runs, newest first",
            "viewer",
            {200: _json(_ref("TrainingRunPage"), "One page of runs.")},
            (400,),
            parameters=_PAGE_PARAMS,
        )
    },
    "/training/runs/{run_id}": {
        "get": _op(
            "A training run with its full metrics and promotion decision",
            "viewer",
            {200: _json(_ref("TrainingRun"), "The run.")},
            (404,),
            parameters=[_RUN_ID],
        )
    },
    "/training/retrain": {
        "post": _op(
            "Run the retrain check now",
            "admin",
            {
                202: _json(_ref("RetrainResult"), "A run was queued."),
                200: _json(_ref("RetrainResult"), "Nothing to do; `reason` says why."),
            },
            (400, 413, 415),
            body="Force",
            description="Ignores the schedule; with `force`, also the minimum of new labels.",
        )
    },
    "/training/runs/{run_id}/promote": {
        "post": _op(
            "Activate a run's candidate model",
            "admin",
            {200: _json(_ref("Model"), "The now active version.")},
            (400, 404, 409, 413, 415),
            parameters=[_RUN_ID],
            body="Force",
            description="409 if the candidate failed the promotion gate (unless `force`) "
            "or the run has no candidate.",
        )
    },
    "/models/rollback": {
        "post": _op(
            "Roll back to the previously active model version",
            "admin",
            {200: _json(_ref("Model"), "The re-activated version.")},
            (409,),
            description="409 if there is no earlier active version.",
        )
    },
}

PATHS: dict[str, Any] = {
    "/health": {
        "get": _op(
            "Health check",
            None,
            {
                200: _json(_ref("Health"), "The service and its database answer."),
                503: _json(_ref("Health"), "The database does not answer."),
            },
        )
    },
    "/openapi.json": {
        "get": _op(
            "This OpenAPI description",
            None,
            {200: {"description": "OpenAPI 3.1 document.", "content": {JSON: {}}}},
        )
    },
    "/jobs": {
        "get": _op(
            "List jobs, newest first",
            "viewer",
            {200: _json(_ref("JobPage"), "One page of jobs.")},
            (400,),
            parameters=[
                _query(
                    "status",
                    SCHEMAS["Job"]["properties"]["status"],
                    "Only jobs in this status.",
                ),
                *_PAGE_PARAMS,
            ],
        ),
        "post": _op(
            "Create a scan job",
            "reviewer",
            {
                201: {
                    **_json(_ref("Job"), "The queued job."),
                    "headers": {
                        "Location": {
                            "description": "URL of the new job.",
                            "schema": {"type": "string"},
                        }
                    },
                }
            },
            (400, 403, 404, 409, 413, 415),
            body="JobCreate",
            description="Queue the scoring of every image under `folder` with one model "
            "version. The folder must resolve (symlinks and `..` included) under an "
            "allowed root, else 403. 404 if `model_id` does not exist, 409 if none is "
            "given and no model is active.",
        ),
    },
    "/jobs/{job_id}": {
        "get": _op(
            "A job with its progress",
            "viewer",
            {200: _json(_ref("Job"), "The job.")},
            (404,),
            parameters=[_JOB_ID],
        )
    },
    "/jobs/{job_id}/cancel": {
        "post": _op(
            "Cancel a job",
            "reviewer",
            {200: _json(_ref("Job"), "The cancelled job.")},
            (404, 409),
            parameters=[_JOB_ID],
            description="Stop a job; its remaining chunks are skipped. 409 if it already "
            "finished (done, failed or cancelled).",
        )
    },
    "/jobs/{job_id}/predictions": {
        "get": _op(
            "A job's results, filtered and paginated",
            "viewer",
            {200: _json(_ref("ResultPage"), "One page of result rows, ordered by path.")},
            (400, 404),
            parameters=[
                _JOB_ID,
                _query("label", {"type": "string", "minLength": 1}, "Only this predicted label."),
                _query("min_confidence", _CONFIDENCE, "Confidence at least this."),
                _query("max_confidence", _CONFIDENCE, "Confidence at most this."),
                _query("needs_review", {"type": "boolean"}, "Pending review (true) or not."),
                _query("failed", {"type": "boolean"}, "Failed images (true) or not."),
                *_PAGE_PARAMS,
            ],
        )
    },
    "/jobs/{job_id}/results.csv": {
        "get": _op(
            "Export every result row",
            "viewer",
            {
                200: {
                    "description": "All rows, as CSV (default) or a JSON array of ResultRow.",
                    "content": {
                        "text/csv": {"schema": {"type": "string"}},
                        JSON: {"schema": {"type": "array", "items": _ref("ResultRow")}},
                    },
                }
            },
            (400, 404),
            parameters=[
                _JOB_ID,
                _query("format", {"type": "string", "enum": ["csv", "json"]}, "Export format."),
            ],
        )
    },
    "/models": {
        "get": _op(
            "List model versions, newest first",
            "viewer",
            {200: _json(_ref("ModelList"), "Every model version.")},
        )
    },
    "/models/{model_id}": {
        "get": _op(
            "A model version",
            "viewer",
            {200: _json(_ref("Model"), "The model version.")},
            (404,),
            parameters=[_MODEL_ID],
        )
    },
    "/models/{model_id}/activate": {
        "post": _op(
            "Activate a model version",
            "admin",
            {200: _json(_ref("Model"), "The now active version.")},
            (404,),
            parameters=[_MODEL_ID],
            description="New jobs use this version; the previously active one is retired. "
            "Running jobs keep the version they were pinned to.",
        )
    },
    "/keys": {
        "get": _op(
            "List API keys (never their secrets)",
            "admin",
            {200: _json(_ref("ApiKeyList"), "Every key, revoked ones included.")},
        ),
        "post": _op(
            "Create an API key",
            "admin",
            {201: _json(_ref("ApiKeyCreated"), "The key; `key` is shown only this once.")},
            (400, 413, 415),
            body="KeyCreate",
        ),
    },
    "/keys/{key_id}/revoke": {
        "post": _op(
            "Revoke an API key",
            "admin",
            {200: _json(_ref("ApiKey"), "The revoked key.")},
            (404,),
            parameters=[_KEY_ID],
        )
    },
    "/review/next": {
        "get": _op(
            "Claim the next item to review",
            "reviewer",
            {200: _json(_ref("ReviewNext"), "The claimed item, or `item: null` if none.")},
            (400,),
            parameters=[_REVIEW_JOB],
            description="Returns the caller's own live claim first (asking again gives the "
            "same item), else claims the highest-priority pending item nobody holds, under "
            "a 5-minute lease that each call renews. Two callers never get the same item; "
            "an abandoned item returns to the queue when its lease expires. An empty queue "
            "is `200` with `item: null` (not 204), so the counts always come back. The "
            "reviewer is the key's name.",
        )
    },
    "/review/items/{item_id}/decision": {
        "post": _op(
            "Decide a claimed item",
            "reviewer",
            {201: _json(_ref("ReviewDecided"), "The recorded annotation.")},
            (400, 404, 409, 413, 415),
            parameters=[_path_id("item_id", "review item")],
            body="ReviewDecision",
            description="Only the claimant may decide, or anyone once the lease expired "
            "(409 otherwise, and 409 if the item was already decided). The annotation "
            "records the caller, the time and what the machine had said. `skip` releases "
            "the item and lowers its priority.",
        )
    },
    "/review/undo": {
        "post": _op(
            "Undo the caller's latest decision",
            "reviewer",
            {200: _json(_ref("ReviewUndone"), "The undone annotation and its reopened item.")},
            description="Marks the caller's latest live annotation undone and gives its "
            "item back to the caller (the next `GET /review/next` returns it). Called "
            "again, it undoes the decision before. Both fields are null when there is "
            "nothing left to undo.",
        )
    },
    "/review/stats": {
        "get": _op(
            "Review queue counts",
            "viewer",
            {200: _json(_ref("ReviewStats"), "Counts over the whole queue or one job.")},
            (400,),
            parameters=[_REVIEW_JOB],
        )
    },
}

PATHS.update(_TRAINING_PATHS)

SPEC: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {"title": "herpscore API", "version": "1", "description": DESCRIPTION},
    "servers": [{"url": "/api/v1"}],
    "security": [{"ApiKeyHeader": []}, {"BearerKey": []}],
    "paths": PATHS,
    "components": {
        "securitySchemes": {
            "ApiKeyHeader": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
            "BearerKey": {
                "type": "http",
                "scheme": "bearer",
                "description": "The same API key, as `Authorization: Bearer <key>`.",
            },
        },
        "schemas": SCHEMAS,
    },
}


def openapi_spec() -> dict[str, Any]:
    """A copy of the description, safe for the caller to change."""
    from service.web.api.field_openapi import add_field_paths

    spec = copy.deepcopy(SPEC)
    add_field_paths(spec)
    return spec
