"""The OpenAPI description of TensorFlow Serving's REST API (adapters/tfserving_rest.py).

The shapes are TF Serving's own (its REST API guide: "instances"/"inputs",
`{"b64": ...}` for binary values, the proto-JSON of GetModelStatus and
GetModelMetadata); `:explain` is KServe's V1 verb, answered with Grad-CAM.
"""

from __future__ import annotations

from model import layout
from service.adapters import tfserving
from service.adapters.openapi import Api, Body, Operation, Schema, ref

TAG = "TensorFlow Serving"
IMAGE_FEATURE = tfserving.IMAGE_FEATURE

_PIXELS: Schema = {
    "type": "array",
    "description": "uint8 pixels [height][width][channels] (1, 3 or 4 channels), for "
    "the `serving_pixels` signature.",
    "items": {
        "type": "array",
        "items": {
            "type": "array",
            "items": {"type": "integer", "minimum": 0, "maximum": 255},
            "minItems": 1,
        },
        "minItems": 1,
    },
    "minItems": 1,
    "example": [[[255, 0, 0], [0, 255, 0]], [[0, 0, 255], [255, 255, 255]]],
}
_IMAGE: Schema = {
    "description": 'One image: an encoded JPEG/PNG/BMP/GIF as {"b64": ...} '
    "(`serving_default`) or pixels (`serving_pixels`), bare or under its input's name.",
    "anyOf": [
        ref("B64"),
        ref("Pixels"),
        {
            "type": "object",
            "required": [layout.IMAGES_INPUT],
            "properties": {layout.IMAGES_INPUT: ref("B64")},
            "additionalProperties": False,
        },
        {
            "type": "object",
            "required": [layout.PIXELS_INPUT],
            "properties": {layout.PIXELS_INPUT: ref("Pixels")},
            "additionalProperties": False,
        },
    ],
}
_SIGNATURE_NAME: Schema = {
    "type": "string",
    "enum": ["", layout.SERVING_SIGNATURE, layout.PIXELS_SIGNATURE],
    "default": layout.SERVING_SIGNATURE,
    "description": f"`{layout.SERVING_SIGNATURE}` takes encoded images, "
    f"`{layout.PIXELS_SIGNATURE}` uint8 pixels.",
}
_IMAGES: Schema = {"type": "array", "items": ref("TFServingImage")}
_INPUTS: Schema = {
    "description": "The columnar format: the images as a list, or under the input's name.",
    "oneOf": [
        _IMAGES,
        {
            "type": "object",
            "minProperties": 1,
            "maxProperties": 1,
            "additionalProperties": _IMAGES,
        },
    ],
}
_PREDICT_REQUEST: Schema = {
    "type": "object",
    "description": 'The row format ("instances") or the columnar one ("inputs"), not both.',
    "properties": {
        "signature_name": _SIGNATURE_NAME,
        "instances": _IMAGES,
        "inputs": _INPUTS,
    },
    "oneOf": [{"required": ["instances"]}, {"required": ["inputs"]}],
    "example": {"instances": [{"b64": "iVBORw0KGgo..."}]},
}
_PROBABILITIES: Schema = {
    "type": "array",
    "description": "Per image, the probability of each class (labels in the model's order).",
    "items": {"type": "array", "items": {"type": "number"}},
}
_PREDICT_RESPONSE: Schema = {
    "description": '"predictions" answers the row format, "outputs" the columnar one.',
    "oneOf": [
        {
            "type": "object",
            "required": ["predictions"],
            "properties": {"predictions": _PROBABILITIES},
            "additionalProperties": False,
        },
        {
            "type": "object",
            "required": ["outputs"],
            "properties": {"outputs": _PROBABILITIES},
            "additionalProperties": False,
        },
    ],
}
_LABEL_SCORE: Schema = {
    "type": "array",
    "description": "[label, probability]",
    "items": {"oneOf": [{"type": "string"}, {"type": "number"}]},
    "minItems": 2,
    "maxItems": 2,
    "example": ["circle", 0.93],
}
_CLASSIFY_REQUEST: Schema = {
    "type": "object",
    "required": ["examples"],
    "properties": {
        "signature_name": {**_SIGNATURE_NAME, "enum": ["", layout.SERVING_SIGNATURE]},
        "context": {
            "type": "object",
            "description": "Features shared by every example (an example's own win).",
        },
        "examples": {
            "type": "array",
            "items": {
                "type": "object",
                "description": f'tf.Example features; the image under "{IMAGE_FEATURE}".',
                "properties": {IMAGE_FEATURE: ref("B64")},
            },
        },
    },
    "example": {"examples": [{IMAGE_FEATURE: {"b64": "iVBORw0KGgo..."}}]},
}
_CLASSIFY_RESPONSE: Schema = {
    "type": "object",
    "required": ["result"],
    "properties": {
        "result": {
            "type": "array",
            "description": "Per example, every class as [label, probability], most probable first.",
            "items": {"type": "array", "items": ref("LabelScore")},
        }
    },
    "additionalProperties": False,
}
_EXPLAIN_REQUEST: Schema = {
    "type": "object",
    "description": 'Encoded images ("instances" or "inputs", as for :predict).',
    "properties": {
        "instances": _IMAGES,
        "inputs": _INPUTS,
        "class_index": {
            "description": "The class to explain: one for all images or one per image; "
            "-1 or absent: the predicted class.",
            "oneOf": [
                {"type": "integer", "minimum": -1},
                {"type": "array", "items": {"type": "integer", "minimum": -1, "nullable": True}},
            ],
        },
        "top_k": {"type": "integer", "minimum": 0, "default": 5},
    },
    "oneOf": [{"required": ["instances"]}, {"required": ["inputs"]}],
}
_EXPLANATION: Schema = {
    "type": "object",
    "required": ["class_index", "label", "probability", "top", "heatmap_png", "overlay_png"],
    "properties": {
        "class_index": {"type": "integer", "minimum": 0},
        "label": {"type": "string"},
        "probability": {"type": "number"},
        "top": {"type": "array", "items": ref("LabelScore")},
        "heatmap_png": ref("B64"),
        "overlay_png": ref("B64"),
    },
    "additionalProperties": False,
}
_MODEL_SPEC: Schema = {
    "type": "object",
    "required": ["name", "version"],
    "properties": {
        "name": {"type": "string"},
        "signature_name": {"type": "string"},
        "version": {"type": "string", "description": "int64 as a string (proto JSON)"},
    },
    "additionalProperties": False,
}
_EXPLAIN_RESPONSE: Schema = {
    "type": "object",
    "required": ["model_spec", "explanations"],
    "properties": {
        "model_spec": ref("ModelSpec"),
        "explanations": {"type": "array", "items": ref("Explanation")},
    },
    "additionalProperties": False,
}
_STATUS_RESPONSE: Schema = {
    "type": "object",
    "description": "GetModelStatusResponse as proto JSON.",
    "required": ["model_version_status"],
    "properties": {
        "model_version_status": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["version", "state", "status"],
                "properties": {
                    "version": {"type": "string"},
                    "state": {
                        "type": "string",
                        "enum": ["START", "LOADING", "AVAILABLE", "UNLOADING", "END"],
                    },
                    "status": {
                        "type": "object",
                        "required": ["error_code", "error_message"],
                        "properties": {
                            "error_code": {"type": "string", "enum": ["OK", "UNKNOWN"]},
                            "error_message": {"type": "string"},
                        },
                        "additionalProperties": False,
                    },
                },
                "additionalProperties": False,
            },
        }
    },
    "additionalProperties": False,
}
_TENSOR_INFO: Schema = {
    "type": "object",
    "required": ["name", "dtype", "tensor_shape"],
    "properties": {
        "name": {"type": "string"},
        "dtype": {"type": "string", "example": "DT_STRING"},
        "tensor_shape": {
            "type": "object",
            "properties": {
                "dim": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "properties": {
                            "size": {"type": "string", "description": "int64; -1: any"},
                            "name": {"type": "string"},
                        },
                    },
                },
                "unknown_rank": {"type": "boolean"},
            },
        },
    },
}
_SIGNATURE_DEF: Schema = {
    "type": "object",
    "required": ["inputs", "outputs", "method_name"],
    "properties": {
        "inputs": {"type": "object", "additionalProperties": ref("TensorInfo")},
        "outputs": {"type": "object", "additionalProperties": ref("TensorInfo")},
        "method_name": {"type": "string", "example": "tensorflow/serving/predict"},
    },
}
_METADATA_RESPONSE: Schema = {
    "type": "object",
    "description": "GetModelMetadataResponse as proto JSON: the SignatureDefMap.",
    "required": ["model_spec", "metadata"],
    "properties": {
        "model_spec": ref("ModelSpec"),
        "metadata": {
            "type": "object",
            "required": ["signature_def"],
            "properties": {
                "signature_def": {
                    "type": "object",
                    "required": ["signature_def"],
                    "properties": {
                        "signature_def": {
                            "type": "object",
                            "additionalProperties": ref("SignatureDef"),
                        }
                    },
                }
            },
            "additionalProperties": False,
        },
    },
    "additionalProperties": False,
}

