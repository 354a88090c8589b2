"""The one place where a gRPC call meets the core: its context, its errors, its metrics.

Servicer methods are decorated with `rpc(protocol, method)`: the decorator
makes the call's `RequestContext` (request id from `x-request-id` metadata or
a new one, the deadline, the caller's token fingerprint), runs the method
with it, sends the request id back in the trailing metadata, and maps what
the method raises: a ServiceError becomes its status code and message;
anything else is logged with its trace and answered INTERNAL with a generic
message (never the exception text). Each call's code and latency are
recorded by the core. Streaming methods use `answering` the same way.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, Protocol, TypeVar

import grpc

from service.core import REQUEST_ID_HEADER, Core, RequestContext, ServiceError, request_id

log = logging.getLogger(__name__)

INTERNAL_MESSAGE = "internal error; the server log has the details"
Req = TypeVar("Req")
Resp = TypeVar("Resp")


class HasCore(Protocol):
    core: Core


def status_code(error: ServiceError) -> grpc.StatusCode:
    return grpc.StatusCode[error.code]


def rpc_code(error: ServiceError) -> int:
    """The numeric google.rpc.Code, for per-image errors inside a response."""
    value = status_code(error).value[0]
    return int(value)


def deadline_of(context: grpc.aio.ServicerContext) -> float | None:
    """The call's deadline as a time.monotonic() instant (None: the client set none)."""
    remaining = context.time_remaining()
    return None if remaining is None else time.monotonic() + remaining


def principal_of(authorization: str) -> str:
    """Who called, for logs: a fingerprint of the bearer token, never the token."""
    if not authorization.startswith("Bearer "):
        return ""
    token = authorization.removeprefix("Bearer ").strip().encode()
    return "token:" + hashlib.sha256(token).hexdigest()[:12]


def context_of(protocol: str, method: str, context: grpc.aio.ServicerContext) -> RequestContext:
    incoming = authorization = ""
    for key, value in context.invocation_metadata() or ():
        if key == REQUEST_ID_HEADER:
            incoming = value if isinstance(value, str) else ""
        elif key == "authorization":
            authorization = value if isinstance(value, str) else ""
    return RequestContext(
        protocol,
        method,
        request_id=request_id(incoming),
        deadline=deadline_of(context),
        principal=principal_of(authorization),
    )


@asynccontextmanager
async def answering(
    core: Core, ctx: RequestContext, context: grpc.aio.ServicerContext
) -> AsyncIterator[None]:
    """Runs a call's body: maps its errors to statuses and records its outcome."""
    code = "OK"
    trailer = ((REQUEST_ID_HEADER, ctx.request_id),)
    try:
        yield
    except ServiceError as exc:
        code = exc.code
        await context.abort(status_code(exc), exc.message, trailing_metadata=trailer)
    except (asyncio.CancelledError, GeneratorExit):
        # GeneratorExit: a streaming call whose client went away is closed at
        # its `yield`; without this it would be counted OK.
        code = "CANCELLED"
        raise
    except Exception as exc:
        # context.abort raises an AbortError of grpc's own; let it through.
        if isinstance(exc, grpc.aio.AbortError):
            code = context.code().name if context.code() else "UNKNOWN"
            raise
        code = "INTERNAL"
        log.exception("%s failed (request %s)", ctx.method, ctx.request_id)
        await context.abort(grpc.StatusCode.INTERNAL, INTERNAL_MESSAGE, trailing_metadata=trailer)
    else:
        context.set_trailing_metadata(trailer)
    finally:
        if code == "OK" and context.cancelled():
            code = "CANCELLED"  # the request stream ended because the client cancelled
        core.finish(ctx, code, time.perf_counter() - ctx.started)


def rpc(
    protocol: str, method: str
) -> Callable[
    [Callable[[Any, Req, RequestContext], Awaitable[Resp]]],
    Callable[[Any, Req, grpc.aio.ServicerContext], Awaitable[Resp]],
]:
    """Decorates a unary servicer method `(self, request, ctx) -> response`."""

    def decorate(
        body: Callable[[Any, Req, RequestContext], Awaitable[Resp]],
    ) -> Callable[[Any, Req, grpc.aio.ServicerContext], Awaitable[Resp]]:
        @functools.wraps(body)
        async def handler(self: HasCore, request: Req, context: grpc.aio.ServicerContext) -> Resp:
            ctx = context_of(protocol, method, context)
            async with answering(self.core, ctx, context):
                return await body(self, request, ctx)
            raise AssertionError("unreachable: answering() aborts or returns")  # for mypy

        return handler

    return decorate
