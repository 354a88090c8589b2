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
    model_service_pb2,
    predict_pb2,
    prediction_service_pb2,
    prediction_service_pb2_grpc,
    status_pb2,
)
from tensorflow_serving.apis import model_service_pb2_grpc as model_service_grpc

from service.adapters import tfserving
from service.adapters.grpc_calls import rpc
from service.core import (
    TFSERVING_GRPC,
    Core,
    Encoded,
    Images,
    InvalidImage,
    InvalidRequest,
    Lazy,
    PixelBlock,
    Prediction,
    RawImage,
    RequestContext,
    Unimplemented,
)

# The services' own file modules: the *_pb2_grpc stubs import only the message
# files, so without these the services' descriptors were never registered and
# reflection listed the services but could not describe them.
PREDICTION_SERVICE = prediction_service_pb2.DESCRIPTOR.services_by_name[
    "PredictionService"
].full_name
MODEL_SERVICE = model_service_pb2.DESCRIPTOR.services_by_name["ModelService"].full_name


def _spec(ctx: RequestContext, spec: model_pb2.ModelSpec) -> RequestContext:
    version = spec.version.value if spec.HasField("version") else None
    return tfserving.context(ctx, spec.name, version, spec.version_label)


def images_of(core: Core, tensor: tensor_pb2.TensorProto, sig: tfserving.Signature) -> Images:
    """The images of a Predict input, as the core takes them; the claim is admitted
    (count, and a pixel tensor's shape) before any image is read."""
    dims = [d.size for d in tensor.tensor_shape.dim]
    kind = types_pb2.DataType.Name(tensor.dtype)
    if not sig.pixels:
        if tensor.dtype != types_pb2.DT_STRING or len(dims) > 1:
            raise InvalidRequest(
                f"input {sig.input!r} must be DT_STRING [N] encoded images, got {kind} {dims}"
            )
        count = len(tensor.string_val)
        if dims != [count] and not (dims == [] and count == 1):
            raise InvalidRequest(f"input {sig.input!r} says shape {dims} but holds {count} strings")
        core.admit(count)
        return Lazy(tensor.string_val, _encoded)
    if tensor.dtype != types_pb2.DT_UINT8 or len(dims) != 4 or min(dims) < 0:
        raise InvalidRequest(
            f"input {sig.input!r} must be DT_UINT8 [N, height, width, channels], got {kind} {dims}"
        )
    count, height, width, channels = dims
    core.admit(count, (height, width, channels))
    try:
        data = tensor.tensor_content or bytes(tensor.int_val)
    except ValueError:
        raise InvalidImage("pixel values must be 0-255") from None
    return PixelBlock(data, count, height, width, channels)


def _encoded(index: int, data: bytes) -> RawImage:
    return Encoded(data)


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

    @rpc(TFSERVING_GRPC, "Predict")
    async def Predict(
        self, request: predict_pb2.PredictRequest, ctx: RequestContext
    ) -> predict_pb2.PredictResponse:
        spec = request.model_spec
        _spec(ctx, spec)
        sig = tfserving.signature(spec.signature_name)
        tfserving.check_inputs(sig, list(request.inputs))
        tfserving.check_outputs(list(request.output_filter))
        images = images_of(self.core, request.inputs[sig.input], sig)
        predictions = await tfserving.predict(self.core, ctx, images)
        response = predict_pb2.PredictResponse(
            model_spec=_answered_spec(spec, predictions[0].version, sig.name)
        )
        response.outputs[tfserving.OUTPUT].CopyFrom(probabilities_tensor(predictions))
        return response

    @rpc(TFSERVING_GRPC, "Classify")
    async def Classify(
        self, request: classification_pb2.ClassificationRequest, ctx: RequestContext
    ) -> classification_pb2.ClassificationResponse:
        spec = request.model_spec
        _spec(ctx, spec)
        sig = tfserving.signature(spec.signature_name)
        tfserving.classify_signature(sig, "Classify")
        if request.input.WhichOneof("kind") == "example_list_with_context":
            examples = request.input.example_list_with_context.examples
            shared: example_pb2.Example | None = request.input.example_list_with_context.context
        else:
            examples, shared = request.input.example_list.examples, None
        self.core.admit(len(examples))
        images = Lazy(examples, lambda _, example: _example_image(example, shared))
        predictions = await tfserving.predict(self.core, ctx, images)
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

    @rpc(TFSERVING_GRPC, "Regress")
    async def Regress(self, request: object, ctx: RequestContext) -> object:
        raise Unimplemented(
            "Regress is not served: this is an image classifier; use Classify or Predict"
        )

    @rpc(TFSERVING_GRPC, "MultiInference")
    async def MultiInference(self, request: object, ctx: RequestContext) -> object:
        raise Unimplemented(
            "MultiInference is not served: send one Classify or Predict call per task"
        )

    @rpc(TFSERVING_GRPC, "GetModelMetadata")
    async def GetModelMetadata(
        self, request: get_model_metadata_pb2.GetModelMetadataRequest, ctx: RequestContext
    ) -> get_model_metadata_pb2.GetModelMetadataResponse:
        spec = request.model_spec
        _spec(ctx, spec)
        fields = list(request.metadata_field)
        if fields != [tfserving.SIGNATURE_DEF]:
            raise InvalidRequest(
                f"metadata_field must be [{tfserving.SIGNATURE_DEF!r}] (the one field "
                f"served), got {fields}"
            )
        info, defs = tfserving.metadata(self.core, ctx)
        packed = any_pb2.Any()
        packed.Pack(defs)
        response = get_model_metadata_pb2.GetModelMetadataResponse(
            model_spec=_answered_spec(spec, info.version, "")
        )
        response.metadata[tfserving.SIGNATURE_DEF].CopyFrom(packed)
        return response


class ModelServicer(model_service_grpc.ModelServiceServicer):
    def __init__(self, core: Core) -> None:
        self.core = core

    @rpc(TFSERVING_GRPC, "GetModelStatus")
    async def GetModelStatus(
        self, request: get_model_status_pb2.GetModelStatusRequest, ctx: RequestContext
    ) -> get_model_status_pb2.GetModelStatusResponse:
        statuses = tfserving.statuses(self.core, _spec(ctx, request.model_spec))
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

    @rpc(TFSERVING_GRPC, "HandleReloadConfigRequest")
    async def HandleReloadConfigRequest(self, request: object, ctx: RequestContext) -> object:
        raise Unimplemented(
            "HandleReloadConfigRequest is not served: the server loads the versions it "
            "finds in --model-dir (see --versions)"
        )


def _error_code(error: str) -> int:
    # tensorflow.error.Code: OK 0; a failed load reads as UNKNOWN (2), as in TF Serving.
    return 2 if error else 0


def add_to_server(core: Core, server: grpc.aio.Server) -> None:
    """Adds both services (PREDICTION_SERVICE, MODEL_SERVICE) to `server`."""
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
        PredictionServicer(core), server
    )
    model_service_grpc.add_ModelServiceServicer_to_server(ModelServicer(core), server)
