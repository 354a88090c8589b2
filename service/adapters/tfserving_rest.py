"""TensorFlow Serving's REST API, on the shared REST server (adapters/rest.py).

    GET  /v1/models/NAME[/versions/N]             version states
    GET  /v1/models/NAME[/versions/N]/metadata    the signatures
    POST /v1/models/NAME[/versions/N]:predict     {"instances": [...]} or {"inputs": ...}
    POST /v1/models/NAME[/versions/N]:classify    {"examples": [{"image/encoded": {"b64": ...}}]}
    POST /v1/models/NAME[/versions/N]:explain     {"instances": [...], "class_index"?, "top_k"?}

`:explain` is KServe's V1 verb (TF Serving has none): Grad-CAM of each image,
the heatmap and overlay as PNGs ({"b64": ...}), from the version's `gradcam`
signature.

`serving_default` takes encoded images as {"b64": "..."}; `serving_pixels`
takes uint8 pixels as nested lists [height][width][channels]. The row format
("instances") answers {"predictions": [[...], ...]}, the columnar one
("inputs") {"outputs": [[...], ...]}, as TF Serving does for a signature with
one output. Errors: {"error": "..."} (adapters/rest.py).
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

import numpy as np
from aiohttp import web
from google.protobuf import json_format

from service.adapters import rest, tfserving, tfserving_openapi
from service.core import (
    TFSERVING_REST,
    Core,
    Encoded,
    InvalidImage,
    InvalidRequest,
    Pixels,
    RawImage,
    RequestContext,
)

NAME = "{name:[^/:]+}"
VERSION = "{version:[0-9]+}"


def _spec(request: web.Request, ctx: RequestContext) -> RequestContext:
    raw = request.match_info.get("version")  # ASCII digits: the route's pattern
    return tfserving.context(ctx, request.match_info["name"], int(raw) if raw else None)


def _served(core: Core, request: web.Request, ctx: RequestContext) -> None:
    """The model and version asked are served: checked before the body is read."""
    core.check(_spec(request, ctx))


def _body(data: bytes) -> dict[str, Any]:
    body = rest.load_json(data)
    if not isinstance(body, dict):
        raise InvalidRequest("the request body must be a JSON object")
    return body


def _encoded(value: Any, where: str) -> RawImage:
    if not (isinstance(value, dict) and list(value) == ["b64"] and isinstance(value["b64"], str)):
        raise InvalidImage(f'{where}: an encoded image must be {{"b64": "<base64 bytes>"}}')
    try:
        return Encoded(base64.b64decode(value["b64"].encode("ascii"), validate=True))
    except (binascii.Error, UnicodeEncodeError):
        raise InvalidImage(f"{where}: the b64 value is not valid base64") from None


def _pixels(value: Any, where: str) -> RawImage:
    try:
        array = np.asarray(value)
    except (ValueError, RecursionError):
        array = np.asarray(None)  # ragged or absurdly nested lists: refused below
    # dtype kind "iu": JSON true/false would make a bool array, floats an "f" one.
    if array.ndim != 3 or array.dtype.kind not in "iu" or array.size == 0:
        raise InvalidImage(f"{where}: pixels must be integer lists [height][width][channels]")
    if array.min() < 0 or array.max() > 255:
        raise InvalidImage(f"{where}: pixel values must be 0-255")
    height, width, channels = array.shape
    return Pixels(array.astype(np.uint8).tobytes(), height, width, channels)


def images_of(
    core: Core, body: dict[str, Any], sig: tfserving.Signature
) -> tuple[list[RawImage], bool]:
    """The images of a :predict body, and whether it used the row format ("instances").

    The count is admitted before any image is converted.
    """
    convert = _pixels if sig.pixels else _encoded
    if ("instances" in body) == ("inputs" in body):
        raise InvalidRequest('the body must hold exactly one of "instances" and "inputs"')
    rows = "instances" in body
    data = body["instances" if rows else "inputs"]
    if rows and isinstance(data, list):
        core.admit(len(data))
        # Each instance is the image itself, or {"<input name>": image}.
        named = [
            item[sig.input] if isinstance(item, dict) and list(item) == [sig.input] else item
            for item in data
        ]
        return [convert(v, f"instance {i}") for i, v in enumerate(named)], True
    if not rows:
        if isinstance(data, dict) and "b64" not in data:
            tfserving.check_inputs(sig, list(data))
            data = data[sig.input]
        if isinstance(data, list):
            core.admit(len(data))
            return [convert(v, f"input {i}") for i, v in enumerate(data)], False
    raise InvalidRequest(
        f'"{"instances" if rows else "inputs"}" must be a list of images '
        f"({'pixel lists' if sig.pixels else 'b64 objects'})"
    )


def _classify_images(core: Core, body: dict[str, Any]) -> list[RawImage]:
    examples = body.get("examples")
    if not isinstance(examples, list):
        raise InvalidRequest('the body must hold "examples": a list of objects')
    context = body.get("context", {})
    if not isinstance(context, dict):
        raise InvalidRequest('"context" must be an object of features shared by every example')
    core.admit(len(examples))
    images = []
    for i, example in enumerate(examples):
        merged = {**context, **example} if isinstance(example, dict) else None
        if merged is None or tfserving.IMAGE_FEATURE not in merged:
            raise InvalidImage(
                f'example {i}: put the image under "{tfserving.IMAGE_FEATURE}" as {{"b64": ...}}'
            )
        images.append(_encoded(merged[tfserving.IMAGE_FEATURE], f"example {i}"))
    return images


def _class_indices(given: Any, count: int) -> list[int | None]:
    """`class_index`: absent (predicted), one for all, or one per instance (-1: predicted)."""
    values = given if isinstance(given, list) else [given] * count
    if len(values) != count or not all(
        v is None or (isinstance(v, int) and not isinstance(v, bool) and v >= -1) for v in values
    ):
        raise InvalidRequest(
            f'"class_index" must be a class number (-1: the predicted class), or a list of '
            f"{count} of them, got {given!r}"
        )
    return [None if v is None or v == -1 else v for v in values]


def routes(context: rest.Context) -> list[rest.Route]:
    core: Core = context.core

    async def predict(request: web.Request, ctx: RequestContext) -> web.Response:
        _served(core, request, ctx)

        def parsed(data: bytes) -> tuple[list[RawImage], bool]:
            body = _body(data)
            return images_of(core, body, tfserving.signature(body.get("signature_name", "")))

        raws, rows = await rest.parse(await request.read(), parsed)
        found = await tfserving.predict(core, ctx, raws)
        values = [p.probabilities.tolist() for p in found]
        return web.json_response({"predictions": values} if rows else {"outputs": values})

    async def classify(request: web.Request, ctx: RequestContext) -> web.Response:
        _served(core, request, ctx)

        def parsed(data: bytes) -> list[RawImage]:
            body = _body(data)
            tfserving.classify_signature(
                tfserving.signature(body.get("signature_name", "")), ":classify"
            )
            return _classify_images(core, body)

        found = await tfserving.predict(core, ctx, await rest.parse(await request.read(), parsed))
        ranked = [[[label, score] for label, score in tfserving.ranked(p)] for p in found]
        return web.json_response({"result": ranked})

    async def explain(request: web.Request, ctx: RequestContext) -> web.Response:
        """KServe's V1 `:explain` verb: Grad-CAM of each instance (see "Explanations")."""
        _served(core, request, ctx)

        def parsed(data: bytes) -> tuple[list[RawImage], list[int | None], int]:
            body = _body(data)
            raws, _ = images_of(core, body, tfserving.signature(""))
            top_k = body.get("top_k", 5)
            if not isinstance(top_k, int) or isinstance(top_k, bool) or top_k < 0:
                raise InvalidRequest(f'"top_k" must be a whole number >= 0, got {top_k!r}')
            return raws, _class_indices(body.get("class_index"), len(raws)), top_k

        raws, wanted, top_k = await rest.parse(await request.read(), parsed)
        answers = await core.explain_all(ctx, raws, wanted)
        return web.json_response(
            {
                "model_spec": {"name": core.model_name, "version": str(answers[0][0].version)},
                "explanations": [
                    {
                        "class_index": explanation.class_index,
                        "label": prediction.labels[explanation.class_index],
                        "probability": float(prediction.probabilities[explanation.class_index]),
                        "top": [[label, p] for _, label, p in prediction.top(top_k)],
                        "heatmap_png": {"b64": base64.b64encode(explanation.heatmap_png).decode()},
                        "overlay_png": {"b64": base64.b64encode(explanation.overlay_png).decode()},
                    }
                    for prediction, explanation in answers
                ],
            }
        )

    async def status(request: web.Request, ctx: RequestContext) -> web.Response:
        found = tfserving.statuses(core, _spec(request, ctx))
        return web.json_response(
            {
                "model_version_status": [
                    {
                        "version": str(s.version),
                        "state": s.state.value,
                        "status": {
                            "error_code": "UNKNOWN" if s.error else "OK",
                            "error_message": s.error,
                        },
                    }
                    for s in found
                ]
            }
        )

    async def metadata(request: web.Request, ctx: RequestContext) -> web.Response:
        info, signatures = tfserving.metadata(core, _spec(request, ctx))
        defs = json_format.MessageToDict(signatures, preserving_proto_field_name=True)
        spec = {"name": info.name, "signature_name": "", "version": str(info.version)}
        return web.json_response({"model_spec": spec, "metadata": {"signature_def": defs}})

    routes = []
    for prefix in (f"/v1/models/{NAME}", f"/v1/models/{NAME}/versions/{VERSION}"):
        routes += [
            rest.Route("GET", prefix, status, "GetModelStatus"),
            rest.Route("GET", f"{prefix}/metadata", metadata, "GetModelMetadata"),
            rest.Route("POST", f"{prefix}:predict", predict, "Predict"),
            rest.Route("POST", f"{prefix}:classify", classify, "Classify"),
            rest.Route("POST", f"{prefix}:explain", explain, "Explain"),
        ]
    return routes


PROTOCOL = rest.Protocol(TFSERVING_REST, routes, tfserving_openapi.API)
