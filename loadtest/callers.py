"""One image, one request, in each protocol the server speaks: what the load client sends.

Each caller sends what an ordinary client of that protocol sends, and reads
the answer as that client would (the most probable class), so that the
benchmark compares the protocols' real costs on both ends:

- native: `vggserve.v1.ImageClassifier/Classify`, top_k 5;
- tfserving-grpc: `PredictionService/Predict` built with the unmodified
  tensorflow-serving-api stubs, input `images` DT_STRING [1];
- v2-grpc: `GRPCInferenceService/ModelInfer`, BYTES `images` [1] in
  `raw_input_contents` with its 4-byte little-endian length, as tritonclient
  sends it (the answer comes back raw too);
- tfserving-rest: `POST /v1/models/NAME:predict`, `{"instances": [{"b64": ...}]}`;
- v2-rest: `POST /v2/models/NAME/infer` with the binary-data extension, the
  body byte for byte what tritonclient.http sends by default (JSON header,
  then the length-prefixed image; `binary_data_output` asks for the answer
  in binary);
- v2-rest-json: the same endpoint with the image as a base64 JSON string,
  as curl users and KServe's JSON examples send it.

Request payloads are built once per image (a load generator should not
measure its own serialisation); answers are parsed on every call.
"""

from __future__ import annotations

import base64
import json
import struct
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any

import grpc
import numpy as np

PROTOCOLS = ("native", "tfserving-grpc", "v2-grpc", "tfserving-rest", "v2-rest", "v2-rest-json")
REST_PROTOCOLS = frozenset({"tfserving-rest", "v2-rest", "v2-rest-json"})
TIMEOUT_S = 60.0
OPTIONS = [
    ("grpc.max_send_message_length", 64 << 20),
    ("grpc.max_receive_message_length", 64 << 20),
]
HEADER_LENGTH = "Inference-Header-Content-Length"

# call(i) classifies image i of the corpus and returns the most probable class.
Call = Callable[[int], Awaitable[int]]


class CallFailed(Exception):
    """The server answered with an error (a REST status other than 200)."""


@asynccontextmanager
async def caller(
    protocol: str,
    images: Sequence[bytes],
    *,
    target: str = "",
    rest_url: str = "",
    model: str = "",
    connections: int = 1,
) -> AsyncIterator[Call]:
    """A `Call` for `protocol` against the gRPC `target` or the REST `rest_url`.

    `model` names the model (the non-native protocols name it in every
    request); `connections` is the REST connection pool's size (one per
    request in flight, as a client with a pool would keep).
    """
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r}; choose from {', '.join(PROTOCOLS)}")
    if protocol in REST_PROTOCOLS:
        if not rest_url:
            raise ValueError(f"{protocol} needs the server's REST URL")
        async with _rest_caller(protocol, images, rest_url, model, connections) as call:
            yield call
        return
    async with grpc.aio.insecure_channel(target, options=OPTIONS) as channel:
        if protocol == "native":
            yield _native(channel, images)
        elif protocol == "tfserving-grpc":
            yield _tfserving_grpc(channel, images, model)
        else:
            yield _v2_grpc(channel, images, model)


def _native(channel: grpc.aio.Channel, images: Sequence[bytes]) -> Call:
    from protos.vggserve.v1 import classifier_pb2 as pb
    from protos.vggserve.v1 import classifier_pb2_grpc as pb_grpc

    stub = pb_grpc.ImageClassifierStub(channel)
    requests = [pb.ClassifyRequest(image=pb.Image(encoded=data), top_k=5) for data in images]

    async def call(i: int) -> int:
        response = await stub.Classify(requests[i % len(requests)], timeout=TIMEOUT_S)
        return int(response.classes[0].index)

    return call


