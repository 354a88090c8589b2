"""A locust gRPC user for vggserve (locust has none built in).

    locust -f loadtest/locustfile.py --headless --host 127.0.0.1:8500 -u 16 -r 16 -t 30s

Each simulated user opens its own channel; an interceptor reports every call
to locust (name, response time, size, exception), so failures and latency
percentiles land in locust's statistics like HTTP requests do. Images come
from a generated corpus of JPEG and PNG files, 32x32 to 640x480, built once
when locust starts.

With --explain-share F, that share of the single-image calls are Explain
(Grad-CAM) instead of Classify: the mix that shows whether explanations slow
classification (the judge prints Classify's own p99 for comparing runs).

The run judges itself, locust's documented way: when locust quits, a listener
compares this run's statistics with --max-failure-ratio and --max-p95-ms
(options this file adds to locust's command line) and sets locust's exit code.
"""

from __future__ import annotations

# gRPC must be switched to gevent before any channel exists.
import grpc.experimental.gevent as grpc_gevent

grpc_gevent.init_gevent()

import argparse  # noqa: E402
import random  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from typing import Any  # noqa: E402

import grpc  # noqa: E402
from locust import User, constant, events, task  # noqa: E402
from locust.env import Environment  # noqa: E402

from loadtest import corpus  # noqa: E402
from protos.vggserve.v1 import classifier_pb2 as pb  # noqa: E402
from protos.vggserve.v1 import classifier_pb2_grpc as pb_grpc  # noqa: E402

CORPUS: list[bytes] = []
BATCH = 8


@events.init_command_line_parser.add_listener
def add_thresholds(parser: argparse.ArgumentParser, **_: Any) -> None:
    parser.add_argument(
        "--max-failure-ratio",
        type=float,
        default=0.01,
        help="exit 1 above this share of failed requests (default: 0.01)",
    )
    parser.add_argument(
        "--max-p95-ms",
        type=float,
        default=2000.0,
        help="exit 1 when the aggregated p95 latency is above this (default: 2000)",
    )
    parser.add_argument(
        "--explain-share",
        type=float,
        default=0.0,
        help="share of single-image calls sent as Explain instead of Classify (default: 0)",
    )


def problems(environment: Environment) -> list[str]:
    """What makes this run fail, from its own statistics."""
    total = environment.stats.total
    options = environment.parsed_options
    assert options is not None, "run through locust's command line"
    if total.num_requests == 0:
        return ["no request completed"]
    found = []
    if total.fail_ratio > options.max_failure_ratio:
        found.append(f"failure ratio {total.fail_ratio:.2%} > {options.max_failure_ratio:.2%}")
    p95 = total.get_response_time_percentile(0.95)
    if p95 > options.max_p95_ms:
        found.append(f"p95 {p95:.0f} ms > {options.max_p95_ms:.0f} ms")
    return found


@events.quitting.add_listener
def judge(environment: Environment, **_: Any) -> None:
    total = environment.stats.total
    p95 = total.get_response_time_percentile(0.95) if total.num_requests else float("nan")
    # From the statistics in memory: locust's CSV is rewritten once a second and
    # can miss the calls that finished while the run stopped.
    print(
        f"{total.num_requests} requests, {total.num_failures} failed ({total.fail_ratio:.2%}), "
        f"{total.total_rps:.1f} req/s, p50 {total.median_response_time:.0f} ms, "
        f"p95 {p95:.0f} ms",
        file=sys.stderr,
    )
    classify = environment.stats.get("Classify", "grpc")
    if classify.num_requests:
        print(
            f"Classify: {classify.num_requests} requests, "
            f"p50 {classify.get_response_time_percentile(0.5):.0f} ms, "
            f"p99 {classify.get_response_time_percentile(0.99):.0f} ms",
            file=sys.stderr,
        )
    found = problems(environment)
    for problem in found:
        print(f"FAIL: {problem}", file=sys.stderr)
    # Set either way: the thresholds decide, not locust's "any failure" default.
    environment.process_exit_code = 1 if found else 0


@events.init.add_listener
def build_corpus(environment: Environment, **_: Any) -> None:
    CORPUS[:] = corpus.mixed(count=48, seed=0)


class LocustInterceptor(grpc.UnaryUnaryClientInterceptor):
    """Fires locust's request event for every unary call."""

    def __init__(self, environment: Environment) -> None:
        self.environment = environment

    def intercept_unary_unary(self, continuation, client_call_details, request):  # type: ignore[no-untyped-def]
        started = time.perf_counter()
        exception: Exception | None = None
        length = 0
        call = continuation(client_call_details, request)
        try:
            length = call.result().ByteSize()
        except grpc.RpcError as exc:
            exception = exc
        self.environment.events.request.fire(
            request_type="grpc",
            name=client_call_details.method.rsplit("/", 1)[-1],
            response_time=(time.perf_counter() - started) * 1000.0,
            response_length=length,
            exception=exception,
            context=None,
        )
        return call


class GrpcUser(User):
    """A locust user holding one gRPC channel to `host` ("host:port")."""

    abstract = True

    def __init__(self, environment: Environment) -> None:
        super().__init__(environment)
        assert self.host, "pass --host HOST:PORT"
        self.channel = grpc.insecure_channel(
            self.host,
            options=[
                ("grpc.max_send_message_length", 16 * 1024 * 1024),
                ("grpc.max_receive_message_length", 16 * 1024 * 1024),
            ],
        )
        self.stub = pb_grpc.ImageClassifierStub(
            grpc.intercept_channel(self.channel, LocustInterceptor(environment))
        )

    def on_stop(self) -> None:
        self.channel.close()


class ClassifierUser(GrpcUser):
    """Mostly single images, sometimes a batch of eight, back to back."""

    wait_time = constant(0)

    @task(4)
    def classify(self) -> None:
        image = pb.Image(encoded=random.choice(CORPUS))
        options = self.environment.parsed_options
        if options is not None and random.random() < options.explain_share:
            self.stub.Explain(pb.ExplainRequest(image=image, top_k=5), timeout=30)
            return
        self.stub.Classify(pb.ClassifyRequest(image=image, top_k=5), timeout=30)

    @task(1)
    def classify_batch(self) -> None:
        images = [pb.Image(encoded=data) for data in random.sample(CORPUS, BATCH)]
        self.stub.ClassifyBatch(pb.ClassifyBatchRequest(images=images, top_k=5), timeout=30)
