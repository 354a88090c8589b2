"""A Python client for vggserve: the library (its command line is vggclient.cli.classify).

    with Client("127.0.0.1:8500") as client:
        result = client.classify("cat.jpg", top_k=3)
        print(result.classes[0].label, result.classes[0].probability)

Images may be file paths, encoded bytes, or uint8 numpy arrays (h, w) or
(h, w, channels). UNAVAILABLE answers (a server still loading, restarting or
draining) are retried with exponential backoff by gRPC's own retry policy.
A bearer token is sent only over TLS unless the caller opts in
(`allow_insecure_token=True`, `--insecure-token`), as gRPC's own call
credentials do. `request_groups` splits many images into ClassifyBatch
requests that stay under the server's message limit.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import grpc
import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc

from protos.vggserve.v1 import classifier_pb2 as pb
from protos.vggserve.v1 import classifier_pb2_grpc as pb_grpc

SERVICE = "vggserve.v1.ImageClassifier"
ImageLike = str | Path | bytes | np.ndarray


@dataclass(frozen=True)
class ClassScore:
    index: int
    label: str
    probability: float


@dataclass(frozen=True)
class Classification:
    classes: list[ClassScore]
    model_name: str
    model_version: int
    probabilities: list[float] = field(default_factory=list)

    @classmethod
    def from_proto(cls, response: pb.ClassifyResponse) -> Classification:
        return cls(
            [ClassScore(c.index, c.label, c.probability) for c in response.classes],
            response.model_name,
            response.model_version,
            list(response.probabilities),
        )


class ImageError(Exception):
    """One image failed; `code` is the gRPC status code."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(f"{code.name}: {message}")
        self.code = code
        self.message = message


def image_message(image: ImageLike) -> pb.Image:
    """A proto Image from a path, encoded bytes or a uint8 array."""
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8 or image.ndim not in (2, 3):
            raise ValueError("arrays must be uint8 (height, width) or (height, width, channels)")
        array = image if image.ndim == 3 else image[:, :, None]
        height, width, channels = array.shape
        return pb.Image(
            pixels=pb.RawPixels(
                data=np.ascontiguousarray(array).tobytes(),
                height=height,
                width=width,
                channels=channels,
            )
        )
    if isinstance(image, bytes):
        return pb.Image(encoded=image)
    return pb.Image(encoded=Path(image).read_bytes())


def _service_config(retries: int) -> str:
    policy: dict[str, Any] = {"name": [{"service": SERVICE}]}
    if retries > 0:
        policy["retryPolicy"] = {
            "maxAttempts": retries + 1,  # gRPC caps attempts at 5
            "initialBackoff": "0.1s",
            "maxBackoff": "2s",
            "backoffMultiplier": 2,
            "retryableStatusCodes": ["UNAVAILABLE"],
        }
    return json.dumps({"methodConfig": [policy]})


class Client:
    """A connection to one vggserve server (or load balancer).

    Args:
        target: "host:port".
        timeout: seconds each call may take (its gRPC deadline).
        retries: extra attempts after UNAVAILABLE, with exponential backoff.
        max_message_bytes: largest message sent or received.
        token: bearer token, sent as `authorization` metadata on every call.
        ca_file: PEM CA that signed the server's certificate; turns TLS on.
        cert_file, key_file: client certificate and key, for mutual TLS.
        allow_insecure_token: send `token` over a plaintext channel too. Off by
            default: anyone on the path could read the token and replay it.

    Raises:
        ValueError: a token without TLS, unless allow_insecure_token.
    """

    def __init__(
        self,
        target: str = "127.0.0.1:8500",
        timeout: float = 30.0,
        retries: int = 3,
        max_message_bytes: int = 16 * 1024 * 1024,
        token: str | None = None,
        ca_file: str | Path | None = None,
        cert_file: str | Path | None = None,
        key_file: str | Path | None = None,
        allow_insecure_token: bool = False,
    ) -> None:
        tls = bool(ca_file or cert_file)
        if token and not tls and not allow_insecure_token:
            raise ValueError(
                f"refusing to send a bearer token in plaintext to {target}: anyone on the "
                "path could read and replay it; use TLS (ca_file, --ca), or opt in with "
                "allow_insecure_token=True (--insecure-token)"
            )
        self.target = target
        self.timeout = timeout
        options = [
            ("grpc.enable_retries", 1 if retries > 0 else 0),
            ("grpc.service_config", _service_config(min(retries, 4))),
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.max_send_message_length", max_message_bytes),
        ]
        if tls:
            credentials = grpc.ssl_channel_credentials(
                root_certificates=Path(ca_file).read_bytes() if ca_file else None,
                private_key=Path(key_file).read_bytes() if key_file else None,
                certificate_chain=Path(cert_file).read_bytes() if cert_file else None,
            )
            self.channel = grpc.secure_channel(target, credentials, options=options)
        else:
            self.channel = grpc.insecure_channel(target, options=options)
        channel = self.channel
        if token:
            channel = grpc.intercept_channel(channel, _BearerToken(token))
        self.stub = pb_grpc.ImageClassifierStub(channel)
        self._health = health_pb2_grpc.HealthStub(channel)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        self.channel.close()

    def classify(
        self, image: ImageLike, top_k: int = 5, probabilities: bool = False, version: int = 0
    ) -> Classification:
        """Classifies one image. Raises grpc.RpcError with the server's status."""
        request = pb.ClassifyRequest(
            image=image_message(image),
            top_k=top_k,
            return_probabilities=probabilities,
            model_version=version,
        )
        return Classification.from_proto(self.stub.Classify(request, timeout=self.timeout))

    def classify_batch(
        self, images: Iterable[ImageLike], top_k: int = 5, version: int = 0
    ) -> list[Classification | ImageError]:
        """Several images in one call; a bad image gives an ImageError in its place."""
        request = pb.ClassifyBatchRequest(
            images=[image_message(i) for i in images], top_k=top_k, model_version=version
        )
        response = self.stub.ClassifyBatch(request, timeout=self.timeout)
        return [_outcome(r) for r in response.results]

    def classify_many(
        self,
        images: Iterable[ImageLike],
        top_k: int = 5,
        version: int = 0,
        timeout: float | None = None,
    ) -> Iterator[tuple[int, Classification | ImageError]]:
        """Streams images through ClassifyStream; yields (position, outcome) as answered.

        Answers may come out of order; the position says which input each is.
        The call's deadline is `timeout` (default: none, for long batch jobs).
        """
        requests = (
            pb.ClassifyRequest(
                image=image_message(image), top_k=top_k, model_version=version, request_id=str(i)
            )
            for i, image in enumerate(images)
        )
        for answer in self.stub.ClassifyStream(requests, timeout=timeout):
            yield int(answer.request_id), _outcome(answer.result)

    def metadata(self) -> pb.ModelMetadata:
        return self.stub.GetModelMetadata(pb.GetModelMetadataRequest(), timeout=self.timeout)

    def health(self, service: str = "") -> str:
        """ "SERVING", "NOT_SERVING", ... for the server ("") or one service."""
        response = self._health.Check(
            health_pb2.HealthCheckRequest(service=service), timeout=self.timeout
        )
        return health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)

    def wait_until_serving(self, timeout: float = 60.0) -> None:
        """Blocks until the server reports SERVING (it does once the model is warm)."""
        grpc.channel_ready_future(self.channel).result(timeout=timeout)
        watch = self._health.Watch(health_pb2.HealthCheckRequest(service=""), timeout=timeout)
        try:
            for response in watch:
                if response.status == health_pb2.HealthCheckResponse.SERVING:
                    return
        finally:
            watch.cancel()
        raise TimeoutError(f"{self.target} did not report SERVING within {timeout} s")


