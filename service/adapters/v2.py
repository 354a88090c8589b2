"""The Open Inference Protocol (KServe V2) without its transport.

What the gRPC and REST adapters share: an inference request as plain Python
(`InferRequest`, one `Tensor` per input), its translation to the core's
images, the answer as output tensors, and the server and model metadata.
Each adapter only moves these between its wire format and here.

The model takes one input: `images`, BYTES [N] (or [N, 1]) of encoded images,
or `pixels`, UINT8 [N, H, W, C] (or [H, W, C]) of raw pixels. It answers
`probabilities`, FP32 [N, classes]; with the classification extension
(`classification` = k on the requested output, as Triton does) that output
becomes BYTES [N, k] of "score:index:label" strings, most probable first.
One bad image fails the request (V2 has no per-image error) with a message
that names the image.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import metadata as package_metadata
from itertools import repeat
from typing import Any

import numpy as np

from service.core import (
    Core,
    Encoded,
    Images,
    InvalidRequest,
    Lazy,
    PixelBlock,
    Prediction,
    RequestContext,
    version_number,
)

SERVER_NAME = "vggserve"
PLATFORM = "tensorflow_savedmodel"
IMAGES = "images"
PIXELS = "pixels"
PROBABILITIES = "probabilities"
CLASSIFICATION = "classification"
EXTENSIONS = [CLASSIFICATION]  # the REST adapter adds "binary_tensor_data"

_INPUT_HELP = (
    f"this model takes one input: '{IMAGES}' (BYTES [N], encoded JPEG/PNG/BMP/GIF images) "
    f"or '{PIXELS}' (UINT8 [N, H, W, C] raw pixels)"
)
_LENGTH = struct.Struct("<I")


@dataclass(frozen=True)
class Tensor:
    """One input tensor as the client sent it.

    `raw` is the row-major byte form (BYTES elements each prefixed by their
    4-byte little-endian length, as Triton serialises them); `elements` the
    typed form (for BYTES, bytes or a converter's input; for UINT8, ints),
    any sequence whose length is known without reading it (a protobuf
    repeated field, a JSON list). Exactly one is set.
    """

    name: str
    datatype: str
    shape: tuple[int, ...]
    raw: bytes | None = None
    elements: Sequence[Any] | None = None


@dataclass(frozen=True)
class RequestedOutput:
    name: str
    classification: int = 0  # top-k strings instead of probabilities; 0: off


@dataclass(frozen=True)
class InferRequest:
    model_name: str
    model_version: str
    inputs: Sequence[Tensor]
    outputs: Sequence[RequestedOutput] = ()
    id: str = ""


@dataclass(frozen=True)
class OutputTensor:
    """FP32 values (an array) or BYTES elements (a list), with the V2 shape."""

    name: str
    datatype: str
    shape: list[int]
    data: np.ndarray | list[bytes]


@dataclass(frozen=True)
class InferResponse:
    model_name: str
    model_version: str
    outputs: list[OutputTensor] = field(default_factory=list)
    id: str = ""


# --- wire helpers ----------------------------------------------------------------------------


def split_bytes(raw: bytes, name: str, most: int) -> list[bytes]:
    """BYTES elements from their serialised form (length-prefixed, back to back).

    Stops with an error past `most` elements: the walk is per element, so it
    is bounded before it starts.
    """
    items: list[bytes] = []
    offset = 0
    while offset < len(raw):
        if len(items) == most:
            raise InvalidRequest(
                f"input '{name}': the BYTES data holds more than the {most} elements its shape says"
            )
        if offset + 4 > len(raw):
            raise InvalidRequest(f"input '{name}': BYTES data ends inside an element's length")
        (size,) = _LENGTH.unpack_from(raw, offset)
        offset += 4
        if offset + size > len(raw):
            raise InvalidRequest(
                f"input '{name}': a BYTES element says {size} bytes but {len(raw) - offset} "
                "remain (each element is a 4-byte little-endian length, then its bytes)"
            )
        items.append(raw[offset : offset + size])
        offset += size
    return items


def join_bytes(items: Sequence[bytes]) -> bytes:
    return b"".join(_LENGTH.pack(len(item)) + item for item in items)


def context(ctx: RequestContext, model: str, version: str) -> RequestContext:
    """`ctx` naming the model and the V2 version string asked ("": the latest)."""
    return ctx.asking(model, version_number(version))


# --- inputs ------------------------------------------------------------------------------------


def images(core: Core, tensor: Tensor) -> Images:
    """The core's images from the one input tensor: its shape is admitted as a whole
    (count, sides, channels, byte length) before any element is read."""
    if tensor.name == IMAGES and tensor.datatype == "BYTES":
        return _encoded(core, tensor)
    if tensor.name == PIXELS and tensor.datatype == "UINT8":
        return _pixels(core, tensor)
    raise InvalidRequest(f"input '{tensor.name}' of type {tensor.datatype}: {_INPUT_HELP}")


def _count(shape: tuple[int, ...], name: str) -> int:
    if any(d < 0 for d in shape):
        raise InvalidRequest(f"input '{name}' has a negative dimension in shape {list(shape)}")
    return math.prod(shape)  # Python ints: a hostile shape cannot overflow


def _encoded(core: Core, tensor: Tensor) -> Images:
    if len(tensor.shape) not in (1, 2) or (len(tensor.shape) == 2 and tensor.shape[1] != 1):
        raise InvalidRequest(
            f"input '{IMAGES}' has shape {list(tensor.shape)}; send [N] (or [N, 1]) images"
        )
    expected = _count(tensor.shape, IMAGES)
    core.admit(expected)
    elements: Sequence[Any] = (
        split_bytes(tensor.raw, IMAGES, expected)
        if tensor.raw is not None
        else tensor.elements or []
    )
    if len(elements) != expected:
        raise InvalidRequest(
            f"input '{IMAGES}' has shape {list(tensor.shape)} but {len(elements)} elements"
        )
    return Lazy(elements, _as_encoded)


def _as_encoded(index: int, element: Any) -> Encoded:
    # REST's elements arrive already decoded (as Encoded, lazily); gRPC's as bytes.
    return element if isinstance(element, Encoded) else Encoded(bytes(element))


def _pixels(core: Core, tensor: Tensor) -> Images:
    shape = tensor.shape
    if len(shape) == 3:
        shape = (1, *shape)
    if len(shape) != 4:
        raise InvalidRequest(
            f"input '{PIXELS}' has shape {list(tensor.shape)}; send [N, H, W, C] or [H, W, C]"
        )
    _count(shape, PIXELS)  # no negative side
    n, height, width, channels = shape
    core.admit(n, (height, width, channels))
    if tensor.raw is not None:
        data = tensor.raw
    else:
        values = tensor.elements or []
        expected = n * height * width * channels
        if len(values) != expected:
            raise InvalidRequest(
                f"input '{PIXELS}' has shape {list(tensor.shape)}, which needs {expected} "
                f"values; got {len(values)}"
            )
        # bytes() refuses non-integers and values outside 0..255; JSON's true
        # and false are ints to Python, so they are refused apart.
        try:
            data = bytes(values)
        except (TypeError, ValueError):
            data = b""
        # Only a JSON list can hold booleans; a protobuf repeated uint field cannot,
        # so gRPC's (up to millions of values, on the event loop) skips the scan.
        json_bools = isinstance(values, list) and any(map(isinstance, values, repeat(bool)))
        if len(data) != expected or json_bools:
            raise InvalidRequest(f"input '{PIXELS}' is UINT8: every value must be 0..255") from None
    return PixelBlock(data, n, height, width, channels)


# --- inference -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Prepared:
    """A request checked and turned into the core's images, ready to classify."""

    images: Images
    outputs: list[RequestedOutput]
    id: str


def prepare(
    core: Core, ctx: RequestContext, request: InferRequest, materialize: bool = False
) -> Prepared:
    """Checks the request (model, version, inputs, outputs; the images' claim as a whole).

    No I/O and no event loop: REST runs it in a worker thread for large bodies
    with `materialize` (every image converted there, base64 decoding included).
    """
    context(ctx, request.model_name, request.model_version)
    if len(request.inputs) != 1:
        raise InvalidRequest(f"the request has {len(request.inputs)} inputs; {_INPUT_HELP}")
    outputs = list(request.outputs) or [RequestedOutput(PROBABILITIES)]
    for output in outputs:
        if output.name != PROBABILITIES:
            raise InvalidRequest(
                f"unknown output '{output.name}': this model's output is '{PROBABILITIES}'"
            )
        if output.classification < 0:
            raise InvalidRequest(f"'{CLASSIFICATION}' must be 0 or more top classes")
    found = images(core, request.inputs[0])
    if materialize and not isinstance(found, PixelBlock):
        found = list(found)
    return Prepared(found, outputs, request.id)


async def answer(core: Core, ctx: RequestContext, prepared: Prepared) -> InferResponse:
    """Classifies a prepared request's images together and builds the outputs."""
    predictions = await core.classify_all(ctx, prepared.images)
    return InferResponse(
        model_name=core.model_name,
        model_version=str(predictions[0].version),
        outputs=[_output(output, predictions) for output in prepared.outputs],
        id=prepared.id,
    )


async def infer(core: Core, ctx: RequestContext, request: InferRequest) -> InferResponse:
    """`prepare`, then `answer` (gRPC: the message is parsed already)."""
    return await answer(core, ctx, prepare(core, ctx, request))


def _output(output: RequestedOutput, predictions: list[Prediction]) -> OutputTensor:
    if output.classification:
        k = min(output.classification, len(predictions[0].probabilities))
        # Triton's format: the score as C++'s to_string writes it, the index, the label.
        rows = [
            [f"{p:f}:{i}:{label}".encode() for i, label, p in prediction.top(k)]
            for prediction in predictions
        ]
        return OutputTensor(
            output.name, "BYTES", [len(rows), k], [item for row in rows for item in row]
        )
    matrix = np.stack([p.probabilities for p in predictions]).astype(np.float32, copy=False)
    return OutputTensor(output.name, "FP32", list(matrix.shape), matrix)


# --- metadata --------------------------------------------------------------------------------


def server_metadata(extensions: Sequence[str] = EXTENSIONS) -> dict[str, Any]:
    try:
        version = package_metadata.version(SERVER_NAME)
    except package_metadata.PackageNotFoundError:  # run from a checkout not installed
        version = "unknown"
    return {"name": SERVER_NAME, "version": version, "extensions": list(extensions)}


def model_ready(core: Core, ctx: RequestContext, name: str, version: str) -> bool:
    """True when the server takes traffic and serves `name` at that version ("": latest)."""
    try:
        context(ctx, name, version)
    except InvalidRequest:
        return False
    return core.model_ready(ctx)


def model_metadata(core: Core, ctx: RequestContext, name: str, version: str) -> dict[str, Any]:
    """The V2 model metadata (as JSON-ready values); errors if not served."""
    info = core.metadata(context(ctx, name, version))
    return {
        "name": info.name,
        "versions": [str(v) for v in info.versions],
        "platform": PLATFORM,
        # Two ways to send images; a request carries exactly one of them.
        "inputs": [
            {"name": IMAGES, "datatype": "BYTES", "shape": [-1]},
            {"name": PIXELS, "datatype": "UINT8", "shape": [-1, -1, -1, -1]},
        ],
        "outputs": [{"name": PROBABILITIES, "datatype": "FP32", "shape": [-1, len(info.labels)]}],
    }
