"""A closed-loop gRPC load generator: keeps C requests in flight, measures until stable.

    python -m loadtest.closed_loop --target 127.0.0.1:8500 --concurrency 16 --corpus dir/

Runs in its own process on grpc.aio (one event loop, no threads) so that the
client costs little CPU, and reports that cost. Throughput is measured over
windows until three in a row agree within 10% (the stability rule of
Triton's perf_analyzer), or until --max-seconds; latency percentiles and
errors cover the stable windows. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import grpc
import numpy as np

from protos.vggserve.v1 import classifier_pb2 as pb
from protos.vggserve.v1 import classifier_pb2_grpc as pb_grpc

OPTIONS = [
    ("grpc.max_send_message_length", 64 << 20),
    ("grpc.max_receive_message_length", 64 << 20),
]


class Window:
    def __init__(self) -> None:
        self.latencies: list[float] = []
        self.images = 0
        self.errors = 0
        self.started = time.perf_counter()


class Recorder:
    def __init__(self) -> None:
        self.windows: list[Window] = [Window()]

    def ok(self, seconds: float, images: int) -> None:
        self.windows[-1].latencies.append(seconds)
        self.windows[-1].images += images

    def error(self) -> None:
        self.windows[-1].errors += 1


async def unary_worker(
    stub: pb_grpc.ImageClassifierStub,
    images: list[bytes],
    batch: int,
    offset: int,
    recorder: Recorder,
    stop: asyncio.Event,
    explain: bool = False,
) -> None:
    i = offset
    while not stop.is_set():
        started = time.perf_counter()
        try:
            if explain:
                await stub.Explain(
                    pb.ExplainRequest(image=pb.Image(encoded=images[i % len(images)]), top_k=5),
                    timeout=60,
                )
            elif batch == 1:
                await stub.Classify(
                    pb.ClassifyRequest(image=pb.Image(encoded=images[i % len(images)]), top_k=5),
                    timeout=60,
                )
            else:
                chosen = [pb.Image(encoded=images[(i + k) % len(images)]) for k in range(batch)]
                await stub.ClassifyBatch(
                    pb.ClassifyBatchRequest(images=chosen, top_k=5), timeout=60
                )
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


async def run(args: argparse.Namespace) -> dict[str, Any]:
    images = [p.read_bytes() for p in sorted(Path(args.corpus).iterdir())]
    recorder = Recorder()
    stop = asyncio.Event()
    cpu_start, wall_start = time.process_time(), time.perf_counter()
    async with grpc.aio.insecure_channel(args.target, options=OPTIONS) as channel:
        stub = pb_grpc.ImageClassifierStub(channel)
        if args.mode == "stream":
            workers = [
                asyncio.create_task(stream_worker(stub, images, args.concurrency, recorder, stop))
            ]
        else:
            batch = args.batch if args.mode == "batch" else 1
            workers = [
                asyncio.create_task(
                    unary_worker(stub, images, batch, k * 7, recorder, stop, args.mode == "explain")
                )
                for k in range(args.concurrency)
            ]
        await asyncio.sleep(args.warmup)
        recorder.windows = [Window()]
        rates: list[float] = []
        deadline = time.perf_counter() + args.max_seconds
        while True:
            await asyncio.sleep(args.window)
            done = recorder.windows[-1]
            rates.append(done.images / (time.perf_counter() - done.started))
            if stable(rates, args.tolerance) or time.perf_counter() >= deadline:
                break
            recorder.windows.append(Window())
        stop.set()
        measured = recorder.windows[-3:]
        for worker in workers:
            worker.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
    latencies = np.asarray([s for w in measured for s in w.latencies]) * 1000.0
    seconds = sum(args.window for _ in measured)
    images_total = sum(w.images for w in measured)
    requests_total = len(latencies)
    per_request = args.batch if args.mode == "batch" else 1
    return {
        "mode": args.mode,
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
        "client_cpu_share": (time.process_time() - cpu_start) / (time.perf_counter() - wall_start),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m loadtest.closed_loop",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--target", required=True)
    p.add_argument("--corpus", required=True, help="folder of encoded images")
    p.add_argument("--concurrency", type=int, default=1, help="requests (or images) in flight")
    p.add_argument("--mode", choices=["classify", "batch", "stream", "explain"], default="classify")
    p.add_argument("--batch", type=int, default=32, help="images per ClassifyBatch call")
    p.add_argument("--window", type=float, default=2.0, help="seconds per measurement window")
    p.add_argument("--warmup", type=float, default=1.0, help="seconds before measuring")
    p.add_argument("--tolerance", type=float, default=0.10, help="stability: spread of 3 windows")
    p.add_argument("--max-seconds", type=float, default=20.0, help="cap on measuring time")
    args = p.parse_args(argv)
    result = asyncio.run(run(args))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
    sys.exit(main())
