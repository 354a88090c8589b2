"""The Open Inference Protocol's REST API (KServe V2): HTTP <-> service.adapters.v2.

Routes, on the shared REST server (service.adapters.rest, which owns tokens,
TLS, limits, deadlines and the `{"error": "..."}` bodies):

    GET  /v2/health/live                                 {"live": true}       (no token)
    GET  /v2/health/ready                                {"ready": bool}      (no token)
    GET  /v2                                             server metadata
    GET  /v2/models/NAME[/versions/N]                    model metadata
    GET  /v2/models/NAME[/versions/N]/ready              {"name", "ready"}
    POST /v2/models/NAME[/versions/N]/infer              inference

"Not ready" is answered 503, so probes and tritonclient (which checks for
200) read it as false. BYTES elements in JSON are base64 strings, or
{"b64": "..."} objects as TF Serving's REST API takes them: an image is
binary and JSON strings are text. The binary-data extension
(Inference-Header-Content-Length) carries tensors raw after the JSON, BYTES
elements length-prefixed, as tritonclient sends them by default; outputs come
back binary when asked (`binary_data` on an output, or `binary_data_output`
on the request).
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterator
from typing import Any

import numpy as np
from aiohttp import web

from service.adapters import rest, v2
from service.core.errors import InvalidRequest
from service.core.protocols import V2_REST

HEADER_LENGTH = "Inference-Header-Content-Length"
BINARY = "binary_tensor_data"


def _flat(value: Any) -> Iterator[Any]:
    """Row-major elements of a JSON tensor, nested lists or flat alike."""
    if isinstance(value, list):
        for item in value:
            yield from _flat(item)
    else:
        yield value


def _element_bytes(item: Any, index: int) -> bytes:
    if isinstance(item, dict) and set(item) == {"b64"}:
        item = item["b64"]
    if not isinstance(item, str):
        raise InvalidRequest(
            f"images[{index}] is {type(item).__name__}: send each image as a base64 string "
            'or {"b64": "..."}, or as binary data'
        )
    try:
        return base64.b64decode(item, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidRequest(
            f"images[{index}] is not base64: send each image as a base64 string "
            'or {"b64": "..."}, or as binary data (Inference-Header-Content-Length)'
        ) from None


def _object(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise InvalidRequest(f"{what} must be a JSON object")
    return value


def _parse(body: bytes, header_length: str | None) -> tuple[dict[str, Any], bytes]:
    """The JSON part of the body and the binary part after it."""
    if header_length is None:
        split = len(body)
    else:
        if not header_length.isdigit() or int(header_length) > len(body):
            raise InvalidRequest(
                f"{HEADER_LENGTH} is {header_length!r}; it must be the JSON part's length in "
                f"bytes, at most the body's {len(body)}"
            )
        split = int(header_length)
    try:
        document = json.loads(body[:split])
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidRequest(f"request body is not JSON: {exc}") from None
    return _object(document, "the request"), body[split:]


def _tensors(document: dict[str, Any], binary: bytes) -> list[v2.Tensor]:
    tensors, offset = [], 0
    inputs = document.get("inputs")
    if not isinstance(inputs, list):
        raise InvalidRequest('the request needs "inputs": a list of tensors')
    for item in inputs:
        item = _object(item, "each input")
        name, datatype, shape = item.get("name"), item.get("datatype"), item.get("shape")
        if not (isinstance(name, str) and isinstance(datatype, str) and isinstance(shape, list)):
            raise InvalidRequest('each input needs "name", "datatype" and "shape"')
        if not all(isinstance(d, int) for d in shape):
            raise InvalidRequest(f"input '{name}': shape must be a list of integers")
        size = _object(item.get("parameters", {}), "parameters").get("binary_data_size")
        if size is not None:
            if not isinstance(size, int) or size < 0 or offset + size > len(binary):
                raise InvalidRequest(
                    f"input '{name}': binary_data_size {size!r} does not fit the "
                    f"{len(binary) - offset} bytes of binary data left"
                )
            raw = binary[offset : offset + size]
            offset += size
            tensors.append(v2.Tensor(name, datatype, tuple(shape), raw=raw))
            continue
        data = list(_flat(item.get("data", [])))
        if datatype == "BYTES":
            elements: list[bytes] | list[int] = [_element_bytes(e, i) for i, e in enumerate(data)]
        else:
            elements = data
        tensors.append(v2.Tensor(name, datatype, tuple(shape), elements=elements))
    return tensors


def _outputs(document: dict[str, Any]) -> tuple[list[v2.RequestedOutput], list[bool]]:
    """The requested outputs, and whether each is wanted as binary data."""
    default = bool(_object(document.get("parameters", {}), "parameters").get("binary_data_output"))
    wanted = document.get("outputs") or [{"name": v2.PROBABILITIES}]
    if not isinstance(wanted, list):
        raise InvalidRequest('"outputs" must be a list')
    outputs, binary = [], []
    for item in wanted:
        item = _object(item, "each output")
        parameters = _object(item.get("parameters", {}), "parameters")
        k = parameters.get(v2.CLASSIFICATION, 0)
        if not isinstance(k, int) or isinstance(k, bool):
            raise InvalidRequest(f"parameter '{v2.CLASSIFICATION}' must be an integer")
        outputs.append(v2.RequestedOutput(str(item.get("name")), k))
        binary.append(bool(parameters.get("binary_data", default)))
    return outputs, binary


def _answer(result: v2.InferResponse, binary: list[bool]) -> web.Response:
    outputs, chunks = [], []
    for output, as_binary in zip(result.outputs, binary, strict=True):
        entry: dict[str, Any] = {
            "name": output.name,
            "datatype": output.datatype,
            "shape": output.shape,
        }
        if isinstance(output.data, np.ndarray):
            raw = output.data.astype("<f4").tobytes()
            data: list[Any] = output.data.ravel().tolist()
        else:
            raw = v2.join_bytes(output.data)
            data = [item.decode() for item in output.data]  # "score:index:label" is text
        if as_binary:
            entry["parameters"] = {"binary_data_size": len(raw)}
            chunks.append(raw)
        else:
            entry["data"] = data
        outputs.append(entry)
    document: dict[str, Any] = {
        "model_name": result.model_name,
        "model_version": result.model_version,
        "outputs": outputs,
    }
    if result.id:
        document["id"] = result.id
    header = json.dumps(document).encode()
    if not chunks:
        return web.Response(body=header, content_type="application/json")
    return web.Response(
        body=header + b"".join(chunks),
        content_type="application/octet-stream",
        headers={HEADER_LENGTH: str(len(header))},
    )


def routes(context: rest.Context) -> list[rest.Route]:
    core = context.core

    def version(request: web.Request) -> str:
        return request.match_info.get("version", "")

    async def live(request: web.Request, deadline: float | None) -> web.Response:
        return web.json_response({"live": True})

    async def ready(request: web.Request, deadline: float | None) -> web.Response:
        is_ready = v2.server_ready(core)
        return web.json_response({"ready": is_ready}, status=200 if is_ready else 503)

    async def server(request: web.Request, deadline: float | None) -> web.Response:
        return web.json_response(v2.server_metadata([*v2.EXTENSIONS, BINARY]))

    async def model(request: web.Request, deadline: float | None) -> web.Response:
        return web.json_response(
            v2.model_metadata(core, request.match_info["name"], version(request))
        )

    async def model_ready(request: web.Request, deadline: float | None) -> web.Response:
        name = request.match_info["name"]
        is_ready = v2.model_ready(core, name, version(request))
        return web.json_response({"name": name, "ready": is_ready}, status=200 if is_ready else 503)

    async def infer(request: web.Request, deadline: float | None) -> web.Response:
        document, binary = _parse(await request.read(), request.headers.get(HEADER_LENGTH))
        outputs, as_binary = _outputs(document)
        infer_request = v2.InferRequest(
            model_name=request.match_info["name"],
            model_version=version(request),
            inputs=_tensors(document, binary),
            outputs=outputs,
            id=str(document.get("id", "")),
        )
        return _answer(await v2.infer(core, V2_REST, infer_request, deadline), as_binary)

    model_paths = ["/v2/models/{name}", "/v2/models/{name}/versions/{version}"]
    return [
        rest.Route("GET", "/v2/health/live", live, "ServerLive", open=True),
        rest.Route("GET", "/v2/health/ready", ready, "ServerReady", open=True),
        rest.Route("GET", "/v2", server, "ServerMetadata"),
        *(rest.Route("GET", path, model, "ModelMetadata") for path in model_paths),
        *(rest.Route("GET", f"{path}/ready", model_ready, "ModelReady") for path in model_paths),
        *(rest.Route("POST", f"{path}/infer", infer, "ModelInfer") for path in model_paths),
    ]


PROTOCOL = rest.Protocol(V2_REST, routes)
