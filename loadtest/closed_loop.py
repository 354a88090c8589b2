"""A closed-loop load generator: keeps C requests in flight, measures until stable.

    python -m loadtest.closed_loop --target 127.0.0.1:8500 --concurrency 16 --corpus dir/
    python -m loadtest.closed_loop --protocol v2-rest --rest-url http://127.0.0.1:8501 \
        --model vgg-mini --concurrency 16 --corpus dir/

`--protocol` picks what one single-image request is (loadtest.callers: the
native Classify, TF Serving's Predict over gRPC or REST, the Open Inference
Protocol's ModelInfer over gRPC or REST); the batch-job modes (`--mode batch`,
`--mode stream`) are native calls.

Runs in its own process on grpc.aio or aiohttp (one event loop, no threads) so that the
client costs little CPU, and reports that cost. Throughput is measured over
windows until three in a row agree within 10% (the stability rule of
Triton's perf_analyzer), or until --max-seconds; latency percentiles and
errors cover the stable windows. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import numpy as np

from loadtest import callers
from loadtest.callers import OPTIONS
from protos.vggserve.v1 import classifier_pb2 as pb
from protos.vggserve.v1 import classifier_pb2_grpc as pb_grpc

# What a failed request raises, in every protocol.
FAILURES = (grpc.aio.AioRpcError, aiohttp.ClientError, callers.CallFailed, TimeoutError)


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU time of process `pid` so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Window:
    def __init__(self, server_pid: int | None = None) -> None:
        self.latencies: list[float] = []
        self.images = 0
        self.errors = 0
        self.started = time.perf_counter()
        # CPU time of this process and of the server when the window opened.
        self.client_cpu = time.process_time()
        self.server_cpu = process_cpu_seconds(server_pid) if server_pid else 0.0


class Recorder:
    def __init__(self) -> None:
        self.windows: list[Window] = [Window()]

    def ok(self, seconds: float, images: int) -> None:
        self.windows[-1].latencies.append(seconds)
        self.windows[-1].images += images

    def error(self) -> None:
        self.windows[-1].errors += 1


async def single_worker(
    call: callers.Call, offset: int, recorder: Recorder, stop: asyncio.Event
) -> None:
    """One request in flight at a time, one image a request, in the chosen protocol."""
    i = offset
    while not stop.is_set():
        started = time.perf_counter()
        try:
            await call(i)
            recorder.ok(time.perf_counter() - started, 1)
        except FAILURES:
            recorder.error()
        i += 1


async def explain_worker(
    stub: pb_grpc.ImageClassifierStub,
    images: list[bytes],
    offset: int,
    recorder: Recorder,
    stop: asyncio.Event,
) -> None:
    """Native Explain calls, one image each."""
    i = offset
    while not stop.is_set():
        started = time.perf_counter()
        try:
            request = pb.ExplainRequest(image=pb.Image(encoded=images[i % len(images)]), top_k=5)
            await stub.Explain(request, timeout=60)
            recorder.ok(time.perf_counter() - started, 1)
        except grpc.aio.AioRpcError:
            recorder.error()
        i += 1


async def batch_worker(
    stub: pb_grpc.ImageClassifierStub,
    images: list[bytes],
    batch: int,
    offset: int,
    recorder: Recorder,
    stop: asyncio.Event,
) -> None:
    i = offset
    while not stop.is_set():
        started = time.perf_counter()
        try:
            chosen = [pb.Image(encoded=images[(i + k) % len(images)]) for k in range(batch)]
            await stub.ClassifyBatch(pb.ClassifyBatchRequest(images=chosen, top_k=5), timeout=60)
            recorder.ok(time.perf_counter() - started, batch)
        except grpc.aio.AioRpcError:
            recorder.error()
        i += batch


async def stream_worker(
    stub: pb_grpc.ImageClassifierStub,
    images: list[bytes],
    window: int,
    recorder: Recorder,
    stop: asyncio.Event,
) -> None:
    """One ClassifyStream keeping `window` images in flight."""
    sent: dict[str, float] = {}
    slots = asyncio.Semaphore(window)

    async def requests():  # type: ignore[no-untyped-def]
        i = 0
        while not stop.is_set():
            await slots.acquire()
            sent[str(i)] = time.perf_counter()
            yield pb.ClassifyRequest(
                image=pb.Image(encoded=images[i % len(images)]), top_k=5, request_id=str(i)
            )
            i += 1

    call = stub.ClassifyStream(requests())
    try:
        async for answer in call:
            started = sent.pop(answer.request_id)
            if answer.result.WhichOneof("outcome") == "response":
                recorder.ok(time.perf_counter() - started, 1)
            else:
                recorder.error()
            slots.release()
    except grpc.aio.AioRpcError:
        if not stop.is_set():
            recorder.error()


def stable(rates: list[float], tolerance: float) -> bool:
    if len(rates) < 3:
        return False
    last = rates[-3:]
    mean = sum(last) / 3
    return mean > 0 and (max(last) - min(last)) / mean <= tolerance


async def _workers(
    args: argparse.Namespace,
    images: list[bytes],
    recorder: Recorder,
    stop: asyncio.Event,
    stack: contextlib.AsyncExitStack,
) -> list[asyncio.Task[None]]:
    if args.mode == "classify":
        call = await stack.enter_async_context(
            callers.caller(
                args.protocol,
                images,
                target=args.target,
                rest_url=args.rest_url,
                model=args.model,
                connections=args.concurrency,
            )
        )
        return [
            asyncio.create_task(single_worker(call, k * 7, recorder, stop))
            for k in range(args.concurrency)
        ]
    channel = await stack.enter_async_context(
        grpc.aio.insecure_channel(args.target, options=OPTIONS)
    )
    stub = pb_grpc.ImageClassifierStub(channel)
    if args.mode == "stream":
        return [asyncio.create_task(stream_worker(stub, images, args.concurrency, recorder, stop))]
    if args.mode == "explain":
        return [
            asyncio.create_task(explain_worker(stub, images, k * 7, recorder, stop))
            for k in range(args.concurrency)
        ]
    return [
        asyncio.create_task(batch_worker(stub, images, args.batch, k * 7, recorder, stop))
        for k in range(args.concurrency)
    ]


async def run(args: argparse.Namespace) -> dict[str, Any]:
    images = [p.read_bytes() for p in sorted(Path(args.corpus).iterdir())]
    recorder = Recorder()
    stop = asyncio.Event()
    async with contextlib.AsyncExitStack() as stack:
        workers = await _workers(args, images, recorder, stop, stack)
        await asyncio.sleep(args.warmup)
        recorder.windows = [Window(args.server_pid)]
        rates: list[float] = []
        deadline = time.perf_counter() + args.max_seconds
        while True:
            await asyncio.sleep(args.window)
            done = recorder.windows[-1]
            rates.append(done.images / (time.perf_counter() - done.started))
            if stable(rates, args.tolerance) or time.perf_counter() >= deadline:
                break
            recorder.windows.append(Window(args.server_pid))
        stop.set()
        measured = recorder.windows[-3:]
        ended = Window(args.server_pid)  # the CPU clocks at the end of the measured span
        for worker in workers:
            worker.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
    latencies = np.asarray([s for w in measured for s in w.latencies]) * 1000.0
    seconds = ended.started - measured[0].started  # the windows' real span (sleeps overrun)
    images_total = sum(w.images for w in measured)
    client_cpu = ended.client_cpu - measured[0].client_cpu
    server_cpu = ended.server_cpu - measured[0].server_cpu
    requests_total = len(latencies)
    per_request = args.batch if args.mode == "batch" else 1
    return {
        "mode": args.mode,
        "protocol": args.protocol if args.mode == "classify" else "native",
        "concurrency": args.concurrency,
        "batch": per_request,
        "images_per_s": images_total / seconds if seconds else 0.0,
        "requests_per_s": requests_total / seconds if seconds else 0.0,
        "p50_ms": float(np.percentile(latencies, 50)) if requests_total else None,
        "p90_ms": float(np.percentile(latencies, 90)) if requests_total else None,
        "p99_ms": float(np.percentile(latencies, 99)) if requests_total else None,
        "errors": sum(w.errors for w in measured),
        "stable": stable(rates, args.tolerance),
        "windows": [round(r, 1) for r in rates],
        # CPU over the measured windows only (not start-up or warm-up).
        "client_cpu_share": client_cpu / seconds,
        "client_cpu_ms_per_image": 1000.0 * client_cpu / images_total if images_total else None,
        "server_cpu_ms_per_image": 1000.0 * server_cpu / images_total
        if args.server_pid and images_total
        else None,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m loadtest.closed_loop",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--target", default="", help="gRPC host:port (gRPC protocols, batch modes)")
    p.add_argument("--rest-url", default="", help="http://host:port (REST protocols)")
    p.add_argument(
        "--protocol",
        choices=callers.PROTOCOLS,
        default="native",
        help="what one --mode classify request is (default: native Classify)",
    )
    p.add_argument(
        "--server-pid", type=int, default=None, help="also report this process's CPU per image"
    )
    p.add_argument("--model", default="", help="model name (every protocol but native needs it)")
    p.add_argument("--corpus", required=True, help="folder of encoded images")
    p.add_argument("--concurrency", type=int, default=1, help="requests (or images) in flight")
    p.add_argument("--mode", choices=["classify", "batch", "stream", "explain"], default="classify")
    p.add_argument("--batch", type=int, default=32, help="images per ClassifyBatch call")
    p.add_argument("--window", type=float, default=2.0, help="seconds per measurement window")
    p.add_argument("--warmup", type=float, default=1.0, help="seconds before measuring")
    p.add_argument("--tolerance", type=float, default=0.10, help="stability: spread of 3 windows")
    p.add_argument("--max-seconds", type=float, default=20.0, help="cap on measuring time")
    args = p.parse_args(argv)
    rest = args.mode == "classify" and args.protocol in callers.REST_PROTOCOLS
    if rest and not args.rest_url:
        p.error(f"--protocol {args.protocol} needs --rest-url")
    if not rest and not args.target:
        p.error("--target is required (gRPC host:port)")
    if args.mode == "classify" and args.protocol != "native" and not args.model:
        p.error(f"--protocol {args.protocol} needs --model (the model's name)")
    result = asyncio.run(run(args))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # tfserving-grpc imports TensorFlow's protos
    sys.exit(main())
