"""inference.GRPCInferenceService (Open Inference Protocol): messages <-> service.adapters.v2.

Errors are gRPC statuses with the native codes and messages (as Triton
answers them), through the same `answer` as the native servicer. A request
that sent its inputs as `raw_input_contents` (tritonclient always does) gets
its outputs as `raw_output_contents`, as Triton does; otherwise as typed
`contents`.
"""

from __future__ import annotations

import time

import grpc
import numpy as np

from protos.inference import open_inference_grpc_pb2 as pb
from protos.inference import open_inference_grpc_pb2_grpc as pb_grpc
from service.adapters import v2
from service.adapters.grpc_status import answer
from service.core.classify import Core
from service.core.errors import InvalidRequest
from service.core.protocols import V2_GRPC

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["GRPCInferenceService"].full_name


def _deadline(context: grpc.aio.ServicerContext) -> float | None:
    remaining = context.time_remaining()
    return None if remaining is None else time.monotonic() + remaining


def _classification(output: pb.ModelInferRequest.InferRequestedOutputTensor) -> int:
    if v2.CLASSIFICATION not in output.parameters:
        return 0
    parameter = output.parameters[v2.CLASSIFICATION]
    kind = parameter.WhichOneof("parameter_choice")
    if kind not in ("int64_param", "uint64_param"):
        raise InvalidRequest(f"parameter '{v2.CLASSIFICATION}' must be an integer, got {kind}")
    return int(getattr(parameter, kind))


def request_of(message: pb.ModelInferRequest) -> v2.InferRequest:
    raw = list(message.raw_input_contents)
    if raw and len(raw) != len(message.inputs):
        raise InvalidRequest(
            f"raw_input_contents has {len(raw)} entries for {len(message.inputs)} inputs"
        )
    inputs = []
    for i, tensor in enumerate(message.inputs):
        contents = tensor.contents
        elements = (
            list(contents.bytes_contents)
            if tensor.datatype == "BYTES"
            else list(contents.uint_contents)
        )
        inputs.append(
            v2.Tensor(
                name=tensor.name,
                datatype=tensor.datatype,
                shape=tuple(tensor.shape),
                raw=raw[i] if raw else None,
                elements=None if raw else elements,
            )
        )
    return v2.InferRequest(
        model_name=message.model_name,
        model_version=message.model_version,
        inputs=inputs,
        outputs=[
            v2.RequestedOutput(output.name, _classification(output)) for output in message.outputs
        ],
        id=message.id,
    )


def response_of(answer_: v2.InferResponse, raw: bool) -> pb.ModelInferResponse:
    message = pb.ModelInferResponse(
        model_name=answer_.model_name, model_version=answer_.model_version, id=answer_.id
    )
    for output in answer_.outputs:
        tensor = message.outputs.add(name=output.name, datatype=output.datatype, shape=output.shape)
        if isinstance(output.data, np.ndarray):
            if raw:
                message.raw_output_contents.append(output.data.astype("<f4").tobytes())
            else:
                tensor.contents.fp32_contents.extend(output.data.ravel().tolist())
        elif raw:
            message.raw_output_contents.append(v2.join_bytes(output.data))
        else:
            tensor.contents.bytes_contents.extend(output.data)
    return message


class InferenceServicer(pb_grpc.GRPCInferenceServiceServicer):
    def __init__(self, core: Core) -> None:
        self.core = core
        self.metrics = core.metrics

    async def ServerLive(
        self, request: pb.ServerLiveRequest, context: grpc.aio.ServicerContext
    ) -> pb.ServerLiveResponse:
        async with answer(V2_GRPC, "ServerLive", context, self.metrics):
            return pb.ServerLiveResponse(live=True)  # answering at all is being live
        raise AssertionError("unreachable: answer() aborts or returns")

    async def ServerReady(
        self, request: pb.ServerReadyRequest, context: grpc.aio.ServicerContext
    ) -> pb.ServerReadyResponse:
        async with answer(V2_GRPC, "ServerReady", context, self.metrics):
            return pb.ServerReadyResponse(ready=v2.server_ready(self.core))
        raise AssertionError("unreachable")

    async def ModelReady(
        self, request: pb.ModelReadyRequest, context: grpc.aio.ServicerContext
    ) -> pb.ModelReadyResponse:
        async with answer(V2_GRPC, "ModelReady", context, self.metrics):
            return pb.ModelReadyResponse(
                ready=v2.model_ready(self.core, request.name, request.version)
            )
        raise AssertionError("unreachable")

    async def ServerMetadata(
        self, request: pb.ServerMetadataRequest, context: grpc.aio.ServicerContext
    ) -> pb.ServerMetadataResponse:
        async with answer(V2_GRPC, "ServerMetadata", context, self.metrics):
            return pb.ServerMetadataResponse(**v2.server_metadata())
        raise AssertionError("unreachable")

    async def ModelMetadata(
        self, request: pb.ModelMetadataRequest, context: grpc.aio.ServicerContext
    ) -> pb.ModelMetadataResponse:
        async with answer(V2_GRPC, "ModelMetadata", context, self.metrics):
            found = v2.model_metadata(self.core, request.name, request.version)
            tensor = pb.ModelMetadataResponse.TensorMetadata
            return pb.ModelMetadataResponse(
                name=found["name"],
                versions=found["versions"],
                platform=found["platform"],
                inputs=[tensor(**t) for t in found["inputs"]],
                outputs=[tensor(**t) for t in found["outputs"]],
            )
        raise AssertionError("unreachable")

    async def ModelInfer(
        self, request: pb.ModelInferRequest, context: grpc.aio.ServicerContext
    ) -> pb.ModelInferResponse:
        async with answer(V2_GRPC, "ModelInfer", context, self.metrics):
            result = await v2.infer(self.core, V2_GRPC, request_of(request), _deadline(context))
            return response_of(result, raw=bool(request.raw_input_contents))
        raise AssertionError("unreachable")


def add_to_server(core: Core, server: grpc.aio.Server) -> None:
    """Adds inference.GRPCInferenceService (SERVICE_NAME) to `server`."""
    pb_grpc.add_GRPCInferenceServiceServicer_to_server(InferenceServicer(core), server)
