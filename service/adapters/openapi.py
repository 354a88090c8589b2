"""The OpenAPI description of the REST port, built from the routes it serves.

Each REST protocol describes its routes in a module of its own
(tfserving_openapi.py, v2_openapi.py): an `Api` of `Operation`s keyed by the
route's name (its metrics label, `Route.name`) and the schemas they use. The
REST server (adapters/rest.py) hands every route it mounts to `document`,
which adds what rest.py does the same way for every route: the path
parameters (the model name, the version), bearer security unless the route is
open, the request id and timeout parameters, and the error statuses the
shared server answers (401, 408, 413, 429, 500, 503, 504) as
`{"error": "..."}`. A route without a description is refused at start-up, so
the document cannot fall behind the routes.

OpenAPI 3.0.3, not 3.1: the viewer served at /docs (Swagger UI 4.15, from the
pinned swagger-ui-bundle) renders 3.0.n documents only.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib import metadata as package_metadata
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
REQUEST_ID = "X-Request-Id"
SERVER_TIMING = "Server-Timing"
_ANSWER_HEADERS: dict[str, Schema] = {
    "RequestId": {
        "description": "The caller's request id when it is sensible (1-128 of "
        "`A-Za-z0-9._:/+=-`), else a new one; logs and traces carry it.",
        "schema": {"type": "string"},
    },
    "ServerTiming": {
        "description": "The request's time in the server, W3C Server-Timing: `app;dur=<ms>`.",
        "schema": {"type": "string", "example": "app;dur=12.3"},
    },
}
_PARAMETERS: dict[str, Schema] = {
    "RequestId": {
        "name": REQUEST_ID,
        "in": "header",
        "required": False,
        "description": "An id for this request, sent back in the answer's X-Request-Id "
        "(an id that is not 1-128 of `A-Za-z0-9._:/+=-` is replaced by a new one).",
        "schema": {"type": "string", "maxLength": 128},
    },
    "RequestTimeout": {
        "name": "Request-Timeout",
        "in": "header",
        "required": False,
        "description": "Seconds the caller waits (a positive number): past it the server "
        "stops and answers 504. Wins over the `timeout` query parameter.",
        "schema": {"type": "number", "exclusiveMinimum": True, "minimum": 0},
    },
    "Timeout": {
        "name": "timeout",
        "in": "query",
        "required": False,
        "description": "Seconds the caller waits, as the Request-Timeout header gives them "
        "(for clients that cannot set headers).",
        "schema": {"type": "number", "exclusiveMinimum": True, "minimum": 0},
    },
}
# Statuses rest.py answers for any route it wraps, and when. 400 and 404 are
# the routes' own (each route says when), with the timeout's 400 added here.
_SHARED_ERRORS = {
    400: "The request is not valid (the message says what is wrong), or its timeout is "
    "not a positive number of seconds.",
    500: "An unexpected server error (logged with its trace; the answer holds none).",
    503: "The server is starting (no model version loaded yet) or shutting down: retry, "
    "on another replica if there is one.",
    504: "The request's timeout (Request-Timeout or `timeout`) passed before it was answered.",
}
_TOKEN_ERRORS = {
    401: "A bearer token is needed and was missing or not valid (servers started with "
    "--auth-token or --auth-token-file).",
    429: "Too many calls in flight (--max-concurrent-rpcs), the batch queue is full, or the "
    "request asks for more than the server's limits: retry later or send less.",
}
_BODY_ERRORS = {
    408: "The request body stalled for longer than --http-body-timeout-s.",
    413: "The request body is larger than --max-message-bytes.",
}


def document(
    described: Sequence[Described],
    apis: Sequence[Api],
    model_name: str,
) -> dict[str, Any]:
    """The OpenAPI document of the routes `described`, as JSON-ready values.

    Args:
        described: every route the REST port serves, with its operation.
        apis: the protocols' descriptions (their schemas and tag texts).
        model_name: the served model, the path parameter's example (the
            viewer's "Try it out" fills it in).
    """
    paths: dict[str, dict[str, Any]] = {}
    for route in described:
        path = openapi_path(route.path)
        method = route.method.lower()
        if method in paths.get(path, {}):
            raise ValueError(f"{route.method} {path} is described twice")
        paths.setdefault(path, {})[method] = _operation(route, model_name)
    schemas: dict[str, Schema] = {"Error": ERROR_SCHEMA, "B64": B64_SCHEMA}
    tags: dict[str, str] = {}
    for api in apis:
        for name, schema in api.schemas.items():
            if schemas.setdefault(name, schema) is not schema:
                raise ValueError(f"two protocols define the schema {name!r}")
        for operation in api.operations.values():
            tags.setdefault(operation.tag, api.tag_description)
    for route in described:
        tags.setdefault(route.operation.tag, "")
    return {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": "vggserve REST API",
            "version": _package_version(),
            "description": "The REST APIs of one vggserve server: TensorFlow Serving's "
            "(`/v1`), the Open Inference Protocol's (KServe V2, `/v2`), and Prometheus "
            f"metrics. The served model is `{model_name}`. Errors are always "
            '`{"error": "..."}` with an HTTP status that matches their gRPC code.',
        },
        "tags": [{"name": tag, "description": text} for tag, text in tags.items()],
        "paths": dict(sorted(paths.items())),
        "components": {
            "schemas": schemas,
            "parameters": _PARAMETERS,
            "headers": _ANSWER_HEADERS,
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "`Authorization: Bearer <token>`, when the server was "
                    "started with --auth-token or --auth-token-file (without them, no "
                    "route needs a token). Health probes, /metrics and these docs are open.",
                }
            },
        },
        "security": [{"bearer": []}],
    }


def _package_version() -> str:
    try:
        return package_metadata.version("vggserve")
    except package_metadata.PackageNotFoundError:  # run from a checkout not installed
        return "unknown"


def _operation(route: Described, model_name: str) -> dict[str, Any]:
    op = route.operation
    versioned = "{version" in route.path
    out: dict[str, Any] = {
        "operationId": route.name + ("Version" if versioned else ""),
        "summary": op.summary + (" (a version)" if versioned else ""),
        "tags": [op.tag],
    }
    if op.description:
        out["description"] = op.description
    parameters = [_path_parameter(name, regex, model_name) for name, regex in _params(route.path)]
    if op.shared:
        parameters += [{"$ref": f"#/components/parameters/{name}"} for name in _PARAMETERS]
    parameters += list(op.headers)
    if parameters:
        out["parameters"] = parameters
    if op.request is not None:
        out["requestBody"] = {
            "required": True,
            "description": op.request.description,
            "content": {media: {"schema": schema} for media, schema in op.request.content.items()},
        }
    errors: dict[int, str] = {}
    if op.shared:
        errors |= _SHARED_ERRORS
        if not route.open:
            errors |= _TOKEN_ERRORS
        if op.request is not None:
            errors |= _BODY_ERRORS
    for status, when in op.errors.items():
        # A route's own reason comes first; the shared one still applies.
        errors[status] = f"{when} {errors[status]}" if status in errors else when
    responses: dict[str, Any] = {}
    for status in sorted({*op.answers, *errors}):
        responses[str(status)] = _response(op, status, errors.get(status))
    out["responses"] = responses
    if route.open:
        out["security"] = []
    return out


def _params(pattern: str) -> list[tuple[str, str | None]]:
    return [(m.group(1), m.group(2)) for m in _PARAMETER.finditer(pattern)]


def _path_parameter(name: str, regex: str | None, model_name: str) -> Schema:
    schema: Schema = {"type": "string"}
    if regex:
        schema["pattern"] = f"^{regex}$"
    if name == "name":
        schema["example"] = model_name
        description = f"The model's name; this server serves `{model_name}` (--model-name)."
    elif name == "version":
        schema["example"] = "1"
        description = "A model version (a whole number >= 1); without it, the latest."
    else:
        description = name
    return {
        "name": name,
        "in": "path",
        "required": True,
        "description": description,
        "schema": schema,
    }


def _response(op: Operation, status: int, error_when: str | None) -> dict[str, Any]:
    answer = op.answers.get(status)
    headers = (
        {
            REQUEST_ID: {"$ref": "#/components/headers/RequestId"},
            SERVER_TIMING: {"$ref": "#/components/headers/ServerTiming"},
        }
        if op.shared
        else {}
    )
    if answer is None:
        assert error_when is not None
        content = {JSON: {"schema": ref("Error")}}
        description = error_when
    elif error_when is None:
        content = {media: {"schema": schema} for media, schema in answer.content.items()}
        description = answer.description
    else:
        # The status is an answer (a readiness probe's "not ready") or an error.
        content = {
            media: {"schema": {"oneOf": [schema, ref("Error")]}}
            for media, schema in answer.content.items()
        }
        description = f"{answer.description} Or an error: {error_when}"
    out: dict[str, Any] = {"description": description, "content": content}
    if headers:
        out["headers"] = headers
    return out


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
