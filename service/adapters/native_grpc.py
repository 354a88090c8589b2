"""The ImageClassifier gRPC servicer: message -> core call -> message."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable

import grpc

from protos.vggserve.v1 import classifier_pb2 as pb
from protos.vggserve.v1 import classifier_pb2_grpc as pb_grpc
from service.adapters import native_convert as converters
from service.adapters.grpc_calls import answering, context_of, rpc
from service.core import (
    NATIVE_GRPC,
    Core,
    DeadlineExceeded,
    RequestContext,
    ServiceError,
    Unavailable,
)


class ImageClassifierServicer(pb_grpc.ImageClassifierServicer):
    def __init__(self, core: Core, stream_window: int, stream_idle_timeout_s: float = 0.0) -> None:
        self.core = core
        self.stream_window = stream_window
        self.stream_idle_timeout_s = stream_idle_timeout_s
        self._draining = False
        self._intakes: set[asyncio.Task[None]] = set()  # streams still taking images

    def drain(self) -> None:
        """Open streams take no new image, answer the ones they took, and end
        UNAVAILABLE, so that clients resend the rest elsewhere instead of
        holding the drain open until its timeout. Called by Server.stop before
        gRPC stops; new streams are refused by gRPC from then on."""
        self._draining = True
        for intake in self._intakes:
            intake.cancel()  # only the intake: images already taken are answered

    async def _classify(
        self, ctx: RequestContext, message: pb.Image, top_k: int, with_probs: bool
    ) -> pb.ClassifyResponse:
        prediction = await self.core.classify(ctx, converters.image(message))
        return converters.response(prediction, top_k, with_probs)

    async def _result(self, answer: Awaitable[pb.ClassifyResponse]) -> pb.ImageResult:
        """One image's outcome: its response, or its own error (batch-mates go on)."""
        try:
            return converters.result(await answer)
        except ServiceError as exc:
            return converters.result(exc)

    @rpc(NATIVE_GRPC, "Classify")
    async def Classify(
        self, request: pb.ClassifyRequest, ctx: RequestContext
    ) -> pb.ClassifyResponse:
        ctx.version = request.model_version
        return await self._classify(ctx, request.image, request.top_k, request.return_probabilities)

    @rpc(NATIVE_GRPC, "ClassifyBatch")
    async def ClassifyBatch(
        self, request: pb.ClassifyBatchRequest, ctx: RequestContext
    ) -> pb.ClassifyBatchResponse:
        ctx.version = request.model_version
        images = converters.images(request.images)  # converted as read, after admission
        outcomes = await self.core.classify_each(ctx, images)
        return pb.ClassifyBatchResponse(
            results=[
                converters.result(
                    outcome
                    if isinstance(outcome, ServiceError)
                    else converters.response(outcome, request.top_k, request.return_probabilities)
                )
                for outcome in outcomes
            ]
        )

    async def ClassifyStream(
        self, request_iterator: AsyncIterator[pb.ClassifyRequest], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.StreamResult]:
        # Answers go out as they finish; at most stream_window images of this
        # stream are in flight, so a fast sender cannot fill the server's queue.
        outbox: asyncio.Queue[pb.StreamResult | None] = asyncio.Queue()
        window = asyncio.Semaphore(self.stream_window)
        stream = context_of(NATIVE_GRPC, "ClassifyStream", context)
        tasks: set[asyncio.Task[None]] = set()
        last_activity = time.monotonic()

        async def one(request: pb.ClassifyRequest) -> None:
            nonlocal last_activity
            try:
                # Each image may ask its own version; the stream's id, deadline and caller.
                ctx = RequestContext(
                    NATIVE_GRPC,
                    "ClassifyStream",
                    request_id=stream.request_id,
                    deadline=stream.deadline,
                    principal=stream.principal,
                    version=request.model_version,
                )
                result = await self._result(
                    self._classify(ctx, request.image, request.top_k, request.return_probabilities)
                )
                await outbox.put(pb.StreamResult(request_id=request.request_id, result=result))
            finally:
                last_activity = time.monotonic()
                window.release()

        async def next_request(requests: AsyncIterator[pb.ClassifyRequest]) -> pb.ClassifyRequest:
            """The next request; DeadlineExceeded when the stream is idle too long.

            Idle means no request and nothing in flight: a client waiting for
            its answers is not idle. Idle streams would otherwise hold their
            RPC slot (--max-concurrent-rpcs) for ever.
            """
            nonlocal last_activity
            idle = self.stream_idle_timeout_s
            pending = asyncio.ensure_future(anext(requests))
            try:
                while True:
                    timeout = None if idle <= 0 else idle
                    if timeout is not None and not tasks:
                        timeout = last_activity + idle - time.monotonic()
                        if timeout <= 0:
                            raise DeadlineExceeded(
                                f"ClassifyStream sent no image for {idle:g} s with none in "
                                "flight; the server closed it (--stream-idle-timeout-s): "
                                "open a new stream when you have images"
                            )
                    done, _ = await asyncio.wait({pending}, timeout=timeout)
                    if done:
                        last_activity = time.monotonic()
                        return pending.result()  # StopAsyncIteration at the end
            finally:
                pending.cancel()

        async def read() -> None:
            try:
                if await take():
                    return
                raise Unavailable(
                    "the server is shutting down; resend the images not answered "
                    "on another connection"
                )
            finally:
                await outbox.put(None)

        async def take() -> bool:
            """Takes the stream's images; answers them all. False: cut by drain()."""
            intake = asyncio.current_task()
            assert intake is not None
            whole = not self._draining
            if whole:
                self._intakes.add(intake)
                requests = aiter(request_iterator)
                try:
                    while True:
                        try:
                            request = await next_request(requests)
                        except StopAsyncIteration:
                            break
                        await window.acquire()
                        task = asyncio.create_task(one(request))
                        tasks.add(task)
                        task.add_done_callback(tasks.discard)
                except asyncio.CancelledError:
                    if not self._draining:
                        raise  # the call itself was cancelled
                    intake.uncancel()  # drain() stopped the intake: answer what was taken
                    whole = False
                finally:
                    self._intakes.discard(intake)
            if tasks:
                await asyncio.gather(*tasks)
            return whole

        async with answering(self.core, stream, context):
            reader = asyncio.create_task(read())
            try:
                while (item := await outbox.get()) is not None:
                    yield item
                await reader  # re-raises a failure of the request stream
            finally:
                reader.cancel()

    @rpc(NATIVE_GRPC, "Explain")
    async def Explain(self, request: pb.ExplainRequest, ctx: RequestContext) -> pb.ExplainResponse:
        ctx.version = request.model_version
        class_index = request.class_index if request.HasField("class_index") else None
        prediction, explanation = await self.core.explain(
            ctx, converters.image(request.image), class_index
        )
        return converters.explain_response(prediction, explanation, request.top_k)

    @rpc(NATIVE_GRPC, "GetModelMetadata")
    async def GetModelMetadata(
        self, request: pb.GetModelMetadataRequest, ctx: RequestContext
    ) -> pb.ModelMetadata:
        return converters.metadata(self.core.metadata(ctx))
