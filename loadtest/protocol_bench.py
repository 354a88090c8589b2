"""Every protocol against native Classify, on one server, in one run (loadtest.bench).

Each round measures, at each concurrency level, native Classify and then
every other protocol (loadtest.callers: one image per request), so that a
protocol is compared with a native run made minutes apart at most on the
same server. A protocol's figure is the median over rounds of its ratio to
its own round's native run: on a shared machine the load of other jobs
moves both runs of a round together more than it moves runs far apart.

The bar (issue 11): throughput at the high level >= 0.90 of native, and p50
latency at concurrency 1 within 1 ms of native.

Per-call overhead: each round also times the same SavedModel called
directly in this process on the same images, one image a call (the median
call), just before the runs at one caller; a protocol's overhead is its p50
at concurrency 1 minus that time, median over rounds. It is what serving
adds to one call (client, transport, server, batcher hand-offs); the
project's goal is under 1 ms. Native gets it too: it compares two different
measurements, not native with itself.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from typing import Any

from loadtest.callers import PROTOCOLS
from loadtest.runner import ONE_CALLER, PROTOCOL_LEVEL, Measure

DEFAULT = ("tfserving-grpc", "v2-grpc", "tfserving-rest", "v2-rest")
MIN_THROUGHPUT_RATIO = 0.90
MAX_P50_DELTA_MS = 1.0
OVERHEAD_GOAL_MS = 1.0  # the project's goal for the per-call overhead (not part of the bar)


def parse(text: str) -> list[str]:
    """The --protocols value: a comma list of non-native protocols, or "none"."""
    if text.strip() == "none":
        return []
    chosen = [p.strip() for p in text.split(",") if p.strip()]
    unknown = [p for p in chosen if p not in PROTOCOLS]
    if unknown:
        raise ValueError(
            f"unknown protocol(s) {', '.join(unknown)}; choose from {', '.join(PROTOCOLS)}"
        )
    return [p for p in dict.fromkeys(chosen) if p != "native"]  # native is always the reference


def compare(
    measure: Measure,
    protocols: Sequence[str],
    high: int = PROTOCOL_LEVEL,
    rounds: int = 2,
    *,
    batch1_ms: Callable[[], float],
    progress: Callable[[str], None] = lambda line: print(line, flush=True),
) -> dict[str, Any]:
    """Runs the rounds; returns the raw runs and a summary row per protocol.

    Args:
        measure: one closed-loop run of a protocol at a concurrency.
        protocols: the protocols compared with native (native itself is added).
        high: the concurrency of the throughput runs.
        rounds: how many times every run is made.
        batch1_ms: the in-process time of one single-image call, in ms (called
            once a round, before the runs at one caller).
        progress: where a line per run goes.

    Returns:
        `runs` (every run, with its round), `in_process_batch1_ms` (one per
        round) and `summary`: one row per protocol, native first. Every row
        has the absolute figures and `overhead_ms`; the rows of the other
        protocols also have their ratios to native and `meets_bar`.
    """
    everyone = ["native", *protocols]
    runs: list[dict[str, Any]] = []
    batch1: list[float] = []
    for number in range(rounds):
        for level in (high, ONE_CALLER):
            if level == ONE_CALLER:
                progress(f"protocols, round {number + 1}/{rounds}: in-process, one image a call")
                batch1.append(batch1_ms())
            for protocol in everyone:
                progress(
                    f"protocols, round {number + 1}/{rounds}: {protocol} at concurrency {level}"
                )
                runs.append({"round": number, **measure(protocol, level)})
    return {
        "high_concurrency": high,
        "rounds": rounds,
        "runs": runs,
        "in_process_batch1_ms": batch1,
        "summary": [_summary(runs, batch1, protocol, high) for protocol in everyone],
    }


def _summary(
    runs: list[dict[str, Any]], batch1: list[float], protocol: str, high: int
) -> dict[str, Any]:
    def run(name: str, level: int, number: int) -> dict[str, Any]:
        return next(
            r
            for r in runs
            if r["protocol"] == name and r["concurrency"] == level and r["round"] == number
        )

    rounds = range(len(batch1))
    at_high = [run(protocol, high, n) for n in rounds]
    at_one = [run(protocol, ONE_CALLER, n) for n in rounds]
    overheads = [mine["p50_ms"] - batch1[n] for n, mine in zip(rounds, at_one, strict=True)]
    row: dict[str, Any] = {
        "protocol": protocol,
        "images_per_s": statistics.median(r["images_per_s"] for r in at_high),
        "p50_c1_ms": statistics.median(r["p50_ms"] for r in at_one),
        "overhead_ms": statistics.median(overheads),
        "overhead_each_round_ms": overheads,
        "server_cpu_ms_per_image": _median(at_high, "server_cpu_ms_per_image"),
        "client_cpu_ms_per_image": _median(at_high, "client_cpu_ms_per_image"),
        "errors": sum(r["errors"] for r in at_high + at_one),
    }
    if protocol == "native":
        return row  # the reference: no ratio to itself
    ratios = [
        mine["images_per_s"] / run("native", high, n)["images_per_s"]
        for n, mine in zip(rounds, at_high, strict=True)
    ]
    deltas = [
        mine["p50_ms"] - run("native", ONE_CALLER, n)["p50_ms"]
        for n, mine in zip(rounds, at_one, strict=True)
    ]
    ratio, delta = statistics.median(ratios), statistics.median(deltas)
    return {
        **row,
        "throughput_vs_native": ratio,
        "throughput_vs_native_each_round": ratios,
        "p50_c1_minus_native_ms": delta,
        "p50_c1_minus_native_each_round_ms": deltas,
        "meets_bar": ratio >= MIN_THROUGHPUT_RATIO and delta <= MAX_P50_DELTA_MS,
    }


def _median(rows: list[dict[str, Any]], key: str) -> float | None:
    values = [r[key] for r in rows if r.get(key) is not None]
    return statistics.median(values) if values else None


def table(result: dict[str, Any]) -> str:
    high = result["high_concurrency"]
    lines = [
        f"protocols (one image a request, same server; median of {result['rounds']} round(s), "
        "each against its round's native run and in-process time):",
        f"  protocol        c={high} img/s  vs native  c=1 p50 ms  vs native  overhead ms  "
        "server ms/img  client ms/img  errors  bar",
    ]
    for row in result["summary"]:
        if row["protocol"] == "native":
            ratio, delta, bar = "-", "-", "-"
        else:
            ratio = f"{row['throughput_vs_native']:.2f}"
            delta = f"{row['p50_c1_minus_native_ms']:+.2f}"
            bar = "ok" if row["meets_bar"] else "MISSED"
        server, client = row["server_cpu_ms_per_image"], row["client_cpu_ms_per_image"]
        lines.append(
            f"  {row['protocol']:<15} {row['images_per_s']:10.1f} {ratio:>10}"
            f" {row['p50_c1_ms']:11.2f} {delta:>10} {row['overhead_ms']:+12.2f}"
            f" {_fmt(server):>14} {_fmt(client):>14} {row['errors']:7d}  {bar}"
        )
    batch1 = result["in_process_batch1_ms"]
    lines += [
        f"  bar: c={high} throughput >= {MIN_THROUGHPUT_RATIO:.2f} x native, "
        f"c=1 p50 <= native + {MAX_P50_DELTA_MS:g} ms; cpu figures at c={high}",
        f"  overhead: c=1 p50 - in-process call on one image "
        f"({', '.join(f'{ms:.2f}' for ms in batch1)} ms, by round); "
        f"goal < {OVERHEAD_GOAL_MS:g} ms",
    ]
    return "\n".join(lines)


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def main(argv: list[str] | None = None) -> int:
    """`python -m loadtest.protocol_bench`: the protocol rounds alone, on a server of their own."""
    import argparse
    import json
    import sys
    import tempfile
    from pathlib import Path

    from loadtest import corpus, inprocess, runner
    from loadtest.serverproc import local_server

    p = argparse.ArgumentParser(prog="python -m loadtest.protocol_bench", description=__doc__)
    p.add_argument("--model-dir", default="models/vgg-mini")
    p.add_argument("--image-size", type=int, default=128, help="square JPEG side (default: 128)")
    p.add_argument("--protocols", default=",".join(DEFAULT), help="as loadtest.bench's")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--window", type=float, default=2.0, help="seconds per measuring window")
    p.add_argument("--max-seconds", type=float, default=10.0, help="cap per run")
    p.add_argument("--results", default="results/bench")
    args = p.parse_args(argv)
    try:
        protocols = parse(args.protocols)
    except ValueError as exc:
        p.error(f"--protocols: {exc}")
    model_dir = Path(args.model_dir)
    try:
        # The server serves the newest version too (its default --versions latest).
        signature = inprocess.load(model_dir)
    except FileNotFoundError as exc:
        p.error(f"--model-dir: {exc}")
    results = Path(args.results)
    results.mkdir(parents=True, exist_ok=True)
    images = corpus.fixed(64, args.image_size, "JPEG")
    with tempfile.TemporaryDirectory() as tmp:
        corpus_dir = Path(tmp)
        for i, data in enumerate(images):
            (corpus_dir / f"{i:03d}.jpg").write_bytes(data)
        server_args = ["--max-batch-size", "32", "--batch-timeout-ms", "2"]
        with local_server(model_dir, server_args, log_path=results / "server.log") as child:
            measure = runner.protocol_measure(
                child, corpus_dir, model_dir.name, window=args.window, max_seconds=args.max_seconds
            )
            result = compare(
                measure,
                protocols,
                runner.PROTOCOL_LEVEL,
                args.rounds,
                batch1_ms=lambda: inprocess.batch1_ms(signature, images),
            )
    result["command"] = "python -m loadtest.protocol_bench " + " ".join(argv or sys.argv[1:])
    (results / "protocols.json").write_text(json.dumps(result, indent=2) + "\n")
    print()
    print(table(result))
    print(f"\nwrote {results / 'protocols.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
