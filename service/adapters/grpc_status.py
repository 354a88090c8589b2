"""The one place where service errors become gRPC statuses.

Servicer methods run inside `answer`: a ServiceError becomes its status code
with its message; anything else is logged with its trace and answered
INTERNAL with a generic message (never the exception text); each RPC's code
and latency are recorded.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import grpc

from service.core.errors import ServiceError
from service.core.metrics import Metrics

log = logging.getLogger(__name__)

INTERNAL_MESSAGE = "internal error; the server log has the details"


def status_code(error: ServiceError) -> grpc.StatusCode:
    return grpc.StatusCode[error.code]


def rpc_code(error: ServiceError) -> int:
    """The numeric google.rpc.Code, for per-image errors inside a response."""
    value = status_code(error).value[0]
    return int(value)


@asynccontextmanager
async def answer(
    protocol: str, method: str, context: grpc.aio.ServicerContext, metrics: Metrics
) -> AsyncIterator[None]:
    started = time.perf_counter()
    code = "OK"
    try:
        yield
    except ServiceError as exc:
        code = exc.code
        await context.abort(status_code(exc), exc.message)
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
        log.exception("%s failed", method)
        await context.abort(grpc.StatusCode.INTERNAL, INTERNAL_MESSAGE)
    finally:
        if code == "OK" and context.cancelled():
            code = "CANCELLED"  # the request stream ended because the client cancelled
        metrics.record_rpc(protocol, method, code, time.perf_counter() - started)
