"""What the server's gRPC interceptors share: rebuilding a method handler, and health's prefix.

A grpc.aio interceptor that acts around a call (the RPC limit) or instead of
it (token refusal) returns a new `RpcMethodHandler` of the same kind (unary
or streaming, each way) with the same (de)serialisers. `rebuild` is that one
piece of bookkeeping; the interceptors supply only what runs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc

# Health checks carry no credentials and must answer under any load.
HEALTH_PREFIX = "/grpc.health.v1.Health/"

Behaviour = Callable[..., Any]


def is_health(method: str) -> bool:
    return method.startswith(HEALTH_PREFIX)


def rebuild(
    handler: grpc.RpcMethodHandler,
    unary: Callable[[Behaviour], Behaviour],
    streaming: Callable[[Behaviour], Behaviour],
) -> grpc.RpcMethodHandler:
    """`handler` with its behaviour wrapped: `unary(inner)` when the response is one
    message, `streaming(inner)` (an async generator function) when it is a stream."""
    if handler.request_streaming and handler.response_streaming:
        inner, maker = handler.stream_stream, grpc.stream_stream_rpc_method_handler
    elif handler.request_streaming:
        inner, maker = handler.stream_unary, grpc.stream_unary_rpc_method_handler
    elif handler.response_streaming:
        inner, maker = handler.unary_stream, grpc.unary_stream_rpc_method_handler
    else:
        inner, maker = handler.unary_unary, grpc.unary_unary_rpc_method_handler
    behaviour = streaming(inner) if handler.response_streaming else unary(inner)
    return maker(
        behaviour,
        request_deserializer=handler.request_deserializer,
        response_serializer=handler.response_serializer,
    )
