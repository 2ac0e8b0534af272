"""The models page: list, activate and roll back from the browser session (admin only)."""

from __future__ import annotations

from sqlalchemy import select

from service.db import session_scope
from service.models import ModelStatus, ModelVersion, Role
from service.registry import add_model
from service.users import create_user
from service.web import create_app
from tests.support.models import make_model_folder


def _login(client, username: str) -> None:
    client.post("/login", data={"username": username, "password": "pw-123456789"})


def test_admin_activates_and_rolls_back(sqlite_url, make_settings, tmp_path):
    settings = make_settings(sqlite_url)
    with session_scope(settings.db_url) as session:
        first = add_model(
            session, settings, make_model_folder(tmp_path / "a", seed=0), activate=True
        ).id
        second = add_model(session, settings, make_model_folder(tmp_path / "b", seed=1)).id
        create_user(session, "ada", "pw-123456789", Role.ADMIN)
        create_user(session, "vic", "pw-123456789", Role.VIEWER)
    app = create_app(settings)
    app.config["WTF_CSRF_ENABLED"] = False
    viewer = app.test_client()
    _login(viewer, "vic")
    page = viewer.get("/models")
    assert page.status_code == 200 and b"Activate</button>" not in page.data
    assert viewer.post(f"/models/{second}/activate").status_code == 403

    admin = app.test_client()
    _login(admin, "ada")
    assert admin.post(f"/models/{second}/activate").status_code == 303
    assert admin.post("/training/rollback").status_code == 303
    with session_scope(settings.db_url) as session:
        status = dict(session.execute(select(ModelVersion.id, ModelVersion.status)).all())
    assert status == {first: ModelStatus.ACTIVE, second: ModelStatus.RETIRED}
    history = admin.get("/models").data
    assert b"rollback" in history and b"Activate</button>" in history
