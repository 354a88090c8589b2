"""Prometheus metrics for the server, in a registry of its own.

One registry per server (not the global default), so several servers in one
process (tests, benchmarks) do not mix their numbers.
"""

from __future__ import annotations

import collections
import logging
import time
from typing import Any
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info, start_http_server

from service.core.batcher import BatchStats

log = logging.getLogger(__name__)

# From 0.5 ms to 10 s: covers a cached tiny model and a VGG16 batch on a CPU.
LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10)
RATE_WINDOW_S = 10.0
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "vggserve_requests_total",
            "RPCs answered, by protocol, method and gRPC status code",
            ["protocol", "method", "code"],
            registry=r,
        )
        self.images = Counter(
            "vggserve_images_total",
            "Images answered, by protocol, outcome (ok or error) and gRPC status code",
            ["protocol", "outcome", "code"],
            registry=r,
        )
        self.request_latency = Histogram(
            "vggserve_request_duration_seconds",
            "Time from receiving an RPC to answering it, by protocol and method",
            ["protocol", "method"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.queue_latency = Histogram(
            "vggserve_queue_duration_seconds",
            "Time an image waited before its batch ran",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.batch_latency = Histogram(
            "vggserve_batch_duration_seconds",
            "Model time of one batch (decode included)",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.model_calls = Counter(
            "vggserve_model_calls_total",
            "Calls of the model's signatures that serve requests (a batch with a bad "
            "image takes one more)",
            registry=r,
        )
        self.batch_size = Histogram(
            "vggserve_batch_size", "Images per model call", buckets=BATCH_BUCKETS, registry=r
        )
        self.rpcs_in_flight = Gauge(
            "vggserve_rpcs_in_flight",
            "RPCs being handled (open streams included, health checks not), "
            "against --max-concurrent-rpcs",
            registry=r,
        )
        self.queue_depth = Gauge("vggserve_queue_depth", "Images waiting for the model", registry=r)
        self.model = Info("vggserve_model", "The served model", registry=r)
        self.loaded_versions = Gauge(
            "vggserve_model_version_loaded", "1 for each loaded version", ["version"], registry=r
        )
        self.loads = Counter(
            "vggserve_model_loads_total",
            "Model version loads (start-up and reloads), by result",
            ["result"],
            registry=r,
        )
        self.unloads = Counter(
            "vggserve_model_unloads_total", "Model versions unloaded", registry=r
        )
        self.images_per_second = Gauge(
            "vggserve_images_per_second",
            f"Images computed per second over the last {RATE_WINDOW_S:.0f} s",
            registry=r,
        )
        self._answered: collections.deque[tuple[float, int]] = collections.deque()
        self.images_per_second.set_function(self._rate)
        self._http: WSGIServer | None = None
        # labels() costs microseconds a call; the children are looked up once.
        self._rpc_children: dict[tuple[str, str, str], tuple[Any, Any]] = {}
        self._image_children: dict[tuple[str, str], Any] = {}

    def record_rpc(self, protocol: str, method: str, code: str, seconds: float) -> None:
        """One call answered; `protocol` is one of service.core.protocols."""
        key = (protocol, method, code)
        children = self._rpc_children.get(key)
        if children is None:
            children = (
                self.requests.labels(protocol, method, code),
                self.request_latency.labels(protocol, method),
            )
            self._rpc_children[key] = children
        children[0].inc()
        children[1].observe(seconds)

    def record_image(self, protocol: str, code: str) -> None:
        """One image answered: code "OK", or the gRPC status code name of its error."""
        child = self._image_children.get((protocol, code))
        if child is None:
            outcome = "ok" if code == "OK" else "error"
            child = self._image_children[(protocol, code)] = self.images.labels(
                protocol, outcome, code
            )
        child.inc()

    def _rate(self) -> float:
        # Runs on the HTTP thread: list() copies the deque atomically (GIL).
        cutoff = time.monotonic() - RATE_WINDOW_S
        return sum(n for at, n in list(self._answered) if at >= cutoff) / RATE_WINDOW_S

    def observe_batch(self, stats: BatchStats) -> None:
        now = time.monotonic()
        self._answered.append((now, stats.size))
        while self._answered[0][0] < now - RATE_WINDOW_S:
            self._answered.popleft()
        self.batch_size.observe(stats.size)
        self.batch_latency.observe(stats.compute_seconds)
        for seconds in stats.queue_seconds:
            self.queue_latency.observe(seconds)

    def serve(self, host: str, port: int) -> int:
        """Starts the /metrics HTTP endpoint in a thread; returns its port."""
        self._http, _ = start_http_server(port, addr=host, registry=self.registry)
        return int(self._http.server_port)

    def stop(self) -> None:
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
            self._http = None
