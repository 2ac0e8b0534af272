"""API key management (admin only): list, create (the secret is shown once), revoke."""

from __future__ import annotations

from datetime import datetime

from flask.typing import ResponseReturnValue
from pydantic import Field

from service import apikeys
from service.models import Role
from service.web.api import bp
from service.web.api.inputs import Body
from service.web.api.operations import ItemList, Output, operation
from service.web.auth import current_caller, requires
from service.web.context import db_session


class KeyCreate(Body):
    name: str = Field(min_length=1, max_length=200)
    role: Role
    user_id: int | None = Field(default=None, ge=1, le=2**31 - 1)
    """Tie the key to a user: it stops while they are disabled."""


class ApiKey(Output):
    """An API key (never its secret)."""

    id: int
    name: str
    prefix: str
    """Public part that identifies the key."""
    role: Role
    user_id: int | None
    """The user it acts for: it stops while they are disabled."""
    created_at: datetime
    last_used_at: datetime | None
    """Updated at most once a minute."""
    revoked_at: datetime | None


class ApiKeyCreated(ApiKey):
    """A new API key with its secret, shown only this once."""

    key: str
    """The secret key."""


class ApiKeyList(ItemList[ApiKey]):
    """Every key, revoked ones included."""


@bp.get("/keys")
@requires(Role.ADMIN)
@operation(ApiKeyList)
def list_keys() -> ResponseReturnValue:
    """List API keys (never their secrets)."""
    with db_session() as session:
        items = [apikeys.key_to_dict(k) for k in apikeys.list_keys(session)]
    return {"items": items, "total": len(items)}


@bp.post("/keys")
@requires(Role.ADMIN)
@operation({201: ApiKeyCreated}, body=KeyCreate, errors=(404, 409))
def create_key(body: KeyCreate) -> ResponseReturnValue:
    """Create an API key.

    The response is the only place its secret ever appears.
    """
    with db_session() as session:
        key, plaintext = apikeys.create_key(
            session, body.name, body.role, user_id=body.user_id, actor=current_caller().principal
        )
        payload = {**apikeys.key_to_dict(key), "key": plaintext}
    return payload, 201, {"Cache-Control": "no-store"}


@bp.post("/keys/<id:key_id>/revoke")
@requires(Role.ADMIN)
@operation(ApiKey)
def revoke_key(key_id: int) -> ResponseReturnValue:
    """Revoke an API key."""
    with db_session() as session:
        key = apikeys.revoke_key(session, key_id, actor=current_caller().principal)
        return apikeys.key_to_dict(key)
