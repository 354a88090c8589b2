"""TensorFlow Serving's gRPC API: PredictionService and ModelService.GetModelStatus.

An unmodified tensorflow-serving-api client works against vggserve:
`Predict` takes the `images` (DT_STRING [N], encoded) input of
`serving_default` or the `pixels` (DT_UINT8 [N, H, W, C]) input of
`serving_pixels` and returns `probabilities` (DT_FLOAT [N, classes]);
`Classify` takes tf.Examples with the image under `image/encoded` and returns
every class with its score, most probable first; `GetModelMetadata` returns
the SignatureDefMap; `GetModelStatus` the state of every version.
TensorProtos are read and written as bytes with numpy (no TensorFlow call).
"""

from __future__ import annotations

import time

import grpc
import numpy as np
from google.protobuf import any_pb2, wrappers_pb2
from tensorflow.core.example import example_pb2
from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_pb2,
    predict_pb2,
    prediction_service_pb2_grpc,
    status_pb2,
)
from tensorflow_serving.apis import model_service_pb2_grpc as model_service_grpc

from service.adapters import tfserving
from service.adapters.grpc_status import answer
from service.core.classify import Core, Encoded, Pixels, RawImage
from service.core.errors import InvalidImage, InvalidRequest, Unimplemented
from service.core.protocols import TFSERVING_GRPC
from service.core.repository import Prediction

PREDICTION_SERVICE = "tensorflow.serving.PredictionService"
MODEL_SERVICE = "tensorflow.serving.ModelService"


def _deadline(context: grpc.aio.ServicerContext) -> float | None:
    remaining = context.time_remaining()
    return None if remaining is None else time.monotonic() + remaining


def _version(spec: model_pb2.ModelSpec) -> int:
    has_version = spec.HasField("version")
    return tfserving.version_of(spec.version.value if has_version else None, spec.version_label)


def images_of(tensor: tensor_pb2.TensorProto, sig: tfserving.Signature) -> list[RawImage]:
    """The images of a Predict input, as the core takes them."""
    dims = [d.size for d in tensor.tensor_shape.dim]
    kind = types_pb2.DataType.Name(tensor.dtype)
    if not sig.pixels:
        if tensor.dtype != types_pb2.DT_STRING or len(dims) > 1:
            raise InvalidRequest(
                f"input {sig.input!r} must be DT_STRING [N] encoded images, got {kind} {dims}"
            )
        return [Encoded(data) for data in tensor.string_val]
    if tensor.dtype != types_pb2.DT_UINT8 or len(dims) != 4 or min(dims) < 0:
        raise InvalidRequest(
            f"input {sig.input!r} must be DT_UINT8 [N, height, width, channels], got {kind} {dims}"
        )
    try:
        data = tensor.tensor_content or bytes(tensor.int_val)
    except ValueError:
        raise InvalidImage("pixel values must be 0-255") from None
    count, height, width, channels = dims
    size = height * width * channels
    if len(data) != count * size:
        raise InvalidImage(f"pixel data is {len(data)} bytes; shape {dims} needs {count * size}")
    return [Pixels(data[i * size : (i + 1) * size], height, width, channels) for i in range(count)]


def probabilities_tensor(predictions: list[Prediction]) -> tensor_pb2.TensorProto:
    array = np.stack([p.probabilities for p in predictions]).astype(np.float32, copy=False)
    shape = tensor_shape_pb2.TensorShapeProto(
        dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=d) for d in array.shape]
    )
    return tensor_pb2.TensorProto(
        dtype=types_pb2.DT_FLOAT, tensor_shape=shape, tensor_content=array.tobytes()
    )


def _answered_spec(
    spec: model_pb2.ModelSpec, version: int, signature_name: str
) -> model_pb2.ModelSpec:
    return model_pb2.ModelSpec(
        name=spec.name,
        version=wrappers_pb2.Int64Value(value=version),
        signature_name=signature_name,
    )


def _example_image(example: example_pb2.Example, context: example_pb2.Example | None) -> RawImage:
    for source in (example, context):
        if source is not None and tfserving.IMAGE_FEATURE in source.features.feature:
            values = source.features.feature[tfserving.IMAGE_FEATURE].bytes_list.value
            if len(values) != 1:
                raise InvalidImage(
                    f"{tfserving.IMAGE_FEATURE!r} must hold one image per tf.Example, "
                    f"got {len(values)}"
                )
            return Encoded(values[0])
    raise InvalidImage(
        f"a tf.Example has no {tfserving.IMAGE_FEATURE!r} feature: put the encoded image "
        "bytes there (bytes_list)"
    )


