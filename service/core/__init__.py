"""The service core: the data plane every protocol adapter calls, and nothing of any wire.

Public API (adapters and embedding programs import only these names, from
`service.core` itself; the submodules are the core's own business):

    options = CoreOptions(model_dir="models/vgg-mini")
    core = build_core(options)          # the one factory (server.py uses it too)
    await core.start()                  # load and warm the versions
    ctx = RequestContext(IN_PROCESS, "Classify")
    prediction = await core.classify(ctx, Encoded(jpeg_bytes))
    await core.close()

Errors are `ServiceError` subclasses whose `code` names a gRPC status; the
adapters map them (service.adapters.grpc_calls, service.adapters.rest).
"""

from service.core.context import REQUEST_ID_HEADER, RequestContext, request_id, version_number
from service.core.dataplane import Core, ModelInfo
from service.core.errors import (
    DeadlineExceeded,
    InvalidImage,
    InvalidRequest,
    ModelNotFound,
    NotExplainable,
    QueueFull,
    ServiceError,
    Unauthenticated,
    Unavailable,
    Unimplemented,
    VersionNotFound,
)
from service.core.metrics import Metrics
from service.core.options import CoreOptions
from service.core.protocols import (
    IN_PROCESS,
    NATIVE_GRPC,
    TFSERVING_GRPC,
    TFSERVING_REST,
    V2_GRPC,
    V2_REST,
    of_grpc_method,
)
from service.core.repository import Prediction
from service.core.requests import Encoded, Images, Lazy, PixelBlock, Pixels, RawImage
from service.core.runtime import Explanation, ModelLoadError
from service.core.versions import VersionState, VersionStatus
from service.version_policy import VersionPolicy


def build_core(options: CoreOptions, metrics: Metrics | None = None) -> Core:
    """The data plane for `options`: the one way a Core is made (server, --local, Ray)."""
    return Core(options, metrics)


__all__ = [
    "IN_PROCESS",
    "NATIVE_GRPC",
    "REQUEST_ID_HEADER",
    "TFSERVING_GRPC",
    "TFSERVING_REST",
    "V2_GRPC",
    "V2_REST",
    "Core",
    "CoreOptions",
    "DeadlineExceeded",
    "Encoded",
    "Explanation",
    "Images",
    "InvalidImage",
    "InvalidRequest",
    "Lazy",
    "Metrics",
    "ModelInfo",
    "ModelLoadError",
    "ModelNotFound",
    "NotExplainable",
    "PixelBlock",
    "Pixels",
    "Prediction",
    "QueueFull",
    "RawImage",
    "RequestContext",
    "ServiceError",
    "Unauthenticated",
    "Unavailable",
    "Unimplemented",
    "VersionNotFound",
    "VersionPolicy",
    "VersionState",
    "VersionStatus",
    "build_core",
    "of_grpc_method",
    "request_id",
    "version_number",
]
