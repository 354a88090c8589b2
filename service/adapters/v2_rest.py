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
from typing import Any

import numpy as np
from aiohttp import web

from service.adapters import rest, v2, v2_openapi
from service.core import V2_REST, Encoded, InvalidRequest, Lazy, RequestContext

HEADER_LENGTH = "Inference-Header-Content-Length"
BINARY = "binary_tensor_data"


def _flat(value: Any, depth: int, name: str) -> list[Any]:
    """Row-major elements of a JSON tensor, flat or nested at most `depth` lists deep.

    Iterative: a hostile nesting costs no recursion.
    """
    if not isinstance(value, list):
        raise InvalidRequest(f"input '{name}': \"data\" must be a list")
    if all(not isinstance(item, list) for item in value):
        return value  # already flat: the usual case, no copy
    out: list[Any] = []
    stack = [(iter(value), 1)]
    while stack:
        items, level = stack[-1]
        for item in items:
            if isinstance(item, list):
                if level >= depth:
                    raise InvalidRequest(
                        f"input '{name}': \"data\" nests deeper than its {depth - 1}-D shape"
                    )
                stack.append((iter(item), level + 1))
                break
            out.append(item)
        else:
            stack.pop()
    return out


def _element_bytes(index: int, item: Any) -> Encoded:
    """One BYTES element of a JSON tensor, decoded when the core reads it (after admission)."""
    if isinstance(item, dict) and set(item) == {"b64"}:
        item = item["b64"]
    if not isinstance(item, str):
        raise InvalidRequest(
            f"images[{index}] is {type(item).__name__}: send each image as a base64 string "
            'or {"b64": "..."}, or as binary data'
        )
    try:
        return Encoded(base64.b64decode(item.encode("ascii"), validate=True))
    except (binascii.Error, ValueError, UnicodeEncodeError):
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
        if not (header_length.isascii() and header_length.isdigit()) or int(header_length) > len(
            body
        ):
            raise InvalidRequest(
                f"{HEADER_LENGTH} is {header_length!r}; it must be the JSON part's length in "
                f"bytes, at most the body's {len(body)}"
            )
        split = int(header_length)
    document = rest.load_json(body[:split], "the request body")
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
        if not all(isinstance(d, int) and not isinstance(d, bool) for d in shape):
            raise InvalidRequest(f"input '{name}': shape must be a list of integers")
        size = _object(item.get("parameters", {}), "parameters").get("binary_data_size")
        if size is not None:
            if (
                not isinstance(size, int)
                or isinstance(size, bool)
                or size < 0
                or offset + size > len(binary)
            ):
                raise InvalidRequest(
                    f"input '{name}': binary_data_size {size!r} does not fit the "
                    f"{len(binary) - offset} bytes of binary data left"
                )
            raw = binary[offset : offset + size]
            offset += size
            tensors.append(v2.Tensor(name, datatype, tuple(shape), raw=raw))
            continue
        data = _flat(item.get("data", []), max(len(shape), 1), name)
        # BYTES elements stay base64 text until the core reads them (v2.images
        # admits the count first); UINT8 values are checked there as a whole.
        elements = Lazy(data, _element_bytes) if datatype == "BYTES" else data
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


def _request(
    body: bytes, header_length: str | None, name: str, version: str
) -> tuple[v2.InferRequest, list[bool]]:
    """The inference request of a body, and which outputs are wanted binary (no I/O)."""
    document, binary = _parse(body, header_length)
    outputs, as_binary = _outputs(document)
    request = v2.InferRequest(
        model_name=name,
        model_version=version,
        inputs=_tensors(document, binary),
        outputs=outputs,
        id=str(document.get("id", "")),
    )
    return request, as_binary


def routes(context: rest.Context) -> list[rest.Route]:
    core = context.core

    def version(request: web.Request) -> str:
        return request.match_info.get("version", "")

    async def live(request: web.Request, ctx: RequestContext) -> web.Response:
        return web.json_response({"live": core.live()})

    async def ready(request: web.Request, ctx: RequestContext) -> web.Response:
        is_ready = core.ready()
        return web.json_response({"ready": is_ready}, status=200 if is_ready else 503)

    async def server(request: web.Request, ctx: RequestContext) -> web.Response:
        return web.json_response(v2.server_metadata([*v2.EXTENSIONS, BINARY]))

    async def model(request: web.Request, ctx: RequestContext) -> web.Response:
        return web.json_response(
            v2.model_metadata(core, ctx, request.match_info["name"], version(request))
        )

    async def model_ready(request: web.Request, ctx: RequestContext) -> web.Response:
        name = request.match_info["name"]
        is_ready = v2.model_ready(core, ctx, name, version(request))
        return web.json_response({"name": name, "ready": is_ready}, status=200 if is_ready else 503)

    async def infer(request: web.Request, ctx: RequestContext) -> web.Response:
        name, asked = request.match_info["name"], version(request)
        core.check(v2.context(ctx, name, asked))  # before the body is read
        header_length = request.headers.get(HEADER_LENGTH)

        def prepared(body: bytes) -> tuple[v2.Prepared, list[bool]]:
            infer_request, as_binary = _request(body, header_length, name, asked)
            return v2.prepare(core, ctx, infer_request, materialize=True), as_binary

        ready, as_binary = await rest.parse(await request.read(), prepared)
        return _answer(await v2.answer(core, ctx, ready), as_binary)

    model_paths = ["/v2/models/{name}", "/v2/models/{name}/versions/{version}"]
    return [
        rest.Route("GET", "/v2/health/live", live, "ServerLive", open=True),
        rest.Route("GET", "/v2/health/ready", ready, "ServerReady", open=True),
        rest.Route("GET", "/v2", server, "ServerMetadata"),
        *(rest.Route("GET", path, model, "ModelMetadata") for path in model_paths),
        *(rest.Route("GET", f"{path}/ready", model_ready, "ModelReady") for path in model_paths),
        *(rest.Route("POST", f"{path}/infer", infer, "ModelInfer") for path in model_paths),
    ]


PROTOCOL = rest.Protocol(V2_REST, routes, v2_openapi.API)
