"""Builds the OpenAPI document of the routes the REST port mounts (see openapi.py).

Beyond each route's own `Operation`, it adds what rest.py does the same way
for every route: the path parameters (the model name, the version), bearer
security unless the route is open, the request id and timeout parameters,
the X-Request-Id and Server-Timing answer headers, and the error statuses the
shared server answers (400 for a bad timeout, 401, 408, 413, 429, 500, 503,
504) as `{"error": "..."}`.
"""

from __future__ import annotations

from collections.abc import Sequence
from importlib import metadata as package_metadata
from typing import Any

from service.adapters.openapi import (
    B64_SCHEMA,
    ERROR_SCHEMA,
    JSON,
    OPENAPI_VERSION,
    Api,
    Described,
    Operation,
    Schema,
    openapi_path,
    path_parameters,
    ref,
)

# The answer headers rest.py sets (service.core.REQUEST_ID_HEADER, in its usual
# capitals, and rest.SERVER_TIMING_HEADER: rest.py imports this module).
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
    parameters = [
        _path_parameter(name, regex, model_name) for name, regex in path_parameters(route.path)
    ]
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
