"""gRPC messages <-> the service core's plain objects. No logic beyond mapping."""

from __future__ import annotations

from collections.abc import Sequence

from protos.vggserve.v1 import classifier_pb2 as pb
from service.adapters.grpc_calls import rpc_code
from service.core import (
    Encoded,
    Explanation,
    Lazy,
    ModelInfo,
    Pixels,
    Prediction,
    RawImage,
    ServiceError,
)


def image(message: pb.Image) -> RawImage:
    kind = message.WhichOneof("data")
    if kind == "encoded":
        return Encoded(message.encoded)
    if kind == "pixels":
        p = message.pixels
        return Pixels(p.data, p.height, p.width, p.channels)
    return None


def images(messages: Sequence[pb.Image]) -> Lazy[pb.Image]:
    """The images of a ClassifyBatch, converted one at a time as the core reads them."""
    return Lazy(messages, lambda _, message: image(message))


def response(prediction: Prediction, top_k: int, with_probabilities: bool) -> pb.ClassifyResponse:
    out = pb.ClassifyResponse(model_name=prediction.model_name, model_version=prediction.version)
    out.classes.extend(
        pb.ClassScore(index=i, label=label, probability=p) for i, label, p in prediction.top(top_k)
    )
    if with_probabilities:
        out.probabilities.extend(prediction.probabilities.tolist())
    return out


def explain_response(
    prediction: Prediction, explanation: Explanation, top_k: int
) -> pb.ExplainResponse:
    return pb.ExplainResponse(
        classification=response(prediction, top_k, with_probabilities=False),
        class_index=explanation.class_index,
        label=prediction.labels[explanation.class_index],
        heatmap_png=explanation.heatmap_png,
        overlay_png=explanation.overlay_png,
    )


def result(outcome: pb.ClassifyResponse | ServiceError) -> pb.ImageResult:
    if isinstance(outcome, ServiceError):
        return pb.ImageResult(error=pb.ImageError(code=rpc_code(outcome), message=outcome.message))
    return pb.ImageResult(response=outcome)


def metadata(info: ModelInfo) -> pb.ModelMetadata:
    return pb.ModelMetadata(
        model_name=info.name,
        versions=info.versions,
        default_version=info.version,
        labels=info.labels,
        input_height=info.input_height,
        input_width=info.input_width,
        preprocessing_json=info.preprocessing_json,
        signatures=info.signatures,
        max_batch_size=info.max_batch_size,
    )
