"""The OpenAPI description of the Open Inference Protocol's REST API (adapters/v2_rest.py).

The shapes follow KServe's V2 REST specification (`$inference_request`,
`$inference_response`, `$metadata_model_response`, ...) with what this server
takes: one input, `images` (BYTES, encoded images as base64 strings or
{"b64": ...}) or `pixels` (UINT8 [N, H, W, C]); one output, `probabilities`
(FP32 [N, classes], or BYTES "score:index:label" strings with the
classification extension); and Triton's binary-data extension.
"""

from __future__ import annotations

from service.adapters import v2
from service.adapters.openapi import BINARY, JSON, Api, Body, Operation, Schema, ref

TAG = "Open Inference Protocol V2"
HEADER_LENGTH = "Inference-Header-Content-Length"

_TENSOR_DATA: Schema = {
    "type": "array",
    "description": "The tensor's elements, row-major: flat or nested as its shape. BYTES "
    'elements are base64 strings or {"b64": "..."}; UINT8 ones 0-255.',
    "items": {
        "anyOf": [
            ref("TensorData"),
            {"type": "number"},
            {"type": "string"},
            {"type": "boolean"},
            ref("B64"),
        ]
    },
}
_PARAMETERS: Schema = {"type": "object", "description": "Protocol parameters."}
_REQUEST_INPUT: Schema = {
    "type": "object",
    "required": ["name", "shape", "datatype"],
    "properties": {
        "name": {"type": "string", "enum": [v2.IMAGES, v2.PIXELS]},
        "shape": {"type": "array", "items": {"type": "integer"}, "example": [1]},
        "datatype": {"type": "string", "enum": ["BYTES", "UINT8"]},
        "parameters": {
            "type": "object",
            "properties": {
                "binary_data_size": {
                    "type": "integer",
                    "minimum": 0,
                    "description": "The tensor is this many bytes of the binary part "
                    f"(after the JSON, see {HEADER_LENGTH}); BYTES elements each "
                    "prefixed by a 4-byte little-endian length.",
                }
            },
        },
        "data": ref("TensorData"),
    },
    "description": f"`{v2.IMAGES}` BYTES [N] (or [N, 1]) of encoded images, or `{v2.PIXELS}` "
    "UINT8 [N, H, W, C] (or [H, W, C]) of pixels.",
}
_REQUEST_OUTPUT: Schema = {
    "type": "object",
    "required": ["name"],
    "properties": {
        "name": {"type": "string", "enum": [v2.PROBABILITIES]},
        "parameters": {
            "type": "object",
            "properties": {
                v2.CLASSIFICATION: {
                    "type": "integer",
                    "minimum": 0,
                    "description": "k > 0: the top k classes as BYTES "
                    '"score:index:label" strings instead of probabilities.',
                },
                "binary_data": {"type": "boolean", "description": "Answer it as binary data."},
            },
        },
    },
}
_INFERENCE_REQUEST: Schema = {
    "type": "object",
    "required": ["inputs"],
    "properties": {
        "id": {"type": "string"},
        "parameters": {
            "type": "object",
            "properties": {
                "binary_data_output": {
                    "type": "boolean",
                    "description": "Every output as binary data, unless it says otherwise.",
                }
            },
        },
        "inputs": {"type": "array", "items": ref("RequestInput"), "minItems": 1, "maxItems": 1},
        "outputs": {"type": "array", "items": ref("RequestOutput")},
    },
    "example": {
        "id": "r1",
        "inputs": [
            {"name": v2.IMAGES, "datatype": "BYTES", "shape": [1], "data": ["iVBORw0KGgo..."]}
        ],
    },
}
_RESPONSE_OUTPUT: Schema = {
    "type": "object",
    "required": ["name", "datatype", "shape"],
    "properties": {
        "name": {"type": "string"},
        "datatype": {"type": "string", "enum": ["FP32", "BYTES"]},
        "shape": {"type": "array", "items": {"type": "integer", "minimum": 0}},
        "data": {
            "type": "array",
            "description": "Row-major and flat: FP32 probabilities, or BYTES "
            '"score:index:label" strings.',
            "items": {"oneOf": [{"type": "number"}, {"type": "string"}]},
        },
        "parameters": {
            "type": "object",
            "required": ["binary_data_size"],
            "properties": {"binary_data_size": {"type": "integer", "minimum": 0}},
            "additionalProperties": False,
        },
    },
    "additionalProperties": False,
}
_INFERENCE_RESPONSE: Schema = {
    "type": "object",
    "required": ["model_name", "model_version", "outputs"],
    "properties": {
        "model_name": {"type": "string"},
        "model_version": {"type": "string"},
        "id": {"type": "string"},
        "parameters": _PARAMETERS,
        "outputs": {"type": "array", "items": ref("ResponseOutput")},
    },
    "additionalProperties": False,
}
_METADATA_TENSOR: Schema = {
    "type": "object",
    "required": ["name", "datatype", "shape"],
    "properties": {
        "name": {"type": "string"},
        "datatype": {"type": "string"},
        "shape": {"type": "array", "items": {"type": "integer"}, "description": "-1: any"},
    },
    "additionalProperties": False,
}
_MODEL_METADATA: Schema = {
    "type": "object",
    "required": ["name", "platform", "inputs", "outputs"],
    "properties": {
        "name": {"type": "string"},
        "versions": {"type": "array", "items": {"type": "string"}},
        "platform": {"type": "string", "example": v2.PLATFORM},
        "inputs": {"type": "array", "items": ref("MetadataTensor")},
        "outputs": {"type": "array", "items": ref("MetadataTensor")},
    },
    "additionalProperties": False,
}
_SERVER_METADATA: Schema = {
    "type": "object",
    "required": ["name", "version", "extensions"],
    "properties": {
        "name": {"type": "string", "example": v2.SERVER_NAME},
        "version": {"type": "string"},
        "extensions": {"type": "array", "items": {"type": "string"}},
    },
    "additionalProperties": False,
}


