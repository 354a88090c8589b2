"""A limit on RPCs handled at once that health checks do not count against.

grpc.aio's own `maximum_concurrent_rpcs` counts every RPC, health checks
included: enough idle streams (or slow clients) lock out new calls *and* the
health probes, and an orchestrator then restarts a server that is only busy.
This interceptor counts the RPCs of every service but health, and refuses the
one over the limit at once with RESOURCE_EXHAUSTED (a client retries it with
backoff; waiting instead would hold its stream). Streams are bounded in time
by the servicer's idle timeout, so the slots they hold come back.

The REST server takes its slots from the same limit (`try_enter`/`leave`), so
--max-concurrent-rpcs bounds gRPC calls and HTTP requests together.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc

from service.adapters.grpc_handlers import Behaviour, is_health, rebuild
from service.core import Metrics, of_grpc_method


class RpcLimit(grpc.aio.ServerInterceptor):
    """At most `limit` RPCs at once (health checks not counted)."""

    def __init__(self, limit: int, metrics: Metrics) -> None:
        if limit < 1:
            raise ValueError("the RPC limit must be at least 1")
        self.limit = limit
        self.active = 0
        self._metrics = metrics
        metrics.rpcs_in_flight.set_function(lambda: self.active)

    def try_enter(self) -> bool:
        """Takes a slot for a call made outside gRPC; False when all are taken."""
        if self.active >= self.limit:
            return False
        self.active += 1
        return True

    def leave(self) -> None:
        self.active -= 1

    @property
    def refusal(self) -> str:
        return (
            f"server is handling {self.limit} calls, its limit (--max-concurrent-rpcs); "
            "retry with backoff"
        )

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        if handler is None or is_health(details.method):
            return handler
        return self._wrap(
            handler, of_grpc_method(details.method), details.method.rsplit("/", 1)[-1]
        )

    async def _enter(self, protocol: str, method: str, context: grpc.aio.ServicerContext) -> None:
        # All on the event loop's thread: no lock needed around the count.
        if self.active >= self.limit:
            self._metrics.record_rpc(protocol, method, "RESOURCE_EXHAUSTED", 0.0)
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, self.refusal)
        self.active += 1

    def _wrap(
        self, handler: grpc.RpcMethodHandler, protocol: str, method: str
    ) -> grpc.RpcMethodHandler:
        def unary(inner: Behaviour) -> Behaviour:
            async def limited(request: Any, context: grpc.aio.ServicerContext) -> Any:
                await self._enter(protocol, method, context)
                try:
                    return await inner(request, context)
                finally:
                    self.active -= 1

            return limited

        def streaming(inner: Behaviour) -> Behaviour:
            async def limited(
                request: Any, context: grpc.aio.ServicerContext
            ) -> AsyncIterator[Any]:
                await self._enter(protocol, method, context)
                try:
                    answers = inner(request, context)
                    if inspect.isasyncgen(answers):
                        try:
                            async for answer in answers:
                                yield answer
                        finally:
                            # When the client cancels, grpc closes this generator at its
                            # `yield`; close the handler's too, now, so its own clean-up
                            # (counting the call CANCELLED) runs at once, not whenever
                            # the garbage collector finalises it.
                            await answers.aclose()
                    else:  # a handler that writes with context.write()
                        await answers
                finally:
                    self.active -= 1

            return limited

        return rebuild(handler, unary, streaming)