class PredictionServicer(prediction_service_pb2_grpc.PredictionServiceServicer):
    def __init__(self, core: Core) -> None:
        self.core = core
        self.repository = core.repository
        self.metrics = core.metrics

    async def Predict(
        self, request: predict_pb2.PredictRequest, context: grpc.aio.ServicerContext
    ) -> predict_pb2.PredictResponse:
        async with answer(TFSERVING_GRPC, "Predict", context, self.metrics):
            spec = request.model_spec
            self.core.check_model(spec.name)
            sig = tfserving.signature(spec.signature_name)
            tfserving.check_inputs(sig, list(request.inputs))
            unknown = [name for name in request.output_filter if name != tfserving.OUTPUT]
            if unknown:
                raise InvalidRequest(
                    f"output_filter names {', '.join(map(repr, unknown))}; the one output is "
                    f"{tfserving.OUTPUT!r}"
                )
            raws = images_of(request.inputs[sig.input], sig)
            predictions = await self.core.classify_all(
                TFSERVING_GRPC, raws, _version(spec), _deadline(context)
            )
            response = predict_pb2.PredictResponse(
                model_spec=_answered_spec(spec, predictions[0].version, sig.name)
            )
            response.outputs[tfserving.OUTPUT].CopyFrom(probabilities_tensor(predictions))
            return response
        raise AssertionError("unreachable: answer() aborts or returns")

    async def Classify(
        self, request: classification_pb2.ClassificationRequest, context: grpc.aio.ServicerContext
    ) -> classification_pb2.ClassificationResponse:
        async with answer(TFSERVING_GRPC, "Classify", context, self.metrics):
            spec = request.model_spec
            self.core.check_model(spec.name)
            sig = tfserving.signature(spec.signature_name)
            if sig.pixels:
                raise InvalidRequest(
                    f"Classify takes encoded images in tf.Examples; use Predict for {sig.name}"
                )
            kind = request.input.WhichOneof("kind")
            if kind == "example_list_with_context":
                examples = request.input.example_list_with_context.examples
                shared = request.input.example_list_with_context.context
            else:
                examples, shared = request.input.example_list.examples, None
            raws = [_example_image(example, shared) for example in examples]
            predictions = await self.core.classify_all(
                TFSERVING_GRPC, raws, _version(spec), _deadline(context)
            )
            result = classification_pb2.ClassificationResult(
                classifications=[
                    classification_pb2.Classifications(
                        classes=[
                            classification_pb2.Class(label=label, score=score)
                            for label, score in tfserving.ranked(p)
                        ]
                    )
                    for p in predictions
                ]
            )
            return classification_pb2.ClassificationResponse(
                model_spec=_answered_spec(spec, predictions[0].version, sig.name), result=result
            )
        raise AssertionError("unreachable")

    async def Regress(self, request: object, context: grpc.aio.ServicerContext) -> object:
        async with answer(TFSERVING_GRPC, "Regress", context, self.metrics):
            raise Unimplemented(
                "Regress is not served: this is an image classifier; use Classify or Predict"
            )
        raise AssertionError("unreachable")

    async def MultiInference(self, request: object, context: grpc.aio.ServicerContext) -> object:
        async with answer(TFSERVING_GRPC, "MultiInference", context, self.metrics):
            raise Unimplemented(
                "MultiInference is not served: send one Classify or Predict call per task"
            )
        raise AssertionError("unreachable")

    async def GetModelMetadata(
        self,
        request: get_model_metadata_pb2.GetModelMetadataRequest,
        context: grpc.aio.ServicerContext,
    ) -> get_model_metadata_pb2.GetModelMetadataResponse:
        async with answer(TFSERVING_GRPC, "GetModelMetadata", context, self.metrics):
            spec = request.model_spec
            self.core.check_model(spec.name)
            fields = list(request.metadata_field)
            if fields != [tfserving.SIGNATURE_DEF]:
                raise InvalidRequest(
                    f"metadata_field must be [{tfserving.SIGNATURE_DEF!r}] (the one field "
                    f"served), got {fields}"
                )
            model = self.repository.get(_version(spec)).model
            packed = any_pb2.Any()
            packed.Pack(tfserving.signature_def_map(model))
            response = get_model_metadata_pb2.GetModelMetadataResponse(
                model_spec=_answered_spec(spec, model.version, "")
            )
            response.metadata[tfserving.SIGNATURE_DEF].CopyFrom(packed)
            return response
        raise AssertionError("unreachable")


class ModelServicer(model_service_grpc.ModelServiceServicer):
    def __init__(self, core: Core) -> None:
        self.core = core
        self.repository = core.repository
        self.metrics = core.metrics

    async def GetModelStatus(
        self,
        request: get_model_status_pb2.GetModelStatusRequest,
        context: grpc.aio.ServicerContext,
    ) -> get_model_status_pb2.GetModelStatusResponse:
        async with answer(TFSERVING_GRPC, "GetModelStatus", context, self.metrics):
            spec = request.model_spec
            self.core.check_model(spec.name)
            statuses = tfserving.statuses(self.repository, _version(spec))
            return get_model_status_pb2.GetModelStatusResponse(
                model_version_status=[
                    get_model_status_pb2.ModelVersionStatus(
                        version=s.version,
                        state=get_model_status_pb2.ModelVersionStatus.State.Value(s.state.value),
                        status=status_pb2.StatusProto(
                            error_code=_error_code(s.error), error_message=s.error
                        ),
                    )
                    for s in statuses
                ]
            )
        raise AssertionError("unreachable")

    async def HandleReloadConfigRequest(
        self, request: object, context: grpc.aio.ServicerContext
    ) -> object:
        async with answer(TFSERVING_GRPC, "HandleReloadConfigRequest", context, self.metrics):
            raise Unimplemented(
                "HandleReloadConfigRequest is not served: the server loads the versions it "
                "finds in --model-dir (see --versions)"
            )
        raise AssertionError("unreachable")


def _error_code(error: str) -> int:
    # tensorflow.error.Code: OK 0; a failed load reads as UNKNOWN (2), as in TF Serving.
    return 2 if error else 0


def add_to_server(core: Core, server: grpc.aio.Server) -> None:
    """Adds both services (PREDICTION_SERVICE, MODEL_SERVICE) to `server`."""
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
        PredictionServicer(core), server
    )
    model_service_grpc.add_ModelServiceServicer_to_server(ModelServicer(core), server)
