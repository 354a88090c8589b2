"""What TensorFlow Serving's gRPC and REST APIs share: model specs, signatures, states.

Both adapters resolve a request's model name, version and signature here,
build the metadata TF Serving returns (a SignatureDefMap of the two
signatures every export has) and report version states in TF Serving's
terms. Only protobuf messages are built: nothing here runs TensorFlow.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from tensorflow.core.framework import tensor_shape_pb2, types_pb2
from tensorflow.core.protobuf import meta_graph_pb2
from tensorflow_serving.apis import get_model_metadata_pb2

from model import layout
from service.core.errors import (
    InvalidRequest,
    VersionNotFound,
)
from service.core.repository import ModelRepository, Prediction
from service.core.runtime import LoadedModel
from service.core.versions import VersionStatus

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


def version_of(version: int | None, label: str = "") -> int:
    """The version number the core takes (0: the latest) from a spec's version or label."""
    if label:
        raise InvalidRequest(
            f"version label {label!r}: this server has no version labels; "
            "name a version number, or none for the latest"
        )
    if version is not None and version < 1:
        raise InvalidRequest(f"model version must be positive, got {version}")
    return version or 0


def signature(name: str) -> Signature:
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


def ranked(prediction: Prediction) -> list[tuple[str, float]]:
    """Every class with its probability, most probable first (Classify's answer)."""
    return [(label, p) for _, label, p in prediction.top(len(prediction.probabilities))]


def statuses(repository: ModelRepository, version: int) -> list[VersionStatus]:
    """Every version's state (version 0), or the one asked for; NOT_FOUND when unknown."""
    found = [s for s in repository.statuses() if version in (0, s.version)]
    if not found:
        what = f"version {version} of model" if version else "any version of model"
        raise VersionNotFound(f"could not find {what} {repository.name!r}")
    return found


def _tensor_info(name: str, dtype: int, dims: Sequence[int]) -> meta_graph_pb2.TensorInfo:
    shape = tensor_shape_pb2.TensorShapeProto(
        dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=d) for d in dims]
    )
    return meta_graph_pb2.TensorInfo(name=name, dtype=dtype, tensor_shape=shape)  # type: ignore[arg-type]


def signature_def_map(model: LoadedModel) -> get_model_metadata_pb2.SignatureDefMap:
    """The export's signatures as TF Serving's GetModelMetadata describes them."""
    classes = len(model.labels)
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