def _flag(name: str) -> Schema:
    return {
        "type": "object",
        "required": [name],
        "properties": {name: {"type": "boolean"}},
        "additionalProperties": False,
    }


_MODEL_READY: Schema = {
    "type": "object",
    "required": ["name", "ready"],
    "properties": {"name": {"type": "string"}, "ready": {"type": "boolean"}},
    "additionalProperties": False,
}
_NOT_SERVED = "The model is not served here, or the version asked is not loaded."
_HEADER_LENGTH_PARAMETER: Schema = {
    "name": HEADER_LENGTH,
    "in": "header",
    "required": False,
    "description": "Triton's binary-data extension: the body's first this many bytes are "
    "the JSON request, the rest the tensors' bytes (`binary_data_size` on each input). "
    "An answer with binary outputs carries the same header.",
    "schema": {"type": "integer", "minimum": 0},
}
_BINARY_BODY: Schema = {
    "type": "string",
    "format": "binary",
    "description": f"The JSON document ({HEADER_LENGTH} bytes), then the binary tensors.",
}


def _json(description: str, name: str) -> Body:
    return Body.json(description, ref(name))


API = Api(
    tag_description="The Open Inference Protocol (KServe V2) over REST (`/v2/...`); "
    "tritonclient's http client works unchanged.",
    schemas={
        "TensorData": _TENSOR_DATA,
        "RequestInput": _REQUEST_INPUT,
        "RequestOutput": _REQUEST_OUTPUT,
        "InferenceRequest": _INFERENCE_REQUEST,
        "ResponseOutput": _RESPONSE_OUTPUT,
        "InferenceResponse": _INFERENCE_RESPONSE,
        "MetadataTensor": _METADATA_TENSOR,
        "ModelMetadataResponse": _MODEL_METADATA,
        "ServerMetadataResponse": _SERVER_METADATA,
        "ServerLiveResponse": _flag("live"),
        "ServerReadyResponse": _flag("ready"),
        "ModelReadyResponse": _MODEL_READY,
    },
    operations={
        "ServerLive": Operation(
            "Liveness probe",
            TAG,
            {200: _json("The server answers.", "ServerLiveResponse")},
        ),
        "ServerReady": Operation(
            "Readiness probe",
            TAG,
            {
                200: _json("Ready for traffic.", "ServerReadyResponse"),
                503: _json(
                    '{"ready": false}: not warm yet, no version loaded, or draining '
                    "(503, so probes that check the status read it as not ready).",
                    "ServerReadyResponse",
                ),
            },
        ),
        "ServerMetadata": Operation(
            "Server metadata",
            TAG,
            {
                200: _json(
                    "The server's name, version and protocol extensions.", "ServerMetadataResponse"
                )
            },
        ),
        "ModelMetadata": Operation(
            "Model metadata",
            TAG,
            {200: _json("The model's versions, inputs and outputs.", "ModelMetadataResponse")},
            {404: _NOT_SERVED},
        ),
        "ModelReady": Operation(
            "Model readiness",
            TAG,
            {
                200: _json("The model (at that version) is ready.", "ModelReadyResponse"),
                503: _json(
                    '{"ready": false}: not served, not loaded, or the server is not ready.',
                    "ModelReadyResponse",
                ),
            },
        ),
        "ModelInfer": Operation(
            "Inference",
            TAG,
            {
                200: Body(
                    "The outputs; binary data after the JSON when asked (then "
                    f"{HEADER_LENGTH} says where the JSON ends).",
                    {JSON: ref("InferenceResponse"), BINARY: _BINARY_BODY},
                )
            },
            {
                400: "The request is not valid JSON of the documented shape, or an image is "
                "refused (the message names it).",
                404: _NOT_SERVED,
            },
            request=Body(
                "A V2 inference request; with binary data, its JSON part then the tensors.",
                {JSON: ref("InferenceRequest"), BINARY: _BINARY_BODY},
            ),
            headers=[_HEADER_LENGTH_PARAMETER],
            description="One bad image fails the request (V2 has no per-image error), with "
            "a message naming the image.",
        ),
    },
)
