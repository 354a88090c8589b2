"""inference.GRPCInferenceService (Open Inference Protocol): messages <-> service.adapters.v2.

Errors are gRPC statuses with the native codes and messages (as Triton
answers them), through the same `answer` as the native servicer. A request
that sent its inputs as `raw_input_contents` (tritonclient always does) gets
its outputs as `raw_output_contents`, as Triton does; otherwise as typed
`contents`.
"""

from __future__ import annotations

import grpc
import numpy as np

from protos.inference import open_inference_grpc_pb2 as pb
from protos.inference import open_inference_grpc_pb2_grpc as pb_grpc
from service.adapters import v2
from service.adapters.grpc_calls import rpc
from service.core import V2_GRPC, Core, InvalidRequest, RequestContext

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["GRPCInferenceService"].full_name


def _classification(output: pb.ModelInferRequest.InferRequestedOutputTensor) -> int:
    if v2.CLASSIFICATION not in output.parameters:
        return 0
    parameter = output.parameters[v2.CLASSIFICATION]
    kind = parameter.WhichOneof("parameter_choice")
    if kind not in ("int64_param", "uint64_param"):
        raise InvalidRequest(f"parameter '{v2.CLASSIFICATION}' must be an integer, got {kind}")
    return int(getattr(parameter, kind))


def request_of(message: pb.ModelInferRequest) -> v2.InferRequest:
    raw = message.raw_input_contents
    if raw and len(raw) != len(message.inputs):
        raise InvalidRequest(
            f"raw_input_contents has {len(raw)} entries for {len(message.inputs)} inputs"
        )
    inputs = []
    for i, tensor in enumerate(message.inputs):
        contents = tensor.contents
        # The repeated fields themselves: their length is known without copying them.
        elements = contents.bytes_contents if tensor.datatype == "BYTES" else contents.uint_contents
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

    @rpc(V2_GRPC, "ServerLive")
    async def ServerLive(
        self, request: pb.ServerLiveRequest, ctx: RequestContext
    ) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=self.core.live())

    @rpc(V2_GRPC, "ServerReady")
    async def ServerReady(
        self, request: pb.ServerReadyRequest, ctx: RequestContext
    ) -> pb.ServerReadyResponse:
        return pb.ServerReadyResponse(ready=self.core.ready())

    @rpc(V2_GRPC, "ModelReady")
    async def ModelReady(
        self, request: pb.ModelReadyRequest, ctx: RequestContext
    ) -> pb.ModelReadyResponse:
        return pb.ModelReadyResponse(
            ready=v2.model_ready(self.core, ctx, request.name, request.version)
        )

    @rpc(V2_GRPC, "ServerMetadata")
    async def ServerMetadata(
        self, request: pb.ServerMetadataRequest, ctx: RequestContext
    ) -> pb.ServerMetadataResponse:
        return pb.ServerMetadataResponse(**v2.server_metadata())

    @rpc(V2_GRPC, "ModelMetadata")
    async def ModelMetadata(
        self, request: pb.ModelMetadataRequest, ctx: RequestContext
    ) -> pb.ModelMetadataResponse:
        found = v2.model_metadata(self.core, ctx, request.name, request.version)
        tensor = pb.ModelMetadataResponse.TensorMetadata
        return pb.ModelMetadataResponse(
            name=found["name"],
            versions=found["versions"],
            platform=found["platform"],
            inputs=[tensor(**t) for t in found["inputs"]],
            outputs=[tensor(**t) for t in found["outputs"]],
        )

    @rpc(V2_GRPC, "ModelInfer")
    async def ModelInfer(
        self, request: pb.ModelInferRequest, ctx: RequestContext
    ) -> pb.ModelInferResponse:
        result = await v2.infer(self.core, ctx, request_of(request))
        return response_of(result, raw=bool(request.raw_input_contents))


def add_to_server(core: Core, server: grpc.aio.Server) -> None:
    """Adds inference.GRPCInferenceService (SERVICE_NAME) to `server`."""
    pb_grpc.add_GRPCInferenceServiceServicer_to_server(InferenceServicer(core), server)
