"""Assembles and runs the server: gRPC (servicers, health, reflection) and REST.

Start-up order: bind the ports and report NOT_SERVING; load and warm up the
model off the event loop; then report SERVING. Requests that arrive before
that are answered UNAVAILABLE. `stop` is the one drain: health NOT_SERVING,
a grace, then gRPC and REST refuse new calls and finish the accepted ones,
and only then the model batchers close.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from protos.vggserve.v1 import classifier_pb2, classifier_pb2_grpc
from service.adapters import rest, tfserving_grpc, tfserving_rest, v2_grpc, v2_rest
from service.adapters.grpc_limits import RpcLimit
from service.adapters.native_grpc import ImageClassifierServicer
from service.core import CoreOptions, build_core
from service.security import TokenAuth, load_tokens, server_credentials, warn_if_exposed
from service.settings import Settings

log = logging.getLogger(__name__)

SERVICE_NAME = classifier_pb2.DESCRIPTOR.services_by_name["ImageClassifier"].full_name
# Every service on the port, as health checking and reflection name them.
SERVICES = (
    SERVICE_NAME,
    tfserving_grpc.PREDICTION_SERVICE,
    tfserving_grpc.MODEL_SERVICE,
    v2_grpc.SERVICE_NAME,
)
# The REST APIs served on --rest-port (each adds its routes; see adapters/rest.py).
REST_PROTOCOLS: list[rest.Protocol] = [tfserving_rest.PROTOCOL, v2_rest.PROTOCOL]
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def grpc_options(settings: Settings) -> list[tuple[str, int]]:
    return [
        ("grpc.max_receive_message_length", settings.max_message_bytes),
        ("grpc.max_send_message_length", settings.max_message_bytes),
        ("grpc.max_concurrent_streams", settings.max_concurrent_streams),
        # Several server processes may share a port only when asked to.
        ("grpc.so_reuseport", 0),
    ]


def core_options(settings: Settings) -> CoreOptions:
    """The core's options from the command line (the one place they are mapped)."""
    return CoreOptions(
        model_dir=settings.model_dir,
        model_name=settings.model_name,
        versions=settings.versions,
        max_batch_size=settings.max_batch_size,
        batch_timeout_s=settings.batch_timeout_s,
        batching=settings.batching,
        max_queue=settings.max_queue,
        model_workers=settings.model_workers,
        max_image_bytes=settings.max_message_bytes,
        max_image_pixels=settings.max_image_pixels,
        max_answer_bytes=settings.max_message_bytes,
        explain_max_pixels=settings.explain_max_pixels,
        explain_max_concurrent=settings.explain_max_concurrent,
        poll_interval_s=settings.poll_interval_s,
    )


