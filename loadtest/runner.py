"""Closed-loop runs against a running server, one level at a time (shared by the benchmarks).

`closed_loop` starts `python -m loadtest.closed_loop` in a process of its
own (so the client's CPU is not the benchmark's) and returns its one JSON
result. `protocol_measure` binds it to one server for the protocol rounds of
loadtest.protocol_bench, which loadtest.bench and `python -m
loadtest.protocol_bench` both run.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from loadtest.serverproc import Child

# The concurrency levels at which protocols are compared (issue 11): a high
# one for throughput, and one caller for the latency of a single call.
PROTOCOL_LEVEL = 32
ONE_CALLER = 1
RUN_TIMEOUT_S = 300

# measure(protocol, concurrency) -> one closed-loop result (loadtest.closed_loop)
Measure = Callable[[str, int], dict[str, Any]]


def closed_loop(
    target: str,
    corpus_dir: Path,
    concurrency: int,
    mode: str = "classify",
    batch: int = 32,
    *,
    window: float,
    max_seconds: float,
    protocol: str = "native",
    child: Child | None = None,
    model: str = "",
) -> dict[str, Any]:
    """One closed-loop run; with `child` (the server), also its REST URL and CPU per image.

    Args:
        target: the server's gRPC host:port.
        corpus_dir: a folder of encoded images, sent in name order.
        concurrency: requests (or, in stream mode, images) in flight.
        mode: "classify", "batch", "stream" or "explain" (loadtest.closed_loop).
        batch: images per ClassifyBatch call (mode "batch").
        window: seconds per measuring window (half a window of warm-up first).
        max_seconds: cap on the measuring time.
        protocol: what one classify request is (loadtest.callers.PROTOCOLS).
        child: the server process; lets REST protocols reach it and adds the
            server's CPU time per image to the result.
        model: the model's name (every protocol but native names it).

    Returns:
        The client's JSON result (images/s, latency percentiles, errors, CPU).
    """
    extra = ["--protocol", protocol, "--model", model]
    if child is not None:
        extra += ["--server-pid", str(child.process.pid), "--rest-url", child.rest_url or ""]
    command = [
        sys.executable,
        "-m",
        "loadtest.closed_loop",
        *extra,
        "--target",
        target,
        "--corpus",
        str(corpus_dir),
        "--concurrency",
        str(concurrency),
        "--mode",
        mode,
        "--batch",
        str(batch),
        "--max-seconds",
        str(max_seconds),
        "--window",
        str(window),
        "--warmup",
        str(window / 2),
    ]
    out = subprocess.run(command, capture_output=True, text=True, check=True, timeout=RUN_TIMEOUT_S)
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def protocol_measure(
    child: Child, corpus_dir: Path, model: str, *, window: float, max_seconds: float
) -> Measure:
    """A `Measure` of single-image requests to `child`; every run has the same window and cap."""

    def measure(protocol: str, concurrency: int) -> dict[str, Any]:
        return closed_loop(
            child.target,
            corpus_dir,
            concurrency,
            window=window,
            max_seconds=max_seconds,
            protocol=protocol,
            child=child,
            model=model,
        )

    return measure
