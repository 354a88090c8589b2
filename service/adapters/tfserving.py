"""TensorFlow Serving's API without its transport: what its gRPC and REST adapters share.

Each adapter turns its wire format (protobuf messages, JSON) into a model
name, version or label, a signature name, input names and the core's
images, and calls here: the request context is filled in, the signature
and inputs checked, the images classified, metadata and version states
built. Only protobuf messages are built for metadata (the SignatureDefMap
both APIs return): nothing here runs TensorFlow or knows gRPC or HTTP.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from tensorflow.core.framework import tensor_shape_pb2, types_pb2
from tensorflow.core.protobuf import meta_graph_pb2
from tensorflow_serving.apis import get_model_metadata_pb2

from model import layout
from service.core import (
    Core,
    Images,
    InvalidRequest,
    ModelInfo,
    Prediction,
    RequestContext,
    VersionStatus,
)

# tf.Example feature that holds an image for Classify (the TF object detection
# and image datasets' convention).
IMAGE_FEATURE = "image/encoded"
PREDICT_METHOD = "tensorflow/serving/predict"
SIGNATURE_DEF = "signature_def"  # the one metadata field TF Serving defines


@dataclass(frozen=True)
class Signature:
    name: str
    input: str  # the input's key
    pixels: bool  # True: uint8 [N, H, W, C] pixels; False: DT_STRING [N] encoded images


SIGNATURES = {
    layout.SERVING_SIGNATURE: Signature(layout.SERVING_SIGNATURE, layout.IMAGES_INPUT, False),
    layout.PIXELS_SIGNATURE: Signature(layout.PIXELS_SIGNATURE, layout.PIXELS_INPUT, True),
}
OUTPUT = layout.OUTPUT


def context(ctx: RequestContext, name: str, version: int | None, label: str = "") -> RequestContext:
    """`ctx` naming the model spec's model, version (None: the latest) or label."""
    if version is not None and version < 1:
        raise InvalidRequest(f"model version must be positive, got {version}")
    if version is not None and label:
        raise InvalidRequest("give a model version or a version label, not both")
    return ctx.asking(name, version or 0, label)


def signature(name: Any) -> Signature:
    """The signature a request names ("" or absent: serving_default)."""
    if not isinstance(name, str):
        raise InvalidRequest(
            f"signature_name must be a string, got {type(name).__name__}; the signatures are "
            f"{', '.join(SIGNATURES)}"
        )
    found = SIGNATURES.get(name or layout.SERVING_SIGNATURE)
    if found is None:
        raise InvalidRequest(
            f"signature {name!r} does not exist; the signatures are {', '.join(SIGNATURES)}"
        )
    return found


def check_inputs(sig: Signature, keys: Sequence[str]) -> None:
    if list(keys) != [sig.input]:
        raise InvalidRequest(
            f"signature {sig.name} takes one input named {sig.input!r}, got "
            f"{', '.join(map(repr, keys)) or 'none'}"
        )


def check_outputs(names: Sequence[str]) -> None:
    """An output filter may name only the one output."""
    unknown = [name for name in names if name != OUTPUT]
    if unknown:
        raise InvalidRequest(
            f"output_filter names {', '.join(map(repr, unknown))}; the one output is {OUTPUT!r}"
        )


def classify_signature(sig: Signature, verb: str) -> None:
    """Classify takes encoded images: refuses the pixel signature."""
    if sig.pixels:
        raise InvalidRequest(f"{verb} takes encoded images; use Predict (:predict) for {sig.name}")


async def predict(core: Core, ctx: RequestContext, images: Images) -> list[Prediction]:
    """Predict's and Classify's work: every image, answered as a whole."""
    return await core.classify_all(ctx, images)


def ranked(prediction: Prediction) -> list[tuple[str, float]]:
    """Every class with its probability, most probable first (Classify's answer)."""
    return [(label, p) for _, label, p in prediction.top(len(prediction.probabilities))]


def statuses(core: Core, ctx: RequestContext) -> list[VersionStatus]:
    """Every version's state (no version asked), or the one asked for; NOT_FOUND when unknown."""
    return core.version_states(ctx)


def metadata(
    core: Core, ctx: RequestContext
) -> tuple[ModelInfo, get_model_metadata_pb2.SignatureDefMap]:
    """The version asked (the latest by default) and its signatures as TF Serving lists them."""
    info = core.metadata(ctx)
    return info, signature_def_map(len(info.labels))


def _tensor_info(name: str, dtype: int, dims: Sequence[int]) -> meta_graph_pb2.TensorInfo:
    shape = tensor_shape_pb2.TensorShapeProto(
        dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=d) for d in dims]
    )
    return meta_graph_pb2.TensorInfo(name=name, dtype=dtype, tensor_shape=shape)  # type: ignore[arg-type]


def signature_def_map(classes: int) -> get_model_metadata_pb2.SignatureDefMap:
    """The export's signatures as TF Serving's GetModelMetadata describes them."""
    output = {OUTPUT: _tensor_info("StatefulPartitionedCall:0", types_pb2.DT_FLOAT, [-1, classes])}
    defs = get_model_metadata_pb2.SignatureDefMap()
    defs.signature_def[layout.SERVING_SIGNATURE].CopyFrom(
        meta_graph_pb2.SignatureDef(
            inputs={
                layout.IMAGES_INPUT: _tensor_info(
                    f"{layout.SERVING_SIGNATURE}_{layout.IMAGES_INPUT}:0", types_pb2.DT_STRING, [-1]
                )
            },
            outputs=output,
            method_name=PREDICT_METHOD,
        )
    )
    defs.signature_def[layout.PIXELS_SIGNATURE].CopyFrom(
        meta_graph_pb2.SignatureDef(
            inputs={
                layout.PIXELS_INPUT: _tensor_info(
                    f"{layout.PIXELS_SIGNATURE}_{layout.PIXELS_INPUT}:0",
                    types_pb2.DT_UINT8,
                    [-1, -1, -1, -1],
                )
            },
            outputs=output,
            method_name=PREDICT_METHOD,
        )
    )
    return defs
