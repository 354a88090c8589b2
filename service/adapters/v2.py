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
from typing import Any

import numpy as np

from service.core.classify import Core, Encoded, Pixels, RawImage
from service.core.errors import InvalidRequest, ServiceError
from service.core.repository import Prediction

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
    typed form (bytes for BYTES, ints for UINT8). Exactly one is set.
    """

    name: str
    datatype: str
    shape: tuple[int, ...]
    raw: bytes | None = None
    elements: Sequence[bytes] | Sequence[int] | None = None


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


def split_bytes(raw: bytes, name: str) -> list[bytes]:
    """BYTES elements from their serialised form (length-prefixed, back to back)."""
    items, offset = [], 0
    while offset < len(raw):
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


def parse_version(text: str) -> int:
    """The V2 version string as the core's number (0: the latest)."""
    if not text:
        return 0
    if not text.isdigit() or int(text) == 0:
        raise InvalidRequest(f"model version must be a positive integer, got '{text}'")
    return int(text)


# --- inputs ------------------------------------------------------------------------------------


def images(tensor: Tensor) -> list[RawImage]:
    """The core's images from the one input tensor (shape and size checked)."""
    if tensor.name == IMAGES and tensor.datatype == "BYTES":
        return _encoded(tensor)
    if tensor.name == PIXELS and tensor.datatype == "UINT8":
        return _pixels(tensor)
    raise InvalidRequest(f"input '{tensor.name}' of type {tensor.datatype}: {_INPUT_HELP}")


def _count(shape: tuple[int, ...], name: str) -> int:
    if any(d < 0 for d in shape):
        raise InvalidRequest(f"input '{name}' has a negative dimension in shape {list(shape)}")
    return math.prod(shape)  # Python ints: a hostile shape cannot overflow


def _encoded(tensor: Tensor) -> list[RawImage]:
    if len(tensor.shape) not in (1, 2) or (len(tensor.shape) == 2 and tensor.shape[1] != 1):
        raise InvalidRequest(
            f"input '{IMAGES}' has shape {list(tensor.shape)}; send [N] (or [N, 1]) images"
        )
    if tensor.raw is not None:
        elements = split_bytes(tensor.raw, IMAGES)
    else:
        elements = [bytes(e) for e in tensor.elements or []]  # type: ignore[arg-type]
    expected = _count(tensor.shape, IMAGES)
    if len(elements) != expected:
        raise InvalidRequest(
            f"input '{IMAGES}' has shape {list(tensor.shape)} but {len(elements)} elements"
        )
    if expected == 0:
        raise InvalidRequest(f"input '{IMAGES}' holds no image")
    return [Encoded(e) for e in elements]


def _pixels(tensor: Tensor) -> list[RawImage]:
    shape = tensor.shape
    if len(shape) == 3:
        shape = (1, *shape)
    if len(shape) != 4:
        raise InvalidRequest(
            f"input '{PIXELS}' has shape {list(tensor.shape)}; send [N, H, W, C] or [H, W, C]"
        )
    if tensor.raw is not None:
        data = tensor.raw
    else:
        values = tensor.elements or []
        if any(not isinstance(v, int) or not 0 <= v <= 255 for v in values):
            raise InvalidRequest(f"input '{PIXELS}' is UINT8: every value must be 0..255")
        data = bytes(values)  # type: ignore[arg-type]
    n, height, width, channels = shape
    expected = _count(shape, PIXELS)
    if len(data) != expected:
        raise InvalidRequest(
            f"input '{PIXELS}' has shape {list(tensor.shape)}, which needs {expected} bytes; "
            f"got {len(data)}"
        )
    if n == 0:
        raise InvalidRequest(f"input '{PIXELS}' holds no image")
    size = height * width * channels
    return [Pixels(data[i * size : (i + 1) * size], height, width, channels) for i in range(n)]


# --- inference -------------------------------------------------------------------------------


async def infer(
    core: Core, protocol: str, request: InferRequest, deadline: float | None
) -> InferResponse:
    """Checks the request, classifies its images together, and builds the outputs."""
    core.check_model(request.model_name)
    version = parse_version(request.model_version)
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
    raws = images(request.inputs[0])
    predictions = await core.classify_all(protocol, raws, version, deadline)
    return InferResponse(
        model_name=core.repository.name,
        model_version=str(predictions[0].version),
        outputs=[_output(output, predictions) for output in outputs],
        id=request.id,
    )


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


def model_ready(core: Core, name: str, version: str) -> bool:
    """True when the server takes traffic and serves `name` at that version (0: latest)."""
    if not core.serving:
        return False
    try:
        core.check_model(name)
        core.repository.get(parse_version(version))
    except ServiceError:
        return False
    return True


def server_ready(core: Core) -> bool:
    """True when the server takes traffic (warm, not draining) and a version is loaded."""
    if not core.serving:
        return False
    try:
        core.repository.get(0)
    except ServiceError:  # nothing loaded yet, or shutting down
        return False
    return True


def model_metadata(core: Core, name: str, version: str) -> dict[str, Any]:
    """The V2 model metadata (as JSON-ready values); errors if not served."""
    core.check_model(name)
    served = core.repository.get(parse_version(version)).model
    classes = len(served.labels)
    return {
        "name": core.repository.name,
        "versions": [str(v) for v in core.repository.versions],
        "platform": PLATFORM,
        # Two ways to send images; a request carries exactly one of them.
        "inputs": [
            {"name": IMAGES, "datatype": "BYTES", "shape": [-1]},
            {"name": PIXELS, "datatype": "UINT8", "shape": [-1, -1, -1, -1]},
        ],
        "outputs": [{"name": PROBABILITIES, "datatype": "FP32", "shape": [-1, classes]}],
    }
