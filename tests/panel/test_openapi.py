"""The OpenAPI description: built from the route table, structurally valid, served."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator  # type: ignore[import-untyped]
from starlette.responses import JSONResponse, Response
from starlette.testclient import TestClient

from corral.panel.app import load_routes
from corral.panel.openapi import QueryParam, build_document, describe
from corral.panel.permissions import ADMIN, PUBLIC, USER, Right, tenant
from corral.panel.routing import SAFE_METHODS, Ctx, Registry, registry
from tests.support.panel import add_user, login, make_app

METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")

# The parts of the OpenAPI 3.1 schema (spec.openapis.org/oas/3.1/schema) this document
# uses, written out because the tests run without network: the required fields, the
# shapes of path items, operations, parameters, responses and security schemes.
_REF = {"type": "object", "required": ["$ref"], "properties": {"$ref": {"type": "string"}}}
_MEDIA = {
    "type": "object",
    "additionalProperties": {
        "type": "object",
        "properties": {"schema": {"type": ["object", "boolean"]}},
        "additionalProperties": False,
    },
}
_PARAMETER = {
    "type": "object",
    "required": ["name", "in"],
    "properties": {
        "name": {"type": "string", "minLength": 1},
        "in": {"enum": ["query", "header", "path", "cookie"]},
        "description": {"type": "string"},
        "required": {"type": "boolean"},
        "schema": {"type": ["object", "boolean"]},
    },
    "if": {"properties": {"in": {"const": "path"}}},
    "then": {"required": ["required"], "properties": {"required": {"const": True}}},
    "patternProperties": {"^x-": True},
    "additionalProperties": False,
}
_RESPONSE = {
    "type": "object",
    "required": ["description"],
    "properties": {"description": {"type": "string"}, "content": _MEDIA},
    "additionalProperties": False,
}
_SECURITY_REQUIREMENT = {
    "type": "array",
    "items": {"type": "object", "additionalProperties": {"type": "array"}},
}
_OPERATION = {
    "type": "object",
    "required": ["responses"],
    "properties": {
        "operationId": {"type": "string", "minLength": 1},
        "summary": {"type": "string"},
        "description": {"type": "string"},
        "tags": {"type": "array", "items": {"type": "string"}},
        "parameters": {"type": "array", "items": _PARAMETER},
        "requestBody": {
            "type": "object",
            "required": ["content"],
            "properties": {"content": _MEDIA, "required": {"type": "boolean"}},
            "additionalProperties": False,
        },
        "responses": {
            "type": "object",
            "minProperties": 1,
            "propertyNames": {"pattern": "^([1-5][0-9X]{2}|default)$"},
            "additionalProperties": {"oneOf": [_RESPONSE, _REF]},
        },
        "security": _SECURITY_REQUIREMENT,
        "deprecated": {"type": "boolean"},
    },
    "patternProperties": {"^x-": True},
    "additionalProperties": False,
}
_SECURITY_SCHEME = {
    "type": "object",
    "required": ["type"],
    "properties": {
        "type": {"enum": ["apiKey", "http", "mutualTLS", "oauth2", "openIdConnect"]},
        "description": {"type": "string"},
    },
    "allOf": [
        {
            "if": {"properties": {"type": {"const": "apiKey"}}},
            "then": {
                "required": ["name", "in"],
                "properties": {
                    "name": {"type": "string", "minLength": 1},
                    "in": {"enum": ["query", "header", "cookie"]},
                },
            },
        },
        {
            "if": {"properties": {"type": {"const": "http"}}},
            "then": {"required": ["scheme"], "properties": {"scheme": {"type": "string"}}},
        },
    ],
}
OPENAPI_31_STRUCTURE: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "required": ["openapi", "info", "paths"],
    "properties": {
        "openapi": {"type": "string", "pattern": r"^3\.1\.\d+(-.+)?$"},
        "info": {
            "type": "object",
            "required": ["title", "version"],
            "properties": {
                "title": {"type": "string"},
                "version": {"type": "string"},
                "description": {"type": "string"},
            },
        },
        "servers": {
            "type": "array",
            "items": {"type": "object", "required": ["url"]},
        },
        "paths": {
            "type": "object",
            "propertyNames": {"pattern": "^/"},
            "additionalProperties": {
                "type": "object",
                "propertyNames": {"enum": [*METHODS, "summary", "description", "parameters"]},
                "additionalProperties": _OPERATION,
            },
        },
        "components": {
            "type": "object",
            "properties": {
                "schemas": {"type": "object"},
                "securitySchemes": {"type": "object", "additionalProperties": _SECURITY_SCHEME},
            },
        },
        "security": _SECURITY_REQUIREMENT,
    },
    "patternProperties": {"^x-": True},
    "additionalProperties": False,
}


def check_structure(document: dict[str, Any]) -> None:
    """Schema-valid, and the rules a JSON Schema cannot say: unique operation ids, path
    templates matching their path parameters, known security schemes and $refs."""
    Draft202012Validator.check_schema(OPENAPI_31_STRUCTURE)
    errors = sorted(
        Draft202012Validator(OPENAPI_31_STRUCTURE).iter_errors(document), key=lambda e: e.path
    )
    assert not errors, "\n".join(f"{list(e.path)}: {e.message}" for e in errors[:10])
    ids = [op["operationId"] for op in operations(document)]
    assert len(ids) == len(set(ids)), "operationIds are not unique"
    components = document.get("components", {})
    schemes = components.get("securitySchemes", {})
    for path, item in document["paths"].items():
        templated = set(re.findall(r"{([^}]+)}", path))
        for method, op in item.items():
            declared = {p["name"] for p in op.get("parameters", []) if p["in"] == "path"}
            assert declared == templated, f"{method} {path}: path parameters {declared}"
            for requirement in op.get("security", []):
                assert set(requirement) <= set(schemes), f"{method} {path}: {requirement}"
    for ref in re.findall(r"'\$ref': '#/components/schemas/(\w+)'", repr(document)):
        assert ref in components.get("schemas", {}), f"dangling $ref {ref}"


def operations(document: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for item in document["paths"].values():
        yield from item.values()


def panel_document() -> dict[str, Any]:
    load_routes()
    return build_document(registry.specs, version="1.2.3", cookie_name="__Host-corral")


def test_every_api_route_is_described_with_its_permission() -> None:
    document = panel_document()
    api = [s for s in registry.specs if s.kind == "api"]
    assert any(s.path == "/api/openapi.json" for s in api)
    assert any(s.path.endswith("/apps/{app}/metrics") for s in api)
    for spec in api:
        item = document["paths"][re.sub(r"{(\w+):\w+}", r"{\1}", spec.path)]
        for method in spec.methods:
            if method in ("HEAD", "OPTIONS"):
                continue
            op = item[method.lower()]
            assert op["x-corral-permission"] == str(spec.need)
            assert op["summary"], f"{method} {spec.path} has no summary (docstring)"
    described = {(path, m) for path, item in document["paths"].items() for m in item}
    expected = {
        (re.sub(r"{(\w+):\w+}", r"{\1}", s.path), m.lower())
        for s in api
        for m in s.methods
        if m not in ("HEAD", "OPTIONS")
    }
    assert described == expected  # and nothing else: no pages, no WebSockets


def test_the_panel_document_is_structurally_valid() -> None:
    document = panel_document()
    check_structure(document)
    assert document["openapi"] == "3.1.0"
    schemes = document["components"]["securitySchemes"]
    assert schemes["apiToken"] == {**schemes["apiToken"], "type": "http", "scheme": "bearer"}
    assert schemes["session"]["in"] == "cookie"
    assert schemes["session"]["name"] == "__Host-corral"
    assert schemes["csrfToken"]["in"] == "header"
    assert schemes["csrfToken"]["name"] == "X-CSRF-Token"


def test_the_metrics_operation_is_described_fully() -> None:
    op = panel_document()["paths"]["/api/v1/tenants/{tenant}/apps/{app}/metrics"]["get"]
    assert op["x-corral-permission"] == "tenant:access"
    assert op["summary"] == "CPU and memory of one app over time, oldest first."
    assert "metrics.retention" in op["description"]
    params = {(p["in"], p["name"]) for p in op["parameters"]}
    assert params == {
        ("path", "tenant"),
        ("path", "app"),
        ("query", "since"),
        ("query", "max_points"),
    }
    assert op["security"] == [{"apiToken": []}, {"session": []}]  # a GET needs no CSRF token
    schema = op["responses"]["200"]["content"]["application/json"]["schema"]
    assert schema["required"] == ["app", "now", "interval", "points"]
    assert {"401", "403", "404", "503"} <= set(op["responses"])


def test_a_route_added_to_a_registry_shows_up() -> None:
    test_registry = Registry()

    @test_registry.api("/api/v1/tenants/{tenant}/things/{thing_id:int}", need=tenant(Right.MANAGE))
    def get_thing(ctx: Ctx) -> Response:
        """Show one thing.

        Things are what tests are made of.
        """
        return JSONResponse({})

    @test_registry.api(
        "/api/v1/tenants/{tenant}/things", need=tenant(Right.CONTROL), methods=("POST",)
    )
    @describe(
        body={"type": "object", "required": ["name"]},
        query=(QueryParam("dry_run", {"type": "boolean"}, "Only check."),),
    )
    def add_thing(ctx: Ctx) -> Response:
        """Add a thing."""
        return JSONResponse({})

    @test_registry.api("/api/v1/ping", need=PUBLIC, methods=("GET", "DELETE"))
    def ping(ctx: Ctx) -> Response:
        """Answer."""
        return JSONResponse({})

    @test_registry.api("/api/v1/admin/ping", need=ADMIN, name="ping")
    def admin_ping(ctx: Ctx) -> Response:
        """Answer admins."""
        return JSONResponse({})

    @test_registry.page("/things", need=USER)
    def things_page(ctx: Ctx) -> Response:
        """A page: not part of the API."""
        return JSONResponse({})

    document = build_document(
        test_registry.specs, version="0", cookie_name="c", server_url="https://panel.test"
    )
    check_structure(document)
    assert document["servers"] == [{"url": "https://panel.test"}]
    assert set(document["paths"]) == {
        "/api/v1/tenants/{tenant}/things/{thing_id}",
        "/api/v1/tenants/{tenant}/things",
        "/api/v1/ping",
        "/api/v1/admin/ping",
    }

    get = document["paths"]["/api/v1/tenants/{tenant}/things/{thing_id}"]["get"]
    assert get["summary"] == "Show one thing."
    assert get["description"] == "Things are what tests are made of."
    assert get["x-corral-permission"] == "tenant:manage"
    assert get["tags"] == ["things"]
    assert {p["name"]: p["schema"]["type"] for p in get["parameters"]} == {
        "tenant": "string",
        "thing_id": "integer",
    }
    assert "requestBody" not in get

    post = document["paths"]["/api/v1/tenants/{tenant}/things"]["post"]
    assert post["x-corral-permission"] == "tenant:control"
    assert post["security"] == [{"apiToken": []}, {"session": [], "csrfToken": []}]
    assert post["requestBody"]["required"] is True
    assert post["requestBody"]["content"]["application/json"]["schema"]["required"] == ["name"]
    assert {"name": "dry_run", "in": "query"}.items() <= post["parameters"][1].items()
    assert {"400", "403", "413", "415", "422"} <= set(post["responses"])

    both = document["paths"]["/api/v1/ping"]
    assert set(both) == {"get", "delete"}
    assert both["get"]["security"] == [] and both["delete"]["security"] == []
    assert both["get"]["operationId"] == "ping_get"
    # Two endpoints named "ping": the second gets its own id.
    assert document["paths"]["/api/v1/admin/ping"]["get"]["operationId"] == "ping"
    assert document["paths"]["/api/v1/admin/ping"]["get"]["x-corral-permission"] == "admin"


def test_operation_ids_stay_unique_when_names_collide() -> None:
    test_registry = Registry()
    for path in ("/api/a", "/api/b", "/api/c"):

        @test_registry.api(path, need=USER, name="same")
        def same(ctx: Ctx) -> Response:
            """Same."""
            return JSONResponse({})

    document = build_document(test_registry.specs, version="0", cookie_name="c")
    check_structure(document)
    assert sorted(op["operationId"] for op in operations(document)) == [
        "same",
        "same_2",
        "same_3",
    ]


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    app, panel = make_app(tmp_path, allowed_hosts=("testserver",))
    add_user(panel, "ann")
    with TestClient(app) as test_client:
        yield test_client


def test_served_to_logged_in_users_only(client: TestClient) -> None:
    anonymous = client.get("/api/openapi.json")
    assert anonymous.status_code == 401
    assert anonymous.json() == {"error": "log in first"}

    login(client, "ann")
    response = client.get("/api/openapi.json")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    document = response.json()
    check_structure(document)
    assert document["servers"] == [{"url": "http://testserver"}]
    assert document["components"]["securitySchemes"]["session"]["name"] == (
        client.app.state.panel.cookie_name  # type: ignore[attr-defined]
    )
    op = document["paths"]["/api/openapi.json"]["get"]
    assert op["x-corral-permission"] == "user"
    changing = [
        op
        for item in document["paths"].values()
        for method, op in item.items()
        if method.upper() not in SAFE_METHODS
    ]
    for op in changing:
        if op["x-corral-permission"] != "public":
            assert {"session": [], "csrfToken": []} in op["security"]
