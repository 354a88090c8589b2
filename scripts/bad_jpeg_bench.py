"""What callers sending truncated JPEGs cost everyone else's throughput.

    .venv/bin/python scripts/bad_jpeg_bench.py                 # 6 rounds with, 7 without, 5 s
    .venv/bin/python scripts/bad_jpeg_bench.py --rounds 6 --seconds 10 --bad 2

Starts one server (loadtest.serverproc.local_server) on --model-dir, then
keeps --good native Classify callers running (one request in flight each,
128x128 JPEGs of the benchmark corpus) and, in alternating rounds, adds
--bad callers that send truncated JPEGs (a valid JPEG cut in half: its
header is intact, so it passes the header size check). Each "with" round is
compared with the mean of the "alone" rounds on either side of it, so a
machine whose speed drifts (other work on it) still gives a fair ratio.

Prints one JSON object: per round the good callers' images/s and errors,
the bad callers' requests/s and error rate, the model calls per good image
(vggserve_model_calls_total over the round / good images answered) and the
server's CPU time per good image (bad requests' cost included: on a shared
machine it varies less than throughput does);
then the ratio (good rate with bad callers / without) per round, its median
and spread. A fair share for 2 bad callers among 34 is 32/34 = 0.94.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import statistics
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import grpc

from loadtest import corpus
from loadtest.callers import OPTIONS, TIMEOUT_S
from loadtest.closed_loop import process_cpu_seconds
from loadtest.serverproc import local_server
from protos.vggserve.v1 import classifier_pb2 as pb
from protos.vggserve.v1 import classifier_pb2_grpc as pb_grpc

MODEL_DIR = "/work/benchmodels/vgg-mini"


def truncated(data: bytes) -> bytes:
    """The first half of a JPEG: header intact, entropy-coded data and end marker cut."""
    return data[: len(data) // 2]


@dataclass
class Tally:
    """What the callers saw during one round."""

    good: int = 0
    good_errors: int = 0
    bad: int = 0
    bad_refused: int = 0  # INVALID_ARGUMENT, as a truncated image should get
    bad_other: dict[str, int] = field(default_factory=dict)


def model_calls(rest_url: str) -> float:
    with urllib.request.urlopen(f"{rest_url}/metrics", timeout=10) as response:
        text = response.read().decode()
    match = re.search(r"^vggserve_model_calls_total ([\d.e+]+)$", text, re.M)
    if match is None:
        raise RuntimeError("the server does not export vggserve_model_calls_total")
    return float(match.group(1))


async def good_caller(
    stub: pb_grpc.ImageClassifierStub, requests: list[Any], offset: int, tally: list[Tally]
) -> None:
    i = offset
    while True:
        try:
            await stub.Classify(requests[i % len(requests)], timeout=TIMEOUT_S)
            tally[0].good += 1
        except grpc.aio.AioRpcError:
            tally[0].good_errors += 1
        i += 1


async def bad_caller(
    stub: pb_grpc.ImageClassifierStub, requests: list[Any], offset: int, tally: list[Tally]
) -> None:
    i = offset
    while True:
        try:
            await stub.Classify(requests[i % len(requests)], timeout=TIMEOUT_S)
            tally[0].bad += 1  # answered: the truncated image was not refused
        except grpc.aio.AioRpcError as exc:
            tally[0].bad += 1
            if exc.code() == grpc.StatusCode.INVALID_ARGUMENT:
                tally[0].bad_refused += 1
            else:
                name = exc.code().name
                tally[0].bad_other[name] = tally[0].bad_other.get(name, 0) + 1
        i += 1


async def measure(
    args: argparse.Namespace, target: str, rest_url: str, server_pid: int
) -> dict[str, Any]:
    images = corpus.fixed(64, args.size)
    good_requests = [pb.ClassifyRequest(image=pb.Image(encoded=d), top_k=5) for d in images]
    bad_requests = [
        pb.ClassifyRequest(image=pb.Image(encoded=truncated(d)), top_k=5) for d in images
    ]
    tally = [Tally()]  # one cell: the callers always add to the current round's
    rounds: list[dict[str, Any]] = []
    async with grpc.aio.insecure_channel(target, options=OPTIONS) as channel:
        stub = pb_grpc.ImageClassifierStub(channel)
        good = [
            asyncio.create_task(good_caller(stub, good_requests, k * 7, tally))
            for k in range(args.good)
        ]
        await asyncio.sleep(args.warmup)
        # alone, with, alone, with, ..., alone: every "with" round has a
        # neighbour on each side to compare with.
        for index in range(2 * args.rounds + 1):
            with_bad = index % 2 == 1
            bad = (
                [
                    asyncio.create_task(bad_caller(stub, bad_requests, k * 11, tally))
                    for k in range(args.bad)
                ]
                if with_bad
                else []
            )
            await asyncio.sleep(args.settle)
            tally[0] = Tally()
            calls = model_calls(rest_url)
            cpu = process_cpu_seconds(server_pid)
            started = time.perf_counter()
            await asyncio.sleep(args.seconds)
            seconds = time.perf_counter() - started
            done, tally[0] = tally[0], Tally()
            calls = model_calls(rest_url) - calls
            cpu = process_cpu_seconds(server_pid) - cpu
            for task in bad:
                task.cancel()
            await asyncio.gather(*bad, return_exceptions=True)
            rounds.append(
                {
                    "bad_callers": args.bad if with_bad else 0,
                    "good_images_per_s": round(done.good / seconds, 1),
                    "good_errors": done.good_errors,
                    "model_calls_per_good_image": round(calls / done.good, 4)
                    if done.good
                    else None,
                    # The server's CPU time (bad requests' included) per good image.
                    "server_cpu_ms_per_good_image": round(1000 * cpu / done.good, 3)
                    if done.good
                    else None,
                    "bad_requests_per_s": round(done.bad / seconds, 1),
                    "bad_error_rate": round(done.bad_refused / done.bad, 4) if done.bad else None,
                    "bad_other_errors": done.bad_other,
                }
            )
            print(json.dumps(rounds[-1]), file=sys.stderr, flush=True)
        for task in good:
            task.cancel()
        await asyncio.gather(*good, return_exceptions=True)
    ratios = []
    for index in range(1, len(rounds), 2):
        alone = (
            rounds[index - 1]["good_images_per_s"] + rounds[index + 1]["good_images_per_s"]
        ) / 2
        ratios.append(round(rounds[index]["good_images_per_s"] / alone, 3))
    with_rounds = rounds[1::2]
    alone_rounds = rounds[0::2]
    return {
        "model_dir": args.model_dir,
        "good_callers": args.good,
        "bad_callers": args.bad,
        "seconds_per_round": args.seconds,
        "ratios": ratios,
        "ratio_median": statistics.median(ratios),
        "ratio_min": min(ratios),
        "ratio_max": max(ratios),
        "fair_share": round(args.good / (args.good + args.bad), 3),
        "model_calls_per_good_image_alone": _median(alone_rounds, "model_calls_per_good_image"),
        "model_calls_per_good_image_with_bad": _median(with_rounds, "model_calls_per_good_image"),
        "server_cpu_ms_per_good_image_alone": _median(alone_rounds, "server_cpu_ms_per_good_image"),
        "server_cpu_ms_per_good_image_with_bad": _median(
            with_rounds, "server_cpu_ms_per_good_image"
        ),
        "bad_error_rate": _median(with_rounds, "bad_error_rate"),
        "bad_requests_per_s": _median(with_rounds, "bad_requests_per_s"),
        "good_errors": sum(r["good_errors"] for r in rounds),
        "rounds": rounds,
    }


def _median(rounds: list[dict[str, Any]], key: str) -> float | None:
    values = [r[key] for r in rounds if r[key] is not None]
    return statistics.median(values) if values else None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="scripts/bad_jpeg_bench.py",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--model-dir", default=MODEL_DIR, help="the served model's folder")
    p.add_argument("--good", type=int, default=32, help="callers sending valid JPEGs")
    p.add_argument("--bad", type=int, default=2, help="callers sending truncated JPEGs")
    p.add_argument("--rounds", type=int, default=6, help="rounds with bad callers")
    p.add_argument("--seconds", type=float, default=5.0, help="measured seconds per round")
    p.add_argument("--settle", type=float, default=1.0, help="unmeasured seconds per round")
    p.add_argument("--warmup", type=float, default=3.0, help="seconds before the first round")
    p.add_argument("--size", type=int, default=128, help="side of the corpus's JPEGs")
    p.add_argument("--server-log", type=Path, default=None, help="write the server's stderr here")
    p.add_argument(
        "--server-arg", action="append", default=[], help="extra server flag (repeatable)"
    )
    args = p.parse_args(argv)
    if args.rounds < 1 or args.good < 1 or args.bad < 1:
        p.error("--rounds, --good and --bad must be at least 1")
    with local_server(args.model_dir, args.server_arg, log_path=args.server_log) as child:
        assert child.rest_url is not None
        result = asyncio.run(measure(args, child.target, child.rest_url, child.process.pid))
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
    sys.exit(main())
