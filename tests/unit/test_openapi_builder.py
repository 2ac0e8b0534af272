"""The OpenAPI builder on a toy blueprint: path ids, query parameters, roles, undeclared views."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Flask
from openapi_spec_validator import validate
from pydantic import Field

from service.models import Role
from service.web import IdConverter
from service.web.api.inputs import Body, Query
from service.web.api.openapi import build_document
from service.web.api.operations import Output, operation
from service.web.auth import public, requires


class ThingQuery(Query):
    colour: str | None = Field(default=None, max_length=20)
    """Only things of this colour."""
    size: int = Field(default=3, ge=1)


class ThingCreate(Body):
    name: str = Field(min_length=1)


class Thing(Output):
    """A thing."""

    id: int
    name: str


def _app() -> Flask:
    bp = Blueprint("api", __name__, url_prefix="/api/v1")

    @bp.get("/things/<id:thing_id>/parts/<int:part>/<name>")
    @requires(Role.VIEWER)
    @operation(Thing, query=ThingQuery)
    def get_part(thing_id: int, part: int, name: str, query: ThingQuery) -> Any:
        """A part of a thing.

        Longer words.
        """
        return {"id": thing_id, "name": name}

    @bp.post("/things")
    @public
    @operation({201: Thing}, body=ThingCreate, errors=(409,))
    def create_thing(body: ThingCreate) -> Any:
        """Make a thing."""
        return {"id": 1, "name": body.name}, 201

    @bp.delete("/things/<id:thing_id>")
    def forgotten(thing_id: int) -> Any:  # neither a role nor an operation
        return {}

    app = Flask(__name__)
    app.url_map.converters["id"] = IdConverter
    app.register_blueprint(bp)
    return app


def test_builder_renders_declarations_into_valid_openapi() -> None:
    app = _app()
    document = build_document(app)
    validate(document)

    part = document["paths"]["/things/{thing_id}/parts/{part}/{name}"]["get"]
    assert part["summary"] == "A part of a thing" and part["description"] == "Longer words."
    assert part["x-required-role"] == "viewer" and "security" not in part
    params = {p["name"]: p for p in part["parameters"]}
    assert params["thing_id"]["schema"] == {"type": "integer", "minimum": 1, "maximum": 2**31 - 1}
    assert params["part"]["schema"] == {"type": "integer", "minimum": 0}
    assert params["name"]["schema"] == {"type": "string"}
    # An optional query parameter is absent or a value, never null.
    assert params["colour"] == {
        "name": "colour",
        "in": "query",
        "required": False,
        "description": "Only things of this colour.",
        "schema": {"type": "string", "maxLength": 20},
    }
    assert params["size"]["schema"] == {"type": "integer", "minimum": 1, "default": 3}
    assert set(part["responses"]) == {"200", "400", "401", "403", "404", "429", "500", "503"}
    assert "ThingQuery" not in document["components"]["schemas"]  # parameters, not a schema

    create = document["paths"]["/things"]["post"]
    assert create["security"] == [] and create["x-required-role"] == "public"
    assert set(create["responses"]) == {"201", "400", "409", "413", "415", "500", "503"}
    body = document["components"]["schemas"]["ThingCreate"]
    assert body["additionalProperties"] is False and body["required"] == ["name"]

    # Undeclared: still listed, fail-closed admin, so the route tests can name it.
    forgotten = document["paths"]["/things/{thing_id}"]["delete"]
    assert forgotten["x-required-role"] == "admin"


def test_operation_hands_the_parsed_inputs_to_the_view() -> None:
    client = _app().test_client()
    created = client.post("/api/v1/things", json={"name": "shed"})
    assert created.status_code == 201 and created.get_json() == {"id": 1, "name": "shed"}
