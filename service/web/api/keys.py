"""API key management (admin only): list, create (the secret is shown once), revoke."""

from __future__ import annotations

from flask.typing import ResponseReturnValue
from pydantic import Field

from service import apikeys
from service.models import Role
from service.web.api import bp
from service.web.api.inputs import Body, parse_body
from service.web.auth import current_caller, requires
from service.web.context import db_session


class KeyCreate(Body):
    name: str = Field(min_length=1, max_length=200)
    role: Role
    user_id: int | None = Field(default=None, ge=1, le=2**31 - 1)


@bp.get("/keys")
@requires(Role.ADMIN)
def list_keys() -> ResponseReturnValue:
    with db_session() as session:
        items = [apikeys.key_to_dict(k) for k in apikeys.list_keys(session)]
    return {"items": items, "total": len(items)}


@bp.post("/keys")
@requires(Role.ADMIN)
def create_key() -> ResponseReturnValue:
    """Create a key; the response is the only place its plaintext ever appears."""
    body = parse_body(KeyCreate)
    with db_session() as session:
        key, plaintext = apikeys.create_key(
            session, body.name, body.role, user_id=body.user_id, actor=current_caller().principal
        )
        payload = {**apikeys.key_to_dict(key), "key": plaintext}
    return payload, 201, {"Cache-Control": "no-store"}


@bp.post("/keys/<id:key_id>/revoke")
@requires(Role.ADMIN)
def revoke_key(key_id: int) -> ResponseReturnValue:
    with db_session() as session:
        key = apikeys.revoke_key(session, key_id, actor=current_caller().principal)
        return apikeys.key_to_dict(key)
