"""Dataset exports in the UI: the list, and an "export now" button for admins."""

from __future__ import annotations

from flask import flash, redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue
from flask_login import current_user

from service import export_reasons, exports, tasks_client
from service.errors import BadInput
from service.models import Role
from service.web.admin import bp, flash_enqueued, role_required
from service.web.context import current_settings, db_read, db_session

EXPORTS_PER_PAGE = 25


@bp.get("/exports")
@role_required(Role.VIEWER)
def list_exports() -> ResponseReturnValue:
    offset = max(request.args.get("offset", 0, type=int), 0)
    settings = current_settings()
    with db_read() as session:
        found, total = exports.list_exports(session, limit=EXPORTS_PER_PAGE, offset=offset)
        rows = [exports.export_to_dict(e) for e in found]
        for row in rows:
            row["left_out"] = export_reasons.left_out(row["counts"], row["options"])
        test_set = exports.frozen_test_set(session, settings)
    return render_template(
        "exports/list.html",
        exports=rows,
        total=total,
        offset=offset,
        limit=EXPORTS_PER_PAGE,
        test_set=test_set.summary() if test_set else None,
        defaults=exports.ExportOptions.from_settings(settings),
    )


@bp.post("/exports")
@role_required(Role.ADMIN)
def export_now() -> ResponseReturnValue:
    """Queue an export with the settings' options (the form may override two of them)."""
    settings = current_settings()
    options = exports.ExportOptions.from_settings(
        settings,
        include_confident=_number(request.form.get("include_confident"), float),
        min_per_class=_number(request.form.get("min_per_class"), int),
    )
    with db_session() as session:
        export_id = exports.create_export(session, options, created_by=current_user.username).id
    flash_enqueued(tasks_client.enqueue(settings, tasks_client.EXPORT_TASK, [export_id]))
    return redirect(url_for("admin.list_exports"), 303)


@bp.post("/exports/<id:export_id>/pin-test-set")
@role_required(Role.ADMIN)
def pin_test_set(export_id: int) -> ResponseReturnValue:
    with db_session() as session:
        test_set = exports.pin_test_set(session, current_settings(), export_id)
    flash(f"Promotions are now judged on export {export_id}'s {len(test_set.items)} test images.")
    return redirect(url_for("admin.list_exports"), 303)


def _number(raw: str | None, kind: type[float] | type[int]) -> float | int | None:
    if raw is None or not raw.strip():
        return None
    try:
        return kind(raw)
    except ValueError:
        raise BadInput(f"{raw!r} is not a number") from None
