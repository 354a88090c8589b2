"""The one exception hierarchy of the service core.

Each error names its status as a plain string; `service.adapters.grpc_calls`
turns it into a gRPC status and `service.adapters.rest` into an HTTP status
(one place each), so the core stays free of gRPC and HTTP. Messages are
written for the user who caused them: say what is wrong and what is allowed.
Anything not a ServiceError is a bug: it is logged with its trace and
answered INTERNAL without details.
"""

from __future__ import annotations


class ServiceError(Exception):
    """An error a client can cause or act on."""

    code = "INTERNAL"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidImage(ServiceError):
    """The image is empty, not a supported format, too large, or does not decode."""

    code = "INVALID_ARGUMENT"


class InvalidRequest(ServiceError):
    """A request field is out of range (not the image itself)."""

    code = "INVALID_ARGUMENT"


class QueueFull(ServiceError):
    """More requests are waiting than the server is configured to hold."""

    code = "RESOURCE_EXHAUSTED"


class DeadlineExceeded(ServiceError):
    """The client's deadline passed before the request was computed."""

    code = "DEADLINE_EXCEEDED"


class Unavailable(ServiceError):
    """No model is loaded yet, or the server is shutting down."""

    code = "UNAVAILABLE"


class VersionNotFound(ServiceError):
    """The request names a model version that is not loaded."""

    code = "NOT_FOUND"


class ModelNotFound(ServiceError):
    """The request names a model this server does not serve."""

    code = "NOT_FOUND"


class Unimplemented(ServiceError):
    """The request asks for something this server does not do (e.g. regression)."""

    code = "UNIMPLEMENTED"


class Unauthenticated(ServiceError):
    """A token is required and was missing or wrong."""

    code = "UNAUTHENTICATED"


class NotExplainable(ServiceError):
    """The model version was exported without the `gradcam` signature."""

    code = "FAILED_PRECONDITION"
