"""gRPC messages <-> the service core's plain objects. No logic beyond mapping."""

from __future__ import annotations

from protos.vggserve.v1 import classifier_pb2 as pb
from service.adapters.grpc_status import rpc_code
from service.core.classify import Encoded, Pixels, RawImage
from service.core.errors import ServiceError
from service.core.repository import Prediction
from service.core.runtime import Explanation, LoadedModel


def image(message: pb.Image) -> RawImage:
    kind = message.WhichOneof("data")
    if kind == "encoded":
        return Encoded(message.encoded)
    if kind == "pixels":
        p = message.pixels
        return Pixels(p.data, p.height, p.width, p.channels)
    return None


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


def metadata(
    name: str, versions: list[int], model: LoadedModel, max_batch: int
) -> pb.ModelMetadata:
    return pb.ModelMetadata(
        model_name=name,
        versions=versions,
        default_version=model.version,
        labels=model.labels,
        input_height=model.preprocess.height,
        input_width=model.preprocess.width,
        preprocessing_json=model.preprocessing_json,
        signatures=[str(s) for s in model.signatures],
        max_batch_size=max_batch,
    )
