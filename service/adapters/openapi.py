"""The OpenAPI description of the REST port, built from the routes it serves.

Each REST protocol describes its routes in a module of its own
(tfserving_openapi.py, v2_openapi.py): an `Api` of `Operation`s keyed by the
route's name (its metrics label, `Route.name`) and the schemas they use. The
REST server (adapters/rest.py) pairs every route it mounts with its operation
(`describe`: a route without one is refused at start-up, so the document
cannot fall behind the routes) and builds the document from exactly those
(openapi_build.py).

OpenAPI 3.0.3, not 3.1: the viewer served at /docs (Swagger UI 4.15, from the
pinned swagger-ui-bundle) renders 3.0.n documents only.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

OPENAPI_VERSION = "3.0.3"
JSON = "application/json"
BINARY = "application/octet-stream"
Schema = dict[str, Any]


def ref(name: str) -> Schema:
    """A reference to the component schema `name`."""
    return {"$ref": f"#/components/schemas/{name}"}


@dataclass(frozen=True)
class Body:
    """A request or response body: its schema per media type."""

    description: str
    content: Mapping[str, Schema]

    @classmethod
    def json(cls, description: str, schema: Schema) -> Body:
        return cls(description, {JSON: schema})


@dataclass(frozen=True)
class Operation:
    """What one route takes and answers, beyond what rest.py adds to every route.

    Attributes:
        summary: one line, shown in the viewer's list.
        tag: the group the viewer lists it under (the protocol's name).
        answers: status -> body of the answers that are not errors (200, and
            the "not ready" 503 of the readiness probes).
        errors: status -> when this route answers it, for the statuses that
            depend on the route (400 for its body, 404 for an unknown model).
        request: the request body, if the route takes one.
        description: more, in CommonMark.
        headers: extra request header parameters (OpenAPI parameter objects).
        shared: answered through rest.py's route wrapper (request id,
            timeout, drain, limits); False for /metrics and /openapi.json.
    """

    summary: str
    tag: str
    answers: Mapping[int, Body]
    errors: Mapping[int, str] = field(default_factory=dict)
    request: Body | None = None
    description: str = ""
    headers: Sequence[Schema] = ()
    shared: bool = True


@dataclass(frozen=True)
class Api:
    """A protocol's descriptions: route name -> operation, and the schemas they refer to."""

    operations: Mapping[str, Operation]
    schemas: Mapping[str, Schema] = field(default_factory=dict)
    tag_description: str = ""


@dataclass(frozen=True)
class Described:
    """One mounted route and its description."""

    method: str
    path: str  # an aiohttp pattern, e.g. /v1/models/{name:[^/:]+}:predict
    name: str  # its operationId stem (the route's metrics label)
    operation: Operation
    open: bool


def describe(
    api: Api, label: str, method: str, path: str, name: str, open: bool = False
) -> Described:
    """The route with its operation from `api`.

    Raises:
        ValueError: `api` has no operation named `name` (a route added without
            a description).
    """
    operation = api.operations.get(name)
    if operation is None:
        raise ValueError(
            f"REST route {method} {path} ({label} {name}) has no OpenAPI description: add "
            f"an Operation named {name!r} to the protocol's Api (service/adapters/*_openapi.py)"
        )
    return Described(method, path, name, operation, open)


# aiohttp's `{name}` or `{name:regex}`.
_PARAMETER = re.compile(r"\{(\w+)(?::([^{}]*))?\}")


def openapi_path(pattern: str) -> str:
    """The OpenAPI path template of an aiohttp pattern: `{name:[^/:]+}` -> `{name}`."""
    return _PARAMETER.sub(r"{\1}", pattern)


def path_parameters(pattern: str) -> list[tuple[str, str | None]]:
    """(name, regex or None) of each parameter of an aiohttp pattern."""
    return [(m.group(1), m.group(2)) for m in _PARAMETER.finditer(pattern)]


ERROR_SCHEMA: Schema = {
    "type": "object",
    "description": "Every error answer: a message that says what is wrong and what is allowed.",
    "required": ["error"],
    "properties": {"error": {"type": "string", "example": "model 'other' is not served here"}},
    "additionalProperties": False,
}
# Binary data in JSON, as TF Serving's REST API takes it (V2's BYTES elements too).
B64_SCHEMA: Schema = {
    "type": "object",
    "description": 'Binary data in JSON: {"b64": "<base64>"}.',
    "required": ["b64"],
    "properties": {"b64": {"type": "string", "format": "byte"}},
    "additionalProperties": False,
}
SERVER_TAG = "Server"
# The routes rest.py and api_docs.py serve themselves, outside any protocol.
SERVER_API = Api(
    tag_description="Beside the protocols: Prometheus metrics and this description "
    "(open, like the health probes; Swagger UI renders it at /docs).",
    operations={
        "Metrics": Operation(
            "Prometheus metrics",
            SERVER_TAG,
            {200: Body("The text exposition format.", {"text/plain": {"type": "string"}})},
            shared=False,
        ),
        "OpenAPI": Operation(
            "This OpenAPI description",
            SERVER_TAG,
            {200: Body.json("An OpenAPI 3.0.3 document.", {"type": "object"})},
            shared=False,
        ),
    },
)