_NOT_SERVED = "The model is not served here, or the version asked is not loaded."
_BAD_BODY = (
    "The body is not JSON of the documented shape, or an image is refused (the message "
    "names it: not base64, not an image, too many pixels, does not decode)."
)


def _json(description: str, name: str) -> Body:
    return Body.json(description, ref(name))


API = Api(
    tag_description="TensorFlow Serving's REST API (`/v1/models/...`), as its clients send it.",
    schemas={
        "Pixels": _PIXELS,
        "TFServingImage": _IMAGE,
        "PredictRequest": _PREDICT_REQUEST,
        "PredictResponse": _PREDICT_RESPONSE,
        "LabelScore": _LABEL_SCORE,
        "ClassifyRequest": _CLASSIFY_REQUEST,
        "ClassifyResponse": _CLASSIFY_RESPONSE,
        "ExplainRequest": _EXPLAIN_REQUEST,
        "Explanation": _EXPLANATION,
        "ModelSpec": _MODEL_SPEC,
        "ExplainResponse": _EXPLAIN_RESPONSE,
        "GetModelStatusResponse": _STATUS_RESPONSE,
        "TensorInfo": _TENSOR_INFO,
        "SignatureDef": _SIGNATURE_DEF,
        "GetModelMetadataResponse": _METADATA_RESPONSE,
    },
    operations={
        "GetModelStatus": Operation(
            "Version states",
            TAG,
            {200: _json("Every version's state, or the one asked for.", "GetModelStatusResponse")},
            {404: _NOT_SERVED},
        ),
        "GetModelMetadata": Operation(
            "Signatures",
            TAG,
            {
                200: _json(
                    "The version's signatures (the latest by default).", "GetModelMetadataResponse"
                )
            },
            {404: _NOT_SERVED},
        ),
        "Predict": Operation(
            "Class probabilities of images",
            TAG,
            {200: _json("Per image, its class probabilities.", "PredictResponse")},
            {400: _BAD_BODY, 404: _NOT_SERVED},
            request=_json("Images, as rows or columns.", "PredictRequest"),
            description="One bad image fails the request, with a message naming it.",
        ),
        "Classify": Operation(
            "Every class, most probable first",
            TAG,
            {200: _json("Per example, [label, probability] pairs.", "ClassifyResponse")},
            {400: _BAD_BODY, 404: _NOT_SERVED},
            request=_json("tf.Example-style examples with encoded images.", "ClassifyRequest"),
        ),
        "Explain": Operation(
            "Grad-CAM heatmaps of images",
            TAG,
            {
                200: _json(
                    "Per image, the class explained, its heatmap and overlay.", "ExplainResponse"
                )
            },
            {400: _BAD_BODY, 404: _NOT_SERVED},
            request=_json("Encoded images, and the classes to explain.", "ExplainRequest"),
            description="KServe's V1 `:explain` verb (TF Serving has none). Explanations "
            "have their own concurrency gate (--explain-max-concurrent): 429 when it is full.",
        ),
    },
)