class Server:
    """A vggserve server bound to `settings.host:settings.port`."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.core = build_core(core_options(settings))
        self.metrics = self.core.metrics
        self.health = health.aio.HealthServicer()
        self.port = 0
        self.rest_port: int | None = None
        self.metrics_port: int | None = None
        self._credentials = server_credentials(settings)
        tokens = load_tokens(settings)
        warn_if_exposed(settings, self._credentials is not None, tokens)
        # Our own RPC limit, not grpc's maximum_concurrent_rpcs: that one counts
        # health checks too, so busy or idle streams would fail the probes.
        interceptors: list[grpc.aio.ServerInterceptor] = [TokenAuth(tokens)] if tokens else []
        self._limit = RpcLimit(settings.max_concurrent_rpcs, self.metrics)
        interceptors.append(self._limit)
        self._grpc = grpc.aio.server(options=grpc_options(settings), interceptors=interceptors)
        self._servicer = ImageClassifierServicer(
            self.core,
            stream_window=max(2 * settings.max_batch_size, 8),
            stream_idle_timeout_s=settings.stream_idle_timeout_s,
        )
        classifier_pb2_grpc.add_ImageClassifierServicer_to_server(self._servicer, self._grpc)
        tfserving_grpc.add_to_server(self.core, self._grpc)
        v2_grpc.add_to_server(self.core, self._grpc)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self._grpc)
        reflection.enable_server_reflection(
            [*SERVICES, health.SERVICE_NAME, reflection.SERVICE_NAME], self._grpc
        )
        self._rest: rest.RestServer | None = None
        if settings.rest_port >= 0:
            context = rest.Context(self.core)
            self._rest = rest.RestServer(settings, context, REST_PROTOCOLS, tokens, self._limit)

    def rest_routes(self) -> list[tuple[str, str]]:
        """(method, path pattern) of every REST route served; empty with REST off."""
        return self._rest.routes() if self._rest is not None else []

    async def start(self) -> int:
        """Binds and starts answering (NOT_SERVING until the model is warm)."""
        for service in ("", *SERVICES):
            await self.health.set(service, NOT_SERVING)
        address = f"{self.settings.host}:{self.settings.port}"
        try:
            if self._credentials is None:
                self.port = self._grpc.add_insecure_port(address)
            else:
                self.port = self._grpc.add_secure_port(address, self._credentials)
        except RuntimeError as exc:  # grpc's way of saying the bind failed
            raise OSError(f"cannot listen on {address}: is the port in use? ({exc})") from None
        await self._grpc.start()
        if self._rest is not None:
            try:
                self.rest_port = await self._rest.start()
            except OSError:
                await self._grpc.stop(0)
                raise
        if self.settings.metrics_port >= 0:
            host = self.settings.metrics_host or self.settings.host
            try:
                self.metrics_port = self.metrics.serve(host, self.settings.metrics_port)
            except OSError as exc:
                await self._grpc.stop(0)
                if self._rest is not None:
                    await self._rest.stop(0)
                raise OSError(
                    f"cannot serve metrics on {host}:{self.settings.metrics_port}: "
                    f"{exc.strerror or exc} (--metrics-port -1 turns metrics off)"
                ) from None
        return self.port

    async def load(self) -> None:
        """Loads and warms the model, then reports SERVING."""
        started = time.perf_counter()
        versions = await self.core.start()
        log.info(
            "serving %s version(s) %s on %s: gRPC port %d, REST %s, ready in %.1f s",
            self.core.model_name,
            ",".join(map(str, versions)),
            self.settings.host,
            self.port,
            f"port {self.rest_port} (and /metrics)" if self.rest_port is not None else "off",
            time.perf_counter() - started,
        )
        for service in ("", *SERVICES):
            await self.health.set(service, SERVING)
        self.core.set_serving(True)

    async def set_not_serving(self) -> None:
        """Tells health checkers (load balancers) to stop sending; still answers."""
        self.core.set_serving(False)
        for service in ("", *SERVICES):
            await self.health.set(service, NOT_SERVING)

    async def stop(
        self,
        timeout_s: float = 30.0,
        grace_s: float = 0.0,
        skip_grace: asyncio.Event | None = None,
    ) -> None:
        """Drains and closes, in the one order that loses no accepted call.

        1. Health NOT_SERVING, while still answering for `grace_s` seconds, so
           load balancers move new calls elsewhere (`skip_grace` set: at once).
        2. gRPC and REST stop taking new calls (REST answers 503) and wait up
           to `timeout_s` for the ones they accepted; open streams keep being
           answered meanwhile. Calls still running after `timeout_s` are
           cancelled (the client sees CANCELLED or UNAVAILABLE, never a
           half-written answer).
        3. Only then the batchers close: closing them first would answer every
           image still arriving on an open stream with UNAVAILABLE.
        """
        await self.set_not_serving()
        if grace_s > 0:
            log.info("stopping: NOT_SERVING now, refusing new calls in %.1f s", grace_s)
            waiter = skip_grace or asyncio.Event()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(waiter.wait(), grace_s)
        log.info("refusing new calls; answering the ones in flight (at most %.0f s)", timeout_s)
        self.core.stop_watching()
        self._servicer.drain()
        stopping = [self._grpc.stop(timeout_s)]
        if self._rest is not None and self.rest_port is not None:
            stopping.append(self._rest.stop(timeout_s))
        await asyncio.gather(*stopping)
        await self.core.close()
        self.metrics.stop()
