"""The OpenAPI 3.1 description of the JSON API (SPEC 2.7), built from the route table.

Nothing is written by hand per route: every `kind == "api"` entry of `Registry.specs`
becomes one operation per method, with its summary (the endpoint's docstring), its path
parameters, the permission it needs (`x-corral-permission`) and how to authenticate.
An endpoint may add what the table cannot know (query parameters, the shape of its
answer) with the `describe` decorator.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

from corral.panel.permissions import Level
from corral.panel.routing import SAFE_METHODS, RouteSpec

OPENAPI_VERSION = "3.1.0"
_ATTR = "__corral_openapi__"
_PARAM = re.compile(r"{(\w+)(?::(\w+))?}")
_CONVERTOR_TYPES = {"int": "integer", "float": "number"}
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True)
class QueryParam:
    name: str
    schema: dict[str, Any]
    description: str = ""
    required: bool = False


@dataclass(frozen=True)
class Extra:
    """What an endpoint adds to its operation: query parameters, body and answer schemas."""

    query: tuple[QueryParam, ...] = ()
    body: dict[str, Any] | None = None
    response: dict[str, Any] | None = None


def describe(
    *,
    query: Iterable[QueryParam] = (),
    body: dict[str, Any] | None = None,
    response: dict[str, Any] | None = None,
) -> Callable[[F], F]:
    """Attach query parameters and JSON schemas to an endpoint (it is returned unchanged)."""

    def mark(endpoint: F) -> F:
        setattr(endpoint, _ATTR, Extra(tuple(query), body, response))
        return endpoint

    return mark


def extra_of(endpoint: Callable[..., Any]) -> Extra:
    found = getattr(endpoint, _ATTR, None)
    return found if isinstance(found, Extra) else Extra()


ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["error"],
    "properties": {"error": {"type": "string", "description": "What was wrong, for a person."}},
}
FIELD_ERRORS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "error": {"type": "string"},
        "errors": {
            "type": "object",
            "description": "Field name -> what is wrong with it.",
            "additionalProperties": {"type": "string"},
        },
    },
}

SECURITY_SCHEMES: dict[str, Any] = {
    "apiToken": {
        "type": "http",
        "scheme": "bearer",
        "description": "A personal API token (Account > API tokens), sent as "
        "`Authorization: Bearer <token>`. No CSRF token is needed with it.",
    },
    "session": {
        "type": "apiKey",
        "in": "cookie",
        "name": "",  # filled in with the panel's cookie name
        "description": "The browser session of a logged-in user.",
    },
    "csrfToken": {
        "type": "apiKey",
        "in": "header",
        "name": "X-CSRF-Token",
        "description": "With a session cookie, every state-changing request also needs the "
        "session's CSRF token (the `csrf-token` meta tag of any page) and an Origin header "
        "equal to the panel's own origin.",
    },
}


def _error(description: str, schema: str = "Error") -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{schema}"}}},
    }


def _security(spec: RouteSpec, method: str) -> list[dict[str, list[str]]]:
    if spec.need.level is Level.PUBLIC:
        return []
    session: dict[str, list[str]] = {"session": []}
    if method not in SAFE_METHODS:
        session["csrfToken"] = []
    return [{"apiToken": []}, session]


def _responses(spec: RouteSpec, method: str, extra: Extra) -> dict[str, Any]:
    ok: dict[str, Any] = {"description": "Done."}
    if extra.response is not None:
        ok["content"] = {"application/json": {"schema": extra.response}}
    out: dict[str, Any] = {"200": ok}
    level = spec.need.level
    if method in _BODY_METHODS:
        out["400"] = _error("The body is not valid JSON.")
    if level is not Level.PUBLIC:
        out["401"] = _error("Not logged in, or the API token is unknown, revoked or expired.")
    if level is Level.TENANT or method not in SAFE_METHODS:
        out["403"] = _error("A right is missing, or the CSRF token or Origin is wrong.")
    if level in (Level.TENANT, Level.ADMIN) or spec.params:
        out["404"] = _error("No such tenant or object (or it is not visible to you).")
    if method in _BODY_METHODS:
        out["413"] = _error("The body is too large.")
        out["415"] = _error("The body is neither JSON nor a form.")
    if method not in SAFE_METHODS or extra.query:
        out["422"] = _error("A field is invalid; `errors` says which.", "FieldErrors")
    if level is Level.TENANT:
        out["502"] = _error("The tenant's daemon answered with an error.")
        out["503"] = _error("The tenant's daemon cannot be reached.")
    return out


def _parameters(spec: RouteSpec, extra: Extra) -> list[dict[str, Any]]:
    params: list[dict[str, Any]] = [
        {
            "name": name,
            "in": "path",
            "required": True,
            "schema": {"type": _CONVERTOR_TYPES.get(convertor, "string")},
        }
        for name, convertor in _PARAM.findall(spec.path)
    ]
    for query in extra.query:
        param: dict[str, Any] = {
            "name": query.name,
            "in": "query",
            "required": query.required,
            "schema": query.schema,
        }
        if query.description:
            param["description"] = query.description
        params.append(param)
    return params


def _tag(path: str) -> str:
    """Group operations by what they act on: the segment after the tenant, or the first."""
    parts = [p for p in path.split("/") if p and p not in ("api", "v1")]
    if "{tenant}" in parts and parts.index("{tenant}") + 1 < len(parts):
        return parts[parts.index("{tenant}") + 1]
    return parts[0] if parts and not parts[0].endswith(".json") else "meta"


def _operation(spec: RouteSpec, method: str, operation_id: str) -> dict[str, Any]:
    extra = extra_of(spec.endpoint)
    doc = inspect.getdoc(spec.endpoint) or ""
    details = doc.partition("\n\n")[2].strip()
    operation: dict[str, Any] = {
        "operationId": operation_id,
        "summary": spec.summary or spec.name.replace("_", " "),
        "tags": [_tag(spec.path)],
        "x-corral-permission": str(spec.need),
        "security": _security(spec, method),
        "responses": _responses(spec, method, extra),
    }
    if details:
        operation["description"] = details
    parameters = _parameters(spec, extra)
    if parameters:
        operation["parameters"] = parameters
    if method in _BODY_METHODS:
        schema = extra.body if extra.body is not None else {"type": "object"}
        operation["requestBody"] = {
            "required": extra.body is not None,
            "content": {"application/json": {"schema": schema}},
        }
    return operation


def openapi_path(path: str) -> str:
    """Starlette's `{id:int}` is OpenAPI's `{id}`."""
    return _PARAM.sub(lambda m: "{" + m.group(1) + "}", path)


def build_document(
    specs: Iterable[RouteSpec],
    *,
    version: str,
    cookie_name: str,
    server_url: str | None = None,
) -> dict[str, Any]:
    """The OpenAPI 3.1 document of every API route in `specs`."""
    paths: dict[str, dict[str, Any]] = {}
    used: set[str] = set()
    api = sorted((s for s in specs if s.kind == "api"), key=lambda s: s.path)
    for spec in api:
        item = paths.setdefault(openapi_path(spec.path), {})
        for method in spec.methods:
            if method in ("HEAD", "OPTIONS"):
                continue  # Starlette answers these itself
            operation_id = spec.name if len(spec.methods) == 1 else f"{spec.name}_{method.lower()}"
            base, n = operation_id, 2
            while operation_id in used:  # two endpoints with one name: keep ids unique
                operation_id, n = f"{base}_{n}", n + 1
            used.add(operation_id)
            item[method.lower()] = _operation(spec, method, operation_id)
    schemes = {key: dict(value) for key, value in SECURITY_SCHEMES.items()}
    schemes["session"]["name"] = cookie_name
    document: dict[str, Any] = {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": "corral panel API",
            "version": version,
            "description": "The JSON API of the corral control panel: everything the web UI "
            'does. Errors are `{"error": message}`, or `{"errors": {field: message}}` '
            "with 422. `x-corral-permission` names what each operation needs: `public`, "
            "`user` (any logged-in user), `admin`, or `tenant:<right>` on the tenant in "
            "the path (access, control, logs, manage).",
        },
        "paths": paths,
        "components": {
            "securitySchemes": schemes,
            "schemas": {"Error": ERROR_SCHEMA, "FieldErrors": FIELD_ERRORS_SCHEMA},
        },
    }
    if server_url:
        document["servers"] = [{"url": server_url}]
    return document
