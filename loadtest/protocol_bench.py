"""Every protocol against native Classify, on one server, in one run (loadtest.bench).

Each round measures, at each concurrency level, native Classify and then
every other protocol (loadtest.callers: one image per request), so that a
protocol is compared with a native run made minutes apart at most on the
same server. A protocol's figure is the median over rounds of its ratio to
its own round's native run: on a shared machine the load of other jobs
moves both runs of a round together more than it moves runs far apart.

The bar (issue 11): throughput at the high level >= 0.90 of native, and p50
latency at concurrency 1 within 1 ms of native.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from typing import Any

from loadtest.callers import PROTOCOLS

DEFAULT = ("tfserving-grpc", "v2-grpc", "tfserving-rest", "v2-rest")
MIN_THROUGHPUT_RATIO = 0.90
MAX_P50_DELTA_MS = 1.0

# measure(protocol, concurrency) -> one closed-loop result (loadtest.closed_loop)
Measure = Callable[[str, int], dict[str, Any]]


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
    high: int = 32,
    rounds: int = 2,
    progress: Callable[[str], None] = lambda line: print(line, flush=True),
) -> dict[str, Any]:
    """Runs the rounds; returns the raw runs and a summary row per protocol."""
    everyone = ["native", *protocols]
    runs: list[dict[str, Any]] = []
    for number in range(rounds):
        for level in (high, 1):
            for protocol in everyone:
                progress(
                    f"protocols, round {number + 1}/{rounds}: {protocol} at concurrency {level}"
                )
                runs.append({"round": number, **measure(protocol, level)})
    return {
        "high_concurrency": high,
        "rounds": rounds,
        "runs": runs,
        "summary": [_summary(runs, protocol, high, rounds) for protocol in everyone],
    }


def _summary(runs: list[dict[str, Any]], protocol: str, high: int, rounds: int) -> dict[str, Any]:
    def run(name: str, level: int, number: int) -> dict[str, Any]:
        return next(
            r
            for r in runs
            if r["protocol"] == name and r["concurrency"] == level and r["round"] == number
        )

    ratios, deltas = [], []
    for number in range(rounds):
        mine, native = run(protocol, high, number), run("native", high, number)
        ratios.append(mine["images_per_s"] / native["images_per_s"])
        mine, native = run(protocol, 1, number), run("native", 1, number)
        deltas.append(mine["p50_ms"] - native["p50_ms"])
    at_high = [run(protocol, high, n) for n in range(rounds)]
    at_one = [run(protocol, 1, n) for n in range(rounds)]
    ratio, delta = statistics.median(ratios), statistics.median(deltas)
    return {
        "protocol": protocol,
        "images_per_s": statistics.median(r["images_per_s"] for r in at_high),
        "throughput_vs_native": ratio,
        "throughput_vs_native_each_round": ratios,
        "p50_c1_ms": statistics.median(r["p50_ms"] for r in at_one),
        "p50_c1_minus_native_ms": delta,
        "p50_c1_minus_native_each_round_ms": deltas,
        "server_cpu_ms_per_image": _median(at_high, "server_cpu_ms_per_image"),
        "client_cpu_ms_per_image": _median(at_high, "client_cpu_ms_per_image"),
        "errors": sum(r["errors"] for r in at_high + at_one),
        "meets_bar": ratio >= MIN_THROUGHPUT_RATIO and delta <= MAX_P50_DELTA_MS,
    }


def _median(rows: list[dict[str, Any]], key: str) -> float | None:
    values = [r[key] for r in rows if r.get(key) is not None]
    return statistics.median(values) if values else None


def table(result: dict[str, Any]) -> str:
    high = result["high_concurrency"]
    lines = [
        f"protocols (one image a request, same server; median of {result['rounds']} round(s), "
        "each against its round's native run):",
        f"  protocol        c={high} img/s  vs native  c=1 p50 ms  vs native  "
        f"server ms/img  client ms/img  errors  bar",
    ]
    for row in result["summary"]:
        bar = "-" if row["protocol"] == "native" else ("ok" if row["meets_bar"] else "MISSED")
        server, client = row["server_cpu_ms_per_image"], row["client_cpu_ms_per_image"]
        lines.append(
            f"  {row['protocol']:<15} {row['images_per_s']:10.1f}"
            f" {row['throughput_vs_native']:10.2f} {row['p50_c1_ms']:11.2f}"
            f" {row['p50_c1_minus_native_ms']:+10.2f} {_fmt(server):>14} {_fmt(client):>14}"
            f" {row['errors']:7d}  {bar}"
        )
    lines.append(
        f"  bar: c={high} throughput >= {MIN_THROUGHPUT_RATIO:.2f} x native, "
        f"c=1 p50 <= native + {MAX_P50_DELTA_MS:g} ms; cpu figures at c={high}"
    )
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

    from loadtest import bench, corpus
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
    results = Path(args.results)
    results.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        corpus_dir = Path(tmp)
        for i, data in enumerate(corpus.fixed(64, args.image_size, "JPEG")):
            (corpus_dir / f"{i:03d}.jpg").write_bytes(data)
        server_args = ["--max-batch-size", "32", "--batch-timeout-ms", "2"]
        with local_server(model_dir, server_args, log_path=results / "server.log") as child:

            def measure(protocol: str, concurrency: int) -> dict[str, Any]:
                return bench.closed_loop(
                    child.target,
                    corpus_dir,
                    concurrency,
                    window=args.window,
                    max_seconds=args.max_seconds,
                    protocol=protocol,
                    child=child,
                    model=model_dir.name,
                )

            result = compare(measure, protocols, bench.PROTOCOL_LEVEL, args.rounds)
    result["command"] = "python -m loadtest.protocol_bench " + " ".join(argv or sys.argv[1:])
    (results / "protocols.json").write_text(json.dumps(result, indent=2) + "\n")
    print()
    print(table(result))
    print(f"\nwrote {results / 'protocols.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