def _tfserving_grpc(channel: grpc.aio.Channel, images: Sequence[bytes], model: str) -> Call:
    from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    shape = tensor_shape_pb2.TensorShapeProto(dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=1)])
    requests = []
    for data in images:
        request = predict_pb2.PredictRequest()
        request.model_spec.name = model
        request.model_spec.signature_name = "serving_default"
        request.inputs["images"].CopyFrom(
            tensor_pb2.TensorProto(dtype=types_pb2.DT_STRING, tensor_shape=shape, string_val=[data])
        )
        requests.append(request)

    async def call(i: int) -> int:
        response = await stub.Predict(requests[i % len(requests)], timeout=TIMEOUT_S)
        probabilities = np.frombuffer(response.outputs["probabilities"].tensor_content, "<f4")
        return int(probabilities.argmax())

    return call


def _v2_grpc(channel: grpc.aio.Channel, images: Sequence[bytes], model: str) -> Call:
    from protos.inference import open_inference_grpc_pb2 as pb
    from protos.inference import open_inference_grpc_pb2_grpc as pb_grpc

    stub = pb_grpc.GRPCInferenceServiceStub(channel)
    tensor = pb.ModelInferRequest.InferInputTensor(name="images", datatype="BYTES", shape=[1])
    requests = [
        pb.ModelInferRequest(
            model_name=model, inputs=[tensor], raw_input_contents=[_length_prefixed(data)]
        )
        for data in images
    ]

    async def call(i: int) -> int:
        response = await stub.ModelInfer(requests[i % len(requests)], timeout=TIMEOUT_S)
        return int(np.frombuffer(response.raw_output_contents[0], "<f4").argmax())

    return call


def _length_prefixed(data: bytes) -> bytes:
    return struct.pack("<I", len(data)) + data


def v2_binary_body(data: bytes) -> tuple[bytes, int]:
    """tritonclient.http's default body for one BYTES image, and its JSON part's length."""
    header = {
        "inputs": [
            {
                "name": "images",
                "shape": [1],
                "datatype": "BYTES",
                "parameters": {"binary_data_size": len(data) + 4},
            }
        ],
        "parameters": {"binary_data_output": True},
    }
    text = json.dumps(header, separators=(",", ":")).encode()
    return text + _length_prefixed(data), len(text)


def _rest_request(protocol: str, data: bytes, rest_url: str, model: str) -> tuple[str, Any]:
    """(url, request keyword arguments) of one image's request."""
    b64 = base64.b64encode(data).decode()
    if protocol == "tfserving-rest":
        body = json.dumps({"instances": [{"b64": b64}]}).encode()
        url = f"{rest_url}/v1/models/{model}:predict"
        return url, {"data": body, "headers": {"Content-Type": "application/json"}}
    url = f"{rest_url}/v2/models/{model}/infer"
    if protocol == "v2-rest":
        body, length = v2_binary_body(data)
        return url, {"data": body, "headers": {HEADER_LENGTH: str(length)}}
    tensor = {"name": "images", "shape": [1], "datatype": "BYTES", "data": [b64]}
    body = json.dumps({"inputs": [tensor]}).encode()
    return url, {"data": body, "headers": {"Content-Type": "application/json"}}


def _rest_answer(protocol: str, body: bytes, headers: Any) -> int:
    if protocol == "tfserving-rest":
        return int(np.argmax(json.loads(body)["predictions"][0]))
    length = headers.get(HEADER_LENGTH)
    if length is None:  # a JSON answer
        return int(np.argmax(json.loads(body)["outputs"][0]["data"]))
    return int(np.frombuffer(body[int(length) :], "<f4").argmax())


@asynccontextmanager
async def _rest_caller(
    protocol: str, images: Sequence[bytes], rest_url: str, model: str, connections: int
) -> AsyncIterator[Call]:
    import aiohttp

    requests = [_rest_request(protocol, data, rest_url, model) for data in images]
    connector = aiohttp.TCPConnector(limit=max(1, connections))
    timeout = aiohttp.ClientTimeout(total=TIMEOUT_S)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def call(i: int) -> int:
            url, kwargs = requests[i % len(requests)]
            async with session.post(url, **kwargs) as response:
                body = await response.read()
                if response.status != 200:
                    raise CallFailed(f"HTTP {response.status}: {body[:200]!r}")
                return _rest_answer(protocol, body, response.headers)

        yield call