class _CallDetails(grpc.ClientCallDetails):
    def __init__(self, base: grpc.ClientCallDetails, metadata: list[tuple[str, str]]) -> None:
        self.method = base.method
        self.timeout = base.timeout
        self.metadata = metadata
        self.credentials = base.credentials
        self.wait_for_ready = getattr(base, "wait_for_ready", None)
        self.compression = getattr(base, "compression", None)


class _BearerToken(
    grpc.UnaryUnaryClientInterceptor,
    grpc.UnaryStreamClientInterceptor,
    grpc.StreamUnaryClientInterceptor,
    grpc.StreamStreamClientInterceptor,
):
    """Adds `authorization: Bearer <token>` to every call."""

    def __init__(self, token: str) -> None:
        self._header = ("authorization", f"Bearer {token}")

    def _details(self, details: grpc.ClientCallDetails) -> grpc.ClientCallDetails:
        return _CallDetails(details, [*(details.metadata or []), self._header])

    def intercept_unary_unary(self, continuation, details, request):  # type: ignore[no-untyped-def]
        return continuation(self._details(details), request)

    def intercept_unary_stream(self, continuation, details, request):  # type: ignore[no-untyped-def]
        return continuation(self._details(details), request)

    def intercept_stream_unary(self, continuation, details, requests):  # type: ignore[no-untyped-def]
        return continuation(self._details(details), requests)

    def intercept_stream_stream(self, continuation, details, requests):  # type: ignore[no-untyped-def]
        return continuation(self._details(details), requests)


_CODES = {code.value[0]: code for code in grpc.StatusCode}


def _outcome(result: pb.ImageResult) -> Classification | ImageError:
    if result.WhichOneof("outcome") == "error":
        code = _CODES.get(result.error.code, grpc.StatusCode.UNKNOWN)
        return ImageError(code, result.error.message)
    return Classification.from_proto(result.response)


# Protobuf framing around each image in a ClassifyBatchRequest (field tags and
# length prefixes: at most about 16 bytes), with room to spare.
IMAGE_OVERHEAD = 64
REQUEST_OVERHEAD = 1024


def request_groups(sizes: list[int], max_bytes: int, max_images: int) -> list[list[int]]:
    """Splits images (by encoded size) into requests of at most `max_images` that
    stay under `max_bytes`, in order. Returns lists of indexes into `sizes`; an
    image too large for any request is left out (the caller reports it)."""
    groups: list[list[int]] = []
    current: list[int] = []
    used = REQUEST_OVERHEAD
    for index, size in enumerate(sizes):
        cost = size + IMAGE_OVERHEAD
        if REQUEST_OVERHEAD + cost > max_bytes:
            continue
        if current and (used + cost > max_bytes or len(current) >= max_images):
            groups.append(current)
            current, used = [], REQUEST_OVERHEAD
        current.append(index)
        used += cost
    if current:
        groups.append(current)
    return groups
